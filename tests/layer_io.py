"""A capture of what one decoder layer received and what its attention returned (the masking reference the
tests compare with lives in :mod:`tokenprune.testing.masking`)."""

from __future__ import annotations

import torch

__all__ = ["LAYER_INPUTS", "capture_layer_io"]

LAYER_INPUTS = {"rope": "position_embeddings", "mask": "attention_mask"}


def capture_layer_io(model, layer, attention, model_kwargs: dict, inputs: dict[str, str] = LAYER_INPUTS) -> dict:
    """One forward of ``model``: what ``layer`` received (``hidden`` and each ``inputs`` keyword, renamed) and the
    weights (B, H, S, S) its ``attention`` module returned, i.e. HF's own eager attention probabilities."""
    seen = {}

    def pre(_, args, kwargs):
        seen.update(hidden=args[0], **{key: kwargs[name] for key, name in inputs.items()})

    def post(_, args, output):
        seen["weights"] = output[1]

    hooks = [layer.register_forward_pre_hook(pre, with_kwargs=True), attention.register_forward_hook(post)]
    try:
        with torch.no_grad():
            model(**model_kwargs)
    finally:
        for hook in hooks:
            hook.remove()
    return seen
