"""Tracing hints for per-token inputs that a family's text model takes besides the standard ones.

A keyword such as Ernie 4.5 VL's ``moe_mm_token_type_ids`` (which tokens the vision experts process) is a
named parameter of the text model's forward and is handed to every decoder layer. Traced without a
placeholder it would be specialised to its default (None) and the routing silently lost, so it becomes a
placeholder of its own graph variant ("present"), alongside the variant without it ("absent": cached
decode steps do not pass it). The spec declares how a cut gathers it (``tracing.layer_kwargs``).
"""

from __future__ import annotations

import torch

from tokenprune.plugins import register

from .hints import STANDARD_INPUTS, TracingHint


class PerTokenInput(TracingHint):
    """One optional (B, S) keyword of the text model's forward, traced as a placeholder when given."""

    key = ""  # the forward's parameter name, also the placeholder's

    def variants(self):
        return ["absent", "present"]

    def input_names(self, variant):
        return STANDARD_INPUTS if variant == "absent" else STANDARD_INPUTS + (self.key,)

    def consume(self, extra: dict, params: dict) -> None:
        if self.key in extra:  # a named parameter of the forward arrives in params already
            params[self.key] = extra.pop(self.key)

    def choose(self, params, variant_key):
        return "absent" if params.get(self.key) is None else "present"

    def graph_inputs(self, params, variant):
        return {} if variant == "absent" else {self.key: params[self.key]}

    def probe_value(self, embeds: torch.Tensor) -> torch.Tensor:
        """A value for the self-check's probe prompt, whose slots 1:4 stand for vision tokens."""
        value = torch.zeros(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        value[:, 1:4] = 1
        return value

    def probe_variants(self, lm, params):
        return [("absent", {}), ("present", {self.key: self.probe_value(params["inputs_embeds"])})]


@register("tracing_hint", "moe_token_types")
class MoeTokenTypes(PerTokenInput):
    """Ernie 4.5 VL: ``moe_mm_token_type_ids`` (0 text, 1 image, 2 video, vision start/end tokens included)
    routes each token to the text or the vision experts of every MoE layer. Declare it in the spec as
    ``layer_kwargs: {moe_mm_token_type_ids: positions}`` (a (B, S) tensor, gathered like position ids)."""

    name = "moe_token_types"
    key = "moe_mm_token_type_ids"

    def prepare(self, lm, params, past_len):
        types = params.get(self.key)
        length = params["inputs_embeds"].shape[1]
        if types is not None and types.shape[-1] < length:
            # generate(use_cache=False) re-runs the prompt plus the generated tokens but does not extend this
            # input (Hugging Face's own model fails there); the tokens it lacks are generated text: type 0.
            params[self.key] = torch.nn.functional.pad(types, (0, length - types.shape[-1]))
