"""Generated MyST-markdown pages from the latest benchmark reports (tables, figures, targets, analysis)."""

from __future__ import annotations

from pathlib import Path

from .plots import kv_per_layer, node_costs, prefill_bars, prefill_dtypes, realized_vs_ideal, scaling
from .report import Report
from .targets import prefill_targets, speed_targets

SPEED_COMMAND = "python benchmarks/speed.py"
PREFILL_COMMAND = "python benchmarks/prefill.py"
GPU_COMMAND = "python benchmarks/speed.py --preset llava-7b --device cuda --dtype bfloat16"


TORCH_COMPILE_NOTE = (
    "`<variant>-compiled` is that variant under `torch.compile` (default inductor backend), timed after its first "
    "calls (which compile; their seconds are the last column). The pruned model's selections run eagerly, behind "
    "graph breaks at its cuts; *torch.compile* in docs/guides/loading-and-running.md gives their number and why.\n")


def _ms(seconds) -> str:
    return "–" if seconds is None else f"{seconds * 1e3:,.1f}"


def _mib(nbytes) -> str:
    return "–" if nbytes is None else f"{nbytes / 2**20:,.1f}"


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _f(x, digits=3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _spread(summary: dict) -> str:
    return f"{_ms(summary['median'])} [{_ms(summary['q1'])}–{_ms(summary['q3'])}]"


def machine_table(report: Report) -> str:
    m = report.machine
    device = m.get("gpu") or m.get("cpu_model")
    rows = [["device", f"{m['device']}: {device}"], ["CPU", f"{m['cpu_model']} ({m['cpu_count']} cores visible)"],
            ["torch threads", m["torch_threads"]], ["torch / transformers", f"{m['torch']} / {m['transformers']}"],
            ["dtype", report.settings.get("dtype") or ", ".join(report.settings.get("dtypes", []))],
            ["load average (1, 5, 15 min) at start", m.get("load_average_start")],
            ["load average at end", m.get("load_average_end")], ["run at (UTC)", m["timestamp_utc"]],
            ["source", _source(m.get("source"))]]
    return _table(["", ""], rows)


def _source(src) -> str:
    if not src:
        return "unknown"
    dirty = f", {src['modified_files']} tracked files modified" if src.get("modified_files") else ""
    return f"git {src['commit'][:10]}{dirty}"


def targets_table(targets: list[dict]) -> str:
    rows = []
    for t in targets:
        met = {True: "**met**", False: "**missed**", None: "not measured"}[t["met"]]
        value = t["value"] if isinstance(t["value"], bool) or t["value"] is None else f"{t['value']:.3f}"
        rows.append([t["name"], value, t["threshold"], met, t["detail"]])
    return _table(["target", "measured", "threshold", "status", "how"], rows)


def variants_table(variants: dict) -> str:
    rows = []
    for name, v in variants.items():
        decode = v.get("decode")
        rows.append([f"`{name}`", v["label"], _f(v["flops"]["fraction"]), _f(v["predicted_speedup"], 2),
                     _spread(v["prefill"]), _f(v["time_fraction"]), _f(v["realized_speedup"], 2),
                     _f(v["realized_over_ideal"], 2), _ms(decode["median"]) if decode else "–",
                     f"{_mib(v['kv_cache']['total_bytes'])} ({_f(v['kv_cache']['fraction_of_original'], 2)})",
                     _mib(v["peak_memory"]["peak_bytes"])])
    return _table(["variant", "what", "FLOPs fraction", "predicted speed-up", "prefill ms, median [IQR]",
                   "time fraction", "realized speed-up", "realized / ideal", "decode ms/token",
                   "KV cache MiB (fraction)", "peak memory MiB"], rows)


def torch_compile_table(variants: dict) -> str:
    """Each ``<name>-compiled`` variant against ``<name>`` (eager) and, for pruned ones, against the original
    under torch.compile: what compiling adds, and whether pruning still pays once both are compiled."""
    base = variants.get("original-compiled")
    rows = []
    for name, v in variants.items():
        if v.get("kind") != "torch.compile":
            continue
        eager = variants.get(name[: -len("-compiled")])
        first = v.get("first_calls") or {}
        vs_compiled = ["–"] * 3
        if base is not None and name != "original-compiled":
            speedup = base["prefill"]["median"] / v["prefill"]["median"]
            vs_compiled = [_f(speedup, 2), _f(v["predicted_speedup"], 2), _f(speedup / v["predicted_speedup"], 2)]
        rows.append([f"`{name}`", _spread(v["prefill"]), _ms(eager["prefill"]["median"]) if eager else "–",
                     _f(eager["prefill"]["median"] / v["prefill"]["median"], 2) if eager else "–",
                     _f(v["realized_speedup"], 2), _f(v["realized_over_ideal"], 2), *vs_compiled,
                     ", ".join(f"{t:.1f}" for t in first.get("prefill_s", [])) or "–"])
    return _table(["variant", "prefill ms, median [IQR]", "same variant eager ms", "speed-up from torch.compile",
                   "realized speed-up (vs eager original)", "realized / ideal (vs eager original)",
                   "speed-up vs original + torch.compile", "predicted (FLOPs)", "realized / ideal (both compiled)",
                   "first two calls s"], rows)


def node_table(costs: dict) -> str:
    rows = []
    for name, nc in costs.items():
        for cut, entry in nc["cuts"].items():
            select = sum(s for n, s in entry["nodes"].items() if n.endswith("_select"))
            rows.append([f"`{name}`", cut, _ms(entry["seconds"]), _ms(select), _ms(nc["prefill_seconds"]),
                         _pct(entry["fraction_of_prefill"])])
    return _table(["variant", "cut before layer", "inserted nodes ms", "of which select (scoring) ms",
                   "interpreted prefill ms", "share of prefill"], rows)


def layer_analysis(variant: dict, nodes: dict, num_text: int) -> str:
    """Why a measured speed-up falls short: per-layer time of pruned layers vs the FLOPs ratio."""
    layers = nodes.get("layer_seconds") or []
    tokens = variant["flops"]["tokens_per_layer"]
    per_layer = variant["flops"]["per_layer"]
    if not layers or len(layers) != len(tokens):
        return ""
    full = [t for t, n in zip(layers, tokens) if n == tokens[0]]
    pruned = [(t, n, f) for t, n, f in zip(layers, tokens, per_layer) if n < tokens[0]]
    if not full or not pruned:
        return ""
    full_t = sum(full) / len(full)
    lines = [(f"Per-layer times inside the pruned prefill (fx interpreter): full-length layers take "
             f"{_ms(full_t)} ms on average.")]
    for n in sorted({n for _, n, _ in pruned}, reverse=True):
        ts = [t for t, k, _ in pruned if k == n]
        flop = next(f for _, k, f in pruned if k == n) / per_layer[0]
        lines.append(f"Layers with {n} tokens take {_ms(sum(ts) / len(ts))} ms, {_f(sum(ts) / len(ts) / full_t)} of "
                     f"a full layer, against a FLOPs ratio of {_f(flop)}.")
    lines.append(f"Time outside the language model's graph (vision stand-in, embedding merge, LM head, wrapper): "
                 f"{_ms(nodes['outside_graph_seconds'])} ms of {_ms(nodes['prefill_seconds'])} ms; no schedule "
                 "reduces it and the FLOPs prediction does not count it.")
    return " ".join(lines) + "\n"


def affine_note(original_s: float, short_s: float, short_tokens: int, variant: dict, measured_s: float) -> str:
    """Compare the measured time with 'fixed cost + FLOPs-proportional rest' (fixed cost = a short prompt's time)."""
    fraction = variant["flops"]["fraction"]
    predicted = short_s + (original_s - short_s) * fraction
    return (f"A text-only prompt of {short_tokens} tokens already takes {_ms(short_s)} ms, "
            f"{_pct(short_s / original_s)} of the full prefill: a per-call cost that does not scale with the number "
            "of tokens (reading every layer's weights, per-operator overheads) and that no schedule "
            f"removes. Counting it as fixed and scaling only the rest by the FLOPs fraction predicts "
            f"{_ms(predicted)} ms for this variant; measured: {_ms(measured_s)} ms "
            f"(realized / this prediction: {_f(predicted / measured_s, 2)}).\n")


def scaling_table(measured: dict) -> str:
    rows = []
    for r in measured["rows"]:
        o, f = r["prefill"]["original"], r["prefill"]["fastv"]
        frac = f["median"] / o["median"]
        ideal = r["flops_fraction"]["fastv"]
        dec = r.get("decode") or {}
        rows.append([r["num_vision_tokens"], _spread(o), _spread(f), _f(frac), _f(ideal), _f(ideal / frac, 2),
                     _ms(dec["original"]["median"]) if dec else "–", _ms(dec["fastv"]["median"]) if dec else "–",
                     r.get("load_average")])
    return _table(["vision tokens", "original prefill ms", "FastV prefill ms", "time fraction", "FLOPs fraction",
                   "realized / ideal", "original decode ms/token", "FastV decode ms/token", "load average"], rows)


def compile_table(comp: dict) -> str:
    rows = [["trace + rewrite (+ analysis, lint)", f"{comp['trace_rewrite_s']:.3f} s"],
            ["probe self-check (default)", f"{comp['selfcheck_s']:.3f} s ({comp['selfcheck_method']})"],
            ["total (default)", f"{comp['total_s']:.3f} s"]]
    for mode, m in comp.get("modes", {}).items():
        if mode != comp.get("selfcheck_mode"):
            how = m.get("method", "measured")
            rows.append([f"total with self_check={mode!r}", f"{m['total_s']:.3f} s ({how})"])
    rows += [["weights", comp["weights"]], ["schedule", f"{comp['schedule']['name']} ({comp['num_cuts']} cuts)"]]
    return _table(["compile step", "median"], rows)


def flops_table(flops: dict) -> str:
    rows = [[f"`{name}`", _f(f["fraction"]), _f(f.get("paper_fraction")), _f(f["predicted_speedup"], 2)]
            for name, f in flops.items()]
    return _table(["schedule", "exact FLOPs fraction", "paper-convention fraction", "predicted speed-up"], rows)


_DART_NOTE = (" A selector's `select` node holds everything the selector computes: for `fastv-dart` that is mostly "
              "the scoring layer's key projection, recomputed over the whole prompt because DART ranks its pivots by "
              "the L1 norm of the keys before RoPE, which the cache (rotated keys) cannot give.")


def _runnable_section(report: Report, docs_dir: Path, tag: str) -> list[str]:
    res = report.results
    out = [(f"Prompt: {report.settings['num_text_tokens']} text + {report.settings['num_vision_tokens']} vision "
           f"tokens, batch 1; {report.settings['repeats']} interleaved rounds after {report.settings['warmup']} "
           f"warm-up; decode: {report.settings['decode_tokens']} greedy tokens x {report.settings['decode_repeats']} "
           "rounds.\n"), machine_table(report), "### Targets\n", targets_table(speed_targets(report)),
           "### Prefill, decode, memory\n",
           ("FLOPs are the language model's exact prefill FLOPs (`tokenprune.prefill_flops`); *time fraction* is the "
           "measured median over the original's; *realized / ideal* is the measured speed-up over the FLOPs-predicted "
           "one. Peak memory is the extra memory of one prefill call (method: "
           f"{next(iter(res['variants'].values()))['peak_memory']['method']}).\n"), variants_table(res["variants"]),
           ("`masked-fastv` is the masking baseline: the FastV schedule implemented the way several public "
           "implementations do it, by masking the dropped tokens' key columns in every later layer instead of removing "
           "them. It keeps the same tokens as `fastv` (its logits at kept positions equal the pruned model's; a test "
           "checks this) but computes every token in every layer and keeps the full KV cache. It runs eager attention "
           "because its scores are read from Hugging Face's attention weights of the layer before the cut.\n")]
    if any(v.get("kind") == "torch.compile" for v in res["variants"].values()):
        out += ["### torch.compile\n", TORCH_COMPILE_NOTE, torch_compile_table(res["variants"])]
    figs = [prefill_bars(report, docs_dir / f"{tag}-prefill.png"),
            realized_vs_ideal(report, docs_dir / f"{tag}-realized.png"),
            kv_per_layer(report, docs_dir / f"{tag}-kv.png")]
    out += [f"![{f.stem}]({f.name})\n" for f in figs]
    if "fastv" in res["variants"] and "fastv" in res["node_costs"]:
        out += ["**Where the FastV time goes.** " + layer_analysis(res["variants"]["fastv"], res["node_costs"]["fastv"],
                                                                   report.settings["num_text_tokens"])]
        over = res["variants"].get("keep-all", {}).get("fixed_overhead")
        if over:
            fastv = res["variants"]["fastv"]
            out.append(affine_note(res["variants"]["original"]["prefill"]["median"], over["original"]["median"],
                                   over["tokens"], fastv, fastv["prefill"]["median"]))
    out += ["### Inserted nodes per cut\n",
            ("Every `cut{l}_*` node of a pruned prefill timed by an fx `Interpreter` (device-synchronised), medians "
            f"over {report.settings['node_repeats']} runs.{_DART_NOTE if 'fastv-dart' in res['node_costs'] else ''}\n"),
            node_table(res["node_costs"]),
            f"![nodes]({node_costs(report, docs_dir / f'{tag}-nodes.png').name})\n",
            "### Compile time\n", compile_table(res["compile"])]
    if res.get("scaling"):
        out += ["### Scaling with the number of vision tokens\n",
                (f"{report.settings['scaling_repeats']} interleaved rounds per size (fewer than above: large sizes are "
                f"slow on this machine); decode: {report.settings['scaling_decode_tokens']} tokens.\n"),
                scaling_table(res["scaling"]),
                f"![scaling]({scaling(report, docs_dir / f'{tag}-scaling.png').name})\n"]
    return out


def _selfcheck_note(comp: dict) -> str:
    weights, params = comp.get("decoder_weight_bytes"), comp.get("decoder_params")
    full = comp.get("modes", {}).get("full", comp)
    if not weights or not params or not full.get("selfcheck_s"):
        return ""
    rows = 2 * (2 * 7 + 2 * 1)  # two models x (probe prefill of 2 x 7 tokens + one decode step of 2 x 1)
    gflop = 2 * params * rows / 1e9
    return (f"Why the full self-check is slow: it runs the original and the rewritten language model on the probe (a "
            f"left-padded batch of 2 x 7 tokens, then one cached decode step), i.e. 4 passes over all "
            f"{weights / 1e9:.1f} GB of decoder weights and about {gflop:.0f} GFLOP of matrix multiplies; measured "
            f"here at an effective {gflop / full['selfcheck_s']:.1f} GFLOP/s and "
            f"{4 * weights / 1e9 / full['selfcheck_s']:.1f} GB/s of weights. The default `self_check=\"layers\"` runs "
            "only the first decoder layer of each attention type for real (stand-ins that record their inputs "
            "replace the others in both models), so its cost does not grow with depth. Trace + rewrite alone, the "
            f"part that needs no weights, take {comp['trace_rewrite_s']:.2f} s.\n")


def _compile_only_section(report: Report) -> list[str]:
    res = report.results
    return [machine_table(report), "### Targets\n", targets_table(speed_targets(report)), "### Compile time\n",
            compile_table(res["compile"]), _selfcheck_note(res["compile"]), "### Predicted FLOPs of the schedules\n",
            f"{report.settings['num_text_tokens']} text + {report.settings['num_vision_tokens']} vision tokens.\n",
            flops_table(res["flops_only"])]


def speed_page(reports: list[Report], docs_dir: Path) -> str:
    """The speed page; its figures are written next to it, into ``docs_dir``."""
    out = ["# Speed and memory benchmarks\n",
           (f"Reproduce every table and figure on this page with one command: `{SPEED_COMMAND}` "
           f"(the GPU section: `{GPU_COMMAND}`). Reports are written to `benchmarks/results/` as JSON; this page is "
           "generated from the latest of them.\n"),
           ("All models are random-weight LLaVA-1.5 layouts whose language model has the benchmarked shape; the vision "
           "tower is a one-layer stand-in (pruning never touches it). Timings are medians of interleaved runs on a "
           "shared machine; the spread (IQR) and the load average are reported next to them.\n")]
    cpu = [r for r in reports if not r.settings["device"].startswith("cuda")]
    gpu = [r for r in reports if r.settings["device"].startswith("cuda")]
    for r in cpu:
        tag = f"speed-{r.preset['name']}-{r.settings['device']}-{r.settings['dtype']}"
        out.append(f"## {r.preset['name']} on CPU, {r.settings['dtype']}: {r.preset['description']}\n")
        out += _runnable_section(r, docs_dir, tag) if "variants" in r.results else _compile_only_section(r)
    out.append("## GPU\n")
    if not gpu:
        out.append("No GPU was available in this session, so there is no GPU table yet. The engine supports CUDA "
                   f"(CUDA-event timing, `torch.cuda.max_memory_allocated`); run `{GPU_COMMAND}` on a GPU machine "
                   "and regenerate this page.\n")
    for r in gpu:
        tag = f"speed-{r.preset['name']}-cuda-{r.settings['dtype']}"
        out.append(f"### {r.preset['name']} on {r.machine.get('gpu')}, {r.settings['dtype']}\n")
        out += _runnable_section(r, docs_dir, tag)
    return "\n".join(out)


def _keep_all_note(res: dict) -> str:
    """Say when the whole-run keep-all ratio is within its own noise and what the micro-benchmark measured."""
    notes = []
    for dtype, d in res["dtypes"].items():
        pr = d["realized"]["keep-all"]["paired_ratio"]
        over = d["keep_all_overhead"]
        if pr["median"] > 1.02:
            noisy = pr["q1"] <= 1.0 <= pr["q3"]
            head = (f"{dtype}: the whole-run keep-all ratio {_f(pr['median'])} misses 1.02; its IQR "
                    f"[{_f(pr['q1'])}–{_f(pr['q3'])}] ")
            micro = ("the micro-benchmark measures the compiled model's per-call overhead at "
                     f"{_ms(over['overhead_s'])} ms ({_pct(over['fraction_of_prefill'])} of the prefill).")
            if noisy:
                notes.append(head + "includes 1.0, so the whole-run gap is within noise, and " + micro)
            else:
                notes.append(head + "excludes 1.0: the gap is consistent across rounds in this run, yet " + micro +
                             " The gap is therefore not a per-call cost; it is not explained yet and the target is "
                             "counted as missed for this run.")
    return ("\n".join(notes) + "\n") if notes else ""


def prefill_page(report: Report, docs_dir: Path) -> str:
    res, s = report.results, report.settings
    out = ["# Prefill benchmark: original vs compiled keep-all vs FastV\n",
           (f"Reproduce with one command: `{PREFILL_COMMAND}` (writes `benchmarks/results/prefill-cpu.json`, the figure "
           "and this page).\n"),
           (f"Random LLaVA whose language model is the `{report.preset['name']}` preset "
           f"({report.preset['description']}), {s['num_vision_tokens']} vision + {s['num_text_tokens']} text "
           "tokens, batch 1, CPU. Medians over "
           f"{s['repeats']} interleaved rounds after {s['warmup']} warm-up; *paired ratio* is the median of the "
           "per-round time ratios to the original, with its IQR.\n"), machine_table(report), "## Targets\n",
           targets_table(prefill_targets(report)), _keep_all_note(res)]
    for dtype, d in res["dtypes"].items():
        rows = []
        for name, v in d["variants"].items():
            r = d["realized"][name]
            pr = r["paired_ratio"]
            rows.append([f"`{name}`", v["label"], _spread(v["prefill"]),
                         f"{_f(pr['median'])} [{_f(pr['q1'])}–{_f(pr['q3'])}]", _f(v["flops"]["fraction"]),
                         _f(r["realized_speedup"], 2), _f(r["predicted_speedup"], 2), _f(r["realized_over_ideal"], 2)])
        out += [f"## {dtype}\n", f"Load average after this dtype: {d['load_average']}.\n",
                _table(["variant", "what", "prefill ms, median [IQR]", "paired time ratio [IQR]", "exact FLOPs ratio",
                        "realized speed-up", "FLOPs-predicted speed-up", "realized / ideal"], rows),
                node_table(d["node_costs"]),
                "**Where the FastV time goes.** " + layer_analysis(d["variants"]["fastv"] | d["realized"]["fastv"],
                                                                   d["node_costs"]["fastv"], s["num_text_tokens"]),
                affine_note(d["variants"]["original"]["prefill"]["median"],
                            d["keep_all_overhead"]["original"]["median"], d["keep_all_overhead"]["tokens"],
                            d["variants"]["fastv"], d["variants"]["fastv"]["prefill"]["median"])]
    fig = prefill_dtypes(report, docs_dir / "prefill-ratios.png")
    out.append(f"![prefill ratios]({fig.name})\n")
    out.append("The compiled keep-all model inserts no nodes (a schedule without cuts); its only extra work is the "
               "Python wrapper around the traced graph, so the whole-run keep-all ratio measures that overhead plus "
               "noise. The per-call overhead is therefore also measured directly: compiled keep-all minus original on "
               "a short text-only prompt, where the layers cost little:\n")
    rows = []
    for dtype, d in res["dtypes"].items():
        o = d["keep_all_overhead"]
        rows.append([dtype, o["tokens"], _spread(o["original"]), _spread(o["compiled"]), _ms(o["overhead_s"]),
                     _pct(o["fraction_of_prefill"])])
    out.append(_table(["dtype", "prompt tokens", "original ms [IQR]", "compiled keep-all ms [IQR]",
                       "overhead ms", f"share of the {s['num_vision_tokens'] + s['num_text_tokens']}-token prefill"],
                      rows))
    return "\n".join(out)


def write_pages(results_dir: str | Path = "benchmarks/results", docs_dir: str | Path = "docs/benchmarks") -> list[Path]:
    """Regenerate ``speed.md`` / ``prefill.md`` and their figures in ``docs_dir`` from every report in
    ``results_dir`` (which holds only the JSON reports)."""
    results_dir, docs_dir = Path(results_dir), Path(docs_dir)
    docs_dir.mkdir(parents=True, exist_ok=True)
    written = []
    speed = [Report.read(p) for p in sorted(results_dir.glob("speed-*.json"))]
    speed.sort(key=lambda r: (r.settings["device"], "variants" not in r.results, r.preset["name"]))
    if speed:
        path = docs_dir / "speed.md"
        path.write_text(speed_page(speed, docs_dir))
        written.append(path)
    prefill = results_dir / "prefill-cpu.json"
    if prefill.exists():
        path = docs_dir / "prefill.md"
        path.write_text(prefill_page(Report.read(prefill), docs_dir))
        written.append(path)
    return written
