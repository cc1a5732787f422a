"""Compile time: trace + rewrite, and the probe self-check, of ``tokenprune.compile``.

``compile(check=False)`` is trace + rewrite (+ graph analysis and lint); ``compile(check=True)`` adds the
probe self-check, which runs the original and the rewritten language model on a 7-token probe. Tracing
needs no weights, so a meta-device model times trace + rewrite at any size. The self-check needs real
numbers: where the weights are not materialised (the 7B shape on a CPU) it is measured on a model of the
same width with ``probe_layers`` decoder layers and scaled linearly to the full depth (reported as such).
"""

from __future__ import annotations

import statistics
import time

import torch

import tokenprune as tp

from .presets import Preset, build_model
from .variants import schedules


def _median_seconds(fn, repeats: int) -> tuple[float, list[float]]:
    values = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        values.append(time.perf_counter() - start)
    return statistics.median(values), values


def time_compile(model, schedule, repeats: int = 3, check: bool = True) -> dict:
    """Median seconds of ``compile`` without and (if ``check``) with the self-check."""
    _median_seconds(lambda: tp.compile(model, "llava", schedule, check=False), 1)  # warm imports and caches
    rewrite, rewrite_samples = _median_seconds(lambda: tp.compile(model, "llava", schedule, check=False), repeats)
    out = {"trace_rewrite_s": rewrite, "trace_rewrite_samples": rewrite_samples}
    if check:
        full, full_samples = _median_seconds(lambda: tp.compile(model, "llava", schedule, check=True), repeats)
        out.update({"total_s": full, "total_samples": full_samples, "selfcheck_s": max(full - rewrite, 0.0),
                    "selfcheck_method": "measured"})
    return out


def measure_compile(preset: Preset, dtype: torch.dtype, device: str | torch.device, model=None,
                    repeats: int = 3, probe_layers: int = 2) -> dict:
    """Compile time of the preset's multi-cut schedule; ``model=None`` traces a meta-device model."""
    schedule = schedules(preset.num_layers)["gsearch-like"]
    if model is not None:
        result = time_compile(model, schedule, repeats)
        result["weights"] = "materialised"
    else:
        meta = build_model(preset, dtype, "meta")
        result = time_compile(meta, schedule, repeats, check=False)
        # The probe runs the language model on embeddings: the vocabulary does not enter it, so keep it small.
        small = build_model(preset, dtype, device, num_layers=probe_layers, text_overrides={"vocab_size": 1024})
        small_schedule = tp.Schedule.fastv(probe_layers, layer=1, keep=0.5)
        part = time_compile(small, small_schedule, repeats)
        del small
        scale = preset.num_layers / probe_layers
        result.update({"selfcheck_s": part["selfcheck_s"] * scale,
                       "selfcheck_method": f"measured on {probe_layers} decoder layers of the same shape, "
                                           f"scaled x{scale:g} to {preset.num_layers} layers",
                       "selfcheck_probe_s": part["selfcheck_s"], "weights": "meta (trace + rewrite)"})
        result["total_s"] = result["trace_rewrite_s"] + result["selfcheck_s"]
        layers = meta.model.language_model.layers
        result["decoder_weight_bytes"] = sum(p.numel() * p.element_size() for p in layers.parameters())
        result["decoder_params"] = sum(p.numel() for p in layers.parameters())
    result["schedule"] = schedule.to_dict()
    result["num_cuts"] = len(schedule.cuts)
    return result
