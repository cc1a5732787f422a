"""The speed benchmark's torch.compile variants: how they are built and reported (nothing is compiled here)."""

from __future__ import annotations

import pytest

from tokenprune.bench import build_model, get_preset
from tokenprune.bench.page import torch_compile_table
from tokenprune.bench.variants import build_variants


def test_a_compiled_suffix_wraps_the_variant_in_torch_compile():
    model = build_model(get_preset("tiny"))
    variants = build_variants(model, ["fastv", "fastv-compiled", "original-compiled"])
    compiled, eager = variants["fastv-compiled"], variants["fastv"]
    assert compiled.kind == "torch.compile" and compiled.schedule == eager.schedule
    assert compiled.label == eager.label + " + torch.compile"
    assert compiled.model._orig_mod is not eager.model  # its own pruned model, not the eager variant's
    assert variants["original-compiled"].model._orig_mod is model
    with pytest.raises(KeyError, match="unknown variant"):
        build_variants(model, ["nothing-compiled"])


def _entry(kind: str, median: float, predicted: float, **extra) -> dict:
    return {"kind": kind, "prefill": {"median": median, "q1": median, "q3": median}, "predicted_speedup": predicted,
            "realized_speedup": 1.0 / median, "realized_over_ideal": 1.0 / median / predicted, **extra}


def test_the_torch_compile_table_sets_each_compiled_variant_against_its_eager_twin_and_the_compiled_original():
    first = {"prefill_s": [30.0, 0.5], "decode_s": []}
    variants = {"original": _entry("original", 1.0, 1.0), "fastv": _entry("compiled", 0.5, 2.5),
                "original-compiled": _entry("torch.compile", 0.8, 1.0, first_calls=first),
                "fastv-compiled": _entry("torch.compile", 0.4, 2.5, first_calls=first)}
    rows = [line.split(" | ") for line in torch_compile_table(variants).splitlines()[2:]]
    assert [r[0].strip("| `") for r in rows] == ["original-compiled", "fastv-compiled"]
    fastv = rows[1]
    assert fastv[2] == "500.0" and fastv[3] == "1.25"  # eager twin ms, speed-up from torch.compile
    assert fastv[6:9] == ["2.00", "2.50", "0.80"]  # vs the compiled original: realized, predicted, realized / ideal
    assert fastv[9].rstrip(" |") == "30.0, 0.5" and rows[0][6] == "–"
