"""Comparison tolerances that follow the model's dtype.

A fixed absolute tolerance is wrong for half precision: an fp16 logit of 10 has a rounding step (ulp) of about
0.008, so two exact computations that round once differently already differ by more than 1e-4. Half-precision
tolerances are therefore a few ulps relative to the magnitude of the values compared; fp32 keeps a tight one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

HALF_PRECISION_ULPS = 4  # roundings that may legitimately differ between two exact computations


@dataclass(frozen=True)
class Tolerance:
    """``|a - b| <= atol + rtol * scale``, where ``scale`` is the magnitude of the values compared."""

    atol: float
    rtol: float

    def bound(self, scale: float) -> float:
        return self.atol + self.rtol * abs(scale)

    def describe(self) -> str:
        return f"atol {self.atol:.2g} + rtol {self.rtol:.2g} x scale"


def logits_tolerance(dtype: torch.dtype) -> Tolerance:
    """For logits of a model with weights in ``dtype``; ``scale`` is the largest |logit| compared."""
    if dtype in (torch.float16, torch.bfloat16):
        return Tolerance(0.0, HALF_PRECISION_ULPS * torch.finfo(dtype).eps)
    return Tolerance(1e-4, 1e-5)


def score_tolerance(dtype: torch.dtype) -> Tolerance:
    """For head-averaged attention probabilities (HF returns them rounded to ``dtype``); ``scale`` is the score
    of the k-th kept token. Two tokens whose scores differ by less are exchangeable in a top-k."""
    if dtype in (torch.float16, torch.bfloat16):
        return Tolerance(1e-6, HALF_PRECISION_ULPS * torch.finfo(dtype).eps)
    return Tolerance(1e-6, 1e-5)


def weight_dtype(module: torch.nn.Module) -> torch.dtype:
    """The floating dtype of ``module``'s weights (fp32 when it has none, e.g. all quantized)."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
