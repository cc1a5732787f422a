"""Spec options of the attention scorer: ``attention.q_scale`` (Muse), ``layer.input_norm: null`` and rope
``exaone4`` (Exaone 4). With them the scorer reproduces HF's eager attention of the last query in every layer
(RoPE and NoPE layers alike); without them it does not, so the conformance suite's top-k check has teeth."""

from __future__ import annotations

import pytest
import torch

import tokenprune as tp
from tokenprune.model_specs.exaone4_5 import apply_exaone4
from tokenprune.rewrites.rope import apply_rotate_half
from tests.conformance.cases import layers_of, load_case
from tokenprune.errors import SpecError
from tokenprune.plugins.resolve import resolve_spec
from tokenprune.scoring.attention import attention_probs
from tokenprune.spec import spec_from_dict

CASES = [("muse_glimmer", None), ("muse_spark", None), ("exaone4_5", None), ("exaone4_5", "no-window")]


def _layer_calls(case, batch) -> tuple[list[tuple], list[torch.Tensor]]:
    """Per decoder layer of the eager model: (hidden, mask, rope) as it received them, and HF's head-averaged
    attention weights of the last query (B, n)."""
    model = case.models["eager"]
    seen = []

    def hook(module, args, kwargs):
        seen.append((args[0], kwargs.get("attention_mask"), kwargs.get("position_embeddings")))

    handles = [layer.register_forward_pre_hook(hook, with_kwargs=True) for layer in layers_of(case, model)]
    try:
        with torch.no_grad():
            attentions = model(**batch.kwargs, output_attentions=True).attentions
    finally:
        for h in handles:
            h.remove()
    return seen, [a[:, :, -1, :].float().mean(dim=1) for a in attentions]


def _scores(case, spec, calls) -> list[torch.Tensor]:
    """The scorer's last-query attention (B, n) in every layer, recomputed from the layer's own modules."""
    out = []
    for layer, (hidden, mask, rope) in zip(layers_of(case, case.models["eager"]), calls):
        bsz, n = hidden.shape[:2]
        positions = torch.arange(n).expand(bsz, n)
        valid = torch.ones(bsz, n, dtype=torch.bool)
        last = torch.full((bsz, 1), n - 1)
        with torch.no_grad():
            probs, _ = attention_probs(resolve_spec(spec), layer, hidden, rope, mask, positions, valid, last)
        out.append(probs[:, 0])
    return out


def _with(spec, section: str, **changes):
    data = spec.model_dump()
    data[section] = {**data[section], **changes}
    return spec_from_dict(data, "test")


@pytest.mark.parametrize("case_key", CASES, ids=lambda c: "-".join(x for x in c if x))
def test_scorer_reproduces_hf_eager_attention_in_every_layer(case_key):
    case = load_case(*case_key)
    batch = case.batch(case.models["eager"], "batch3")
    calls, expected = _layer_calls(case, batch)
    if case.spec.name.startswith("muse"):
        assert any(rope is None for _, _, rope in calls), "the test model should have NoPE layers"
    for layer, (got, want) in enumerate(zip(_scores(case, case.spec, calls), expected)):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5, msg=f"layer {layer}")


@pytest.mark.parametrize("name, section, changes", [
    ("muse_glimmer", "attention", {"q_scale": None}),  # queries not multiplied by qk_scale_factor
    ("exaone4_5", "attention", {"rope": "rotate_half"}),  # RoPE also on the NoPE (full) layers
    ("exaone4_5", "layer", {"input_norm": "post_attention_layernorm"}),  # a pre-norm where there is none
], ids=["muse-no-q_scale", "exaone-rotate_half", "exaone-input-norm"])
def test_without_the_option_the_scores_differ_from_hf(name, section, changes):
    case = load_case(name, None)
    batch = case.batch(case.models["eager"], "batch3")
    calls, expected = _layer_calls(case, batch)
    wrong = _scores(case, _with(case.spec, section, **changes), calls)
    # Far beyond the 1e-6 the right options reach (a pre-norm before q/k norms changes little: only eps).
    assert max(float((got - want).abs().max()) for got, want in zip(wrong, expected)) > 1e-4


def test_q_scale_naming_a_missing_attribute_is_refused_at_compile():
    case = load_case("muse_glimmer", None)
    spec = _with(case.spec, "attention", q_scale="qk_scale")
    with pytest.raises(SpecError, match=r"no attribute 'qk_scale'.*attention\.q_scale"):
        tp.compile(case.default_model, spec, case.schedules()["fastv"])


def test_input_norm_null_is_accepted_and_defaults_to_input_layernorm():
    spec = tp.load_spec("llava")
    assert spec.layer.input_norm == "input_layernorm"
    assert _with(spec, "layer", input_norm=None).layer.input_norm is None


class _Attn:
    def __init__(self, sliding_window, is_sliding):
        self.sliding_window, self.is_sliding = sliding_window, is_sliding


def test_exaone4_rope_rotates_sliding_layers_only_when_there_is_a_window():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 8, generator=gen)  # (B, H, S, Dh)
    cos, sin = torch.randn(2, 5, 8, generator=gen), torch.randn(2, 5, 8, generator=gen)  # (B, S, Dh)
    rotated = apply_rotate_half(x, (cos, sin))
    assert torch.equal(apply_exaone4(x, (cos, sin), _Attn(4096, True)), rotated)
    assert torch.equal(apply_exaone4(x, (cos, sin), _Attn(4096, False)), x)  # NoPE full layer
    assert torch.equal(apply_exaone4(x, (cos, sin), _Attn(None, False)), rotated)  # no window: RoPE everywhere
    with pytest.raises(TypeError, match="is_sliding"):
        apply_exaone4(x, (cos, sin), object())
