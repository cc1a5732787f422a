"""Locators: where a call's vision tokens are, for families whose ``input_ids`` do not mark them.

A spec names one under ``vision_tokens.locator``; it then replaces the config token ids. A locator is called by
the pre-forward hook of the multimodal model with that call's arguments and returns a (B, S) bool mask of the
vision tokens among its input positions, or None when the call carries no input positions at all. Locators
live in the plug-in module of the family that needs them.
"""

from __future__ import annotations

import inspect

import torch



def call_arguments(module: torch.nn.Module, args: tuple, kwargs: dict) -> dict:
    """The call's arguments by parameter name (positional ones included)."""
    try:
        return dict(inspect.signature(module.forward).bind_partial(*args, **kwargs).arguments)
    except TypeError:
        return dict(kwargs)

