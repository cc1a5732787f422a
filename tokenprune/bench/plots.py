"""Figures of benchmark reports (matplotlib, Agg backend). Each function writes one PNG and returns its path."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .report import Report  # noqa: E402


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def prefill_bars(report: Report, path: Path, variants: dict | None = None, title: str | None = None) -> Path:
    """Measured prefill median (IQR bars) per variant next to the FLOPs prediction (original x fraction)."""
    variants = variants or report.results["variants"]
    names = list(variants)
    med = [variants[n]["prefill"]["median"] * 1e3 for n in names]
    lo = [m - variants[n]["prefill"]["q1"] * 1e3 for m, n in zip(med, names)]
    hi = [variants[n]["prefill"]["q3"] * 1e3 - m for m, n in zip(med, names)]
    base = variants["original"]["prefill"]["median"] * 1e3
    predicted = [base * variants[n]["flops"]["fraction"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    x = range(len(names))
    ax.bar(x, med, yerr=[lo, hi], capsize=3, color="#4C72B0", label="measured (median, IQR)")
    ax.scatter(x, predicted, marker="_", s=600, color="#C44E52", zorder=3, label="FLOPs prediction")
    ax.set_xticks(list(x), names, rotation=20, ha="right")
    ax.set_ylabel("prefill time (ms)")
    ax.set_title(title or f"Prefill, {report.preset['name']}, {report.settings.get('dtype', '')}")
    ax.legend(fontsize=8)
    return _save(fig, path)


def kv_per_layer(report: Report, path: Path) -> Path:
    variants = report.results["variants"]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for name, v in variants.items():
        mib = [b / 2**20 for b in v["kv_cache"]["bytes_per_layer"]]
        ax.plot(range(len(mib)), mib, marker="o", ms=3, label=name)
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("KV cache after prefill (MiB)")
    ax.set_title("KV-cache bytes per layer")
    ax.legend(fontsize=8)
    return _save(fig, path)


def node_costs(report: Report, path: Path, node_costs: dict | None = None) -> Path:
    costs = node_costs if node_costs is not None else report.results["node_costs"]
    labels, shares = [], []
    for name, nc in costs.items():
        for cut, entry in nc["cuts"].items():
            labels.append(f"{name}\ncut {cut}")
            shares.append(100 * entry["fraction_of_prefill"])
    fig, ax = plt.subplots(figsize=(max(5, 0.55 * len(labels) + 2), 3.4))
    ax.bar(range(len(labels)), shares, color="#55A868")
    ax.axhline(2.0, color="#C44E52", ls="--", label="target: 2% per cut")
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylabel("share of prefill (%)")
    ax.set_title("Cost of the inserted nodes per cut")
    ax.legend(fontsize=8)
    return _save(fig, path)


def scaling(report: Report, path: Path) -> Path:
    """Prefill time against vision tokens, measured and predicted (original x FLOPs fraction)."""
    rows = report.results["scaling"]["rows"]
    n = [r["num_vision_tokens"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    ax = axes[0]
    for name in report.results["scaling"]["variants"]:
        ax.plot(n, [r["prefill"][name]["median"] for r in rows], marker="o", label=f"{name} measured")
        if name != "original":
            ax.plot(n, [r["prefill"]["original"]["median"] * r["flops_fraction"][name] for r in rows], ls="--",
                    label=f"{name} FLOPs prediction")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("vision tokens")
    ax.set_ylabel("prefill time (s)")
    ax.set_title("Prefill vs vision tokens")
    ax.legend(fontsize=8)
    ax = axes[1]
    if rows and rows[0].get("decode"):
        for name in report.results["scaling"]["variants"]:
            ax.plot(n, [r["decode"][name]["median"] * 1e3 for r in rows], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("vision tokens")
        ax.set_ylabel("decode time per token (ms)")
        ax.set_title("Decode vs vision tokens")
        ax.legend(fontsize=8)
    return _save(fig, path)


def realized_vs_ideal(report: Report, path: Path) -> Path:
    variants = {k: v for k, v in report.results["variants"].items() if k != "original"}
    names = list(variants)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [variants[n]["predicted_speedup"] for n in names], 0.4, label="FLOPs prediction",
           color="#C44E52")
    ax.bar([i + 0.2 for i in x], [variants[n]["realized_speedup"] for n in names], 0.4, label="measured",
           color="#4C72B0")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks(list(x), names, rotation=20, ha="right")
    ax.set_ylabel("prefill speed-up vs original")
    ax.set_title("Realized vs ideal speed-up")
    ax.legend(fontsize=8)
    return _save(fig, path)


def prefill_dtypes(report: Report, path: Path) -> Path:
    """Time ratio to the original per dtype (median of the per-round ratios, with their IQR), against the FLOPs
    ratio. The bar is the paired median, not the ratio of medians: under load the latter can fall outside the
    paired ratios' IQR, which would make the error bar negative."""
    dtypes = report.results["dtypes"]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    names = ["keep-all", "fastv"]
    width = 0.8 / (2 * len(dtypes))
    for j, (dtype, res) in enumerate(dtypes.items()):
        for k, name in enumerate(names):
            r = res["realized"][name]
            pr = r["paired_ratio"]
            ax.bar(k + (2 * j) * width, pr["median"], width,
                   yerr=[[pr["median"] - pr["q1"]], [pr["q3"] - pr["median"]]], capsize=3,
                   color=["#4C72B0", "#DD8452"][j % 2], label=f"{dtype} measured" if k == 0 else None)
            ax.bar(k + (2 * j + 1) * width, res["variants"][name]["flops"]["fraction"], width, color="#C44E52",
                   alpha=0.5 + 0.3 * j, label=f"{dtype} FLOPs" if k == 0 else None)
    ax.set_xticks([k + width * (len(dtypes) - 0.5) for k in range(len(names))], names)
    ax.set_ylabel("fraction of original prefill")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.legend(fontsize=8)
    ax.set_title("Prefill time vs FLOPs, relative to the original")
    return _save(fig, path)
