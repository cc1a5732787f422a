"""The quality benchmark's outputs: JSON, a markdown page with the tables and a Pareto plot (PNG)."""

from __future__ import annotations

import json
from pathlib import Path

from tokenprune.synthvqa import QUESTION_TYPES

from ..page import _table
from .plan import LAYER0_OF, SELECTOR_SCHEDULES, SELECTOR_SEARCH_ID, fixed_selector_id

JSON_NAME = "quality.json"
PAGE_NAME = "quality.md"
PLOT_NAME = "quality-pareto.png"
# (marker, colour) per method family; matched baselines share their family's colour with hollow markers.
STYLE = {"unpruned": ("*", "#000000"), "FastV": ("o", "#4C72B0"), "PyramidDrop": ("s", "#55A868"),
         "VTW": ("v", "#8172B2"), "G-Search": ("D", "#CCB974"), "P-Sigmoid": ("P", "#C44E52"),
         "FastV (matched)": ("o", "#4C72B0"), "PyramidDrop (matched)": ("s", "#55A868"),
         "random scorer": ("x", "#8C8C8C"), "P-Sigmoid (fixed selector)": ("P", "#E8A0A2"),
         "P-Sigmoid (selector search)": ("*", "#8B1A1D")}
# Selector families ("<selector> (<schedule>)"): one colour per selector, one marker per schedule family.
SELECTOR_COLOURS = {"divprune": "#DD8452", "dart": "#64B5CD", "cdpruner": "#937860", "random-keep": "#B0B0B0",
                    "grid-downsample": "#DA8BC3", "grid-pool": "#8E44AD", "fastervlm": "#2E8B57",
                    "visionzip": "#D4A017", "tome": "#1F3A93"}
FALLBACK_COLOURS = ("#17BECF", "#BCBD22", "#7F7F7F", "#E377C2")  # a new selector before it gets its own
SCHEDULE_MARKERS = {"FastV schedule": "^", "layer 0": "h"}
RANDOM_SCORERS = ("random", "random-keep")  # not part of the Pareto front: they pick no tokens on purpose


def style_of(method: str) -> tuple[str, str]:
    """(marker, colour) of a method family in the plot."""
    if method in STYLE:
        return STYLE[method]
    selector, _, schedule = method.partition(" (")
    colour = SELECTOR_COLOURS.get(selector) or FALLBACK_COLOURS[sum(map(ord, selector)) % len(FALLBACK_COLOURS)]
    return SCHEDULE_MARKERS.get(schedule.rstrip(")"), "o"), colour


def pareto_front(rows: list[dict]) -> list[dict]:
    """Rows not dominated by another (lower-or-equal FLOPs and strictly higher accuracy, or vice versa)."""
    front, best = [], -1.0
    for r in sorted(rows, key=lambda r: (r["flops_fraction"], -r["accuracy"]["overall"])):
        if r["accuracy"]["overall"] > best:
            front.append(r)
            best = r["accuracy"]["overall"]
    return front


def measured(rows: list[dict]) -> list[dict]:
    """Rows that were scored (not those whose budget the method cannot reach)."""
    return [r for r in rows if not r.get("unreachable")]


def pareto_plot(rows: list[dict], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = measured(rows)
    fig, ax = plt.subplots(figsize=(8.5, 5.4))
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = [r for r in rows if r["method"] == method]
        marker, colour = style_of(method)
        hollow = "matched" in method
        ax.scatter([r["flops_fraction"] for r in pts], [r["accuracy"]["overall"] for r in pts], label=method,
                   marker=marker, s=90 if method == "unpruned" else 40, linewidths=1.2,
                   **({"facecolors": "none", "edgecolors": colour} if hollow else {"c": colour}))
    front = pareto_front([r for r in rows if r["scorer"] not in RANDOM_SCORERS])
    ax.plot([r["flops_fraction"] for r in front], [r["accuracy"]["overall"] for r in front], "k--", lw=0.8,
            label="Pareto front (non-random selectors)")
    ax.set_xlabel("prefill FLOPs fraction (exact, language model)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pct(x: float) -> str:
    return f"{x * 100:.1f}"


def results_table(rows: list[dict]) -> str:
    """One line per entry: FLOPs and overall accuracy (per type and schedules are in their own tables)."""
    base = next((r for r in rows if r["id"] == "unpruned"), None)
    body = []
    for r in rows:
        if r.get("unreachable"):
            body.append([r["method"], r["label"], "unreachable", "", ""])
            continue
        overall = r["accuracy"]["overall"]
        delta = f"{(overall - base['accuracy']['overall']) * 100:+.1f}" if base else ""
        body.append([r["method"], r["label"], f"{r['flops_fraction']:.3f}", _pct(overall), delta])
    return _table(["method", "setting", "FLOPs", "accuracy", "vs unpruned"], body)


def per_type_table(rows: list[dict]) -> str:
    """Accuracy per question type, one line per scored entry."""
    body = [[f"{r['method']}: {r['label']}", *(_pct(r["accuracy"]["per_type"].get(t, float("nan")))
                                                for t in QUESTION_TYPES)] for r in measured(rows)]
    return _table(["entry", *QUESTION_TYPES], body)


def schedules_table(rows: list[dict]) -> str:
    """The keep ratio of every layer, one line per scored entry."""
    body = [[f"{r['method']}: {r['label']}", " ".join(f"{k:.2f}" for k in r["schedule"]["keep_ratio"])]
            for r in measured(rows)]
    return _table(["entry", "keep ratio per layer"], body)


def budget_table(rows: list[dict]) -> str:
    """At each budget: P-Sigmoid, matched FastV and PyramidDrop, and the random scorer side by side."""
    budgets = sorted({r["budget"] for r in rows if r["budget"] is not None})
    ids = [("P-Sigmoid", "psigmoid"), ("FastV", "fastv"), ("PyramidDrop", "pdrop"),
           ("random (P-Sigmoid schedule)", "random-psigmoid"), ("random (FastV schedule)", "random-fastv")]
    by_id = {r["id"]: r for r in rows}
    body = []
    for b in budgets:
        cells = []
        for _, prefix in ids:
            r = by_id.get(f"{prefix}-b{b:g}")
            if r is None:
                cells.append("")
            elif r.get("unreachable"):
                cells.append("unreachable")
            else:
                cells.append(f"{_pct(r['accuracy']['overall'])} ({r['flops_fraction']:.3f})")
        body.append([f"{b:g}", *cells])
    return _table(["budget", *(name for name, _ in ids)], body)


def _cell(row: dict | None) -> str:
    if row is None:
        return ""
    if row.get("unreachable"):
        return "unreachable"
    return f"{_pct(row['accuracy']['overall'])} ({row['flops_fraction']:.3f})"


def selector_table(rows: list[dict], selectors: list[str]) -> str:
    """At each budget: the default attention scorer and every selector on the same matched schedules."""
    by_id = {r["id"]: r for r in rows}
    budgets = sorted({r["budget"] for r in rows if r["budget"] is not None})
    header, body = ["budget"], []
    for source, title in SELECTOR_SCHEDULES.items():
        header += [f"{title}: last-token-attention", *(f"{title}: {s}" for s in selectors)]
    for b in budgets:
        cells = []
        for source in SELECTOR_SCHEDULES:
            cells.append(_cell(by_id.get(f"{source}-b{b:g}")))
            cells += [_cell(by_id.get(f"{s}-{source}-b{b:g}")) for s in selectors]
        if any(cells):
            body.append([f"{b:g}", *cells])
    return _table(header, body)


def layer0_table(rows: list[dict]) -> str:
    """Each selector cutting once before the first decoder layer: accuracy (FLOPs) per kept share, and the
    share of the unpruned model's accuracy it keeps."""
    layer0 = [r for r in rows if "-layer0-k" in r["id"]]
    unpruned = next((r for r in rows if r["id"] == "unpruned"), None)
    keeps = sorted({r["params"]["keep"] for r in layer0})
    selectors = list(dict.fromkeys(r["params"]["selector"] for r in layer0))
    by_id = {r["id"]: r for r in layer0}
    body = []
    for selector in selectors:
        cells = []
        for keep in keeps:
            row = by_id.get(f"{selector}-layer0-k{keep}")
            kept = (f"; {row['accuracy']['overall'] / unpruned['accuracy']['overall']:.1%} of unpruned"
                    if row is not None and unpruned is not None and not row.get("unreachable") else "")
            cells.append(_cell(row) + kept)
        body.append([selector, *cells])
    return _table(["selector", *(f"keep {k}/{LAYER0_OF}" for k in keeps)], body)


def selector_search_table(rows: list[dict]) -> str:
    """At each selector-search budget, one row per P-Sigmoid run: each candidate fixed, then the search."""
    by_id = {r["id"]: r for r in rows}
    searches = [r for r in rows if r["id"].startswith(SELECTOR_SEARCH_ID + "-b") and not r.get("unreachable")]
    body = []
    for search in searches:
        b, chosen = search["budget"], search["accuracy"]["overall"]
        fixed = {s: by_id.get(fixed_selector_id(s, b)) for s in search["params"].get("selectors", [])}
        fixed = {s: r for s, r in fixed.items() if r is not None and not r.get("unreachable")}
        if not fixed:
            continue
        best = max(fixed, key=lambda s: fixed[s]["accuracy"]["overall"])
        for name, row in fixed.items():
            label = f"fixed {name}" + (" (best fixed)" if name == best else "")
            margin = (chosen - row["accuracy"]["overall"]) * 100
            body.append([f"{b:g}", label, *_search_cells(row), f"{margin:+.1f}"])
        body.append([f"{b:g}", f"**selector search**: chose {search['scorer']}", *_search_cells(search), ""])
    return _table(["budget", "P-Sigmoid with", "test accuracy", "KL, search split", "KL, held-out",
                   "search - this (points)"], body)


def _search_cells(row: dict) -> list[str]:
    objective = row["search"]["objective"]
    return [_pct(row["accuracy"]["overall"]), _num(objective.get("search")), _num(objective.get("heldout"))]


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


SELECTOR_SEARCH_NOTE = (
    "Test accuracy in percent; KL: the search objective of the run's chosen schedule on the calibration split, on "
    "the part the searches saw and on the held-out quarter. The search chooses the selector (jointly with the "
    "sigmoid's steepness and midpoint, one TPE categorical) by KL on its part; the best fixed selector is picked "
    "with hindsight by test accuracy, so it is the strongest comparison the search can be held to. Where the "
    "search's KL is as low as the fixed runs' but its test accuracy is lower, the calibration prompts are not "
    "ranking the selectors the way the test questions do.")


def targets_table(targets: list[dict]) -> str:
    status = {True: "**met**", False: "**missed**", None: "not measured"}
    return _table(["target", "status", "measured"], [[t["target"], status[t["met"]], t["detail"]] for t in targets])


TITLE = "# Quality benchmark: accuracy vs FLOPs"
NOTE_PREFIX = "**About this run:** "


def render_page(report: dict, intro: str) -> str:
    """The Markdown page for ``report`` (the contents of ``quality.json``)."""
    rows = report["rows"]
    m = report["machine"]
    machine = _table(["", ""], [["CPU", f"{m['cpu_model']} ({m['cpu_count']} cores visible)"],
                                ["torch / transformers", f"{m['torch']} / {m['transformers']}"],
                                ["outputs written at (UTC)", m["timestamp_utc"]],
                                ["compute time of all rows (searches included)", f"{report['seconds']:.0f} s"]])
    # A run writes its settings' tuples; quality.json gives them back as lists: one spelling on the page.
    settings = _table(["setting", "value"], [[k, f"`{tuple(v) if isinstance(v, list) else v}`"]
                                             for k, v in report["settings"].items()])
    return "\n".join([
        "<!-- Generated by benchmarks/quality.py; do not edit. -->", "", TITLE, "",
        intro, "", *([f"{NOTE_PREFIX}{report['note']}", ""] if report.get("note") else []),
        "## Targets", "", targets_table(report["targets"]), "",
        f"![accuracy against FLOPs fraction]({PLOT_NAME})", "", "## At matched budgets", "",
        "Test accuracy in percent (exact FLOPs fraction on the test prompts in brackets).", "",
        budget_table(rows), "", *_selector_sections(report), "## Every entry", "",
        ("Accuracy in percent; FLOPs: exact prefill FLOPs fraction of the language model's decoder layers, averaged "
        "over the test prompts. The next two tables give each entry's accuracy per question type and its "
        "schedule."), "", results_table(rows), "",
        "### Accuracy per question type", "", "In percent.", "", per_type_table(rows), "",
        "### Schedules", "", "The fraction of each image's vision tokens that enters each decoder layer.", "",
        schedules_table(rows), "",
        "## Settings and machine", "", settings, "", machine, "", *merged_note(report),
        f"Raw results: {{download}}`{JSON_NAME}`.", ""])


def _selector_sections(report: dict) -> list[str]:
    rows, settings = report["rows"], report["settings"]
    selectors = list(settings.get("selectors") or [])
    if not any(r.get("params", {}).get("selector") in selectors for r in rows) and not any(
            r["id"].startswith(SELECTOR_SEARCH_ID) for r in rows):
        return []
    out = ["## Selectors at matched budgets", "",
           ("Test accuracy in percent (FLOPs fraction in brackets) of every drop-selector on the matched schedules "
           "of the table above, against the default attention scorer on the same schedule."), "",
           selector_table(rows, selectors), ""]
    search = selector_search_table(rows)
    if search.count("\n") > 1:
        out += ["## Selector search", "", SELECTOR_SEARCH_NOTE, "", search, ""]
    if any("-layer0-k" in r["id"] for r in rows):
        out += ["## Before the first layer", "",
                ("Each selector cutting once, before decoder layer 0 (the papers' setting: the projector's output "
                f"as it enters the language model), keeping k/{LAYER0_OF} of each image's vision tokens (LLaVA-1.5's "
                "counts as shares of this model's tokens). Test accuracy in percent (FLOPs fraction in brackets) "
                "and the share of the unpruned accuracy kept."), "", layer0_table(rows), ""]
    return out


def merged_note(report: dict) -> list[str]:
    """Where the rows come from when the last invocation ran a subset and merged it into earlier results."""
    m = report.get("merged_from")
    if not m:
        return []
    return [(f"The last invocation ran `{report.get('ran', 'n/a')}` on this machine; every other row is from an "
            f"earlier run with the same settings (outputs written {m.get('timestamp_utc')}, commit "
            f"{m.get('commit')})."), ""]


def write_outputs(report: dict, docs_dir: Path, intro: str) -> dict[str, Path]:
    """``quality.json``, ``quality-pareto.png`` and ``quality.md`` in ``docs_dir``."""
    docs_dir.mkdir(parents=True, exist_ok=True)
    json_path = docs_dir / JSON_NAME
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    plot = pareto_plot(report["rows"], docs_dir / PLOT_NAME, f"{report['model']['name']}: accuracy vs FLOPs "
                                                              f"({report['settings']['n_test']} test questions)")
    page = docs_dir / PAGE_NAME
    page.write_text(render_page(report, intro))
    return {"json": json_path, "plot": plot, "page": page}


def rerender_page(docs_dir: Path) -> Path:
    """Rewrite ``quality.md`` from the ``quality.json`` next to it, keeping the page's introduction.

    For layout changes: the benchmark is not run again and the JSON and the plot are left as they are.
    """
    page = docs_dir / PAGE_NAME
    text = page.read_text()
    intro = text.split(TITLE + "\n\n", 1)[1].split("\n\n## Targets", 1)[0].split(NOTE_PREFIX, 1)[0].rstrip("\n")
    page.write_text(render_page(json.loads((docs_dir / JSON_NAME).read_text()), intro))
    return page


if __name__ == "__main__":  # python -m tokenprune.bench.quality.page docs/benchmarks
    import sys

    print(rerender_page(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/benchmarks")))
