"""The shipped reference model: loadable offline, half precision, accurate, and dependent on its vision tokens."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from transformers import AutoProcessor, LlavaForConditionalGeneration, LlavaProcessor

from tokenprune import synthvqa

from ._shared import CHECKPOINT, NUM_IMAGE_TOKENS, evaluate


def test_checkpoint_is_half_precision_safetensors_under_25_mb():
    weights = sorted(CHECKPOINT.glob("*.safetensors"))
    assert weights, "no safetensors in the checkpoint"
    assert not list(CHECKPOINT.glob("*.bin"))
    n_tensors = 0
    for path in weights:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                assert f.get_slice(key).get_dtype() == "F16", key
                n_tensors += 1
    assert n_tensors > 100
    total = sum(p.stat().st_size for p in CHECKPOINT.iterdir() if p.is_file())
    assert total < 25 * 1024 * 1024, f"{total / 2**20:.1f} MiB"


def test_architecture(model):
    cfg = model.config
    assert type(model) is LlavaForConditionalGeneration
    assert cfg.vision_config.model_type == "clip_vision_model"
    assert cfg.text_config.model_type == "llama"
    assert cfg.text_config.num_hidden_layers >= 12
    assert len(model.model.language_model.layers) == cfg.text_config.num_hidden_layers
    assert cfg.vision_feature_select_strategy == "default"
    assert 0 < cfg.text_config.initializer_range <= 0.05
    pixel_values = torch.zeros(1, 3, synthvqa.IMAGE_SIZE, synthvqa.IMAGE_SIZE)
    with torch.no_grad():
        features = model.model.get_image_features(pixel_values=pixel_values)
    features = features.pooler_output if hasattr(features, "pooler_output") else features
    features = features[0] if isinstance(features, (list, tuple)) else features
    assert features.reshape(-1, cfg.text_config.hidden_size).shape[0] == NUM_IMAGE_TOKENS


def test_processor_expands_image_token_and_round_trips(processor, tmp_path, held_out):
    assert isinstance(processor, LlavaProcessor)
    assert type(processor.image_processor).__name__ == "CLIPImageProcessorPil"  # no torchvision needed
    sample = held_out[0]
    enc = processor(text=[sample.prompt], images=[sample.image], return_tensors="pt")
    ids = enc["input_ids"][0]
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert int((ids == image_id).sum()) == NUM_IMAGE_TOKENS
    assert ids[0] == processor.tokenizer.bos_token_id
    assert processor.tokenizer.unk_token_id not in ids.tolist()
    assert enc["pixel_values"].shape == (1, 3, synthvqa.IMAGE_SIZE, synthvqa.IMAGE_SIZE)
    processor.save_pretrained(tmp_path)
    again = AutoProcessor.from_pretrained(tmp_path)
    enc2 = again(text=[sample.prompt], images=[sample.image], return_tensors="pt")
    assert enc.keys() == enc2.keys()
    for key in enc:
        assert torch.equal(enc[key], enc2[key]), key
    for answers in synthvqa.ANSWERS.values():  # every answer is one token
        for a in answers:
            assert len(processor.tokenizer(a, add_special_tokens=False)["input_ids"]) == 1


def test_withdrawal_hook_changes_only_what_it_should(model, processor, held_out):
    samples = held_out[:24]
    plain = evaluate.predict(model, processor, samples)
    # Withdrawing from past the last layer is a no-op; withdrawing from layer 1 changes answers.
    assert evaluate.predict(model, processor, samples, withdraw_from_layer=len(model.model.language_model.layers)) == plain
    assert evaluate.predict(model, processor, samples, withdraw_from_layer=1) != plain
    # The hook is removed afterwards.
    assert evaluate.predict(model, processor, samples) == plain


def test_eager_and_sdpa_agree(processor, held_out):
    sdpa = LlavaForConditionalGeneration.from_pretrained(CHECKPOINT, dtype=torch.float32, attn_implementation="sdpa")
    eager = LlavaForConditionalGeneration.from_pretrained(CHECKPOINT, dtype=torch.float32, attn_implementation="eager")
    samples = held_out[:6]
    enc = processor(text=[s.prompt for s in samples], images=[s.image for s in samples], return_tensors="pt", padding=True)
    with torch.no_grad():
        a = sdpa(**enc).logits
        b = eager(**enc).logits
    mask = enc["attention_mask"].bool()
    torch.testing.assert_close(a[mask], b[mask], rtol=1e-4, atol=1e-4)


def test_evaluate_refuses_a_missing_checkpoint_with_what_to_do(tmp_path, capsys):
    with pytest.raises(SystemExit):
        evaluate.main(["--suite", "photo", "--checkpoint", str(tmp_path)])
    err = capsys.readouterr().err
    assert "no model at" in err and "config.json missing" in err and "recipe" in err


def test_evaluate_refuses_a_thread_count_below_one(capsys):
    with pytest.raises(SystemExit):
        evaluate.main(["--threads", "0"])
    assert "--threads: 0 is not a thread count; expected 1 or more" in capsys.readouterr().err
