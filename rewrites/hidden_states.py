"""Layouts of the hidden states that decoder layers pass each other (spec ``tracing.hidden_states``, kind
``hidden_states``).

A layout says where the batch and token axes of a layer's hidden-state input are (a cut gathers the kept
tokens along that token axis) and what the layer's attention reads from it before its input norm (the
scorers recompute that attention). Most families pass (B, S, D) and attend to it directly (``plain``);
other layouts live in their family's plug-in module.
"""

from __future__ import annotations

import torch

from tokenprune.plugins import HiddenStateLayout, register


@register("hidden_states", "plain")
class PlainHiddenStates(HiddenStateLayout):
    """(B, S, D): the layer's attention reads its input (through the input norm)."""

    def attention_input(self, layer: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """(B, n, D): what the layer's input norm receives."""
        return hidden

