"""Tracing hints for per-token inputs that a text model takes besides the standard ones.

A keyword such as a (B, S) token-type map that routes tokens to vision experts is a named parameter of the text
model's forward and is handed to every decoder layer. Traced without a
placeholder it would be specialised to its default (None) and the routing silently lost, so it becomes a
placeholder of its own graph variant ("present"), alongside the variant without it ("absent": cached
decode steps do not pass it). The spec declares how a cut gathers it (``tracing.layer_kwargs``).
"""

from __future__ import annotations

import torch


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



def random_per_layer_inputs(lm, embeds, key: str, seed: int) -> dict:
    """Probe arguments for a per-layer-input keyword (per-layer embeddings, ``config.hidden_size_per_layer_input``):
    random (B, S, layers, D_ple) inputs for the prefill and a (B, 1, layers, D_ple) slice for the probe's decode
    step (random embeddings cannot be mapped back to ids)."""
    cfg = lm.config
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def draw(length):
        shape = (embeds.shape[0], length, cfg.num_hidden_layers, cfg.hidden_size_per_layer_input)
        return torch.randn(shape, generator=gen).to(embeds)

    return {key: draw(embeds.shape[1]), "tokenprune_decode_overrides": {key: draw(1)}}
