"""The training script: packed sequences compute what separate prompts do, and a seeded run reproduces."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    sys.path.insert(0, str(ROOT / "reference_model"))
    try:
        spec = importlib.util.spec_from_file_location(f"reference_model_{name}", ROOT / "reference_model" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "reference_model"))


train = _load("train")
build = _load("build")


def test_packed_questions_match_separate_prompts():
    processor = build.build_processor()
    tok = processor.tokenizer
    model = build.build_model(tok, seed=3, text_hidden=64, text_intermediate=128).eval()
    model.set_attn_implementation("sdpa")
    synthvqa = build.synthvqa
    samples = [synthvqa.make_sample("train", i) for i in range(2)]
    ids, pos, labels, mask, _, pixels = train.pack_batch(samples, tok, processor.image_processor, 4, 0, 0.0, random.Random(0))
    with torch.no_grad():
        packed = model(input_ids=ids, pixel_values=pixels, attention_mask=mask, position_ids=pos).logits
    for row, s in enumerate(samples):
        qs = [s.question] + synthvqa.extra_questions(s, 3, 0)
        enc = processor(text=[q.prompt for q in qs], images=[s.image] * len(qs), return_tensors="pt", padding=True)
        position_ids = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            separate = model(**enc, position_ids=position_ids).logits[:, -1]
        answer_at = [int(t) for t in (labels[row] != -100).nonzero().flatten()]
        answer_at = [t for t in answer_at if tok.convert_ids_to_tokens(int(ids[row, t])) == "?"][: len(qs)]
        assert [tok.convert_ids_to_tokens(int(labels[row, t])) for t in answer_at] == [q.answer for q in qs]
        torch.testing.assert_close(packed[row, answer_at], separate, rtol=1e-4, atol=1e-5)


def test_seeded_training_reproduces(tmp_path):
    args = ["--steps", "3", "--eval-every", "3", "--eval-samples", "6", "--images-per-step", "2",
            "--questions-per-image", "3", "--text-hidden", "64", "--text-intermediate", "128"]
    train.main(["--out", str(tmp_path / "a"), *args])
    train.main(["--out", str(tmp_path / "b"), *args])
    a = (tmp_path / "a" / "model.safetensors").read_bytes()
    b = (tmp_path / "b" / "model.safetensors").read_bytes()
    assert a == b
    init = build.build_model(build.build_processor().tokenizer, seed=0, text_hidden=64, text_intermediate=128)
    from safetensors.torch import load_file

    trained = load_file(str(tmp_path / "a" / "model.safetensors"))
    assert all(t.dtype == torch.float16 for t in trained.values())
    init_state = init.state_dict()
    (key,) = [k for k in trained if k.startswith("language_model") and k.endswith("layers.0.self_attn.q_proj.weight")]
    init_key = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert trained[key].shape == init_state[init_key].shape
    assert not torch.equal(trained[key].float(), init_state[init_key].half().float())  # it did train


def test_patch_targets_label_every_patch_with_its_cell():
    synthvqa = build.synthvqa
    sample = synthvqa.make_sample("train", 5)
    targets = train.patch_targets([sample]).view(12, 12)  # (rows, cols) of 4x4-pixel patches
    at = {(it.row, it.col): it for it in sample.scene.items}
    for r in range(3):
        for c in range(3):
            cell = targets[4 * r : 4 * r + 4, 4 * c : 4 * c + 4]
            item = at.get((r + 1, c + 1))
            name = "empty" if item is None else (
                f"{item.color} {item.shape}" if item.kind == "shape" else f"character {item.char}")
            assert (cell == train.CELL_CLASSES.index(name)).all()
    assert train.CELL_OF_PATCH.view(12, 12)[5, 9].item() == 1 * 3 + 2  # patch row 5, col 9 -> cell (2, 3)


def test_training_aids_and_second_stage_run(tmp_path):
    args = ["--steps", "2", "--eval-every", "2", "--eval-samples", "6", "--images-per-step", "2",
            "--questions-per-image", "2", "--text-hidden", "64", "--text-intermediate", "128"]
    train.main(["--out", str(tmp_path / "a"), *args])
    train.main(["--out", str(tmp_path / "b"), "--init-from", str(tmp_path / "a"), "--patch-aux", "1",
                "--position-aux", "1", "--position-embedding-std", "0.3", *args])
    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys()  # the probes are training aids: not saved
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_attention_aid_and_curriculum_run_and_log(tmp_path, capsys):
    args = ["--steps", "3", "--eval-every", "3", "--eval-samples", "6", "--images-per-step", "2",
            "--questions-per-image", "2", "--text-hidden", "64", "--text-intermediate", "128"]
    train.main(["--out", str(tmp_path / "a"), "--attention-aux", "1", "--warm-types", "color,read",
                "--warm-steps", "2", *args])
    printed = capsys.readouterr().out
    step0 = next(line for line in printed.splitlines() if line.startswith("step 0 "))
    routing = float(step0.split("attention_aux ")[1].split()[0])
    assert 0.0 < routing < 10.0  # -log(mass on the asked-about cells): positive while attention is spread
    assert (tmp_path / "a" / "model.safetensors").exists()


def test_curriculum_rejects_unknown_types(tmp_path):
    with pytest.raises(SystemExit):
        train.main(["--out", str(tmp_path / "a"), "--warm-types", "colour", "--warm-steps", "2"])
    with pytest.raises(SystemExit):
        train.main(["--out", str(tmp_path / "a"), "--warm-steps", "2"])  # steps without types
