"""Fast checks of the benchmark engine on the tiny preset. Speed targets are never asserted here."""

from __future__ import annotations

import json

import pytest
import torch

import tokenprune as tp
from tokenprune.bench import Report, build_model, get_preset, make_inputs, run_prefill, run_speed, write_pages
from tokenprune.bench.compiletime import measure_compile
from tokenprune.bench.masking import MaskingBaseline
from tokenprune.bench.memory import kv_cache_bytes
from tokenprune.bench.presets import build_eager_twin
from tokenprune.bench.terminal import summary
from tokenprune.bench.variants import gsearch_like, schedules

TINY = get_preset("tiny")


@pytest.fixture(scope="module")
def tiny():
    model = build_model(TINY)
    inputs, vision = make_inputs(model, TINY)
    return model, inputs, vision


@pytest.fixture(scope="module")
def speed_report():
    return run_speed("tiny", repeats=1, warmup=0, decode_tokens=2, decode_repeats=1, node_repeats=1, scaling=[36, 72],
                     scaling_repeats=1, scaling_decode_tokens=1,
                     variants=["original", "keep-all", "fastv", "gsearch-like", "masked-fastv"],
                     selectors=["dart", "random-keep"], echo=None)


def test_speed_report_has_every_measurement(speed_report):
    res = speed_report.results
    assert set(res) >= {"variants", "node_costs", "compile", "scaling", "targets"}
    for name, v in res["variants"].items():
        assert v["prefill"]["repeats"] == 1 and v["prefill"]["median"] > 0
        assert v["decode"]["new_tokens"] == 2 and len(v["decode"]["samples"]) == 2
        assert len(v["kv_cache"]["bytes_per_layer"]) == TINY.num_layers
        assert v["peak_memory"]["peak_bytes"] is None or v["peak_memory"]["peak_bytes"] >= 0
        assert 0 < v["flops"]["fraction"] <= 1 and v["realized_over_ideal"] > 0
    assert set(res["node_costs"]) == {"fastv", "gsearch-like", "fastv-dart", "fastv-random-keep"}
    assert list(res["node_costs"]["fastv-dart"]["cuts"]) == list(res["node_costs"]["fastv"]["cuts"]) == ["2"]
    assert "fastv-random-keep" in summary(speed_report)  # the terminal report lists each selector's cut
    assert res["variants"]["keep-all"]["fixed_overhead"]["original"]["repeats"] == 30
    assert [int(c) for c in res["node_costs"]["gsearch-like"]["cuts"]] == list(gsearch_like(TINY.num_layers).cuts)
    assert len(res["node_costs"]["fastv"]["layer_seconds"]) == TINY.num_layers
    assert res["compile"]["trace_rewrite_s"] > 0 and res["compile"]["selfcheck_method"].startswith("measured")
    assert [r["num_vision_tokens"] for r in res["scaling"]["rows"]] == [36, 72]
    m = speed_report.machine
    assert {"cpu_model", "torch_threads", "torch", "transformers", "dtype", "load_average_start",
            "load_average_end"} <= set(m)
    assert all({"name", "value", "threshold", "met"} <= set(t) for t in res["targets"])


def test_kv_cache_bytes_shrink_with_the_schedule(speed_report):
    variants = speed_report.results["variants"]
    base = variants["original"]["kv_cache"]
    full = TINY.num_text_tokens + TINY.num_vision_tokens
    for name in ("fastv", "gsearch-like"):
        kv = variants[name]["kv_cache"]
        counts = tp.Schedule.from_dict(variants[name]["schedule"]).keep_counts(TINY.num_vision_tokens)
        assert kv["tokens_per_layer"] == [TINY.num_text_tokens + c for c in counts]
        assert [b * full for b in kv["bytes_per_layer"]] == [b0 * t for b0, t in
                                                               zip(base["bytes_per_layer"], kv["tokens_per_layer"])]
    assert variants["masked-fastv"]["kv_cache"]["bytes_per_layer"] == base["bytes_per_layer"]
    target = next(t for t in speed_report.results["targets"] if t["name"].startswith("KV cache"))
    assert target["met"] is True


def test_report_json_round_trip_and_pages(speed_report, tmp_path):
    path = speed_report.write(tmp_path / "results" / "speed-tiny-cpu-float32.json")
    again = Report.read(path)
    assert again == Report.from_dict(json.loads(path.read_text()))
    assert again.to_dict() == speed_report.to_dict()
    pages = write_pages(tmp_path / "results", tmp_path / "docs")
    assert not list((tmp_path / "results").glob("*.png")), "figures go next to the pages only"
    text = pages[0].read_text()
    assert "No GPU was available in this session" in text and "python benchmarks/speed.py" in text
    for line in text.splitlines():
        if line.startswith("!["):
            assert (tmp_path / "docs" / line.split("(")[1].rstrip(")")).exists()


@pytest.mark.parametrize("name", ["fastv", "gsearch-like"])
def test_masking_baseline_matches_pruned_logits(tiny, name):
    model, inputs, vision = tiny
    schedule = schedules(TINY.num_layers)[name]
    pruned = tp.compile(model, "llava", schedule)
    masked = MaskingBaseline(build_eager_twin(model), schedule)
    with torch.no_grad():
        got = pruned(**inputs).logits  # (1, kept, V)
        ref = masked(**inputs).logits  # (1, S, V)
    kept = masked.kept_positions()[0]  # text positions and the vision tokens kept by the last cut
    selection = tp.last_selection(pruned)
    expected = torch.cat([torch.nonzero(~vision[0]).flatten(), selection[max(selection)][0]]).sort().values
    assert torch.equal(kept, expected)
    torch.testing.assert_close(ref[0, kept], got[0], rtol=1e-4, atol=1e-4)


def test_masking_baseline_decodes_like_the_pruned_model(tiny):
    """Decode steps hide the dropped tokens only from the layers after their cut, as pruning does (the layers
    before it keep them in their cache)."""
    model, inputs, _ = tiny
    schedule = schedules(TINY.num_layers)["fastv"]
    pruned = tp.compile(model, "llava", schedule)
    masked = MaskingBaseline(build_eager_twin(model), schedule)
    settings = dict(max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=0, output_logits=True,
                    return_dict_in_generate=True)
    with torch.no_grad():
        got = pruned.generate(**inputs, **settings)
        with masked:
            ref = masked.model.generate(**inputs, **settings)
    for step_got, step_ref in zip(got.logits, ref.logits, strict=True):  # (1, V) per generated token
        torch.testing.assert_close(step_got, step_ref, rtol=1e-4, atol=1e-4)


def test_one_masking_reference_for_the_suite_the_validator_and_the_benchmark(tiny, monkeypatch):
    from tests.conformance import test_conformance as suite
    from tokenprune.bench import masking as baseline
    from tokenprune.testing import conformance as validator
    from tokenprune.testing import eager_topk, masking

    assert suite.masked_reference is validator.masked_reference is eager_topk.masked_reference \
        is masking.masked_reference
    assert suite.kept_rows is validator.kept_rows is masking.kept_rows
    assert baseline.add_mask_hooks is masking.add_mask_hooks
    hooked = []  # the baseline's masking runs through the reference's own hook, once per decoder layer
    reference_hook = masking._mask_hook
    monkeypatch.setattr(masking, "_mask_hook", lambda *args: hooked.append(args[1]) or reference_hook(*args))
    model, inputs, _ = tiny
    with torch.no_grad():
        MaskingBaseline(build_eager_twin(model), schedules(TINY.num_layers)["fastv"])(**inputs)
    assert hooked == list(range(TINY.num_layers))


def test_eager_twin_shares_weights_and_masking_keeps_full_cache(tiny):
    model, inputs, _ = tiny
    twin = build_eager_twin(model)
    assert all(a.data_ptr() == b.data_ptr() for a, b in zip(twin.parameters(), model.parameters()))
    assert model.config._attn_implementation == "sdpa" and twin.config._attn_implementation == "eager"
    masked = MaskingBaseline(twin, schedules(TINY.num_layers)["fastv"])
    with torch.no_grad():
        cache = masked(**inputs, use_cache=True).past_key_values
    assert len(set(kv_cache_bytes(cache))) == 1
    assert not masked._handles  # hooks are removed after the call


def test_compile_time_on_meta_weights():
    result = measure_compile(TINY, torch.float32, "cpu", model=None, repeats=1, probe_layers=2)
    assert result["weights"].startswith("meta") and result["trace_rewrite_s"] > 0
    assert result["selfcheck_mode"] == "layers" and result["total_s"] >= result["trace_rewrite_s"]
    assert "scaled x4" in result["modes"]["full"]["method"]


def test_prefill_report(tmp_path):
    report = run_prefill(["float32"], repeats=1, warmup=0, node_repeats=1, preset="tiny", echo=None)
    d = report.results["dtypes"]["float32"]
    assert set(d["variants"]) == {"original", "keep-all", "fastv"}
    assert d["variants"]["fastv"]["flops"]["fraction"] < 1 and list(d["node_costs"]["fastv"]["cuts"]) == ["2"]
    assert len(report.results["targets"]) == 4
    assert d["keep_all_overhead"]["tokens"] == 8 and "overhead_s" in d["keep_all_overhead"]
    report.write(tmp_path / "prefill-cpu.json")
    assert "prefill.md" in [p.name for p in write_pages(tmp_path, tmp_path / "docs")]


def test_nodes_only_run_times_the_fastv_and_selector_cuts_alone(tmp_path, capsys):
    from tokenprune.bench.cli import main

    report = run_speed("tiny", node_repeats=1, selectors=["random-keep"], nodes_only=True, echo=None)
    assert set(report.results) == {"node_costs", "targets"}
    assert set(report.results["node_costs"]) == {"fastv", "fastv-random-keep"}
    assert all(list(nc["cuts"]) == ["2"] for nc in report.results["node_costs"].values())
    [target] = report.results["targets"]
    assert target["name"] == "inserted nodes per cut (share of prefill)" and target["value"] > 0
    assert "inserted nodes only" in summary(report) and "fastv-random-keep" in summary(report)
    assert main(["speed", "--preset", "tiny", "--nodes-only", "--selectors", "--node-repeats", "1",
                 "--out", str(tmp_path)]) == 0
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["nodes-tiny-cpu-float32.json"]
    assert main(["speed", "--preset", "tiny", "--nodes-only", "--publish"]) == 2
    assert "--nodes-only with --publish" in capsys.readouterr().err
    assert torch.is_grad_enabled()  # the command leaves the caller's autograd state as it was
