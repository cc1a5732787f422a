"""Compile time: trace + rewrite, and the probe self-check, of ``tokenprune.compile``.

``compile(self_check="off")`` is trace + rewrite (+ graph analysis and lint); the default ``"layers"`` check
runs the first decoder layer of each attention type for real and stand-ins for the others; ``"full"`` runs
the whole stack. Tracing needs no weights, so a meta-device model times trace + rewrite at any size. The
``"layers"`` check only needs the weights of the modules it runs, so for the 7B shape on a CPU exactly those
are materialised (:func:`materialise_probe_modules`) and it is measured at full depth. The ``"full"`` check
needs every weight: it is measured on a model of the same width with ``probe_layers`` decoder layers and
scaled linearly to the full depth (reported as such).
"""

from __future__ import annotations

import statistics
import time

import torch

import tokenprune as tp
from tokenprune.rewrites.selfcheck import probe_modules

from .presets import Preset, build_model
from .variants import schedules


def _median_seconds(fn, repeats: int) -> tuple[float, list[float]]:
    values = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        values.append(time.perf_counter() - start)
    return statistics.median(values), values


def time_compile(model, schedule, repeats: int = 3, modes: tuple[str, ...] = ("layers",)) -> dict:
    """Median seconds of ``compile`` without a self-check and with each self-check mode of ``modes``."""
    _median_seconds(lambda: tp.compile(model, "llava", schedule, self_check="off"), 1)  # warm imports and caches
    rewrite, samples = _median_seconds(lambda: tp.compile(model, "llava", schedule, self_check="off"), repeats)
    out = {"trace_rewrite_s": rewrite, "trace_rewrite_samples": samples, "modes": {}}
    for mode in modes:
        total, samples = _median_seconds(lambda: tp.compile(model, "llava", schedule, self_check=mode), repeats)
        out["modes"][mode] = {"total_s": total, "total_samples": samples, "selfcheck_s": max(total - rewrite, 0.0)}
    if modes:
        out.update({"total_s": out["modes"][modes[0]]["total_s"], "selfcheck_s": out["modes"][modes[0]]["selfcheck_s"],
                    "selfcheck_mode": modes[0], "selfcheck_method": f"measured, self_check={modes[0]!r}"})
    return out


def materialise_probe_modules(model, spec, schedule, device="cpu", seed: int = 0) -> list[str]:
    """Give random weights to the modules of a meta-device model that the ``"layers"`` self-check runs.

    Linear and embedding weights ~ N(0, 0.02), norm weights 1, biases 0; the rotary module is rebuilt from
    the config (its inverse frequencies are computed at construction). Returns the materialised names.
    """
    lm = tp.spec.resolve_module(model, spec.language_model, "language_model")
    gen = torch.Generator().manual_seed(seed)
    names = []
    for name, module, recursive in probe_modules(lm, spec, schedule.cuts, "layers"):
        if spec.rotary_embedding and name == spec.rotary_embedding:
            parent_path, _, attr = name.rpartition(".")
            parent = tp.spec.resolve_module(lm, parent_path, "rotary_embedding") if parent_path else lm
            with torch.device(device):  # its buffers (inverse frequencies) are computed at construction
                setattr(parent, attr, type(module)(config=lm.config))
            names.append(name)
            continue
        for sub in module.modules() if recursive else [module]:
            for key, param in list(sub._parameters.items()):
                if param is None or not param.is_meta:
                    continue
                value = torch.empty(param.shape, dtype=param.dtype)
                if param.dim() >= 2:
                    value.copy_(torch.randn(param.shape, generator=gen) * 0.02)
                else:
                    value.fill_(0.0 if key == "bias" else 1.0)
                sub._parameters[key] = torch.nn.Parameter(value.to(device), requires_grad=False)
        names.append(name)
    return names


def measure_compile(preset: Preset, dtype: torch.dtype, device: str | torch.device, model=None,
                    repeats: int = 3, probe_layers: int = 2) -> dict:
    """Compile time of the preset's multi-cut schedule; ``model=None`` compiles a meta-device model whose
    probed modules are materialised, and estimates the ``"full"`` check from ``probe_layers`` layers."""
    schedule = schedules(preset.num_layers)["gsearch-like"]
    if model is not None:
        result = time_compile(model, schedule, repeats, modes=("layers", "full"))
        result["weights"] = "materialised"
    else:
        partial = build_model(preset, dtype, "meta")
        materialised = materialise_probe_modules(partial, tp.load_spec("llava"), schedule, device)
        result = time_compile(partial, schedule, repeats, modes=("layers",))
        result["weights"] = (f"meta except the {len(materialised)} modules the 'layers' check runs "
                             "(real layer, scoring projections, norm, rotary)")
        layers = partial.model.language_model.layers
        result["decoder_weight_bytes"] = sum(p.numel() * p.element_size() for p in layers.parameters())
        result["decoder_params"] = sum(p.numel() for p in layers.parameters())
        del partial
        # The "full" probe runs the language model on embeddings: the vocabulary does not enter it, so keep it small.
        small = build_model(preset, dtype, device, num_layers=probe_layers, text_overrides={"vocab_size": 1024})
        small_schedule = tp.Schedule.fastv(probe_layers, layer=1, keep=0.5)
        part = time_compile(small, small_schedule, repeats, modes=("full",))
        del small
        scale = preset.num_layers / probe_layers
        result["modes"]["full"] = {"selfcheck_s": part["selfcheck_s"] * scale, "selfcheck_probe_s": part["selfcheck_s"],
                                   "method": f"measured on {probe_layers} decoder layers of the same shape, "
                                             f"scaled x{scale:g} to {preset.num_layers} layers"}
        result["modes"]["full"]["total_s"] = result["trace_rewrite_s"] + result["modes"]["full"]["selfcheck_s"]
    result["schedule"] = schedule.to_dict()
    result["num_cuts"] = len(schedule.cuts)
    return result
