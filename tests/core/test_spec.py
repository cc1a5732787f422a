import json
from pathlib import Path

import pytest
import yaml

import tokenprune as tp
from tokenprune.errors import SpecError, SpecMatchError
from tokenprune.plugins.resolve import resolve_spec
from tokenprune.spec import json_schema
from tokenprune.spec_testdata import TestModelSpec, load_test_model, json_schema_of_test_model
from tokenprune.testing import build_test_model, make_test_inputs

SPECS = Path(tp.spec.__file__).parents[1] / "model_specs"
LLAVA = yaml.safe_load((SPECS / "llava.yaml").read_text())
LLAVA_TEST = yaml.safe_load((SPECS / "llava.test.yaml").read_text())


def _write(tmp_path, data) -> Path:
    path = tmp_path / "my_model.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_every_bundled_spec_loads_and_has_a_test_model():
    names = tp.bundled_spec_names()
    assert {"llava", "llava_next", "idefics3", "smolvlm", "internvl"} <= set(names)
    for name in names:
        spec = tp.load_spec(name)
        assert spec.name == name and "test_model" not in spec.model_dump()
        test = load_test_model(spec)
        assert isinstance(test, TestModelSpec) and test.config and test == load_test_model(name)


def test_test_files_are_not_listed_as_specs():
    on_disk = {p.name for p in SPECS.glob("*.test.yaml")}
    assert len(on_disk) == len(tp.bundled_spec_names())
    assert not any(name.endswith(".test") for name in tp.bundled_spec_names())
    with pytest.raises(SpecError, match=r"'llava.test.yaml' is a test model file, not a spec.*pass llava.yaml"):
        tp.load_spec("llava.test.yaml")


def test_bundled_descriptions_are_short_and_point_to_the_family_notes():
    notes = Path(tp.spec.__file__).parents[1] / "docs" / "models"
    for name in tp.bundled_spec_names():
        description = tp.load_spec(name).description
        assert len(description) <= 320 and f"docs/models/{name}.md" in description, name
        assert (notes / f"{name}.md").is_file(), name


def test_inline_test_model_is_refused_with_where_it_goes(tmp_path):
    path = _write(tmp_path, {**LLAVA, "test_model": LLAVA_TEST})
    with pytest.raises(SpecError) as err:
        tp.load_spec(path)
    text = str(err.value)
    assert "inline 'test_model' section" in text and f"{path}: test_model" in text
    assert str(tmp_path / "my_model.test.yaml") in text and "move the keys under test_model" in text


def test_user_spec_builds_its_test_model_from_the_file_beside_it(tmp_path):
    path = _write(tmp_path, LLAVA)
    with pytest.raises(SpecError, match=r"spec 'llava' has no test model file.*my_model.test.yaml"):
        build_test_model(tp.load_spec(path))
    layers = LLAVA_TEST["config"]["text_config"]["num_hidden_layers"] - 1
    test = {**LLAVA_TEST, "config": {**LLAVA_TEST["config"],
                                     "text_config": {**LLAVA_TEST["config"]["text_config"], "num_hidden_layers": layers}}}
    (tmp_path / "my_model.test.yaml").write_text(yaml.safe_dump(test))
    spec = tp.load_spec(path)
    model = build_test_model(spec)
    assert model.config.text_config.num_hidden_layers == layers  # the user's file, not the bundled llava one
    batch = make_test_inputs(spec, model, [1, 1], [5, 8])
    assert int(batch.vision_mask.sum()) > 0


def test_test_file_typo_and_unknown_builder_are_named(tmp_path):
    (tmp_path / "my_model.test.yaml").write_text(yaml.safe_dump({**LLAVA_TEST, "first_cutt": 2}))
    with pytest.raises(SpecError, match=r"(?s)invalid test model file .*my_model.test.yaml.*unknown key 'first_cutt'"):
        load_test_model(_write(tmp_path, LLAVA))
    (tmp_path / "my_model.test.yaml").write_text(yaml.safe_dump({**LLAVA_TEST, "inputs": "lava"}))
    spec = tp.load_spec(tmp_path / "my_model.yaml")
    test = load_test_model(spec)  # builder names are checked when a test model is built
    with pytest.raises(SpecError, match=r"unknown test inputs 'lava'.*my_model.test.yaml: inputs.*did you mean"):
        make_test_inputs(spec, None, [1], [3], test=test)


def test_typo_in_a_key_is_rejected_with_its_path(tmp_path):
    data = {**LLAVA, "layer": {**LLAVA["layer"], "q_prj": "self_attn.q_proj"}}
    with pytest.raises(SpecError) as err:
        tp.load_spec(_write(tmp_path, data))
    assert "unknown key 'layer.q_prj'" in str(err.value)
    assert "my_model.yaml" in str(err.value)


def test_missing_key_and_bad_type_are_named(tmp_path):
    data = {k: v for k, v in LLAVA.items() if k != "language_model"}
    data["architectures"] = "LlavaForConditionalGeneration"
    with pytest.raises(SpecError) as err:
        tp.load_spec(_write(tmp_path, data))
    assert "missing key 'language_model'" in str(err.value)
    assert "architectures: Input should be a valid list" in str(err.value)


def test_unknown_registered_name_is_refused_when_resolved(tmp_path):
    data = {**LLAVA, "attention": {"rope": "rotate_quarter"}}
    spec = tp.load_spec(_write(tmp_path, data))  # names are checked once, when compile resolves the spec
    with pytest.raises(SpecError, match=r"unknown rope 'rotate_quarter' .*attention.rope.*one of \[.*'none', "
                                        r".*'rotate_half'\].*did you mean \['rotate_half'\]"):
        resolve_spec(spec)


def test_unknown_bundled_name_suggests_the_nearest():
    with pytest.raises(SpecError, match=r"no bundled spec named 'lava'.*did you mean \['llava'"):
        tp.load_spec("lava")


def test_module_path_missing_on_the_model_names_nearest_children(tmp_path):
    model = build_test_model(tp.load_spec("llava"))
    data = {**LLAVA, "language_model": "model.langauge_model"}
    spec = tp.load_spec(_write(tmp_path, data))
    with pytest.raises(SpecError) as err:
        tp.compile(model, spec, tp.Schedule.keep_all(4))
    text = str(err.value)
    assert "module path 'model.langauge_model' does not exist on LlavaForConditionalGeneration" in text
    assert "'model' has no child 'langauge_model'" in text and "'language_model'" in text


def test_layer_path_missing_is_reported(tmp_path):
    model = build_test_model(tp.load_spec("llava"))
    data = {**LLAVA, "layer": {**LLAVA["layer"], "input_norm": "input_norm"}}
    with pytest.raises(SpecError, match=r"layer.input_norm.*one of \['input_layernorm'"):
        tp.compile(model, tp.load_spec(_write(tmp_path, data)), tp.Schedule.keep_all(4))


def test_spec_for_another_architecture_is_refused():
    model = build_test_model(tp.load_spec("llava"))
    with pytest.raises(SpecError, match=r"spec 'internvl' is for \['InternVLForConditionalGeneration'\], not 'LlavaForConditionalGeneration'"):
        tp.compile(model, "internvl", tp.Schedule.keep_all(4))


def test_auto_matches_by_architecture_and_explains_failure():
    model = build_test_model(tp.load_spec("llava_next"))
    assert tp.match_spec(model).name == "llava_next"
    import torch

    with pytest.raises(SpecMatchError, match=r"no bundled spec matches architecture 'Linear'"):
        tp.match_spec(torch.nn.Linear(2, 2))


def test_config_reference_typo_is_named():
    model = build_test_model(tp.load_spec("llava"))
    spec = tp.load_spec("llava").model_copy(update={"vision_tokens": tp.spec.VisionTokens(token_ids=["image_tokn_id"])})
    with pytest.raises(SpecError, match=r"config has no attribute 'image_tokn_id'.*nearest names: \['image_token_id'"):
        tp.compile(model, spec, tp.Schedule.keep_all(4))


def test_json_schema_is_exported_and_current():
    shipped = json.loads((SPECS / "spec.schema.json").read_text())
    assert shipped == json_schema(), "run `python -m tokenprune.spec_testdata` to regenerate model_specs/spec.schema.json"
    assert shipped["additionalProperties"] is False and "test_model" not in shipped["properties"]
    shipped_test = json.loads((SPECS / "test.schema.json").read_text())
    assert shipped_test == json_schema_of_test_model(), "run `python -m tokenprune.spec_testdata` to regenerate the schemas"
    assert shipped_test["additionalProperties"] is False and {"config_class", "config", "inputs"} <= set(
        shipped_test["required"])
