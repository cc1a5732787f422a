"""The issue targets, evaluated from a report's measurements: value, threshold, met, and by how much."""

from __future__ import annotations


def _target(name: str, value, threshold, met: bool | None, detail: str) -> dict:
    return {"name": name, "value": value, "threshold": threshold, "met": met, "detail": detail}


def _at_least(name, value, threshold, detail):
    if value is None:
        return _target(name, None, threshold, None, detail + " (not measured)")
    return _target(name, value, threshold, value >= threshold, detail)


def _at_most(name, value, threshold, detail):
    if value is None:
        return _target(name, None, threshold, None, detail + " (not measured)")
    return _target(name, value, threshold, value <= threshold, detail)


def worst_cut(node_costs: dict) -> tuple[float | None, str | None]:
    """The largest share of its prefill that one cut costs, over every variant's cuts, and that variant's name."""
    cuts = [(c["fraction_of_prefill"], name) for name, nc in node_costs.items() for c in nc["cuts"].values()]
    return max(cuts) if cuts else (None, None)


def _worst_cut_target(node_costs: dict, over: str) -> dict:
    fraction, variant = worst_cut(node_costs)
    return _at_most("inserted nodes per cut (share of prefill)", fraction, 0.02,
                    f"worst cut over {over} ({variant}), fx-interpreter micro-benchmark")


def kv_proportional(variants: dict) -> bool | None:
    """Each layer's cache holds exactly the schedule's tokens, and its bytes scale with them."""
    if "original" not in variants:
        return None
    base = variants["original"]["kv_cache"]
    for v in variants.values():
        kv = v["kv_cache"]
        if kv["tokens_per_layer"] != kv["expected_tokens_per_layer"]:
            return False
        for b, t, b0, t0 in zip(kv["bytes_per_layer"], kv["tokens_per_layer"], base["bytes_per_layer"],
                                base["tokens_per_layer"]):
            if b * t0 != b0 * t:
                return False
    return True


def speed_targets(report) -> list[dict]:
    res = report.results
    out = []
    variants = res.get("variants")
    if variants:
        fastv = variants.get("fastv")
        out.append(_at_least("FastV realized / ideal speed-up", fastv and fastv["realized_over_ideal"], 0.9,
                             "prefill speed-up measured / predicted by exact FLOPs, FastV K=2 keep 25%"))
        keep = variants.get("keep-all")
        out.append(_at_most("keep-all / original prefill time", keep and keep["paired_ratio"]["median"], 1.02,
                            "median of per-round ratios"))
        over = keep and keep.get("fixed_overhead")
        out.append(_at_most("keep-all per-call overhead (share of prefill)", over and over["fraction_of_prefill"], 0.02,
                            f"micro-benchmark: compiled minus original on a {over and over['tokens']}-token prompt"))
        out.append(_worst_cut_target(res.get("node_costs", {}), "all pruned variants"))
        prop = kv_proportional(variants)
        out.append(_target("KV cache shrinks with the schedule", prop, True, prop,
                           "every layer holds text + ceil(r_l N) tokens; bytes proportional"))
    elif res.get("node_costs"):  # an inserted-nodes-only run
        out.append(_worst_cut_target(res["node_costs"], "FastV and the selectors"))
    rows = (res.get("scaling") or {}).get("rows") or []
    if rows and rows[-1].get("decode"):
        last = rows[-1]
        ratio = last["decode"]["fastv"]["median"] / last["decode"]["original"]["median"]
        out.append(_at_most(f"FastV / original decode time per token at {last['num_vision_tokens']} vision tokens",
                            ratio, 1.0, "median per-token decode latency"))
    comp = res.get("compile")
    if comp and report.preset.get("name") == "llava-7b":
        out.append(_at_most("compile time, 7B shape (s)", comp.get("total_s"), 5.0,
                            f"trace + rewrite + self-check ({comp.get('selfcheck_method')})"))
    return out


def prefill_targets(report) -> list[dict]:
    out = []
    for dtype, res in report.results["dtypes"].items():
        keep = res["realized"]["keep-all"]["paired_ratio"]["median"]
        out.append(_at_most(f"{dtype}: keep-all / original prefill time", keep, 1.02, "median of per-round ratios"))
        over = res.get("keep_all_overhead")
        out.append(_at_most(f"{dtype}: keep-all per-call overhead (share of prefill)",
                            over and over["fraction_of_prefill"], 0.02,
                            f"micro-benchmark: compiled minus original on a {over and over['tokens']}-token prompt"))
        out.append(_at_most(f"{dtype}: FastV inserted nodes (share of prefill)", worst_cut(res["node_costs"])[0],
                            0.02, "fx-interpreter micro-benchmark of the cut's nodes"))
        out.append(_at_least(f"{dtype}: FastV realized / ideal speed-up",
                             res["realized"]["fastv"]["realized_over_ideal"],
                             0.9, "prefill speed-up measured / predicted by exact FLOPs"))
    return out
