"""The two benchmark runs: ``run_speed`` (every measurement of a preset) and ``run_prefill`` (the prefill page).

Both return a :class:`~tokenprune.bench.report.Report` and never assert on speed: targets are evaluated
into the report (met / missed, by how much) because timings on shared machines are noisy.
"""

from __future__ import annotations

import gc

import torch

from .compiletime import measure_compile
from .machine import load_average, machine_info
from .measure import (expected_kv_tokens, first_calls, fixed_overhead, kv_cache, memory, realized,
                      time_decode, time_prefill)
from .measure import flops as variant_flops
from .nodecost import cut_costs
from .presets import Preset, build_model, get_preset, make_inputs
from .report import Report
from .targets import prefill_targets, speed_targets
from .variants import SELECTORS, build_variants, selector_variants

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SPEED_VARIANTS = ["original", "keep-all", "fastv", "pdrop", "gsearch-like", "masked-fastv", "original-compiled",
                  "fastv-compiled"]


def _log(echo, msg: str) -> None:
    if echo is not None:
        echo(msg)


def _measure_variants(model, variants, inputs, preset: Preset, n_vis: int, n_text: int, device, repeats: int,
                      warmup: int, decode_tokens: int, decode_repeats: int, node_repeats: int, echo,
                      selectors=()) -> dict:
    config = model.config
    flops = {name: variant_flops(config, v, n_text, n_vis) for name, v in variants.items()}
    first_seconds = {}
    for name, v in variants.items():
        if v.kind == "torch.compile":
            _log(echo, f"  torch.compile: first calls of {name} (prefill, then {min(decode_tokens, 2)} decode steps)")
            first_seconds[name] = first_calls(v, inputs, min(decode_tokens, 2), device)
    _log(echo, f"  prefill: {len(variants)} variants x {repeats} interleaved rounds")
    times = time_prefill(variants, inputs, repeats, warmup, device)
    real = realized(times, flops)
    _log(echo, "  decode")
    decode = time_decode(variants, inputs, decode_tokens, decode_repeats, device) if decode_tokens else {}
    out = {}
    for name, v in variants.items():
        kv = kv_cache(v, inputs)
        kv["expected_tokens_per_layer"] = expected_kv_tokens(v, n_text, n_vis)
        gc.collect()
        out[name] = {"label": v.label, "kind": v.kind, "schedule": v.schedule.to_dict(), "flops": flops[name],
                     "prefill": times[name], **real[name], "decode": decode.get(name), "kv_cache": kv,
                     "peak_memory": memory(v, inputs, device)}
        if name in first_seconds:
            out[name]["first_calls"] = first_seconds[name]
    base_kv = out["original"]["kv_cache"]["total_bytes"] if "original" in out else None
    for entry in out.values():
        entry["kv_cache"]["fraction_of_original"] = entry["kv_cache"]["total_bytes"] / base_kv if base_kv else None
    if "original" in variants and "keep-all" in variants:
        out["keep-all"]["fixed_overhead"] = _overhead(variants, times, device)
    _log(echo, "  inserted-node micro-benchmark")
    nodes = {name: cut_costs(v.model, inputs, node_repeats, device)
             for name, v in variants.items() if v.kind == "compiled" and not v.schedule.is_keep_all()}
    for name, v in selector_variants(model, selectors).items():
        _log(echo, f"  inserted nodes of {name}")
        nodes[name] = cut_costs(v.model, inputs, node_repeats, device)
    return {"variants": out, "node_costs": nodes}


def _scaling(model, preset: Preset, sizes, names, device, repeats: int, decode_tokens: int, echo) -> dict:
    variants = build_variants(model, names)
    rows = []
    for i, n_vis in enumerate(sizes):
        _log(echo, f"  scaling: {n_vis} vision tokens")
        inputs, _ = make_inputs(model, preset, n_vis, device=device)
        flops = {name: variant_flops(model.config, v, preset.num_text_tokens, n_vis) for name, v in variants.items()}
        # One warm-up round at the first size only: larger sizes take seconds per call, warm-up effects are small.
        times = time_prefill(variants, inputs, repeats, warmup=1 if i == 0 else 0, device=device)
        decode = time_decode(variants, inputs, decode_tokens, 1, device) if decode_tokens else {}
        rows.append({"num_vision_tokens": n_vis, "flops_fraction": {k: f["fraction"] for k, f in flops.items()},
                     "prefill": times, "decode": decode, "load_average": load_average()})
        gc.collect()
    return {"variants": list(variants), "rows": rows}


def run_speed(preset: str = "llama-12l", device: str = "cpu", dtype: str = "float32", repeats: int = 5,
              warmup: int = 1, decode_tokens: int | None = None, decode_repeats: int = 2, node_repeats: int = 3,
              scaling: list[int] | None = None, scaling_repeats: int = 3, scaling_decode_tokens: int = 8,
              variants: list[str] | None = None, threads: int | None = None, selectors=SELECTORS,
              nodes_only: bool = False, echo=print) -> Report:
    """Every speed-page measurement on one preset; a CPU run of a non-CPU preset only compiles (meta).

    ``selectors``: the FastV schedule compiled with each of them (``fastv-NAME``) adds rows to the inserted-node
    micro-benchmark only (not to the prefill, decode and memory tables). ``nodes_only``: that micro-benchmark
    alone, for FastV and the selectors (a report without the tables the page needs)."""
    if threads:
        torch.set_num_threads(threads)
    p = get_preset(preset)
    torch_dtype = DTYPES[dtype]
    decode_tokens = p.decode_tokens if decode_tokens is None else decode_tokens
    sizes = list(p.scaling if scaling is None else scaling)
    settings = {"device": device, "dtype": dtype, "repeats": repeats, "warmup": warmup, "decode_tokens": decode_tokens,
                "decode_repeats": decode_repeats, "node_repeats": node_repeats, "scaling": sizes,
                "scaling_repeats": scaling_repeats, "scaling_decode_tokens": scaling_decode_tokens,
                "num_vision_tokens": p.num_vision_tokens, "num_text_tokens": p.num_text_tokens,
                "selectors": list(selectors), "nodes_only": nodes_only}
    report = Report("speed", p.to_dict(), machine_info(device, torch_dtype), settings)
    runnable = torch.device(device).type == "cuda" or p.cpu_runnable
    if not runnable:
        _log(echo, f"{p.name}: weights are not materialised on {device}; measuring compile time only")
        report.results["compile"] = measure_compile(p, torch_dtype, device)
        meta = build_model(p, torch_dtype, "meta")
        report.results["flops_only"] = {name: variant_flops(meta.config, v, p.num_text_tokens, p.num_vision_tokens)
                                        for name, v in _schedule_variants(meta).items()}
    elif nodes_only:
        _log(echo, f"{p.name}: inserted nodes of FastV and of the selectors, random {dtype} model on {device}")
        model = build_model(p, torch_dtype, device)
        inputs, _ = make_inputs(model, p, device=device)
        timed = {**build_variants(model, ["fastv"]), **selector_variants(model, selectors)}
        report.results["node_costs"] = {name: cut_costs(v.model, inputs, node_repeats, device)
                                        for name, v in timed.items()}
    else:
        _log(echo, f"{p.name}: building a random {dtype} model on {device}")
        model = build_model(p, torch_dtype, device)
        inputs, _ = make_inputs(model, p, device=device)
        names = variants or SPEED_VARIANTS
        built = build_variants(model, names)
        report.results.update(_measure_variants(model, built, inputs, p, p.num_vision_tokens, p.num_text_tokens,
                                                device, repeats, warmup, decode_tokens, decode_repeats,
                                                node_repeats, echo, selectors))
        del built
        gc.collect()
        _log(echo, "  compile time")
        report.results["compile"] = measure_compile(p, torch_dtype, device, model=model)
        if sizes:
            report.results["scaling"] = _scaling(model, p, sizes, ["original", "fastv"], device, scaling_repeats,
                                                 scaling_decode_tokens, echo)
    report.results["targets"] = speed_targets(report)
    report.machine["load_average_end"] = load_average()
    return report


def _overhead(variants, times, device) -> dict:
    over = fixed_overhead(variants["original"], variants["keep-all"], device=device)
    over["fraction_of_prefill"] = over["overhead_s"] / times["original"]["median"]
    return over


def _schedule_variants(meta_model):
    from .variants import Variant, schedules

    layers = meta_model.config.text_config.num_hidden_layers
    out = {name: Variant(name, None, s, "compiled", name) for name, s in schedules(layers).items()}
    out["masked-fastv"] = Variant("masked-fastv", None, schedules(layers)["fastv"], "masked", "masked-fastv")
    return out


def run_prefill(dtypes: list[str] | None = None, repeats: int = 7, warmup: int = 1, node_repeats: int = 3,
                threads: int | None = None, device: str = "cpu", preset: str = "llama-12l", echo=print) -> Report:
    """The prefill benchmark: original, keep-all and FastV(K=2, keep 25%) prefill, fp32 and bf16."""
    if threads:
        torch.set_num_threads(threads)
    p = get_preset(preset)
    dtypes = dtypes or ["float32", "bfloat16"]
    settings = {"device": device, "dtypes": dtypes, "repeats": repeats, "warmup": warmup,
                "node_repeats": node_repeats, "num_vision_tokens": p.num_vision_tokens,
                "num_text_tokens": p.num_text_tokens}
    report = Report("prefill", p.to_dict(), machine_info(device), settings)
    per_dtype = {}
    for dtype in dtypes:
        _log(echo, f"prefill benchmark, {dtype}")
        model = build_model(p, DTYPES[dtype], device)
        inputs, _ = make_inputs(model, p, device=device)
        variants = build_variants(model, ["original", "keep-all", "fastv"])
        flops = {name: variant_flops(model.config, v, p.num_text_tokens, p.num_vision_tokens)
                 for name, v in variants.items()}
        times = time_prefill(variants, inputs, repeats, warmup, device)
        per_dtype[dtype] = {
            "variants": {name: {"label": v.label, "schedule": v.schedule.to_dict(), "flops": flops[name],
                                "prefill": times[name]} for name, v in variants.items()},
            "realized": realized(times, flops),
            "node_costs": {"fastv": cut_costs(variants["fastv"].model, inputs, node_repeats, device)},
            "keep_all_overhead": _overhead(variants, times, device),
            "load_average": load_average(),
        }
        del model, variants
        gc.collect()
    report.results["dtypes"] = per_dtype
    report.results["targets"] = prefill_targets(report)
    report.machine["load_average_end"] = load_average()
    return report
