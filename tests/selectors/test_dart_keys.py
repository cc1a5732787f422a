"""The registered ``dart`` selector ranks its pivots by the scoring layer's key norms, as the paper does.

Per-sample reference on the tiny LLaVA model: the keys of the layer before the cut computed with that layer's own
input norm and ``k_proj`` from the unpruned model's hidden states (before RoPE, whose rotation would make the L1
norm depend on the token's absolute position), then the paper's DART (:func:`reference_dart`) on the hidden
states entering the cut.
"""

from __future__ import annotations

import pytest
import torch

import tokenprune as tp
from tokenprune.testing.masking import decoder_layers

from ..conformance.cases import load_case
from ..conformance.test_conformance import _single
from .test_dart import reference_dart

CUT = 2  # the paper prunes after layer 2


def _layer_keys(layer, hidden: torch.Tensor) -> torch.Tensor:
    """(n, H_kv * D_h) the keys ``layer`` projects from its input ``hidden`` (1, n, D), before RoPE."""
    return layer.self_attn.k_proj(layer.input_layernorm(hidden))[0]


def _expected(case, model, single, ratio: float) -> list[int]:
    """Kept vision tokens (positions among the sample's vision tokens) of DART at the cut before layer CUT."""
    with torch.no_grad():
        states = model(**single.kwargs, output_hidden_states=True).hidden_states   # states[l]: input of layer l
        keys = _layer_keys(decoder_layers(model, case.spec)[CUT - 1], states[CUT - 1])
    vision = single.vision_mask[0]
    entering = states[CUT][0]
    k = tp.keep_count(ratio, int(vision.sum()))
    return reference_dart(entering[vision].double().numpy(), keys[vision].double().numpy(), k,
                          text=entering[~vision].double().numpy(), text_keys=keys[~vision].double().numpy())


@pytest.mark.parametrize("use_cache", [True, False])
def test_pivots_follow_the_scoring_layers_key_norms(use_cache):
    case = load_case("llava", None)
    model = case.models["sdpa"]
    batch = case.batch(model, "batch3")
    ratio = 0.25
    schedule = tp.Schedule.fastv(case.num_layers, layer=CUT, keep=ratio)
    compiled = tp.compile(model, case.spec, schedule, scorer="dart", self_check="off")
    with torch.no_grad():
        compiled(**batch.kwargs, use_cache=use_cache)
    assert "keys before RoPE" in tp.scoring_key_sources(compiled)[CUT]
    kept = tp.last_selection(compiled)[CUT]
    for b in range(batch.input_ids.shape[0]):
        vision_slots = batch.vision_mask[b].nonzero().squeeze(1).tolist()
        got = sorted(vision_slots.index(slot) for slot in kept[b].tolist())
        assert got == _expected(case, model, _single(batch, b), ratio), b
