"""``tokenprune.yaml`` next to a checkpoint: save, reload, and schedules read from text and files."""

from __future__ import annotations

import pytest
import torch
import yaml

import tokenprune as tp
from tokenprune.saving import FILE_NAME, PruningSetup, read_schedule, read_setup
from tokenprune.testing import build_test_model, make_test_inputs


@pytest.fixture(scope="module")
def tiny():
    spec = tp.load_spec("llava")
    model = build_test_model(spec)
    batch = make_test_inputs(spec, model, [1, 1], [4, 7], seed=1)
    return spec, model, batch


def test_save_and_load_pruned_roundtrip(tiny, tmp_path):
    spec, model, batch = tiny
    schedule = tp.Schedule([1.0, 0.5, 0.25, 0.25], name="two-cut")
    pruned = tp.compile(model, spec, schedule, scorer="text-mean-attention", seed=3)
    path = tp.save_pruned(pruned, tmp_path, save_model=True)
    assert path.name == FILE_NAME
    data = yaml.safe_load(path.read_text())
    assert data["spec"] == "llava" and data["scorer"] == "text-mean-attention" and data["seed"] == 3
    again = tp.load_pruned(tmp_path, attn_implementation="sdpa")
    assert tp.schedule_of(again) == schedule
    with torch.no_grad():
        expected = pruned(**batch.kwargs).logits
        got = again(**batch.kwargs).logits
    torch.testing.assert_close(got, expected)
    assert [t.tolist() for t in tp.last_selection(again)[1]] == [t.tolist() for t in tp.last_selection(pruned)[1]]


def test_custom_spec_is_saved_in_full(tiny, tmp_path):
    spec, model, _ = tiny
    custom = spec.model_copy(update={"name": "my-llava"})
    pruned = tp.compile(model, custom, tp.Schedule.fastv(4, 2, 0.5))
    tp.save_pruned(pruned, tmp_path)
    data = yaml.safe_load((tmp_path / FILE_NAME).read_text())
    assert isinstance(data["spec"], dict) and data["spec"]["name"] == "my-llava"
    setup = read_setup(tmp_path)
    assert setup.spec == custom and setup.schedule == tp.Schedule.fastv(4, 2, 0.5)
    recompiled = setup.apply(model)
    assert tp.schedule_of(recompiled) == setup.schedule


def test_setup_saved_with_inline_test_data_still_loads(tiny, tmp_path):
    spec, _, _ = tiny
    old = {**spec.model_dump(mode="json", exclude_defaults=True), "name": "my-llava",
           "test_model": {"config_class": "LlavaConfig", "config": {}, "inputs": "llava"}}
    schedule = {"keep_ratio": [1.0, 0.5, 0.25, 0.25]}
    (tmp_path / FILE_NAME).write_text(yaml.safe_dump({"spec": old, "schedule": schedule}))
    assert read_setup(tmp_path).spec == spec.model_copy(update={"name": "my-llava"})


def test_setup_file_errors_are_readable(tmp_path):
    with pytest.raises(tp.SpecError, match="no tokenprune.yaml"):
        read_setup(tmp_path)
    (tmp_path / FILE_NAME).write_text("spec: llava\nschedule: {keep_ratio: [1.0]}\nextra: 1\n")
    with pytest.raises(tp.SpecError, match=r"unknown keys \['extra'\]"):
        read_setup(tmp_path)
    with pytest.raises(tp.SpecError, match="missing key 'schedule'"):
        PruningSetup.from_dict({"spec": "llava"}, "x.yaml")


@pytest.mark.parametrize("text, expected", [
    ("keep-all", [1.0, 1.0, 1.0, 1.0]),
    ("fastv:2:0.5", [1.0, 1.0, 0.5, 0.5]),
    ("vtw:3", [1.0, 1.0, 1.0, 0.0]),
    ("pdrop:0.5", [1.0, 0.5, 0.25, 0.125]),
    ("pdrop:2:0.5", [1.0, 1.0, 0.5, 0.5]),
    ("1,0.5,0.5,0.25", [1.0, 0.5, 0.5, 0.25]),
])
def test_read_schedule_forms(text, expected):
    assert list(read_schedule(text, 4).keep_ratio) == expected


def test_read_schedule_sigmoid_and_files(tmp_path):
    assert read_schedule("sigmoid:1:2:0.1", 4) == tp.Schedule.sigmoid(4, 1.0, 2.0, 0.1)
    plain = tmp_path / "s.yaml"
    plain.write_text(tp.Schedule.fastv(4, 1, 0.25).to_yaml())
    assert read_schedule(str(plain)) == tp.Schedule.fastv(4, 1, 0.25)
    result = tmp_path / "result.yaml"
    result.write_text(yaml.safe_dump({"method": "g-search", "schedule": tp.Schedule.vtw(4, 2).to_dict()}))
    assert read_schedule(str(result)) == tp.Schedule.vtw(4, 2)


@pytest.mark.parametrize("text, message", [
    ("fastv:2:0.5", "needs the number of decoder layers"),
    ("warp:3", "unknown schedule 'warp:3'"),
    ("fastv:x", "cannot read schedule"),
    ("missing.yaml", "not found"),
])
def test_read_schedule_errors(text, message):
    with pytest.raises(tp.ScheduleError, match=message):
        read_schedule(text, None if text.startswith("fastv:2") else 4)
