"""The numbers of a benchmark run as plain-text tables for the terminal (the pages hold the full analysis)."""

from __future__ import annotations

from .report import Report


def _ms(seconds) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:,.1f}"


def _f(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned."""
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(c.rjust(w) if c[:1].isdigit() or c == "-" else c.ljust(w) for c, w in zip(row, widths))

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def speed_summary(report: Report) -> str:
    head = f"{report.preset['name']} on {report.settings['device']}, {report.settings['dtype']}"
    variants = report.results.get("variants")
    if not variants and "node_costs" in report.results:  # --nodes-only
        return head + ", inserted nodes only\n" + node_summary(report.results["node_costs"])
    if not variants:  # a compile-only preset (too large to run here)
        comp = report.results["compile"]
        return f"{head}: compile only, trace + rewrite {comp['trace_rewrite_s']:.3f} s, total {comp['total_s']:.3f} s"
    rows = [[name, _f(v["flops"]["fraction"]), _ms(v["prefill"]["median"]), _f(v["time_fraction"]),
             _f(v["realized_speedup"], 2), _ms((v.get("decode") or {}).get("median")),
             f"{v['peak_memory']['peak_bytes'] / 2**20:,.1f}"] for name, v in variants.items()]
    table = text_table(["variant", "FLOPs fraction", "prefill ms", "time fraction", "speed-up", "decode ms/token",
                        "peak MiB"], rows)
    return head + "\n" + table + "\n\ninserted nodes per cut\n" + node_summary(report.results["node_costs"])


def node_summary(node_costs: dict) -> str:
    """One row per cut of every timed variant (the ``fastv-NAME`` rows are selectors at the FastV schedule)."""
    rows = [[name, cut, _ms(entry["seconds"]), _ms(nc["prefill_seconds"]), f"{100 * entry['fraction_of_prefill']:.2f}%"]
            for name, nc in node_costs.items() for cut, entry in nc["cuts"].items()]
    return text_table(["variant", "cut before layer", "inserted nodes ms", "interpreted prefill ms",
                       "share of prefill"], rows)


def prefill_summary(report: Report) -> str:
    parts = []
    for dtype, d in report.results["dtypes"].items():
        rows = [[name, _ms(v["prefill"]["median"]), _f(d["realized"][name]["paired_ratio"]["median"]),
                 _f(v["flops"]["fraction"]), _f(d["realized"][name]["realized_speedup"], 2)]
                for name, v in d["variants"].items()]
        parts.append(f"{report.preset['name']} prefill, {dtype}\n" + text_table(
            ["variant", "prefill ms", "time ratio", "FLOPs ratio", "speed-up"], rows))
    return "\n\n".join(parts)


def summary(report: Report) -> str:
    return speed_summary(report) if report.kind == "speed" else prefill_summary(report)
