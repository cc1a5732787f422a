"""The photo generator's redundancy report and the random-drop measurement (on a tiny untrained model)."""

from __future__ import annotations

import json

import pytest
import torch

from tokenprune.synthvqa import photo, photo_report
from tokenprune.synthvqa.masking import draw_dropped, keys_hidden, random_drop
from tokenprune.synthvqa.photo_scene import item_patches

from ._scripts import PHOTO, build


@pytest.fixture(scope="module")
def tiny():
    processor = build.build_processor(PHOTO)
    model = build.build_model(processor.tokenizer, seed=1, text_hidden=32, text_intermediate=64, suite=PHOTO)
    model.set_attn_implementation("eager")
    return model.eval(), processor


def test_redundancy_shares_match_a_direct_count():
    samples = photo.make_split("test", 12)
    report = photo_report.redundancy(samples)
    background = sum(len(photo.background_patches(s.scene)) for s in samples) / (12 * 576)
    assert report["background"] == pytest.approx(background, abs=1e-4)
    assert report["background"] <= report["no_object"] < 1.0
    color = [s for s in samples if s.qtype == "color"]
    expected = sum(len(item_patches(s.scene.items[s.question.evidence[0]])) for s in color) / (len(color) * 576)
    assert report["per_type"]["color"]["evidence"] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])  # sdpa gets no mask when nothing is padded
def test_hidden_keys_compute_what_removed_tokens_would(tiny, attention):
    # Reference: the language model run on the input embeddings with the dropped tokens taken out (positions kept).
    model, processor = tiny
    model.set_attn_implementation(attention)
    sample = photo.make_sample("test", 2)
    enc = processor(text=[sample.prompt], images=[sample.image], return_tensors="pt")
    captured = {}
    lm = model.model.language_model
    handle = lm.register_forward_pre_hook(lambda m, a, kw: captured.update(kw), with_kwargs=True)
    is_image = enc["input_ids"] == model.config.image_token_id  # (1, T)
    dropped = torch.zeros_like(is_image)
    dropped[0, is_image[0].nonzero()[::3, 0]] = True  # a third of the vision tokens
    with torch.no_grad():
        with keys_hidden(model, 0, dropped):
            masked = model(**enc).logits[0, -1]
        handle.remove()
        keep = ~dropped[0]
        T = keep.numel()
        hidden = lm(inputs_embeds=captured["inputs_embeds"][:, keep],
                    position_ids=torch.arange(T)[keep][None]).last_hidden_state
        removed = model.lm_head(hidden)[0, -1]
        plain = model(**enc).logits[0, -1]
    model.set_attn_implementation("eager")  # the module-scoped fixture's
    torch.testing.assert_close(masked, removed, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(masked, plain, atol=1e-4)


def test_random_drop_draws_the_asked_share_per_prompt_seeded(tiny):
    model, _ = tiny
    is_image = torch.zeros((2, 600), dtype=torch.bool)
    is_image[:, 10:586] = True  # (B, T) 576 vision positions per prompt
    dropped = draw_dropped(is_image, 512 / 576, torch.Generator().manual_seed(5))
    assert dropped.sum(-1).tolist() == [512, 512] and not (dropped & ~is_image).any()
    assert not torch.equal(dropped[0], dropped[1])  # one draw per prompt
    assert torch.equal(dropped, draw_dropped(is_image, 512 / 576, torch.Generator().manual_seed(5)))
    with pytest.raises(ValueError, match="outside"):
        random_drop(model, 1.5, 2)


def test_report_script_measures_a_checkpoint(tiny, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    report = photo_report.main(["--out", str(tmp_path / "out"), "--n", "2", "--checkpoint", str(tmp_path / "ckpt")])
    saved = json.loads((tmp_path / "out" / "photo_redundancy.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert list(saved["random_drop"]) == ["all", "0.500", "0.750", "0.889"]
    assert all(v["n"] == 2 for v in saved["random_drop"].values())
    text = (tmp_path / "out" / "photo_redundancy.md").read_text()
    assert "patches on no object" in text and "| 89% |" in text
