"""Support-table reasons for families whose vision never enters the sequence, and for the timm tower."""

import pytest

from tokenprune.support import analyse, support_rows


def test_cross_attention_layers_are_named_as_such():
    # Mllama's MllamaCrossAttentionDecoderLayer has no self_attn: it is a cross-attention layer, not a
    # convolution or recurrence.
    _, reason = analyse("MllamaForConditionalGeneration", "mllama")
    assert "cross-attention layers (MllamaCrossAttentionDecoderLayer)" in reason
    assert "convolution" not in reason


def test_vision_through_cross_attention_only_is_a_known_obstacle():
    rows = {r.architecture: r for r in support_rows([
        ("IdeficsForVisionText2Text", "idefics"),
        ("MllamaForConditionalGeneration", "mllama"),
        ("Gemma3nForConditionalGeneration", "gemma3n"),
        ("FastVlmForConditionalGeneration", "fast_vlm"),
        ("PerceptionLMForConditionalGeneration", "perception_lm"),
    ])}
    assert "IdeficsGatedCrossAttentionLayer" in rows["IdeficsForVisionText2Text"].reason
    assert "MllamaCrossAttentionDecoderLayer" in rows["MllamaForConditionalGeneration"].reason
    assert rows["Gemma3nForConditionalGeneration"].spec == "gemma3n"  # timm tower stood in for in its test model
    assert rows["FastVlmForConditionalGeneration"].spec == "fast_vlm"
    assert rows["PerceptionLMForConditionalGeneration"].spec == "perception_lm"


def _timm_imports() -> bool:
    try:  # timm may be installed (lmms-eval pulls it) yet fail to import without a working torchvision
        import timm  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.skipif(_timm_imports(), reason="timm imports here, so the model builds and there is no reason to check")
def test_missing_timm_says_why_it_cannot_be_installed():
    # The analysis (which the table uses for architectures without a spec) builds Gemma 3n's real timm tower.
    _, reason = analyse("Gemma3nForConditionalGeneration", "gemma3n")
    assert reason.startswith("cannot be built here: needs a package that is not installed")
    assert "torchvision::nms" in reason
