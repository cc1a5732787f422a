from tokenprune.spec import bundled_specs
from tokenprune.support import image_text_architectures, render_markdown, support_rows


def test_support_rows_classify_supported_and_unsupported_architectures():
    rows = {r.architecture: r for r in support_rows([
        ("LlavaForConditionalGeneration", "llava"),
        ("Blip2ForConditionalGeneration", "blip-2"),
        ("Qwen3_5ForConditionalGeneration", "qwen3_5"),
    ])}
    assert rows["LlavaForConditionalGeneration"].status == "supported"
    assert rows["LlavaForConditionalGeneration"].spec == "llava"
    assert rows["Blip2ForConditionalGeneration"].reason.startswith("encoder-decoder text model")
    assert "linear_attention" in rows["Qwen3_5ForConditionalGeneration"].reason
    text = render_markdown(list(rows.values()))
    assert "| `LlavaForConditionalGeneration` | supported | llava |" in text


def test_every_bundled_architecture_is_in_the_image_text_mapping():

    known = {arch for arch, _ in image_text_architectures()}
    for spec in bundled_specs():
        assert set(spec.architectures) <= known, spec.name


def test_known_obstacles_replace_the_automatic_reason():
    # Default configs hide these (LFM2's default has no conv layers, PI0's expert traces fine).
    rows = {r.architecture: r for r in support_rows([
        ("Lfm2VlForConditionalGeneration", "lfm2_vl"),
        ("PI0ForConditionalGeneration", "pi0"),
    ])}
    assert "Lfm2ShortConv" in rows["Lfm2VlForConditionalGeneration"].reason
    assert "action expert" in rows["PI0ForConditionalGeneration"].reason
    assert all(r.status == "unsupported" for r in rows.values())
