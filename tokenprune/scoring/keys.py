"""Where a scorer gets the keys of the scoring layer: the KV cache the layer just filled, or a recompute.

Projecting the keys of every token again (``k_proj`` over the whole sequence, k norm, RoPE) was ~95% of the
cost of a cut. When the call carries a KV cache, the scoring layer has already written exactly those keys
(rotated, normed, in the layout ``(B, H_kv, n, D_h)``) into it, so the scorer reads them back instead.

The cache is only trusted when it provably holds this call's keys of that layer and nothing else; every
other case recomputes, and :func:`find_cached_keys` says why. Policies (``compile(scoring_keys=...)``):

* ``"auto"``: cached keys when usable, otherwise recompute (the default);
* ``"recompute"``: always recompute (the pre-cache behaviour; for debugging and benchmarks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KEY_POLICIES = ("auto", "recompute")

# Cache layers whose ``keys`` are a plain (B, H_kv, S, D_h) tensor of every token written so far (a sliding
# layer truncates to its window, which the length check below catches; a pruned model keeps its sliding layers
# whole, see rewrites/sliding.py). Quantized, static (pre-allocated), offloaded and linear-attention layers store
# something else and are never read.
_PLAIN_LAYERS = ("DynamicLayer", "DynamicSlidingWindowLayer", "WholeWindowLayer")


@dataclass(frozen=True)
class KeyLookup:
    """The outcome of looking for the scoring layer's keys in the cache."""

    keys: torch.Tensor | None  # (B, H_kv, n, D_h) in the model dtype, or None: recompute
    source: str  # "cache", "shared" (keys another layer shared, see .shared_kv) or "recompute"
    reason: str  # why (shown by tokenprune.scoring_key_sources and in tests)


def _recompute(reason: str) -> KeyLookup:
    return KeyLookup(None, "recompute", reason)


def find_cached_keys(cache, attn: torch.nn.Module, hidden: torch.Tensor, kv_shape: tuple[int, int],
                     policy: str = "auto") -> KeyLookup:
    """The scoring layer's keys of this call from ``cache``, if it provably holds exactly them.

    ``hidden``: (B, n, D) input of the scoring layer in this call (a prefill: the cache was empty before it).
    ``attn``: the layer's attention module, whose ``layer_idx`` names its cache slot.
    ``kv_shape``: (H_kv, D_h) the keys must have (query heads over GQA groups, head size).
    """
    if policy == "recompute":
        return _recompute("policy 'recompute'")
    if cache is None:
        return _recompute("no KV cache in this call (use_cache=False)")
    layers = getattr(cache, "layers", None)
    if layers is None or getattr(cache, "offloading", False):
        return _recompute(f"cache {type(cache).__name__} has no plain per-layer storage")
    idx = getattr(attn, "layer_idx", None)
    if not isinstance(idx, int) or not 0 <= idx < len(layers):
        return _recompute(f"attention layer_idx {idx!r} does not name a cache layer")
    layer = layers[idx]
    # Exact class names, not isinstance: a subclass may store keys differently (e.g. quantized layers).
    if type(layer).__name__ not in _PLAIN_LAYERS or not getattr(layer, "is_initialized", False):
        return _recompute(f"cache layer {idx} is a {type(layer).__name__}")
    keys = getattr(layer, "keys", None)
    bsz, n = hidden.shape[:2]
    if not isinstance(keys, torch.Tensor) or keys.dim() != 4:
        return _recompute(f"cache layer {idx} holds no 4-D keys")
    # Exactly n keys: a cache that held anything before this prefill, or a sliding layer that dropped keys
    # beyond its window, fails here.
    expected = (bsz, kv_shape[0], n, kv_shape[1])
    if tuple(keys.shape) != expected:
        return _recompute(f"cache layer {idx} keys {tuple(keys.shape)} are not this call's {expected}")
    if keys.device != hidden.device or keys.dtype != hidden.dtype:
        return _recompute(f"cache layer {idx} keys are {keys.dtype} on {keys.device}")
    return KeyLookup(keys, "cache", f"cache layer {idx}")
