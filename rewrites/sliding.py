"""Sliding-window and chunked layers of a pruned model: keep every token in the cache, let the mask slide.

Hugging Face's unpruned model evicts by *slot*: a ``DynamicSlidingWindowLayer`` keeps its last ``window - 1``
tokens, and its mask allows a key when ``query index - key index < window`` (chunked layers: same chunk). In the
unpruned model slot and position coincide, so eviction only drops keys the mask blocks anyway. A pruned layer
holds fewer prompt slots, so its last ``window - 1`` slots reach further back than the window: by slot count it
would keep keys the unpruned model has evicted (and, after a cut at an unpruned store layer, shared keys would
no longer line up with the kept columns).

Policy: while a schedule has cuts, every cache layer of a windowed type (spec ``tracing.windowed_layers``
without ``keeps_prompt``) keeps all its tokens (:class:`WholeWindowLayer`) and reports itself full-length to
the mask builders. Hugging Face then builds its sliding (or chunked) mask over every cached key, blocking by
index exactly the keys it would have evicted, and the cuts gather that mask by original index like any other.
Cached decoding is then exact past the window, at the memory cost of a full-attention cache on those layers.
"""

from __future__ import annotations

from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

from tokenprune.errors import UnsupportedError, describe


class WholeWindowLayer(DynamicLayer):
    """A sliding-window cache layer that never evicts: a full ``DynamicLayer`` that still says it is sliding, so
    the mask builders size the sliding mask from it (over every cached key) and apply the window by index."""

    is_sliding = True

    def __init__(self, sliding_window: int):
        super().__init__()
        self.sliding_window = sliding_window


def windowed_layer_sizes(spec, config, cut_layers) -> dict[int, tuple[str, int]]:
    """Layers of a windowed type that does not keep the prompt, while ``cut_layers`` is not empty:
    index -> (layer type, window)."""
    if not cut_layers:
        return {}
    types = getattr(config, "layer_types", None)
    if types is None:  # no per-layer types: one window on every layer, or none
        kind = "sliding_attention" if getattr(config, "sliding_window", None) else "full_attention"
        types = [kind] * config.num_hidden_layers
    out = {}
    for i, kind in enumerate(types):
        policy = spec.windowed_layers.get(kind)
        window = getattr(config, policy.size, None) if policy is not None and not policy.keeps_prompt else None
        if window:
            out[i] = (kind, int(window))
    return out


def keep_windows_whole(cache, layers: dict[int, tuple[str, int]], cut_layers) -> None:
    """Before a call: swap the (still empty) sliding cache layers of ``layers`` for whole ones; refuse, before
    the call runs, a cache whose pruned windowed layers would evict by slot some other way (one filled
    elsewhere, or a static sliding layer with room for a whole window)."""
    if cache is None or not layers:
        return
    slots = getattr(cache, "layers", None)
    if slots is None:
        return
    first_cut = min(cut_layers)
    for i, (kind, window) in layers.items():
        if i >= len(slots) or isinstance(slots[i], WholeWindowLayer):
            continue
        slot = slots[i]
        if type(slot) is DynamicSlidingWindowLayer and not slot.is_initialized:
            slots[i] = WholeWindowLayer(window)
        elif getattr(slot, "is_sliding", False) and i >= first_cut and not _never_evicts(slot, window):
            raise UnsupportedError(describe(
                f"layer {i}'s KV cache ({type(slot).__name__}, layer type {kind!r}, window {window}) evicts tokens "
                "by slot, which after a cut are not the tokens the unpruned model evicts",
                "past_key_values of a pruned windowed layer",
                "an empty DynamicCache (the default of generate() and of a call without past_key_values), whose "
                "windowed layers tokenprune keeps whole", "let generate() create the cache, or pass DynamicCache()"))


def _never_evicts(slot, window: int) -> bool:
    """An empty cache layer too small to ever evict (a static sliding layer sized below the window: past its
    capacity transformers fails in any model)."""
    capacity = slot.get_max_length() if hasattr(slot, "get_max_length") else -1
    return not getattr(slot, "is_initialized", True) and 0 < capacity < window - 1
