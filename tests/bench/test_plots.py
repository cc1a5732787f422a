"""The benchmark figures draw from measured reports, including noisy ones."""

from types import SimpleNamespace

from tokenprune.bench import plots


def _dtype(time_fraction: float, q1: float, median: float, q3: float) -> dict:
    realized = {"time_fraction": time_fraction, "paired_ratio": {"q1": q1, "median": median, "q3": q3}}
    return {"realized": {"keep-all": realized, "fastv": realized},
            "variants": {"keep-all": {"flops": {"fraction": 1.0}}, "fastv": {"flops": {"fraction": 0.42}}}}


def test_prefill_figure_when_the_ratio_of_medians_leaves_the_paired_iqr(tmp_path):
    # Under load the ratio of medians (0.883) can fall below the per-round ratios' IQR (0.95-0.99).
    report = SimpleNamespace(results={"dtypes": {"float32": _dtype(0.883, 0.95, 0.97, 0.99),
                                                 "bfloat16": _dtype(0.984, 0.90, 0.93, 0.95)}})
    path = plots.prefill_dtypes(report, tmp_path / "ratios.png")
    assert path.exists() and path.stat().st_size > 0
