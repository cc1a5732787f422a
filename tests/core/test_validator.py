"""`tokenprune validate` checks a spec against the model's own eager attention, with dtype-aware tolerances,
and q/k norms over the whole projection (OLMo 2 / OLMo 3) are scored exactly."""

from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

import tokenprune as tp
from tokenprune.cli import app
from tokenprune.errors import SpecError
from tokenprune.spec_testdata import TestModelSpec, load_test_model
from tokenprune.testing import build_test_model, make_test_inputs
from tokenprune.testing.conformance import CheckResult, run_mini_conformance
from tokenprune.testing.eager_topk import eager_topk_agreement
from tokenprune.testing.tolerance import score_tolerance

CHECKPOINT = Path(__file__).resolve().parents[2] / "reference_model" / "checkpoint"
EAGER_CHECK = "kept set is the top-k of the model's own eager attention"


def llava_spec(text_type: str, layer: dict | None = None, attention: dict | None = None) -> dict:
    """The bundled LLaVA spec as a dict, on a ``text_type`` (qwen3, olmo2, ...) text model of the same size."""
    spec = tp.load_spec("llava").model_dump(mode="json", exclude_unset=True)
    spec["name"] = f"llava_{text_type}"  # build() reads the text type back from the name
    spec["layer"] = {**spec.get("layer", {}), **(layer or {})}
    spec["attention"] = attention or {}
    return spec


QWEN3 = llava_spec("qwen3", {"q_norm": "self_attn.q_norm", "k_norm": "self_attn.k_norm"})


def llava_test(text_type: str) -> TestModelSpec:
    """The bundled LLaVA test data on a ``text_type`` text model of the same size."""
    test = load_test_model("llava")
    text = {**test.config["text_config"], "model_type": text_type, "head_dim": 16, "bos_token_id": 1,
            "eos_token_id": 2, "pad_token_id": 0}
    return test.model_copy(update={"config": {**test.config, "text_config": text}})


def build(spec: dict, dtype=torch.float32):
    """The spec's tiny eager model, its norm weights drawn away from 1 (a fresh model's norms are identities,
    which would hide a wrong norm path), and a left-padded batch of two samples."""
    test = llava_test(spec["name"].removeprefix("llava_"))
    model = build_test_model(tp.spec.spec_from_dict(spec), attn_implementation="eager", dtype=dtype, test=test)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and param.dim() == 1:
                param.copy_(1 + 0.5 * torch.randn(param.shape, generator=gen))
    batch = make_test_inputs(tp.spec.spec_from_dict(spec), model, [1, 1], [5, 8], seed=0, test=test)
    return model, batch.kwargs


@pytest.fixture(scope="module")
def qwen3():
    return build(QWEN3)


def check(model, spec: dict, inputs: dict) -> dict[str, CheckResult]:
    report = run_mini_conformance(model, tp.spec.spec_from_dict(spec), inputs)
    return {c.name.split(" (")[0]: c for c in report.checks}


def test_correct_spec_passes(qwen3):
    model, inputs = qwen3
    checks = check(model, QWEN3, inputs)
    assert all(c.passed for c in checks.values()), [c.detail for c in checks.values()]


@pytest.mark.parametrize("edit, named", [
    ({"layer": {"q_norm": None, "k_norm": None}}, ["layer.q_norm=None", "self_attn.q_norm (Qwen3RMSNorm)",
                                                   "self_attn.k_norm (Qwen3RMSNorm)"]),
    ({"attention": {"scaling": "head_dim"}}, ["attention.scaling='head_dim'=16"]),
    ({"layer": {"input_norm": "post_attention_layernorm"}}, ["layer.input_norm='post_attention_layernorm'"]),
    ({"layer": {"input_norm": None}}, ["input_layernorm (Qwen3RMSNorm)"]),
], ids=["no-qk-norms", "wrong-scaling", "wrong-input-norm", "no-input-norm"])
def test_wrong_spec_fails_naming_the_scorer_keys(qwen3, edit, named):
    model, inputs = qwen3
    spec = {**QWEN3, "layer": {**QWEN3["layer"], **edit.get("layer", {})}, "attention": edit.get("attention", {})}
    checks = check(model, spec, inputs)
    # Masking tokenprune's own choice cannot see the mistake; the model's own attention can.
    assert checks["pruned matches masking reference"].passed
    eager = checks[EAGER_CHECK]
    assert not eager.passed
    assert "keeps only" in eager.detail and "of HF's top" in eager.detail
    for text in named:
        assert text in eager.detail, eager.detail


def test_fp16_reference_checkpoint_passes():
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(CHECKPOINT, dtype=torch.float16,
                                                          attn_implementation="eager").eval()
    spec = tp.load_spec("llava")
    inputs = make_test_inputs(spec, model, [1], [5], seed=0).kwargs  # one sample: fp16 on CPU is slow
    report = run_mini_conformance(model, spec, inputs)
    assert report.passed, report.lines()
    assert "float16 logits" in report.checks[1].detail


def olmo_spec(text_type: str, scope: str | None = "projection") -> dict:
    # OLMo 2 / 3 layers are post-norm (attention reads the raw layer input) and rotate in fp32, with their cos/sin.
    return llava_spec(text_type, {"q_norm": "self_attn.q_norm", "k_norm": "self_attn.k_norm", "input_norm": None},
                      {"rope": "module_apply_rotary", **({"qk_norm_scope": scope} if scope else {})})


@pytest.mark.parametrize("text_type, dtype", [("olmo2", torch.float32), ("olmo3", torch.float32),
                                               ("olmo2", torch.bfloat16)], ids=["olmo2", "olmo3", "olmo2-bf16"])
def test_projection_scope_norms_are_exact(text_type, dtype):
    spec = olmo_spec(text_type)
    model, inputs = build(spec, dtype)
    compiled = tp.compile(model, tp.spec.spec_from_dict(spec), tp.Schedule([1.0, 0.5, 0.25, 0.25]))
    with torch.no_grad():
        compiled(**inputs)
    vision = inputs["input_ids"] == model.config.image_token_id
    agreements = eager_topk_agreement(model, tp.spec.spec_from_dict(spec), inputs, vision,
                                      tp.last_selection(compiled), score_tolerance(dtype))
    assert agreements and all(a.overlap == a.kept for a in agreements)  # the very same sets, not only up to ties
    assert check(model, spec, inputs)[EAGER_CHECK].passed


def test_head_scope_on_projection_norms_names_the_key():
    spec = olmo_spec("olmo2", scope=None)
    model, inputs = build(spec)
    with pytest.raises(tp.errors.TokenPruneError, match="qk_norm_scope: projection"):
        tp.compile(model, tp.spec.spec_from_dict(spec), tp.Schedule([1.0, 0.5, 0.25, 0.25]))


@pytest.mark.parametrize("attention, layer, message", [
    ({"qk_norm_scope": "projection", "qk_norm_after_rope": True}, None, "qk_norm_after_rope"),
    ({"qk_norm_scope": "projection"}, {"q_norm": None, "k_norm": None}, "names no norm"),
    ({"qk_norm_scope": "per-head"}, None, "qk_norm_scope"),
], ids=["after-rope", "no-norms", "unknown-scope"])
def test_qk_norm_scope_is_validated(attention, layer, message):
    spec = olmo_spec("olmo2")
    spec["attention"] = attention
    spec["layer"].update(layer or {})
    with pytest.raises(SpecError, match=message):
        tp.spec.spec_from_dict(spec)


def test_cli_prints_one_line_per_check(tmp_path):
    path = tmp_path / "qwen3_without_norms.yaml"
    path.write_text(yaml.safe_dump({**QWEN3, "layer": {}}))
    test = llava_test("qwen3").model_dump(mode="json", exclude_defaults=True)
    (tmp_path / "qwen3_without_norms.test.yaml").write_text(yaml.safe_dump(test))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 1, result.output
    verdicts = [line for line in result.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]  # bars: stderr
    assert [v[:4] for v in verdicts] == ["PASS", "PASS", "FAIL"], result.output
    assert verdicts[2].startswith(f"FAIL  {EAGER_CHECK}") and "layer.q_norm=None" in verdicts[2]
