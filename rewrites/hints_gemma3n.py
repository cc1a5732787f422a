"""Tracing hints for Gemma 3n's text model (Gemma3nTextModel): shared keys/values, and per-layer inputs.

``gemma3n_kv_sharing``: as in Gemma 4, the last ``num_kv_shared_layers`` layers project no keys/values and
reuse those a *store* layer of their type wrote into a ``KVSharingDict`` passed to every layer. Unlike Gemma 4's
forward, Gemma 3n's creates that dict unconditionally (no keyword to hand one in), so fx would build it once at
trace time and bake it into the graph. The hint turns the dict, where the traced forward passes it to a layer,
into a graph node that creates a fresh one per call, marked as per-token state so the completeness analysis
refuses any cut that does not gather it. Declare the layer argument as ``shared_kv`` (``tracing.layer_kwargs``)
and the attention's sharing attributes under ``attention.shared_kv``.

``gemma3n_per_layer_inputs``: the per-layer embeddings ``per_layer_inputs`` (B, S, layers, D_ple), which the
multimodal model computes from the token ids, become a placeholder when given (a caller passing embeddings only
gets the forward's projection alone, as the original does). Each layer receives its (B, S, D_ple) slice as its
third positional argument, after the rotary (cos, sin): declare ``tracing.layer_args: [rope, tokens]``.
"""

from __future__ import annotations

import torch.fx as fx

from tokenprune.errors import TraceError, describe
from tokenprune.plugins import register

from .analysis import PER_TOKEN_META
from .hints import TracingHint
from .hints_gemma4 import new_kv_sharing_dict, random_per_layer_inputs
from .hints_inputs import PerTokenInput


@register("tracing_hint", "gemma3n_kv_sharing")
class Gemma3nKVSharing(TracingHint):
    """The KVSharingDict the traced forward builds becomes a per-call graph node, marked as per-token state."""

    name = "gemma3n_kv_sharing"

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
        node = tracer.create_node("call_function", new_kv_sharing_dict, (), {}, name="kv_sharing_dict")
        node.meta[PER_TOKEN_META] = True
        self._nodes[id(value)] = (value, node)
        return node


@register("tracing_hint", "forward_kv_sharing")
class ForwardKVSharing(Gemma3nKVSharing):
    """The same hint under a family-neutral name, for any text model whose forward creates its own
    ``KVSharingDict`` and passes it to every layer (Mistral Large 4)."""

    name = "forward_kv_sharing"


def _project_per_layer_inputs(self, inputs_embeds, per_layer_inputs=None):
    """``Gemma3nTextModel.project_per_layer_inputs`` with ``unflatten`` for its ``reshape(*shape[:-1], L, D)``,
    which the trace cannot unpack, and an unconditional slice for its shape-dependent one (the slice keeps
    everything when the shapes already match); the same operations otherwise (the self-check compares bit for
    bit)."""
    layers, width = self.config.num_hidden_layers, self.hidden_size_per_layer_input
    projection = self.per_layer_model_projection(inputs_embeds)  # (B, S, L * D_ple)
    projection = projection * self.per_layer_projection_scale.to(dtype=inputs_embeds.dtype,
                                                                 device=projection.device)
    projection = self.per_layer_projection_norm(projection.unflatten(-1, (layers, width)))  # (B, S, L, D_ple)
    if per_layer_inputs is None:
        return projection
    per_layer_inputs = per_layer_inputs[..., :layers, :]  # tables padded with more layers are sliced
    return (projection + per_layer_inputs) * self.per_layer_input_scale.to(dtype=inputs_embeds.dtype,
                                                                           device=projection.device)


@register("tracing_hint", "gemma3n_per_layer_inputs")
class Gemma3nPerLayerInputs(PerTokenInput):
    """Gemma 3n: ``per_layer_inputs`` (B, S, layers, D_ple) is a placeholder of the "present" variant."""

    name = "gemma3n_per_layer_inputs"
    key = "per_layer_inputs"
    root_methods = {"project_per_layer_inputs": _project_per_layer_inputs}

    def prepare(self, lm, params, past_len):
        # A caller passing token ids gets them embedded before the graph; the forward then derives the per-layer
        # inputs from those ids (replacing any given), and so does this.
        if params.get("input_ids") is not None:
            params[self.key] = lm.get_per_layer_inputs(params["input_ids"])

    def probe_variants(self, lm, params):
        return [("absent", {}), ("present", random_per_layer_inputs(lm, params["inputs_embeds"], self.key, seed=13))]
