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


def max_cut_fraction(node_costs: dict) -> float | None:
    fractions = [c["fraction_of_prefill"] for nc in node_costs.values() for c in nc["cuts"].values()]
    return max(fractions) if fractions else None


def worst_cut_variant(node_costs: dict) -> str | None:
    """The variant whose cut costs the largest share of its prefill (what the worst-cut target is about)."""
    cuts = [(c["fraction_of_prefill"], name) for name, nc in node_costs.items() for c in nc["cuts"].values()]
    return max(cuts)[1] if cuts else None


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
        costs = res.get("node_costs", {})
        out.append(_at_most("inserted nodes per cut (share of prefill)", max_cut_fraction(costs), 0.02,
                            f"worst cut over all pruned variants ({worst_cut_variant(costs)}), "
                            "fx-interpreter micro-benchmark"))
        prop = kv_proportional(variants)
        out.append(_target("KV cache shrinks with the schedule", prop, True, prop,
                           "every layer holds text + ceil(r_l N) tokens; bytes proportional"))
    elif res.get("node_costs"):  # an inserted-nodes-only run
        out.append(_at_most("inserted nodes per cut (share of prefill)", max_cut_fraction(res["node_costs"]), 0.02,
                            f"worst cut over FastV and the selectors ({worst_cut_variant(res['node_costs'])}), "
                            "fx-interpreter micro-benchmark"))
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
        out.append(_at_most(f"{dtype}: FastV inserted nodes (share of prefill)", max_cut_fraction(res["node_costs"]),
                            0.02, "fx-interpreter micro-benchmark of the cut's nodes"))
        out.append(_at_least(f"{dtype}: FastV realized / ideal speed-up",
                             res["realized"]["fastv"]["realized_over_ideal"],
                             0.9, "prefill speed-up measured / predicted by exact FLOPs"))
    return out
