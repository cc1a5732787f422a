"""Quality benchmark: the method grid, a tiny end-to-end run on the shipped model, resume, targets."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from tokenprune import load_spec
from tokenprune.bench.quality import QualitySettings, RowStore, check_targets, plan, run_quality
from tokenprune.bench.quality.page import pareto_front, write_outputs
from tokenprune.bench.quality.run import model_fingerprint
from tokenprune.errors import TokenPruneError
from tokenprune.flops import flops_fraction, mean_flops_fraction
from tokenprune.schedule import Schedule

CHECKPOINT = Path(__file__).resolve().parents[2] / "reference_model" / "checkpoint"
TINY = replace(QualitySettings(), n_test=12, n_calibration=8, budgets=(0.4,), fastv_layers=(2,), fastv_drop=(0.75,),
               pdrop_lambdas=(0.5,), vtw_etas=(0.05,), gsearch_tolerances=(0.05,), psigmoid_trials=2,
               batch_size=12, selectors=("random-keep",), selector_search_budgets=(0.4,), selector_search_trials=2,
               layer0_selectors=("random-keep", "visionzip"), layer0_keep=(64,))


def test_plan_covers_the_issue_grid():
    entries = plan(12, QualitySettings())
    ids = [e.id for e in entries]
    assert len(ids) == len(set(ids))
    methods = [e.method for e in entries]
    assert methods.count("FastV") == 9 and methods.count("P-Sigmoid") == 5 and methods.count("random scorer") == 10
    assert methods.count("PyramidDrop") >= 3 and methods.count("VTW") >= 3 and methods.count("G-Search") >= 3
    assert ids[0] == "unpruned"
    fastv = next(e for e in entries if e.id == "fastv-K3-R0.9")
    assert fastv.schedule.keep_ratio == pytest.approx([1.0] * 3 + [0.1] * 9)
    for e in entries:  # reused schedules come from earlier entries; searches never see the test split
        if e.schedule_from:
            assert ids.index(e.schedule_from) < ids.index(e.id) and e.scorer != "last-token-attention"
        assert (e.schedule is None) != (e.search is None and e.schedule_from is None)


def test_mean_flops_fraction_averages_per_sample():
    config = LlavaForConditionalGeneration.config_class.from_pretrained(CHECKPOINT)
    schedule = Schedule.fastv(12, 2, 0.25)
    counts = [(10, 144), (14, 144)]
    expected = (flops_fraction(config, schedule, 10, 144) + flops_fraction(config, schedule, 14, 144)) / 2
    assert mean_flops_fraction(config, schedule, counts) == pytest.approx(expected)


def _row(id, method, acc, flops, budget=None, scorer="last-token-attention"):
    return {"id": id, "method": method, "label": id, "scorer": scorer, "budget": budget, "flops_fraction": flops,
            "accuracy": {"overall": acc, "per_type": {}, "n": 100}, "schedule": {"keep_ratio": [1.0]}}


def test_targets_are_computed_from_the_rows():
    rows = [_row("unpruned", "unpruned", 0.95, 1.0), _row("gsearch-tol0.01", "G-Search", 0.945, 0.45),
            _row("psigmoid-b0.3", "P-Sigmoid", 0.90, 0.3, 0.3), _row("fastv-b0.3", "FastV (matched)", 0.85, 0.3, 0.3),
            _row("pdrop-b0.3", "PyramidDrop (matched)", 0.88, 0.3, 0.3),
            _row("random-psigmoid-b0.3", "random scorer", 0.86, 0.3, 0.3, scorer="random")]
    gsearch, psig, rand = check_targets(rows)
    assert gsearch["met"] is True and psig["met"] is False and "-0.0" not in psig["detail"]
    assert "+2.0 points" in psig["detail"]
    assert rand["met"] is False  # FastV (0.85) loses to random (0.86)
    rows[3]["accuracy"]["overall"] = 0.80
    rows[4]["accuracy"]["overall"] = 0.87
    assert check_targets(rows)[1]["met"] is True
    rows[1]["flops_fraction"] = 0.55
    assert check_targets(rows)[0]["met"] is False
    assert check_targets(rows[:1])[0]["met"] is None  # no G-Search row: not measured, not "met"


def test_layer0_target_takes_the_best_selector_at_64_of_576():
    base = _row("unpruned", "unpruned", 0.90, 1.0)
    cut = [{**_row(f"{name}-layer0-k{keep}", f"{name} (layer 0)", acc, 0.15),
            "params": {"selector": name, "keep": keep}}
           for name, keep, acc in (("divprune", 64, 0.80), ("tome", 64, 0.86), ("tome", 128, 0.89))]
    (layer0,) = [t for t in check_targets([base, *cut]) if "layer 0" in t["target"]]
    assert layer0["met"] is True and "tome 0.860" in layer0["detail"]
    assert "95.6% of the unpruned 0.900" in layer0["detail"]
    cut[1]["accuracy"]["overall"] = 0.85  # 94.4%: the 128-token row does not count
    assert [t["met"] for t in check_targets([base, *cut]) if "layer 0" in t["target"]] == [False]
    assert not [t for t in check_targets([base]) if "layer 0" in t["target"]]  # not run: no target row


def test_pareto_front_keeps_only_undominated_rows():
    rows = [_row("a", "x", 0.5, 0.2), _row("b", "x", 0.4, 0.3), _row("c", "x", 0.7, 0.5), _row("d", "x", 0.7, 0.6)]
    assert [r["id"] for r in pareto_front(rows)] == ["a", "c"]


@pytest.fixture(scope="module")
def reference():
    model = LlavaForConditionalGeneration.from_pretrained(CHECKPOINT, dtype=torch.float32, attn_implementation="sdpa")
    return model.eval(), AutoProcessor.from_pretrained(CHECKPOINT), load_spec("llava")


@pytest.mark.timeout(600)
def test_tiny_run_resumes_and_writes_the_docs_outputs(reference, tmp_path):
    model, processor, spec = reference
    rows = run_quality(model, spec, processor, TINY, tmp_path / "work", progress=False)
    assert [r["id"] for r in rows] == [e.id for e in plan(12, TINY)]
    by_id = {r["id"]: r for r in rows}
    assert by_id["unpruned"]["flops_fraction"] == pytest.approx(1.0)
    for r in rows:
        assert r["accuracy"]["n"] == 12 and 0.0 <= r["accuracy"]["overall"] <= 1.0
    psig = by_id["psigmoid-b0.4"]
    assert psig["search"]["calibration_flops_fraction"] <= 0.4 + 1e-6
    assert by_id["random-psigmoid-b0.4"]["schedule"] == psig["schedule"]  # same schedule, random scorer
    assert abs(psig["flops_fraction"] - 0.4) < 0.02  # test prompts have about the calibration prompts' length
    keep = by_id["random-keep-fastv-b0.4"]  # a selector on the matched FastV schedule
    assert keep["scorer"] == "random-keep" and keep["schedule"] == by_id["fastv-b0.4"]["schedule"]
    chose = by_id["psigmoid-selectors-b0.4"]  # P-Sigmoid choosing between the default scorer and random-keep
    assert chose["scorer"] == chose["search"]["selector"] in ("last-token-attention", "random-keep")
    assert set(chose["search"]["selector_results"]) <= {"last-token-attention", "random-keep"}
    zipped = by_id["visionzip-layer0-k64"]  # one cut before layer 0 keeping 64/576 of the tokens
    assert zipped["scorer"] == "visionzip" and zipped["schedule"]["keep_ratio"][0] == pytest.approx(64 / 576)
    assert zipped["flops_fraction"] < by_id["unpruned"]["flops_fraction"]

    # Resume: a second run recomputes nothing (the rows file does not grow) and returns the same rows.
    size = (tmp_path / "work" / "rows.jsonl").stat().st_size
    again = run_quality(model, spec, processor, TINY, tmp_path / "work", progress=False)
    assert again == rows and (tmp_path / "work" / "rows.jsonl").stat().st_size == size
    fingerprint = model_fingerprint(model)
    with pytest.raises(TokenPruneError, match="different settings"):
        RowStore(tmp_path / "work" / "rows.jsonl", replace(TINY, n_test=13), fingerprint)
    with pytest.raises(TokenPruneError, match="another model"):  # e.g. a retrained checkpoint
        RowStore(tmp_path / "work" / "rows.jsonl", TINY, "0" * 16)

    report = {"model": {"name": "tiny"}, "settings": TINY.to_dict(), "seconds": 1.0, "rows": rows,
              "targets": check_targets(rows), "machine": {"cpu_model": "cpu", "cpu_count": 2, "torch": "t",
                                                          "transformers": "t", "timestamp_utc": "now"}}
    paths = write_outputs(report, tmp_path / "docs", "intro")
    page = paths["page"].read_text()
    assert "| P-Sigmoid |" in page and "quality-pareto.png" in page and "## Targets" in page
    assert "## Before the first layer" in page and "| visionzip |" in page
    assert "## Selector search" in page and "| random-keep (FastV schedule) | budget=0.4 |" in page
    assert any(t["target"].startswith("selector search at budget 0.4") for t in report["targets"])
    assert json.loads(paths["json"].read_text())["rows"] == rows
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_benchmark_script_saves_the_searched_schedules_the_demo_loads(tmp_path):
    import importlib.util

    from tokenprune.reference_demo import demo_schedule

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "quality.py"
    spec = importlib.util.spec_from_file_location("quality_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    sigmoid = Schedule.sigmoid(12, 2.0, 4.0, 0.1)
    rows = [_row("psigmoid-b0.3", "P-Sigmoid", 0.5, 0.3, 0.3), _row("fastv-b0.3", "FastV (matched)", 0.4, 0.3, 0.3)]
    rows[0]["schedule"] = sigmoid.to_dict()
    searched = {**_row("psigmoid-selectors-b0.3", "P-Sigmoid (selector search)", 0.6, 0.3, 0.3, scorer="dart"),
                "schedule": Schedule.pdrop(12, None, 0.5).to_dict()}
    saved = script.save_searched_schedules([*rows, searched], tmp_path)
    assert list(saved) == ["psigmoid-b0.3", "psigmoid-selectors-b0.3"]
    assert saved["psigmoid-b0.3"].name == "p-sigmoid-b0.3.yaml"
    assert demo_schedule(12, saved["psigmoid-b0.3"])[:2] == (sigmoid, "last-token-attention")
    # The selector search's result keeps the selector it chose: the demo prunes with it.
    assert saved["psigmoid-selectors-b0.3"].name == "p-sigmoid-selectors-b0.3.yaml"
    assert demo_schedule(12, saved["psigmoid-selectors-b0.3"])[:2] == (Schedule.pdrop(12, None, 0.5), "dart")


def test_unreachable_budgets_are_rows_not_crashes(tmp_path):
    rows = [_row("unpruned", "unpruned", 0.9, 1.0), _row("psigmoid-b0.2", "P-Sigmoid", 0.8, 0.2, 0.2),
            {**_row("fastv-b0.2", "FastV (matched)", 0.0, 0.0, 0.2), "accuracy": None, "flops_fraction": None,
             "schedule": None, "unreachable": "budget 0.2 is unreachable for FastV with K=2"},
            _row("random-psigmoid-b0.2", "random scorer", 0.5, 0.2, 0.2, scorer="random")]
    targets = check_targets(rows)
    assert targets[-1]["met"] is True and "FastV" not in targets[-1]["detail"]
    report = {"model": {"name": "tiny"}, "settings": TINY.to_dict(), "seconds": 1.0, "rows": rows,
              "targets": targets, "machine": {"cpu_model": "cpu", "cpu_count": 2, "torch": "t",
                                             "transformers": "t", "timestamp_utc": "now"}}
    page = write_outputs(report, tmp_path, "intro")["page"].read_text()
    assert "| FastV (matched) | fastv-b0.2 | unreachable |" in page and "| 0.2 | 80.0 (0.200) | unreachable |" in page


def test_model_fingerprint_changes_with_any_weight(reference):
    model = reference[0]
    before = model_fingerprint(model)
    assert before == model_fingerprint(model)
    weight = model.model.language_model.layers[5].mlp.down_proj.weight
    original = weight[0, 0].item()
    with torch.no_grad():
        weight[0, 0] += 1e-3
        try:
            assert model_fingerprint(model) != before
        finally:
            weight[0, 0] = original  # restore exactly: the fixture is shared
    assert model_fingerprint(model) == before


def _quality_script():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "quality.py"
    spec = importlib.util.spec_from_file_location("quality_script_suites", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.mark.timeout(600)
def test_photo_suite_rows_score_photo_questions(tmp_path):
    from tests.reference_model._scripts import PHOTO, build

    from tokenprune.synthvqa import answers, photo

    processor = build.build_processor(PHOTO)
    model = build.build_model(processor.tokenizer, seed=1, text_hidden=32, text_intermediate=64, suite=PHOTO).eval()
    settings = replace(TINY, n_test=6, batch_size=6)
    rows = run_quality(model, load_spec("llava"), processor, settings, tmp_path / "work", progress=False,
                       only=["unpruned", "fastv-K2-R0.75"], suite="photo")
    assert [r["id"] for r in rows] == ["unpruned", "fastv-K2-R0.75"]
    samples = photo.make_split("test", 6)
    assert rows[0]["accuracy"] == answers.accuracy(model, processor, samples)  # the photo questions, not the grid's
    fastv = Schedule.from_dict(rows[1]["schedule"])
    counts = answers.prompt_token_counts(processor, samples, [model.config.image_token_id])
    assert {vision for _, vision in counts} == {576}
    assert rows[1]["flops_fraction"] == pytest.approx(mean_flops_fraction(model.config, fastv, counts))


def test_benchmark_script_refuses_a_missing_photo_model(tmp_path):
    with pytest.raises(SystemExit, match="no model at .*photo suite's trained checkpoint"):
        _quality_script().main(["--suite", "photo", "--checkpoint", str(tmp_path), "--docs-dir", str(tmp_path)])


def test_every_benchmarked_selector_has_its_own_colour():
    from tokenprune.bench.quality.page import style_of

    settings = QualitySettings()
    names = dict.fromkeys([*settings.selectors, *settings.layer0_selectors])
    colours = {style_of(f"{name} (layer 0)")[1] for name in names}
    assert len(colours) == len(names)
    assert style_of("divprune (FastV schedule)")[1] == style_of("divprune (layer 0)")[1]  # one colour per selector
    assert style_of("divprune (FastV schedule)")[0] != style_of("divprune (layer 0)")[0]  # one marker per schedule
