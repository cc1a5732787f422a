"""Chameleon, Emu3, Cohere Compass and DeepSeek-OCR-2: what the conformance suite does not show by itself.

Their default configs do not build without a checkpoint (vocabulary_map, per-layer-type rope parameters,
mlp_layer_types), so the support analysis builds them from hand-written configs; Chameleon's text model is its
multimodal model (the ``chameleon`` hint merges the image features before the traced graph) and its layers
return tuples (the self-check's stand-in layers must too); its swin_norm layers need their own spec.
"""

from __future__ import annotations

import pytest
import torch

import tokenprune as tp
from tokenprune.errors import UnsupportedError
from tokenprune.rewrites.probe_stack import tuple_output_layers
from tokenprune.support import analyse, support_rows
from tokenprune.spec_testdata import load_test_model
from tokenprune.testing import build_test_model, make_test_inputs
from tokenprune.testing.conformance import run_mini_conformance

FAMILIES = {
    "ChameleonForConditionalGeneration": ("chameleon", "chameleon"),
    "Emu3ForConditionalGeneration": ("emu3", "emu3"),
    "CohereCompassForConditionalGeneration": ("cohere_compass", "cohere_compass"),
    "DeepseekOcr2ForConditionalGeneration": ("deepseek_ocr2", "deepseek_ocr2"),
}


@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_support_analysis_gets_past_the_default_config(arch):
    model_type, spec_name = FAMILIES[arch]
    lm_path, reason = analyse(arch, model_type)
    assert not reason.startswith("cannot be built"), reason
    assert lm_path == tp.load_spec(spec_name).language_model


def test_support_table_lists_them_as_supported():
    rows = support_rows([(arch, model_type) for arch, (model_type, _) in FAMILIES.items()])
    assert {r.architecture: r.spec for r in rows} == {arch: name for arch, (_, name) in FAMILIES.items()}
    assert all(r.status == "supported" for r in rows)


def _chameleon(swin: bool = False):
    """The bundled Chameleon spec and its tiny model; ``swin``: a swin_norm model and the spec for it."""
    spec, test = tp.load_spec("chameleon"), load_test_model("chameleon")
    if swin:
        test = test.model_copy(update={"config": {**test.config, "swin_norm": True}})
        spec = spec.model_copy(update={
            "layer": spec.layer.model_copy(update={"input_norm": None}),
            "tracing": spec.tracing.model_copy(update={"hints": ["chameleon_swin"]})})
    return spec, build_test_model(spec, attn_implementation="eager", test=test)


def test_chameleon_merges_images_before_the_graph():
    spec, model = _chameleon()
    batch = make_test_inputs(spec, model, [1, 2], [5, 8], seed=0)
    compiled = tp.compile(model, spec, tp.Schedule.keep_all(4))
    with torch.no_grad():
        reference = model(**batch.kwargs).logits
        assert torch.equal(compiled(**batch.kwargs).logits, reference)
        # Pre-encoded images take the same path as pixels; without either the placeholders stay as they are.
        encoded = {"image": model.model.get_image_features(batch.kwargs["pixel_values"], return_dict=True)}
        text_only = {k: v for k, v in batch.kwargs.items() if k != "pixel_values"}
        assert torch.equal(compiled(**text_only, mm_encoder_outputs=encoded).logits, reference)
        assert not torch.equal(compiled(**text_only).logits, reference)
    graph = tp.graph_of(compiled)
    assert tuple_output_layers({None: graph}, spec.decoder_layers) == {i: 1 for i in range(4)}  # 1-tuples


def test_each_chameleon_hint_refuses_the_other_layer_layout():
    spec, _ = _chameleon()
    swin_spec, swin_model = _chameleon(swin=True)
    with pytest.raises(UnsupportedError, match="swin_norm=True"):
        tp.compile(swin_model, spec, tp.Schedule.keep_all(4))  # the bundled spec on a swin_norm model
    _, model = _chameleon()
    with pytest.raises(UnsupportedError, match="swin_norm=False"):
        tp.compile(model, swin_spec, tp.Schedule.keep_all(4))


def test_chameleon_swin_spec_prunes_exactly_and_scores_hf_attention():
    spec, model = _chameleon(swin=True)
    assert type(model.model.layers[0]).__name__ == "ChameleonSwinDecoderLayer"
    # Non-uniform norm weights: with the initial ones, scoring input_layernorm(x) would rank keys the same (the
    # per-head q/k LayerNorms remove a per-token scale), so only these make a wrong input norm visible.
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.input_layernorm.weight.copy_(torch.rand(layer.input_layernorm.weight.shape, generator=gen) * 2)
    batch = make_test_inputs(spec, model, [1, 2], [5, 8], seed=0)
    report = run_mini_conformance(model, spec, batch.kwargs)
    assert report.passed, report.lines()
    # One cut before layer 2: the kept tokens are the top half of HF's own last-query attention in layer 1.
    compiled = tp.compile(model, spec, tp.Schedule.fastv(4, layer=2, keep=0.5))
    with torch.no_grad():
        compiled(**batch.kwargs)
        weights = model(**batch.kwargs, output_attentions=True).attentions[1][:, :, -1, :].float().mean(dim=1)
    for b, kept in enumerate(tp.last_selection(compiled)[2]):
        scores = weights[b].masked_fill(~batch.vision_mask[b], -1.0)
        assert torch.equal(torch.topk(scores, len(kept)).indices.sort().values, kept)


def test_tuple_output_layers_is_empty_for_layers_returning_tensors():
    spec = tp.load_spec("llava")
    compiled = tp.compile(build_test_model(spec), spec, tp.Schedule.keep_all(4))
    assert tuple_output_layers({None: tp.graph_of(compiled)}, spec.decoder_layers) == {}
