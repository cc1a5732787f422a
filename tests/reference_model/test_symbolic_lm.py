"""The symbolic-image LM experiment: question grounding, the attention aid's probabilities, a short run."""

from __future__ import annotations

import random

import pytest
import torch

from tokenprune import synthvqa

from .test_train_script import _load

symbolic = _load("symbolic_lm")


@pytest.fixture(scope="module")
def samples():
    return synthvqa.make_split("train", 120)


def test_relevant_cells_decide_the_answer(samples):
    for s in samples:
        at = {(it.row, it.col): it for it in s.scene.items}
        cells = synthvqa.relevant_cells(s.scene, s.question)
        kind, answer = s.qtype, s.answer
        if kind in ("color", "shape", "read"):
            (cell,) = cells
            attribute = {"color": "color", "shape": "shape", "read": "char"}[kind]
            assert getattr(at[cell], attribute) == answer
        elif kind == "count":
            assert len(cells) == int(answer)
        elif kind == "exist":
            assert bool(cells) == (answer == "yes")
        else:  # relation: the two named objects, and the answer follows from their cells
            (r1, c1), (r2, c2) = [(at[c].row, at[c].col) for c in cells]
            words = s.question.question.split()
            first = (r1, c1) if (at[(r1, c1)].color, at[(r1, c1)].shape) == (words[2], words[3]) else (r2, c2)
            second = (r2, c2) if first == (r1, c1) else (r1, c1)
            holds = first[1] < second[1] if "left" in words else first[0] < second[0]
            assert holds == (answer == "yes")


def test_relevant_cells_rejects_unknown_type(samples):
    bad = synthvqa.Question("size", "how big", "big")
    with pytest.raises(ValueError, match="unknown question type 'size'"):
        synthvqa.relevant_cells(samples[0].scene, bad)


def test_extra_questions_types_filter_and_default_unchanged(samples):
    s = samples[0]
    assert synthvqa.extra_questions(s, 6) == synthvqa.extra_questions(s, 6, 0, synthvqa.QUESTION_TYPES)
    only = synthvqa.extra_questions(s, 6, 0, ("color", "count"))
    assert only and {q.qtype for q in only} <= {"color", "count"}


def test_attention_aid_recomputes_hf_eager_probabilities(samples):
    """exp(-loss) with a one-key target is that key's probability in HF's eager attention of the same layer."""
    build = symbolic  # build_model/processor are imported by the script
    processor = build.build_processor()
    model = build.build_model(processor.tokenizer, seed=1, text_hidden=64, text_intermediate=128).eval()
    model.set_attn_implementation("eager")
    lm = model.model.language_model
    aux = symbolic.AttentionAux(lm.layers[2].self_attn, heads=2)
    ids, pos, _, mask, _, _ = symbolic.pack_batch(samples[:2], processor.tokenizer, None, 3, 0, 0.0, random.Random(0), describe=False)
    qmark = processor.tokenizer.convert_tokens_to_ids("?")
    positions, _ = symbolic.attention_targets(samples[:2], ids, qmark, 3, 0, synthvqa.QUESTION_TYPES)
    key = 5  # an image token
    targets = torch.zeros((len(positions), ids.shape[1]), dtype=torch.bool)
    targets[:, key] = True
    aux.batch = (positions, targets, mask)
    # Eager attention adds a 4-D mask to the scores, so it must be additive (a boolean one would add 0/1).
    additive = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    with torch.no_grad():
        out = lm(input_ids=ids, attention_mask=additive, position_ids=pos, output_attentions=True)
    weights = out.attentions[2][positions[:, 0], :2, positions[:, 1], key]  # (N, 2)
    torch.testing.assert_close(torch.exp(-aux.loss), weights.log().mean().exp(), rtol=1e-5, atol=1e-7)


def test_short_run_reports_requested_types():
    result = symbolic.main(["--steps", "2", "--eval-every", "2", "--eval-samples", "24", "--attention-aux", "1",
                            "--types", "color,exist"])
    assert set(result) == {"color", "exist"}
    assert all(0.0 <= v <= 1.0 for v in result.values())


def test_unknown_type_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        symbolic.main(["--types", "color,size"])
    assert "unknown question types ['size']" in capsys.readouterr().err


def test_attention_aid_targets_mass_or_an_even_spread_over_the_evidence(samples):
    """On a two-key target: "mass" is -log(p1 + p2), "uniform" is -(log p1 + log p2) / 2, both from HF's eager
    probabilities, also chosen per row; an unknown target is refused."""
    processor = symbolic.build_processor()
    model = symbolic.build_model(processor.tokenizer, seed=1, text_hidden=64, text_intermediate=128).eval()
    model.set_attn_implementation("eager")
    lm = model.model.language_model
    aids = {t: symbolic.AttentionAux(lm.layers[2].self_attn, heads=1, target=t) for t in ("mass", "uniform")}
    ids, pos, _, mask, _, _ = symbolic.pack_batch(samples[:2], processor.tokenizer, None, 3, 0, 0.0, random.Random(0), describe=False)
    qmark = processor.tokenizer.convert_tokens_to_ids("?")
    positions, _ = symbolic.attention_targets(samples[:2], ids, qmark, 3, 0, synthvqa.QUESTION_TYPES)
    targets = torch.zeros((len(positions), ids.shape[1]), dtype=torch.bool)
    targets[:, [5, 9]] = True  # two image tokens
    for aid in aids.values():
        aid.batch = (positions, targets, mask)
    # Per row: the uniform target where the fourth element says so, the mass target elsewhere.
    mixed = symbolic.AttentionAux(lm.layers[2].self_attn, heads=1, target="uniform")
    rows_uniform = torch.arange(len(positions)) % 2 == 0
    mixed.batch = (positions, targets, mask, rows_uniform)
    additive = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    with torch.no_grad():
        out = lm(input_ids=ids, attention_mask=additive, position_ids=pos, output_attentions=True)
    p = out.attentions[2][positions[:, 0], 0][torch.arange(len(positions)), positions[:, 1]][:, [5, 9]]  # (N, 2)
    torch.testing.assert_close(aids["mass"].loss, -p.sum(-1).log().mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(aids["uniform"].loss, -p.log().mean(), rtol=1e-5, atol=1e-6)
    assert aids["uniform"].loss > aids["mass"].loss  # an uneven split costs the uniform target more
    per_row = torch.where(rows_uniform, -p.log().mean(-1), -p.sum(-1).log())
    torch.testing.assert_close(mixed.loss, per_row.mean(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="expected one of"):
        symbolic.AttentionAux(lm.layers[2].self_attn, heads=1, target="even")
