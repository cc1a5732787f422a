"""What a scorer or selector sees at a cut."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tokenprune.plugins.resolved import ResolvedSpec
from tokenprune.spec import ModelSpec

from .vision_side import VisionSide


@dataclass
class ScoreContext:
    """Inputs of a cut before layer ``layer``; the scoring layer is ``layer - 1``.

    Token axes are the *current* layout (after earlier cuts), ``n`` slots per sample. A cut before the first layer
    (``layer == 0``) has no scoring layer: ``scoring_layer``, ``hidden_in``, ``mask``, ``rope``, ``cache``,
    ``shared_kv`` and ``position_ids`` are None, and ``hidden_out`` holds the embeddings entering layer 0.
    """

    layer: int
    spec: ModelSpec
    plugins: ResolvedSpec  # the spec's resolved plug-ins (rope, q/k layout, hidden-state layout) the scorers use
    scoring_layer: torch.nn.Module | None  # decoder layer layer-1 (None at a cut before layer 0)
    next_layer: torch.nn.Module  # decoder layer `layer`
    hidden_in: torch.Tensor | None  # (B, n, D) input of the scoring layer
    hidden_out: torch.Tensor  # (B, n, D) output of the scoring layer = input of `layer`
    mask: Any  # attention mask as the scoring layer received it: None, (B|1, 1, n, n) bool or additive float
    rope: Any  # (cos, sin) as the scoring layer received them, each (B|1, n, Dh), or one tensor (complex freqs_cis)
    next_mask: Any  # same, as layer `layer` would receive them before the cut
    next_rope: Any
    positions: torch.Tensor  # (B, n) long: original prompt index of each slot
    vision: torch.Tensor  # (B, n) bool: slot holds a vision token
    valid: torch.Tensor  # (B, n) bool: False for batch-padding slots tokenprune inserted
    pad_offset: torch.Tensor  # (B,) long: left-padding tokens of each prompt
    query_position: torch.Tensor  # (B,) long: original position of each sample's last prompt token
    seed: int = 0
    cache: Any = None  # the call's KV cache (None under use_cache=False); the scoring layer already wrote to it
    key_policy: str = "auto"  # "auto": read the scoring layer's keys from ``cache`` when it holds them
    key_source: str | None = None  # set by the scorer: where its keys came from ("cache: ..."/"recompute: ...")
    shared_kv: Any = None  # keys/values shared between layers, as the scoring layer received them
    position_ids: Any = None  # (B|1, n) position ids as the scoring layer received them (current layout), or None
    scores: torch.Tensor | None = None  # (B, n) fp32 set by a ranking scorer's selector: what it ranked by
    # (B, n) fp32: original tokens each slot stands for (earlier cuts may have merged tokens into it); ones if None
    sizes: torch.Tensor | None = None
    vision_capture: Any = None  # the call's vision-tower record, for selectors that declare needs_vision_side

    def __post_init__(self) -> None:
        if self.sizes is None:
            self.sizes = torch.ones(self.vision.shape, device=self.vision.device)

    @property
    def text(self) -> torch.Tensor:
        """(B, n) bool: the prompt's own text tokens (not vision, not left padding, not batch padding, not past
        the prompt's end)."""
        inside = (self.positions >= self.pad_offset[:, None]) & (self.positions <= self.query_position[:, None])
        return ~self.vision & self.valid & inside

    @property
    def vision_side(self):
        """The vision tower's attention and grids at this cut's slots (:class:`~.vision_side.VisionSide`)."""
        return VisionSide(self)

    def entering_states(self) -> torch.Tensor:
        """(B, n, D) the hidden states entering the cut as the next layer's attention reads them (before its input
        norm), in the batch-first layout whatever the family's hidden-state layout is."""
        return self.plugins.hidden_states.attention_input(self.next_layer, self.hidden_out)
