"""A third-party family plug-in, as a package outside tokenprune would ship it.

Installed with an entry point of the ``tokenprune.plugins`` group; a spec lists it under ``plugins:``. It
registers one entry of three kinds, each counting its calls so that a test can tell it was the one used.
"""

from __future__ import annotations

import collections

import torch

from tokenprune.plugins import TracingHint, register, registry

CALLS: collections.Counter = collections.Counter()


@register("rope", "example_rotate_half")
def apply_example_rope(x: torch.Tensor, position_embeddings: tuple[torch.Tensor, ...], attn) -> torch.Tensor:
    """Llama-style RoPE on (B, H, S, Dh), written out here as a family with its own rotation would."""
    CALLS["rope"] += 1
    cos, sin = (t.unsqueeze(1) for t in position_embeddings)  # (B|1, 1, S, Dh)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


@register("tracing_hint", "example_plain")
class ExamplePlainHint(TracingHint):
    """One variant, the standard inputs: the hint of a Llama-style text model, counted when the tracer uses it."""

    name = "example_plain"

    def variants(self):
        CALLS["hint"] += 1
        return [None]


@register("test_inputs", "example_family")
def example_inputs(model, images_per_sample, text_lengths, gen):
    """LLaVA-style prompts (the family's vision tower is LLaVA's)."""
    CALLS["test_inputs"] += 1
    return registry("test_inputs").get("llava")(model, images_per_sample, text_lengths, gen)
