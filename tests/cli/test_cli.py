"""The ``tokenprune`` command line: every command answers --help, and the model commands work on tiny models."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tokenprune.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _commands() -> list[str]:
    root = typer.main.get_command(app)
    return sorted(root.list_commands(root.context_class(root, info_name="tokenprune")))


def test_every_command_is_registered():
    assert set(_commands()) >= {"demo", "version", "inspect", "validate", "search", "bench", "visualize", "docs"}


@pytest.mark.parametrize("command", [None, *_commands()])
def test_help_everywhere(command):
    result = runner.invoke(app, ([command] if command else []) + ["--help"])
    assert result.exit_code == 0, result.output
    assert "usage" in result.output.lower()


def test_inspect_bundled_spec_shows_paths_ids_and_marked_cuts():
    result = runner.invoke(app, ["inspect", "llava", "--schedule", "fastv:2:0.5"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "spec:            llava" in out
    assert "model.language_model -> LlamaModel" in out
    assert "4 x LlamaDecoderLayer" in out
    assert "image_token_id=250" in out
    assert "before layers [2] (scored in layers [1])" in out
    assert "cut2_select = call_function select_tokens" in out and out.count("<<") >= 5
    assert "cut1_" not in out


def test_inspect_unknown_model_is_one_readable_error():
    result = runner.invoke(app, ["inspect", "no-such-model"])
    assert result.exit_code == 2
    assert "neither a bundled spec nor a directory" in result.output
    assert "Traceback" not in result.output


def test_validate_bundled_spec_passes():
    result = runner.invoke(app, ["validate", "llava"])
    assert result.exit_code == 0, result.output
    assert "PASS  keep-all is bit-exact" in result.output
    assert "PASS  pruned matches masking reference" in result.output


def test_validate_docs_example_with_family_config():
    examples = ROOT / "docs" / "examples"
    result = runner.invoke(app, ["validate", str(examples / "my_llava.yaml"), "--family-config",
                                 str(examples / "tiny_llava_config.json"), "--inputs", "llava"])
    assert result.exit_code == 0, result.output
    assert "spec 'my-llava' is valid for LlavaForConditionalGeneration" in result.output


def test_validate_rejects_typo_key(tmp_path):
    text = (ROOT / "docs" / "examples" / "my_llava.yaml").read_text().replace("decoder_layers:", "decoder_layer:")
    path = tmp_path / "typo.yaml"
    path.write_text(text)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "unknown key 'decoder_layer'" in result.output


def test_validate_reports_missing_module_path_with_nearest_names(tmp_path):
    text = (ROOT / "docs" / "examples" / "my_llava.yaml").read_text().replace(
        "q_proj: self_attn.q_proj", "q_proj: self_attn.query_proj")
    path = tmp_path / "bad_path.yaml"
    path.write_text(text)
    examples = ROOT / "docs" / "examples"
    result = runner.invoke(app, ["validate", str(path), "--family-config", str(examples / "tiny_llava_config.json"),
                                 "--inputs", "llava"])
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output and "query_proj" in result.output and "q_proj" in result.output


def test_validate_docs_example_builds_the_test_model_beside_it():
    result = runner.invoke(app, ["validate", str(ROOT / "docs" / "examples" / "my_llava.yaml")])
    assert result.exit_code == 0, result.output
    assert "PASS  pruned matches masking reference" in result.output


def test_validate_spec_without_test_file_names_where_it_goes(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text((ROOT / "docs" / "examples" / "my_llava.yaml").read_text())
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "has no test model file" in result.output and str(tmp_path / "mine.test.yaml") in result.output


def test_validate_without_inputs_source_says_how(tmp_path):
    examples = ROOT / "docs" / "examples"
    path = tmp_path / "mine.yaml"  # a spec without test data beside it
    path.write_text((examples / "my_llava.yaml").read_text())
    result = runner.invoke(app, ["validate", str(path), "--family-config", str(examples / "tiny_llava_config.json")])
    assert result.exit_code == 2
    assert "--inputs" in result.output


def test_visualize_tiny_model_writes_png(tmp_path):
    out = tmp_path / "kept.png"
    result = runner.invoke(app, ["visualize", "llava", "--schedule", "1,0.5,0.25,0.25", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_visualize_llava_checkpoint_with_question(tmp_path, llava_dir):
    out = tmp_path / "kept.png"
    result = runner.invoke(app, ["visualize", str(llava_dir), "-q", "is there a blue triangle", "--schedule",
                                 "pdrop:2,5,8:0.5", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 1000
    assert "question: is there a blue triangle" in result.output and "answer (pruned model): " in result.output


def test_visualize_checkpoint_without_image_uses_a_test_picture_and_its_question(tmp_path, llava_dir):
    from tokenprune.synthvqa import make_sample

    result = runner.invoke(app, ["visualize", str(llava_dir), "-o", str(tmp_path / "kept.png")])
    assert result.exit_code == 0, result.output
    assert f"question: {make_sample('test', 0).question.question} ?" in result.output


def test_bench_passes_arguments_to_the_benchmark_module():
    result = runner.invoke(app, ["bench", "--help"])
    if importlib.util.find_spec("tokenprune.bench") is None:
        assert result.exit_code == 2 and "tokenprune.bench" in result.output
    else:
        assert result.exit_code == 0, result.output
        assert "speed" in result.output and "prefill" in result.output


def test_docs_command_without_sources(tmp_path):
    result = runner.invoke(app, ["docs", "--source", str(tmp_path)])
    assert result.exit_code == 2
    assert "no Sphinx sources" in result.output


def test_search_rejects_unknown_calibration_source():
    result = runner.invoke(app, ["search", "llava", "--calibration", "imagenet:3"])
    assert result.exit_code == 2
    assert "unknown calibration source" in result.output


def test_search_saves_a_result_that_inspect_applies(tmp_path):
    out = tmp_path / "result.yaml"
    result = runner.invoke(app, ["search", "llava", "--method", "p-sigmoid", "--budget", "0.7", "--n-trials", "2",
                                 "--calibration", "random:2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and "p-sigmoid: FLOPs fraction" in result.output
    shown = runner.invoke(app, ["inspect", "llava", "--schedule", str(out), "--no-graph"])
    assert shown.exit_code == 0, shown.output
    assert "p-sigmoid(" in shown.output


def test_inspect_checkpoint_directory(llava_dir):
    result = runner.invoke(app, ["inspect", str(llava_dir), "--no-graph"])
    assert result.exit_code == 0, result.output
    assert "spec:            llava" in result.output and "12 x LlamaDecoderLayer" in result.output


def test_no_progress_bars_when_output_is_not_a_terminal():
    result = runner.invoke(app, ["inspect", "llava", "--no-graph"])
    assert result.exit_code == 0, result.output
    assert "\r" not in result.output and "it/s" not in result.output and "loading model" not in result.output
