"""The first decoder layer's KV cache under a cut before that layer: it reports the unpruned length.

Hugging Face reads the length of the prompt and of every decoded step from the cache of layer 0
(``cache.get_seq_length()``): decode position ids, the decode-step mask's key count, the deltas of 3-D rotary
positions, ``generate()``'s slicing of a continued prompt, and tokenprune's own count of the tokens past the
prompt. Every cut at layer 1 or later leaves layer 0 whole, so those reads see the unpruned numbering. A cut
before layer 0 prunes its cache too; its cache layer then adds back the slots the cut dropped when asked for its
length (:class:`UnprunedLengthLayer`), so every reader keeps the unpruned numbering. The decode-step mask
Hugging Face then sizes for the unpruned layout is the one the cut gathers to the kept columns, as at any other
cut.
"""

from __future__ import annotations

from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

from tokenprune.errors import UnsupportedError, describe

from .prompt_caches import keeping_layers
from .sliding import WholeWindowLayer, windowed_layer_sizes
from .state import Mode, PruneSession


class _ReportsUnprunedLength:
    """Mixin for a cache layer a cut before layer 0 prunes: ``dropped`` prompt slots are counted as if stored."""

    dropped = 0  # prompt slots the cut before layer 0 removed (the same for every sample: the batch is rectangular)

    def get_seq_length(self) -> int:
        stored = self.stored_length()
        return stored + self.dropped if stored else 0

    def stored_length(self) -> int:
        """Slots the layer actually holds."""
        return super().get_seq_length()


class UnprunedLengthLayer(_ReportsUnprunedLength, DynamicLayer):
    """A full-attention ``DynamicLayer`` whose length is the unpruned one."""


class UnprunedLengthWindowLayer(_ReportsUnprunedLength, WholeWindowLayer):
    """A windowed layer kept whole (:mod:`.sliding`) whose length is the unpruned one."""


_REPLACEMENTS = {DynamicLayer: UnprunedLengthLayer, WholeWindowLayer: UnprunedLengthWindowLayer}


def check_first_layer_kind(spec, config, cut_layers) -> None:
    """At compile: refuse a cut before layer 0 when layer 0's type keeps the prompt in a sliding cache of its own
    kind, which cannot report the unpruned length (a cut after the first layer of that type is exact)."""
    if 0 in cut_layers and 0 in keeping_layers(spec, config, cut_layers):
        kind = config.layer_types[0]
        raise UnsupportedError(describe(
            f"a cut before the first decoder layer, whose type {kind!r} keeps the prompt in a sliding cache",
            f"keep_ratio[0] < 1 (spec {spec.name!r}, tracing.windowed_layers keeps_prompt)",
            "layer 0 of a type whose cache tokenprune can make report the unpruned length (full attention, or a "
            "sliding window that does not keep the prompt)",
            "start the schedule at keep_ratio[0] = 1.0 and cut after the first layer of each windowed type"))
    if 0 in cut_layers:
        kind = _default_first_layer_kind(spec, config, cut_layers)
        if kind is not None and kind not in _REPLACEMENTS:
            raise _unsupported_kind(kind)


def _default_first_layer_kind(spec, config, cut_layers) -> type | None:
    """The class of layer 0's slot in the cache ``generate()`` creates, after tokenprune's own swaps (None: the
    config builds no cache here, so the check waits for the first call)."""
    try:
        slots = DynamicCache(config=config).layers
    except Exception:  # a config transformers cannot build a cache from outside its model: checked at the call
        return None
    if not slots:
        return DynamicLayer
    if type(slots[0]) is DynamicSlidingWindowLayer and 0 in windowed_layer_sizes(spec, config, cut_layers):
        return WholeWindowLayer
    return type(slots[0])


def _unsupported_kind(kind: type) -> UnsupportedError:
    return UnsupportedError(describe(
        f"a cut before the first decoder layer with layer 0's KV cache of kind {kind.__name__}",
        "past_key_values (layer 0) under keep_ratio[0] < 1",
        "an empty DynamicCache whose first layer is a plain or sliding-window layer (the default of generate() "
        "for most families): it must report the unpruned length, which Hugging Face reads for positions and masks",
        "let generate() create the cache or pass DynamicCache(); for other cache kinds, start the schedule at "
        "keep_ratio[0] = 1.0 and cut at layer 1 or later"))


def prepare_first_layer(cache, cut_layers, past_len: int) -> None:
    """Before a prefill with a cut at layer 0: swap the cache's (empty) first layer for one that reports the
    unpruned length; refuse a first layer of another kind (its length would count the pruned slots)."""
    if cache is None or past_len > 0 or 0 not in cut_layers:
        return
    slots = getattr(cache, "layers", None)
    if slots is None:
        return
    if not slots and getattr(cache, "layer_class_to_replicate", None) is DynamicLayer:
        slots.append(UnprunedLengthLayer())  # a cache that creates its layers lazily, on first write
        return
    slot = slots[0] if slots else None
    if isinstance(slot, _ReportsUnprunedLength) and slot.stored_length() == 0:
        slot.dropped = 0
        return
    replacement = _REPLACEMENTS.get(type(slot))
    if replacement is None or slot.get_seq_length() != 0:
        raise _unsupported_kind(type(slot))
    fresh = replacement() if replacement is UnprunedLengthLayer else replacement(slot.sliding_window)
    slots[0] = fresh


def record_dropped(session: PruneSession, cache) -> None:
    """After a prefill: tell the first layer's cache how many prompt slots the cut before layer 0 removed."""
    slots = getattr(cache, "layers", None) or []
    if session.call is None or session.call.mode is not Mode.SELECT or not slots \
            or not isinstance(slots[0], _ReportsUnprunedLength):
        return
    sel = session.selections.get(0)
    slots[0].dropped = 0 if sel is None else sel.prev_length - sel.layout.length


def stored_length(cache, layer: int) -> int:
    """Slots layer ``layer``'s cache actually holds (its reported length, unless it adds back pruned slots)."""
    slot = cache.layers[layer] if layer < len(getattr(cache, "layers", None) or []) else None
    return slot.stored_length() if isinstance(slot, _ReportsUnprunedLength) else cache.get_seq_length(layer)
