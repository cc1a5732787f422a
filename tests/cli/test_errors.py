"""Every mistake a new user makes on the command line is one precise line on stderr, exit status 2, no traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import tokenprune as tp
from tokenprune.cli import OBJECTIVE_HELP, app
from tokenprune.search.objectives import OBJECTIVES

from .model_dirs import custom_code_dir, text_only_dir

runner = CliRunner()


def _fails_cleanly(args: list[str], *expected: str) -> str:
    result = runner.invoke(app, args)
    err = result.stderr
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "Traceback" not in err
    for text in expected:
        assert text in err, err
    return err


@pytest.fixture(scope="module")
def text_only(tmp_path_factory):
    return text_only_dir(tmp_path_factory.mktemp("text_only"))


@pytest.fixture(scope="module")
def custom(tmp_path_factory):
    return custom_code_dir(tmp_path_factory.mktemp("custom") / "model")


def test_increasing_schedule_names_the_offending_ratio():
    _fails_cleanly(["inspect", "llava", "--schedule", "1,0.5,0.8,0.2", "--no-graph"],
                   "schedule increases from 0.5 to 0.8", "keep_ratio[2]")


def test_schedule_file_with_misspelled_key_says_which_keys_it_has(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: mine\nkeep_ratios: [1.0, 0.5, 0.5, 0.5]\n")
    _fails_cleanly(["inspect", "llava", "--schedule", str(path), "--no-graph"],
                   "its keys are ['name', 'keep_ratios']", "did you mean 'keep_ratios' -> 'keep_ratio'?")


def test_schedule_from_a_string_is_a_schedule_error():
    with pytest.raises(tp.ScheduleError, match="a string is not a list of keep ratios.*Schedule.fastv"):
        tp.Schedule("fast")
    with pytest.raises(tp.ScheduleError, match="could not convert"):
        tp.Schedule([1.0, "half"])


def test_misspelled_model_name_suggests_the_spec():
    err = _fails_cleanly(["inspect", "lava", "--no-graph"], "did you mean 'llava'")
    assert "'aria'" not in err  # not the list of all 64 names


def test_misspelled_option_suggests_the_option():
    _fails_cleanly(["inspect", "llava", "--shedule", "keep-all"], "No such option", "--schedule")


def test_bad_grid_is_a_usage_error():
    _fails_cleanly(["visualize", "llava", "--grid", "12by12"], "ROWSxCOLS")


def test_text_only_model_is_named_as_such(text_only):
    for args in (["validate", "llava", "--model", str(text_only)], ["inspect", str(text_only)]):
        err = _fails_cleanly(args, "LlamaForCausalLM is a text-only model", "no vision tokens")
        assert "vision_config" not in err and "AriaForConditionalGeneration" not in err


def test_compiling_a_text_only_model_says_so():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, vocab_size=64))
    with pytest.raises(tp.SpecMatchError, match="text-only model") as err:
        tp.compile(model, "auto", tp.Schedule.keep_all(2))
    assert "AriaForConditionalGeneration" not in str(err.value)


def test_custom_code_without_the_flag_says_to_pass_it(custom):
    spec = custom.parent / "my_vlm.yaml"
    for args in (["validate", str(spec), "--model", str(custom)], ["inspect", str(custom), "--spec", str(spec)],
                 ["search", str(custom), "--spec", str(spec)]):
        _fails_cleanly(args, "uses its own code (auto_map in config.json)", "--trust-remote-code")


def test_custom_code_model_validates_with_the_flag(custom):
    spec = custom.parent / "my_vlm.yaml"
    result = runner.invoke(app, ["validate", str(spec), "--model", str(custom), "--trust-remote-code",
                                 "--inputs", "llava"])
    assert result.exit_code == 0, result.output
    assert "PASS  keep-all is bit-exact" in result.output
    assert "spec 'my-vlm' is valid for MyVlmForConditionalGeneration" in result.output


def test_load_pruned_takes_trust_remote_code(custom, tmp_path):
    from tokenprune.cli_models import load_model

    loaded = load_model(str(custom), spec=str(custom.parent / "my_vlm.yaml"), trust_remote_code=True)
    assert type(loaded.model).__name__ == "MyVlmForConditionalGeneration"
    pruned = tp.compile(loaded.model, loaded.spec, tp.Schedule.fastv(4, 2, 0.5))
    tp.save_pruned(pruned, custom)
    try:
        with pytest.raises(tp.SpecError, match="trust_remote_code=True"):
            tp.load_pruned(custom)
        again = tp.load_pruned(custom, trust_remote_code=True)
        assert type(again).__name__ == "MyVlmForConditionalGeneration" or hasattr(again, "generate")
        assert tp.schedule_of(again) == tp.Schedule.fastv(4, 2, 0.5)
    finally:
        (custom / "tokenprune.yaml").unlink()


def test_objective_help_lists_every_builtin_objective():
    assert all(name in OBJECTIVE_HELP for name in OBJECTIVES)


def test_search_counts_the_trials_it_was_asked_for(tmp_path):
    result = runner.invoke(app, ["search", "llava", "--method", "p-sigmoid", "--budget", "0.7", "--n-trials", "3",
                                 "--calibration", "random:2", "-o", str(tmp_path / "r.yaml")])
    assert result.exit_code == 0, result.output
    assert "3 search trials + 3 reference evaluations" in result.output


@pytest.mark.parametrize("args, expected", [
    (["--method", "p-sigmoid", "--budget", "0.5", "--tolerance", "0.1"],
     "--tolerance does not apply to P-Sigmoid (at tokenprune search --method p-sigmoid); expected --n-trials"),
    (["--method", "p-sigmoid", "--budget", "0.5", "--n-trials", "0"], "n_trials=0: Input should be greater than"),
    (["--method", "p-sigmoid"], "P-Sigmoid needs a FLOPs budget and none was given"),
    (["--method", "g-search", "--budget", "0.5"], "budget=0.5 given to G-Search, which spends no budget"),
    (["--method", "vtw", "--eta", "-1"], "eta=-1.0: Input should be greater than or equal to 0"),
    (["--method", "fastv-k2", "--budget", "0.5"], "unknown search method 'fastv-k2'"),
])
def test_search_options_are_checked_before_the_model_loads(args, expected):
    _fails_cleanly(["search", "llava", *args], expected)
