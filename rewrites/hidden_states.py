"""Layouts of the hidden states that decoder layers pass each other (spec ``tracing.hidden_states``, kind
``hidden_states``).

A layout says where the batch and token axes of a layer's hidden-state input are (a cut gathers the kept
tokens along that token axis) and what the layer's attention reads from it before its input norm (the
scorers recompute that attention). Most families pass (B, S, D) and attend to it directly (``plain``).
"""

from __future__ import annotations

import torch

from tokenprune.errors import SpecError, describe
from tokenprune.plugins import HiddenStateLayout, register


@register("hidden_states", "plain")
class PlainHiddenStates(HiddenStateLayout):
    """(B, S, D): the layer's attention reads its input (through the input norm)."""

    def attention_input(self, layer: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """(B, n, D): what the layer's input norm receives."""
        return hidden


@register("hidden_states", "altup")
class AltUpHiddenStates(PlainHiddenStates):
    """Gemma 3n: a stack of ``altup_num_inputs`` hidden streams (streams, B, S, D). Each layer first predicts
    every stream from a per-token mix of all of them (``altup.predict``, router coefficients computed per token)
    and attends to the active stream's prediction, so dropping a token drops it from every stream."""

    batch_axis = 1
    token_axis = 2

    def attention_input(self, layer: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        altup = getattr(layer, "altup", None)
        active = getattr(getattr(layer, "config", None), "altup_active_idx", None)
        if altup is None or active is None or hidden.dim() != 4:
            raise SpecError(describe(
                f"{type(layer).__name__} with hidden states of shape {tuple(hidden.shape)}",
                "spec tracing.hidden_states: altup",
                "an AltUp decoder layer (an `altup` module, config.altup_active_idx) receiving (streams, B, S, D)",
                "use tracing.hidden_states: plain for this family"))
        return layer.altup.predict(hidden)[active]  # (B, n, D), as the layer computes it
