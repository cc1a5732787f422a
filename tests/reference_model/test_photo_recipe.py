"""The photo reference model's build and recipe: sizes, resumable training, and a staged run that resumes."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import safetensors.torch
import torch

from ._scripts import PHOTO, aids, build, diagnose, recipe, train

TINY = ["--suite", "photo", "--images-per-step", "1", "--questions-per-image", "2", "--eval-samples", "0",
        "--text-hidden", "32", "--text-intermediate", "64", "--describe", "0", "--patch-aux", "1",
        "--position-aux", "1", "--attention-aux", "1", "--answer-aux", "1", "--warmup", "1"]


def test_photo_model_sees_576_patches_and_speaks_the_photo_vocabulary():
    processor = build.build_processor(PHOTO)
    model = build.build_model(processor.tokenizer, seed=0, text_hidden=32, text_intermediate=64, suite=PHOTO)
    assert model.config.text_config.num_hidden_layers >= 12
    vision = model.config.vision_config
    assert (vision.image_size // vision.patch_size) ** 2 == PHOTO.num_image_tokens == 576
    sample = PHOTO.make_sample("test", 3)
    enc = processor(text=[sample.prompt], images=[sample.image], return_tensors="pt")
    assert int((enc["input_ids"] == model.config.image_token_id).sum()) == 576
    assert processor.tokenizer.unk_token_id not in enc["input_ids"][0].tolist()
    with torch.no_grad():
        assert model(**enc).logits.shape[-1] == len(processor.tokenizer)


def test_photo_aid_targets_follow_the_ground_truth():
    photo = build.synthvqa.photo
    sample = PHOTO.make_sample("train", 4)
    (target,) = PHOTO.patch_targets([sample])  # (576,)
    background = photo.background_patches(sample.scene)
    assert (target[background] == 0).all() and (target != 0).sum() == 576 - len(background)
    keys = PHOTO.evidence_keys(sample, sample.question)
    assert keys.nonzero()[:, 0].tolist() == photo.evidence_patches(sample.scene, sample.question)
    assert PHOTO.position_of_patch.view(24, 24)[23, 0].item() == 6  # bottom left


def test_evidence_aid_averages_each_questions_evidence_patches_and_trains_its_probe(tmp_path, capsys):
    sample = PHOTO.make_sample("train", 4)
    features = torch.randn(2, 576, 8)                                       # (B, N, H)
    keys = torch.zeros(1, 1 + 576 + 5, dtype=torch.bool)                    # (Q, T): image tokens at 1..576
    keys[0, 1:577] = PHOTO.evidence_keys(sample, sample.question)
    pooled = aids.pool_evidence(features, torch.tensor([[1, 580]]), keys)  # the question of image 1
    patches = build.synthvqa.photo.evidence_patches(sample.scene, sample.question)
    assert torch.allclose(pooled[0], features[1, patches].mean(0), atol=1e-6)
    state = tmp_path / "state.pt"
    reads = [*TINY, "--steps", "1", "--eval-every", "1", "--evidence-aux", "1", "--warm-types", "read", "--warm-steps", "1"]
    train.main(["--out", str(tmp_path / "out"), *reads, "--state", str(state)])
    assert re.search(r"evidence_aux \d", capsys.readouterr().out)
    assert "evidence_probe" in torch.load(state, weights_only=False)["heads"]
    # Only the chosen types feed it: a batch of read questions gives a colour-only aid nothing to learn from.
    train.main(["--out", str(tmp_path / "colour"), *reads, "--evidence-types", "color"])
    assert "evidence_aux" not in capsys.readouterr().out
    with pytest.raises(SystemExit):  # a misspelt type would leave the aid silently idle
        train.main(["--out", str(tmp_path / "typo"), *reads, "--evidence-types", "colour"])
    assert "--evidence-types: got 'colour'" in capsys.readouterr().err


def test_glyph_aid_targets_every_sign_and_trains_its_probe(tmp_path, capsys):
    samples = [PHOTO.make_sample("train", i) for i in range(6)]
    which, patches, chars = PHOTO.glyph_targets(samples)                   # (S,), (S, 576), S characters
    signs = [(b, item) for b, s in enumerate(samples) for item in s.scene.glyphs]
    assert len(signs) == len(chars) >= len(samples)                        # 1-2 signs per scene
    for k, (b, item) in enumerate(signs):
        assert which[k] == b and chars[k] == item.char
        assert patches[k].nonzero()[:, 0].tolist() == sorted(build.synthvqa.photo.item_patches(item))
    features = torch.randn(len(samples), 576, 8)                           # (B, N, H)
    pooled = aids.pool_patches(features, which, patches)
    assert torch.allclose(pooled[0], features[which[0], patches[0]].mean(0), atol=1e-6)
    state = tmp_path / "state.pt"
    glyphs = [*TINY, "--steps", "1", "--eval-every", "1", "--glyph-aux", "1", "--glyph-images", "2"]
    train.main(["--out", str(tmp_path / "out"), *glyphs, "--state", str(state)])
    assert re.search(r"glyph_aux \d", capsys.readouterr().out)
    assert "glyph_probe" in torch.load(state, weights_only=False)["heads"]
    with pytest.raises(SystemExit):  # the grid suite has no signs to name
        train.main(["--out", str(tmp_path / "grid"), *glyphs, "--suite", "grid"])
    assert "needs --suite photo" in capsys.readouterr().err
    with pytest.raises(NotImplementedError, match="only 'photo'"):
        build.GRID.glyph_targets(samples)


def test_stopped_and_resumed_training_saves_the_same_bytes(tmp_path):
    common = [*TINY, "--steps", "2", "--eval-every", "2"]
    train.main(["--out", str(tmp_path / "whole"), *common])
    state = tmp_path / "state.pt"
    for _ in range(2):  # a rerun of a stage that already ended (say after a crash) trains nothing more
        train.main(["--out", str(tmp_path / "parts"), "--state", str(state), "--stop-at", "1", *common])
        assert torch.load(state, weights_only=False)["step"] == 1
    train.main(["--out", str(tmp_path / "parts"), "--state", str(state), *common])
    whole = (tmp_path / "whole" / "model.safetensors").read_bytes()
    assert (tmp_path / "parts" / "model.safetensors").read_bytes() == whole


def test_recipe_stops_after_a_stage_and_resumes_to_the_uninterrupted_result(tmp_path):
    assert recipe.run(tmp_path / "w1", tmp_path / "out1", device="cpu", tiny=True) == 10
    assert recipe.run(tmp_path / "w2", tmp_path / "out2", device="cpu", tiny=True, max_stages=1) == 1
    assert not (tmp_path / "out2").exists()
    assert json.loads((tmp_path / "w2" / "progress.json").read_text()) == {"done": 1, "stages": 10}
    assert recipe.run(tmp_path / "w2", tmp_path / "out2", device="cpu", tiny=True) == 10
    final = (tmp_path / "out1" / "model.safetensors").read_bytes()
    assert (tmp_path / "out2" / "model.safetensors").read_bytes() == final
    assert (tmp_path / "out2" / "training_log_phase1.json").is_file()
    # Every phase keeps float32 weights (a phase added later starts from them); the release is their float16 copy.
    last = recipe.PHASES[-1].name
    kept = safetensors.torch.load_file(tmp_path / "w2" / last / "checkpoint" / "model.safetensors")
    released = safetensors.torch.load_file(tmp_path / "out2" / "model.safetensors")
    assert kept.keys() == released.keys() and all(v.dtype == torch.float32 for v in kept.values())
    assert all(torch.equal(kept[k].to(torch.float16), released[k]) for k in kept)
    assert (tmp_path / "out2" / "tokenizer.json").is_file() and (tmp_path / "out2" / "training_log.json").is_file()
    # A finished recipe has nothing left to run.
    assert recipe.run(tmp_path / "w2", tmp_path / "out2", device="cpu", tiny=True) == 10


def test_a_finished_recipe_with_a_lost_phase_log_says_so_instead_of_failing(tmp_path, capsys):
    assert recipe.run(tmp_path / "w", tmp_path / "out", device="cpu", tiny=True) == 10
    (tmp_path / "w" / "phase2" / "checkpoint" / "training_log.json").unlink()
    (tmp_path / "out" / "training_log_phase2.json").unlink()
    assert recipe.run(tmp_path / "w", tmp_path / "out", device="cpu", tiny=True) == 10
    assert "phase2's training log is missing" in capsys.readouterr().out
    assert not (tmp_path / "out" / "training_log_phase2.json").exists()
    assert (tmp_path / "out" / "training_log_phase3.json").is_file()


def test_recipe_stages_cover_every_phase_in_short_steps():
    plan = recipe.stages()
    for phase in recipe.PHASES:
        ends = [end for p, end in plan if p is phase]
        steps = [b - a for a, b in zip([0] + ends, ends)]
        assert ends[-1] == phase.end and max(steps) <= recipe.STAGE_STEPS and min(steps) > 0


def test_a_phase_stopped_part_way_keeps_its_schedule_and_hands_over_at_its_stop():
    stopped = recipe.Phase("p", 3000, 3e-4, 0, stop_at=600)
    nxt = recipe.Phase("q", 300, 3e-4, 1)
    plan = recipe.stages((stopped, nxt))
    assert [end for p, end in plan if p is stopped] == [150, 300, 450, 600]
    argv = recipe.stage_argv(stopped, 600, Path("w"), None, "cpu", 1)
    assert argv[argv.index("--steps") + 1] == "3000" and argv[argv.index("--stop-at") + 1] == "600"
    assert stopped.tiny(1).stop_at == 1 and nxt.tiny(1).stop_at is None


def test_unusable_devices_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="not a torch device"):
        train.pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            train.pick_device("cuda")


def test_diagnosis_probe_finds_a_linear_answer_and_not_a_random_one():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (200,), generator=generator)
    noise = torch.randn(200, 16, generator=generator)
    decodable = noise.clone()
    decodable[:, :4] += 3.0 * torch.nn.functional.one_hot(labels, 4)     # the answer along four directions
    train = torch.arange(200) < 140
    assert diagnose.probe_accuracy(decodable, labels, train, 4) > 0.9
    assert diagnose.probe_accuracy(noise, labels, train, 4) < 0.5


def test_diagnosis_probes_only_known_question_types(capsys):
    with pytest.raises(SystemExit):
        diagnose.main(["some/checkpoint", "--probe-type", "colour"])
    assert "invalid choice: 'colour'" in capsys.readouterr().err


def test_attention_aid_takes_the_uniform_target_only_for_the_chosen_types(tmp_path, capsys):
    samples = [PHOTO.make_sample("train", i) for i in range(6)]
    processor = build.build_processor(PHOTO)
    ids, *_ = train.pack_batch(samples, processor.tokenizer, processor.image_processor, 3, 0, 0.0,
                               random.Random(0), describe=False, suite=PHOTO)
    qmark = processor.tokenizer.convert_tokens_to_ids("?")
    positions, targets, qtypes = aids.attention_rows(samples, ids, qmark, 3, 0, build.synthvqa.QUESTION_TYPES, PHOTO)
    assert len(qtypes) == len(positions) == len(targets) > 0 and set(qtypes) <= set(build.synthvqa.QUESTION_TYPES)
    assert torch.equal(aids.attention_targets(samples, ids, qmark, 3, 0, build.synthvqa.QUESTION_TYPES, PHOTO)[1], targets)
    common = [*TINY, "--steps", "1", "--eval-every", "1", "--attention-aux", "1", "--attention-target", "uniform"]
    args = train.parse_args(["--out", str(tmp_path / "a"), *common, "--uniform-types", "color,shape,read"])
    assert args.uniform_type_list == ("color", "shape", "read")
    assert train.parse_args(["--out", str(tmp_path / "a"), *common]).uniform_type_list == build.synthvqa.QUESTION_TYPES
    train.main(["--out", str(tmp_path / "out"), *common, "--uniform-types", "color,shape,read"])
    assert re.search(r"attention_aux \d", capsys.readouterr().out)
    for bad in (["--uniform-types", "colour"], ["--uniform-types", "read", "--attention-target", "mass"]):
        with pytest.raises(SystemExit):  # a misspelt type, or a uniform list the mass target would ignore
            train.main(["--out", str(tmp_path / "bad"), *common, *bad])
        assert "--uniform-types: got" in capsys.readouterr().err
