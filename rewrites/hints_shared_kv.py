"""Tracing mechanisms for text models whose layers share keys/values through a ``KVSharingDict``.

Some text models let their last layers reuse the keys/values that a *store* layer wrote into a mutable
``KVSharingDict`` passed to every layer. Traced as is, a dict created by the forward would be built once at trace
time and baked into the graph as a constant shared by every call. The graph must instead create a fresh one per
call (:func:`new_kv_sharing_dict`), and the node must be marked as per-token state so that the completeness
analysis refuses any cut that does not gather it. Family plug-ins register hints built on these pieces.
"""

from __future__ import annotations

import torch.fx as fx

from tokenprune.errors import TraceError, describe

from .analysis import PER_TOKEN_META
from .hints import TracingHint


def new_kv_sharing_dict():
    """A fresh, empty ``KVSharingDict`` for one call (a graph node: no state survives between calls)."""
    from transformers.cache_utils import KVSharingDict

    return KVSharingDict()


def kv_sharing_node(tracer: fx.Tracer) -> fx.Node:
    """A graph node creating the per-call dict, marked as per-token state (every cut must gather it)."""
    node = tracer.create_node("call_function", new_kv_sharing_dict, (), {}, name="kv_sharing_dict")
    node.meta[PER_TOKEN_META] = True
    return node


def is_empty_cache_slot(slot) -> bool:
    """A cache slot that holds no keys/values of its own: a ``DummyLayer`` placeholder (no sequence length at
    all) or a slot whose keys/values were never written although the prompt ran."""
    return not hasattr(slot, "get_seq_length") or getattr(slot, "is_initialized", True) is False


class ForwardCreatedKVSharing(TracingHint):
    """For a forward that creates its own ``KVSharingDict`` unconditionally (no keyword to hand one in): the dict,
    where the traced forward passes it to a layer, becomes a graph node creating a fresh one per call.

    Subclasses register it under a family's name; declare the layer argument as ``shared_kv``
    (``tracing.layer_kwargs``)."""

    def __init__(self, lm=None, model_config=None):
        super().__init__(lm, model_config)
        self._nodes: dict[int, tuple[object, fx.Node]] = {}  # id(dict) -> (the dict, its node), per traced graph

    def constant_node(self, tracer, value, variant):
        from transformers.cache_utils import KVSharingDict

        if not isinstance(value, KVSharingDict):
            return None
        held = self._nodes.get(id(value))
        if held is not None and held[0] is value and held[1].graph is tracer.graph:
            return held[1]  # every layer call of this graph shares one dict, as in the forward
        if len(value):  # it would stand for a dict holding trace-time tensors
            raise TraceError(describe(f"a KVSharingDict holding {sorted(value)} at trace time",
                                      f"hint {self.name}", "the empty dict the forward creates per call",
                                      "check that the decoder layers are traced as leaves"))
        node = kv_sharing_node(tracer)
        self._nodes[id(value)] = (value, node)
        return node

    def slot_stores_no_kv(self, slot) -> bool:
        return is_empty_cache_slot(slot)
