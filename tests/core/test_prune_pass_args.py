"""The prune pass beyond keyword arguments: positional per-token layer arguments, keys/values shared between
layers (Gemma 4), hint-marked per-token state in the completeness analysis, the Kosmos image-mask
locator, and the Kosmos position quirk behind the test data's ``padded_decode_differs``."""

import pytest
import torch

import tokenprune as tp
from tests.conformance.cases import greedy, layers_of, load_case
from tokenprune.testing.masking import dropped_per_layer, kept_positions, masked_reference
from tokenprune.errors import TraceError, UnsupportedError
from tokenprune.model_specs.kosmos2 import kosmos2_image_mask
from tokenprune.rewrites.gathers import gather_shared_kv, gather_tokens
from tokenprune.plugins import registry
from tokenprune.rewrites.hints import CompositeHint
from tokenprune.rewrites.state import Gather
from tokenprune.spec import spec_from_dict

# The gemma4 test model: layers 0 (sliding) and 1 (full) store their keys/values, layers 2-5 reuse them.
CUTS_AROUND_SHARING = tp.Schedule([1.0, 1.0, 0.75, 0.5, 0.5, 0.5])  # cut 2: next layer reuses; cut 3: scorer does


@pytest.fixture(scope="module")
def gemma4():
    return load_case("gemma4", None)


def _spec_with(spec, **tracing):
    data = spec.model_dump(exclude_none=True)
    data["tracing"] = {**data["tracing"], **tracing}
    return spec_from_dict(data, "test spec")


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch.kwargs).logits


def test_shared_kv_not_gathered_is_refused(gemma4):
    spec = _spec_with(gemma4.spec, layer_kwargs={"shared_kv_states": "constant"})
    with pytest.raises(TraceError, match="kv_sharing_dict.*does not gather"):
        tp.compile(gemma4.models["eager"], spec, CUTS_AROUND_SHARING)


def test_positional_per_token_argument_must_be_declared(gemma4):
    spec = _spec_with(gemma4.spec, layer_args=[])
    with pytest.raises(TraceError, match="positional argument 1.*tracing.layer_args"):
        tp.compile(gemma4.models["eager"], spec, CUTS_AROUND_SHARING)


def test_per_token_value_built_inside_the_layer_loop_is_not_missed(gemma4):
    # Declared 'constant', the per-layer inputs (sliced from a pre-loop tensor right before each layer, i.e.
    # after the cut's position in the graph) are not gathered: the analysis must still see them.
    spec = _spec_with(gemma4.spec, layer_args=["constant"])
    with pytest.raises(TraceError, match="reads per-token value 'getitem"):
        tp.compile(gemma4.models["eager"], spec, CUTS_AROUND_SHARING)


def test_cuts_gather_positional_arguments_and_the_shared_kv(gemma4):
    compiled = tp.compile(gemma4.models["eager"], gemma4.spec, CUTS_AROUND_SHARING)
    names = {n.name for n in tp.graph_of(compiled).graph.nodes}
    assert {"cut2_arg1", "cut2_shared_kv_states", "cut3_arg1", "cut3_shared_kv_states"} <= names
    # One per-layer-input gather per later layer and cut: 4 after cut 2, 3 after cut 3.
    assert sum(n.startswith("cut2_arg1") for n in names) == 4 and sum(n.startswith("cut3_arg1") for n in names) == 3
    batch = gemma4.batch(gemma4.models["eager"], "batch3")
    _logits(compiled, batch)
    sources = tp.scoring_key_sources(compiled)
    assert sources[3] == "shared: shared K/V 'sliding_attention'"  # layer 2 reuses layer 0's keys
    assert sources[2].startswith("cache")


@pytest.mark.parametrize("scorer", ["last-token-attention", "next-layer-attention", "text-mean-attention"])
def test_cuts_around_shared_kv_match_the_masking_reference(gemma4, scorer):
    # Both sides eager: sdpa-vs-eager rounding (up to ~2e-4 here) would hide a wrong gather's small error.
    # The sdpa path of these cuts is covered by the conformance suite's gemma4 cases.
    model = eager = gemma4.models["eager"]
    batch = gemma4.batch(model, "batch3")
    compiled = tp.compile(model, gemma4.spec, CUTS_AROUND_SHARING, scorer=scorer)
    logits = _logits(compiled, batch)
    selection = tp.last_selection(compiled)
    dropped = dropped_per_layer(batch.vision_mask, selection, gemma4.num_layers)
    with masked_reference(layers_of(gemma4, eager), dropped):
        ref = _logits(eager, batch)
        ref_tokens = greedy(eager, batch)
    for b in range(batch.input_ids.shape[0]):
        positions = kept_positions(batch.vision_mask, selection, b)
        real = batch.kwargs["attention_mask"][b, positions].bool()
        got = logits[b, logits.shape[1] - len(positions):]
        torch.testing.assert_close(got[real], ref[b, positions][real], atol=1e-4, rtol=1e-4)
    assert torch.equal(greedy(compiled, batch), ref_tokens)


def _gather(index, in_keys=-1, rows=True):
    pad = torch.zeros_like(index, dtype=torch.bool)
    return Gather(rows=index if rows else None, cols=index, col_pad=pad, q_pos=index, k_pos=index, in_keys=in_keys)


def test_gather_shared_kv_returns_a_new_mapping_of_kept_key_columns():
    from transformers.cache_utils import KVSharingDict

    keys = torch.arange(2 * 5, dtype=torch.float).view(1, 2, 5, 1).expand(2, 2, 5, 3)  # (B, H, S, D)
    shared = KVSharingDict({"full_attention": (keys, keys + 100)})
    index = torch.tensor([[0, 2, 4], [1, 2, 3]])
    out = gather_shared_kv(shared, _gather(index))
    assert type(out) is KVSharingDict and out is not shared and shared["full_attention"][0] is keys
    k, v = out["full_attention"]
    assert k.shape == (2, 2, 3, 3) and torch.equal(k[1, 0, :, 0], torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(v, k + 100)
    with pytest.raises(UnsupportedError, match="hold 5 positions"):
        gather_shared_kv(shared, _gather(index, in_keys=7, rows=False))


def test_gather_tokens_keeps_rows_and_passes_decode_steps():
    value = torch.arange(2 * 4 * 3).view(2, 4, 3)
    index = torch.tensor([[0, 3], [1, 2]])
    assert torch.equal(gather_tokens(value, _gather(index)), torch.stack([value[0, [0, 3]], value[1, [1, 2]]]))
    assert gather_tokens(value, _gather(index, rows=False)) is value


def test_composed_hints_keep_the_inputs_another_hint_dropped(gemma4):
    lm = gemma4.models["eager"].model.language_model
    hints = tuple(registry("tracing_hint").get(n) for n in ("mask_dict", "gemma4_kv_sharing", "gemma4_per_layer_inputs"))
    hint = CompositeHint(hints, lm, gemma4.models["eager"].config)
    names = hint.input_names((None, "dict", None, "present"))
    assert "attention_mask" not in names and {"full_attention_mask", "per_layer_inputs"} <= set(names)


def test_kosmos2_image_mask_locator():
    module = torch.nn.Module()
    module.forward = lambda input_ids=None, image_embeds_position_mask=None, inputs_embeds=None: None
    ids = torch.zeros(2, 4, dtype=torch.long)
    mask = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 0]])
    assert torch.equal(kosmos2_image_mask(module, (ids,), {"image_embeds_position_mask": mask}), mask != 0)
    assert not kosmos2_image_mask(module, (), {"input_ids": ids}).any()  # no mask: no vision tokens
    assert kosmos2_image_mask(module, (), {}) is None
    with pytest.raises(UnsupportedError, match="one mask value per input position"):
        kosmos2_image_mask(module, (ids,), {"image_embeds_position_mask": mask[:, :3]})


@pytest.mark.parametrize("name", ["kosmos2", "kosmos2_5"])
def test_kosmos_cached_decode_positions_count_the_padding_in_hf_itself(name):
    # Why the Kosmos specs set padded_decode_differs: Hugging Face's own (unpruned) text model gives a
    # left-padded sample different decode logits with and without a KV cache (its cached step counts the
    # padding in the positions, its prefill does not); an unpadded sample gets the same.
    case = load_case(name, None)
    model = case.models["eager"]
    batch = case.batch(model, "batch3")
    padded = ~batch.kwargs["attention_mask"].bool().all(dim=1)
    assert bool(padded.any()) and bool((~padded).any())
    kwargs = dict(batch.kwargs)
    with torch.no_grad():
        first = model(**kwargs, use_cache=True)
        step = first.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
        mask = torch.cat([kwargs["attention_mask"], torch.ones_like(step)], dim=1)
        cached = model.text_model(input_ids=step, attention_mask=mask, past_key_values=first.past_key_values,
                                  use_cache=True).logits[:, -1]
        full = {**kwargs, "input_ids": torch.cat([kwargs["input_ids"], step], dim=1), "attention_mask": mask,
                "image_embeds_position_mask": torch.nn.functional.pad(kwargs["image_embeds_position_mask"], (0, 1))}
        uncached = model(**full, use_cache=False).logits[:, -1]
    torch.testing.assert_close(cached[~padded], uncached[~padded], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(cached[padded], uncached[padded], atol=1e-3)
