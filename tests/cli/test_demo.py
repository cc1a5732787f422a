"""``tokenprune demo``: the README's demo on the shipped reference model, and the random-weight variant."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import tokenprune as tp
from tests.reference_model._shared import CHECKPOINT
from tokenprune.cli import app
from tokenprune.errors import TokenPruneError
from tokenprune.reference_demo import (
    DEFAULT_SUITE,
    default_checkpoint,
    demo_schedule,
    load_reference,
    run_reference_demo,
    searched_schedule,
    suite_of_model,
)
from tokenprune.synthvqa import photo

runner = CliRunner()


def test_reference_demo_reports_answers_accuracy_flops_time_and_picture(tmp_path):
    lines = []
    picture = tmp_path / "kept.png"
    out = run_reference_demo(echo=lines.append, checkpoint=CHECKPOINT, questions=12, repeats=1, picture=picture)
    text = "\n".join(lines)
    assert out["exact"] is True
    assert "Questions (truth | original | pruned):" in text and text.count(" ?  ") + text.count(" ? ") >= 6
    assert 0.0 <= out["accuracy"]["pruned"]["overall"] <= 1.0 and out["accuracy"]["original"]["n"] == 12
    assert 0.0 < out["flops_fraction"] < 1.0  # the demo's schedule prunes
    assert set(out["times"]) == {"original", "pruned"}
    assert picture.read_bytes()[:4] == b"\x89PNG"
    for word in ("cut:", "interleaved runs:", "FLOPs fraction:"):  # each explained on its own line
        assert sum(line.strip().startswith(word) for line in lines) == 1, word


def test_photo_suite_demo_asks_photo_questions_and_draws_the_24x24_grid(tmp_path, monkeypatch):
    """The same demo on a (tiny, untrained) model of the photo suite: its questions, its test split, its patch grid."""
    import tokenprune.visualize as visualize
    from tests.reference_model._scripts import PHOTO, build

    processor = build.build_processor(PHOTO)
    model = build.build_model(processor.tokenizer, seed=0, text_hidden=32, text_intermediate=64, suite=PHOTO)
    model.save_pretrained(tmp_path / "photo")
    processor.save_pretrained(tmp_path / "photo")
    grids = []
    real = visualize.plot_for_question
    monkeypatch.setattr(visualize, "plot_for_question", lambda *a, **kw: grids.append(kw["grid"]) or real(*a, **kw))
    lines = []
    out = run_reference_demo(echo=lines.append, checkpoint=tmp_path / "photo", questions=6, repeats=1,
                             picture=tmp_path / "kept.png", suite="photo")
    text = "\n".join(lines)
    assert "576 vision tokens per 96x96 image, photo-like scenes" in text
    shown = [photo.make_sample("test", i).question.question for i in range(6)]
    assert all(q + " ?" in text for q in shown)
    assert out["exact"] is True and out["accuracy"]["original"]["n"] == 6
    assert grids == [(24, 24)] and (tmp_path / "kept.png").read_bytes()[:4] == b"\x89PNG"


def test_the_suite_is_the_one_the_checkpoints_images_fit_and_a_mismatch_is_refused():
    from transformers import AutoConfig

    grid = AutoConfig.from_pretrained(CHECKPOINT)
    assert suite_of_model(grid, None, CHECKPOINT).name == "grid"  # --checkpoint alone
    assert suite_of_model(grid, "grid", CHECKPOINT).name == "grid"
    with pytest.raises(TokenPruneError, match=r"reads 48x48 images as 12x12 patches, but the 'photo' suite's "
                                              r"questions are 96x96 images of 24x24 patches.*pass --suite grid"):
        suite_of_model(grid, "photo", CHECKPOINT)
    grid.vision_config.image_size = 64  # no suite has 64x64 images
    with pytest.raises(TokenPruneError, match="cannot tell which reference suite.*pass --suite"):
        suite_of_model(grid, None, CHECKPOINT)
    assert DEFAULT_SUITE == "photo" and default_checkpoint() == Path.cwd() / "reference_model/photo/checkpoint"


def test_an_unknown_suite_is_refused_with_the_valid_names():
    result = runner.invoke(app, ["demo", "--suite", "photos", "--repeats", "1"])
    assert result.exit_code == 2 and "unknown reference suite 'photos'" in result.output
    assert "['grid', 'photo']" in result.output


def test_demo_writes_its_picture_to_a_temp_folder_unless_asked(tmp_path, monkeypatch):
    import tokenprune.reference_demo as reference_demo

    asked = []
    monkeypatch.setattr(reference_demo, "run_reference_demo", lambda **kwargs: asked.append(kwargs["picture"]))
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["demo"]).exit_code == 0
    assert runner.invoke(app, ["demo", "--out", "mine.png"]).exit_code == 0
    default, chosen = asked
    assert default.parent.is_dir() and not default.resolve().is_relative_to(tmp_path)  # a new temp folder
    assert default.parent.name.startswith("tokenprune-demo-") and default.name == "kept-patches.png"
    assert str(chosen) == "mine.png"


def test_demo_schedule_is_the_shipped_search_result_when_present(tmp_path):
    schedule, scorer, origin = demo_schedule(12, None, CHECKPOINT)
    shipped = searched_schedule(CHECKPOINT)
    if shipped is not None and shipped.name.startswith("p-sigmoid-selectors"):  # a setup: schedule and selector
        from tokenprune.saving import read_setup

        setup = read_setup(shipped)
        assert (schedule, scorer) == (setup.schedule, setup.scorer) and shipped.name in origin
    elif shipped is not None:
        assert (schedule, scorer) == (tp.Schedule.from_yaml(shipped.read_text()), "last-token-attention")
    else:
        assert schedule == tp.Schedule.fastv(12, 2, 0.25) and "no searched schedule" in origin
    custom = tmp_path / "s.yaml"
    custom.write_text(tp.Schedule.pdrop(12, None, 0.5).to_yaml())
    assert demo_schedule(12, custom)[:2] == (tp.Schedule.pdrop(12, None, 0.5), "last-token-attention")


def test_demo_prefers_the_selector_searchs_setup_and_prunes_with_its_selector(tmp_path):
    """A saved setup (tokenprune.yaml format) carries the selector the search chose; the demo compiles with it."""
    from tokenprune.saving import PruningSetup

    checkpoint = tmp_path / "checkpoint"
    (tmp_path / "schedules").mkdir()
    plain = tp.Schedule.fastv(12, 2, 0.5)
    (tmp_path / "schedules" / "p-sigmoid-b0.3.yaml").write_text(plain.to_yaml())
    assert demo_schedule(12, None, checkpoint)[:2] == (plain, "last-token-attention")
    chosen = tp.Schedule.pdrop(12, None, 0.5)
    setup = PruningSetup(tp.load_spec("llava"), chosen, scorer="divprune")
    (tmp_path / "schedules" / "p-sigmoid-selectors-b0.3.yaml").write_text(setup.to_yaml())
    schedule, scorer, origin = demo_schedule(12, None, checkpoint)
    assert (schedule, scorer) == (chosen, "divprune") and origin.endswith("p-sigmoid-selectors-b0.3.yaml")
    lines = []
    out = run_reference_demo(echo=lines.append, checkpoint=CHECKPOINT, questions=6, repeats=1, picture=None,
                             schedule_path=tmp_path / "schedules" / "p-sigmoid-selectors-b0.3.yaml")
    assert out["scorer"] == "divprune" and any("tokens chosen by divprune" in line for line in lines)


def test_demo_keeps_the_selector_of_a_saved_search_result(tmp_path):
    from tokenprune.search import SearchResult

    found = tp.Schedule.pdrop(12, None, 0.5)
    result = SearchResult("p-sigmoid", found, "kl", "min", {"search": 0.1, "heldout": 0.2},
                          {"search": 0.0, "heldout": 0.0}, 0.4, selector="dart")
    assert demo_schedule(12, result.save(tmp_path / "result.yaml"))[:2] == (found, "dart")
    plain = SearchResult("p-sigmoid", found, "kl", "min", {"search": 0.1, "heldout": 0.2},
                         {"search": 0.0, "heldout": 0.0}, 0.4)  # no selector chosen: the default scorer
    assert demo_schedule(12, plain.save(tmp_path / "plain.yaml"))[:2] == (found, "last-token-attention")


def test_a_missing_schedule_file_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(TokenPruneError, match="schedule file .*nope.yaml' not found"):
        demo_schedule(12, tmp_path / "nope.yaml")


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(TokenPruneError, match="no reference model at .*tokenprune demo --random"):
        load_reference(tmp_path)


def test_demo_reads_nothing_from_the_checkout_the_package_lives_in(tmp_path, monkeypatch):
    """Run from elsewhere (as an installed package would be), the defaults are looked up in the working
    directory: a clear error names it, and no searched schedule is borrowed from the package's checkout."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TokenPruneError, match=f"no reference model at {tmp_path}.*pass --checkpoint"):
        load_reference()
    schedule, _, origin = demo_schedule(12, None)
    assert schedule == tp.Schedule.fastv(12, 2, 0.25) and "no searched schedule" in origin
    result = runner.invoke(app, ["demo", "--repeats", "1"])
    assert result.exit_code == 2 and f"no reference model at {tmp_path}" in result.output
    docs = runner.invoke(app, ["docs"])
    assert docs.exit_code == 2 and "no Sphinx sources at docs" in docs.output


def test_random_demo_from_the_cli():
    result = runner.invoke(app, ["demo", "--random", "--repeats", "1"])
    assert result.exit_code == 0, result.output
    assert "Keep-all compiled model bit-identical to the original: True" in result.output


def test_demo_leaves_autograd_enabled(tmp_path):
    run_reference_demo(echo=lambda *_: None, checkpoint=CHECKPOINT, questions=6, repeats=1, picture=None)
    assert torch.is_grad_enabled()  # a library call must not switch global autograd state off
