"""Tracing hints for Gemma 4's text models: shared keys/values between layers, and per-layer inputs.

``kv_sharing``: the last layers of a Gemma 4 text model project no keys/values of their own; they reuse those
that a *store* layer of the same type wrote into a ``KVSharingDict`` created at the top of the forward and passed
to every layer. Traced as is, that dict would be created once at trace time and become a constant shared by
every call; the hint creates it in the graph per call instead, and marks it as per-token state so the
completeness analysis refuses any cut that does not gather it. Declare the layer argument as ``shared_kv`` (spec
``tracing.layer_kwargs``) and the attention's sharing attributes under ``attention.shared_kv``. The forward also
slices the inputs of the sharing layers to ``logits_to_keep`` (a generate-time shortcut whose branches the trace
cannot take); the traced root never passes ``logits_to_keep``, for which that slicing keeps everything, so it is
replaced by exactly that on the tracing root.

``per_layer_inputs``: Gemma 4's per-layer embeddings (PLE), a (B, S, layers, D_ple) keyword of the text model's
forward that the multimodal model computes from the token ids; each layer receives its (B, S, D_ple) slice as its
second positional argument (declare it with ``tracing.layer_args: [tokens]``).
"""

from __future__ import annotations

import torch
import torch.fx as fx

from tokenprune.errors import TraceError, describe
from tokenprune.plugins import register

from .analysis import PER_TOKEN_META
from .hints import STANDARD_INPUTS, TracingHint


def _kv_sharing_proxy_class():
    from transformers.cache_utils import KVSharingDict

    class SharedKVProxy(fx.Proxy, KVSharingDict):
        """A proxy that passes the forward's ``isinstance(shared_kv_states, KVSharingDict)`` check, so the traced
        forward hands the graph's per-call dict to every layer instead of building one at trace time."""

    return SharedKVProxy


def new_kv_sharing_dict():
    """A fresh, empty ``KVSharingDict`` for one call (a graph node: no state survives between calls)."""
    from transformers.cache_utils import KVSharingDict

    return KVSharingDict()


def _keep_kv_shared_inputs(self, hidden_states, *inputs, past_key_values=None, **kwargs):
    """``_maybe_slice_kv_shared_inputs`` with ``logits_to_keep=0`` (its last positional argument): every
    branch of the original returns the inputs unchanged (slice(-0, None) keeps all), and so does this."""
    *tensors, logits_to_keep = inputs
    if not (isinstance(logits_to_keep, int) and logits_to_keep == 0):
        raise TraceError(describe(f"logits_to_keep={logits_to_keep!r} in the traced call", "hint kv_sharing",
                                  "0 (the traced root never passes it)"))
    return (hidden_states, *tensors)


@register("tracing_hint", "kv_sharing")
class KVSharing(TracingHint):
    """Gemma 4 / Gemma 4 Unified: a per-call KVSharingDict in the graph, marked as per-token state."""

    name = "kv_sharing"
    root_methods = {"_maybe_slice_kv_shared_inputs": _keep_kv_shared_inputs}
    plain_globals = ("KVSharingDict",)  # not autowrapped: the forward's isinstance check needs the class

    def inner_kwargs(self, inputs, variant):
        tracer = next(v.tracer for v in inputs.values() if isinstance(v, fx.Proxy))
        node = tracer.create_node("call_function", new_kv_sharing_dict, (), {}, name="kv_sharing_dict")
        node.meta[PER_TOKEN_META] = True
        return {**inputs, "shared_kv_states": _kv_sharing_proxy_class()(node, tracer)}


def _project_per_layer_inputs(self, inputs_embeds, per_layer_inputs=None):
    """``Gemma4TextModel.project_per_layer_inputs`` with ``unflatten`` for its ``reshape(*shape[:-1], L, D)``,
    which the trace cannot unpack; the same operations otherwise (the self-check compares bit for bit)."""
    cfg = self.config
    projection = self.per_layer_model_projection(inputs_embeds) * self.per_layer_model_projection_scale
    projection = projection.unflatten(-1, (cfg.num_hidden_layers, self.hidden_size_per_layer_input))  # (B, S, L, D)
    projection = self.per_layer_projection_norm(projection)
    if per_layer_inputs is None:
        return projection
    return (projection + per_layer_inputs) * self.per_layer_input_scale


@register("tracing_hint", "per_layer_inputs")
class PerLayerInputs(TracingHint):
    """Gemma 4: ``per_layer_inputs`` (B, S, layers, D_ple) becomes a placeholder when the config has per-layer
    embeddings (``hidden_size_per_layer_input``); a caller that does not pass it gets it computed as the text
    model would (``get_per_layer_inputs``), before the graph."""

    name = "per_layer_inputs"
    key = "per_layer_inputs"
    root_methods = {"project_per_layer_inputs": _project_per_layer_inputs}

    def _enabled(self) -> bool:
        return bool(getattr(getattr(self.lm, "config", None), "hidden_size_per_layer_input", 0))

    def variants(self):
        return ["present"] if self._enabled() else ["absent"]

    def input_names(self, variant):
        return STANDARD_INPUTS if variant == "absent" else STANDARD_INPUTS + (self.key,)

    def prepare(self, lm, params, past_len):
        if self._enabled() and params.get(self.key) is None:
            params[self.key] = lm.get_per_layer_inputs(params.get("input_ids"), params["inputs_embeds"])

    def choose(self, params, variant_key):
        return self.variants()[0]

    def graph_inputs(self, params, variant):
        return {} if variant == "absent" else {self.key: params[self.key]}

    def probe_variants(self, lm, params):
        if not self._enabled():
            return [("absent", {})]
        return [("present", random_per_layer_inputs(lm, params["inputs_embeds"], self.key, seed=11))]


def random_per_layer_inputs(lm, embeds, key: str, seed: int) -> dict:
    """Probe arguments for a per-layer-input keyword: random (B, S, layers, D_ple) inputs for the prefill and a
    (B, 1, layers, D_ple) slice for the probe's decode step (random embeddings cannot be mapped back to ids)."""
    cfg = lm.config
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def draw(length):
        shape = (embeds.shape[0], length, cfg.num_hidden_layers, cfg.hidden_size_per_layer_input)
        return torch.randn(shape, generator=gen).to(embeds)

    return {key: draw(embeds.shape[1]), "tokenprune_decode_overrides": {key: draw(1)}}
