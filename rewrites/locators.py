"""Locators: where a call's vision tokens are, for families whose ``input_ids`` do not mark them.

A spec names one under ``vision_tokens.locator``; it then replaces the config token ids. A locator is called by
the pre-forward hook of the multimodal model with that call's arguments and returns a (B, S) bool mask of the
vision tokens among its input positions, or None when the call carries no input positions at all.
"""

from __future__ import annotations

import inspect

import torch

from tokenprune.errors import UnsupportedError, describe
from tokenprune.plugins import register


def call_arguments(module: torch.nn.Module, args: tuple, kwargs: dict) -> dict:
    """The call's arguments by parameter name (positional ones included)."""
    try:
        return dict(inspect.signature(module.forward).bind_partial(*args, **kwargs).arguments)
    except TypeError:
        return dict(kwargs)


@register("locator", "image_embeds_position_mask")
def image_embeds_position_mask(module: torch.nn.Module, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """Kosmos-2 / Kosmos-2.5: the text model scatters the image features where ``image_embeds_position_mask``
    is 1; those slots hold an ordinary token id (the BOS id), so no config token id marks them. A call without
    the mask (a cached decode step, a text-only prompt) has no vision tokens."""
    bound = call_arguments(module, args, kwargs)
    mask, ids = bound.get("image_embeds_position_mask"), bound.get("input_ids")
    reference = ids if ids is not None else bound.get("inputs_embeds")
    if mask is None:
        return None if reference is None else torch.zeros(reference.shape[:2], dtype=torch.bool,
                                                           device=reference.device)
    if reference is not None and tuple(mask.shape) != tuple(reference.shape[:2]):
        raise UnsupportedError(describe(
            f"image_embeds_position_mask of shape {tuple(mask.shape)} for {tuple(reference.shape[:2])} input positions",
            "locator image_embeds_position_mask", "one mask value per input position"))
    return mask != 0
