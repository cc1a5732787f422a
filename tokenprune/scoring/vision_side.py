"""The vision tower's view of a cut: what the read tower layer said about each still-kept vision slot.

The capture (``rewrites/vision_capture.py``) records, per tower call, one score per language-model vision token
in the order the multimodal model scatters the features into the prompt (row-major over the batch's vision
positions of the ids that call fills). Here those values are laid out on the prompt's positions once per call,
then read at the cut's slots through each slot's original position, so a cut after earlier cuts (or merges)
sees the values of the tokens it still holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokenprune.errors import UnsupportedError, describe


@dataclass(frozen=True)
class PromptMaps:
    """Per prompt position (B, S): the tower's values of the vision token there."""

    attention: torch.Tensor  # (B, S) fp32: attention the token received in the read tower layer
    image: torch.Tensor  # (B, S) long: index of its image among the call's images (-1: no captured token)
    patch: torch.Tensor  # (B, S) long: its index among its image's language-model tokens (-1: none)
    grids: list  # per image: (rows, columns) of its language-model tokens, or None
    counts: list[int]  # per image: its language-model tokens


class VisionSide:
    """``ctx.vision_side``: the tower's values at the cut's slots. Every tensor is (B, n) over the context's slots,
    meaningful at its still-kept vision slots (``ctx.vision & ctx.valid``)."""

    def __init__(self, ctx):
        self.ctx = ctx

    def attention(self) -> torch.Tensor:
        """(B, n) fp32: the attention each slot's token received from [CLS] (or the mean over the tower's queries),
        summed over the patches merged into it; 0 at other slots."""
        return self._at(self._maps().attention, 0.0)

    def image(self) -> torch.Tensor:
        """(B, n) long: the call's image each slot's token comes from (-1 at other slots)."""
        return self._at(self._maps().image, -1)

    def patch(self) -> torch.Tensor:
        """(B, n) long: each slot's index among its image's language-model tokens, row-major in its grid."""
        return self._at(self._maps().patch, -1)

    def grid(self) -> list:
        """Per image of the call: its (rows, columns) grid of language-model tokens, or None (no grid)."""
        return self._maps().grids

    def counts(self) -> list[int]:
        """Per image of the call: how many language-model tokens it became."""
        return self._maps().counts

    # ------------------------------------------------------------------------------------------ internals
    def _at(self, values: torch.Tensor, fill) -> torch.Tensor:
        ctx = self.ctx
        here = ctx.vision & ctx.valid  # (B, n)
        taken = values.to(ctx.positions.device).gather(1, ctx.positions)  # (B, n)
        return taken.masked_fill(~here, fill)

    def _maps(self) -> PromptMaps:
        ctx = self.ctx
        where = f"vision-encoder selector at the cut before layer {ctx.layer} (spec {ctx.spec.name!r})"
        if ctx.spec.vision_side is None:
            raise UnsupportedError(describe(
                "this selector reads the vision tower's attention", f"{where}: spec key vision_side",
                "a vision_side section in the spec", "add vision_side to the spec, or pick another selector"))
        capture = ctx.vision_capture
        if capture is None or not capture.calls or any(call.scores is None for call in capture.calls):
            raise UnsupportedError(describe(
                "no vision-tower attention was captured in this call", where,
                "a prefill that runs the vision tower (pixel values with input_ids) on a model compiled with this "
                "selector", "pass the images to the compiled model's forward/generate, not precomputed embeddings"))
        if capture.maps is None:
            capture.maps = _build_maps(capture, where)
        maps = capture.maps
        here = ctx.vision & ctx.valid
        if bool((maps.image.to(here.device).gather(1, ctx.positions)[here] < 0).any()):
            raise UnsupportedError(describe(
                "a vision token of the prompt that no vision-tower call produced", where,
                "every vision token filled by the tower calls the spec's vision_side describes",
                "check vision_side.token_ids against the family's vision token ids"))
        return maps


def _build_maps(capture, where: str) -> PromptMaps:
    ids = capture.input_ids
    if ids is None:
        raise UnsupportedError(describe("a call without input_ids", where,
                                        "input_ids, to place each tower token in the prompt", "pass input_ids"))
    if capture.fill_ids:
        present = [i for i in capture.fill_ids if bool((ids == i).any())]
        masks = [ids == i for i in present]
    else:
        masks = [torch.isin(ids, torch.tensor(capture.vision_ids, device=ids.device))]
    if len(masks) != len(capture.calls):
        raise UnsupportedError(describe(
            f"{len(capture.calls)} vision-tower calls for {len(masks)} kinds of vision token in the prompt", where,
            "one tower call per kind of vision token present (spec vision_side.token_ids, in call order)",
            "declare vision_side.token_ids in the order the family calls its tower"))
    shape = ids.shape
    attention = torch.zeros(shape, dtype=torch.float32, device=ids.device)
    image = torch.full(shape, -1, dtype=torch.long, device=ids.device)
    patch = torch.full(shape, -1, dtype=torch.long, device=ids.device)
    grids, counts = [], []
    for mask, call in zip(masks, capture.calls):
        scores = call.scores if capture.layout is None else capture.layout(call.scores, capture.image_sizes)
        if int(mask.sum()) != scores.scores.numel():
            raise UnsupportedError(describe(
                f"the vision tower gave {scores.scores.numel()} tokens where the prompt has {int(mask.sum())}", where,
                "as many captured tokens as vision tokens (spec vision_side: merge, cls_token, layer)",
                "fix the spec's vision_side mapping"))
        sizes = torch.tensor(scores.counts, device=ids.device)
        first = len(counts)
        attention[mask] = scores.scores.to(ids.device)  # row-major: the order the features fill the prompt
        image[mask] = torch.repeat_interleave(torch.arange(first, first + len(sizes), device=ids.device), sizes)
        patch[mask] = torch.cat([torch.arange(int(n), device=ids.device) for n in sizes])
        grids += scores.grids
        counts += scores.counts
    return PromptMaps(attention, image, patch, grids, counts)
