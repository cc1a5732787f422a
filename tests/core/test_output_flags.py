"""output_hidden_states / output_attentions: one entry per layer on the compiled model, laid out like each
layer's input after a cut, and the original model unaffected by a compiled copy (which shares its layers)."""

import pytest
import torch

import tokenprune as tp
from tokenprune.testing.masking import dropped_per_layer, kept_positions, masked_reference
from tokenprune.testing import build_test_model, make_test_inputs

SPEC = tp.load_spec("llava")
LAYERS = 4
SCHEDULE = tp.Schedule([1.0, 0.5, 0.5, 0.25])  # cuts before layers 1 and 3
FLAGS = {"output_hidden_states": True, "output_attentions": True}


def _model():
    return build_test_model(SPEC, attn_implementation="eager")


def _batch(model, images=(1, 2, 1), texts=(5, 9, 3)):
    return make_test_inputs(SPEC, model, list(images), list(texts), seed=3)


def _run(model, batch, **kwargs):
    with torch.no_grad():
        return model(**batch.kwargs, **FLAGS, **kwargs)


def _assert_same_outputs(a, b):
    assert len(a.hidden_states) == len(b.hidden_states) and len(a.attentions) == len(b.attentions)
    for x, y in zip(a.hidden_states + a.attentions, b.hidden_states + b.attentions):
        assert torch.equal(x, y)
    assert torch.equal(a.logits, b.logits)


def _slots_per_layer(batch, selection) -> list[int]:
    """Sequence length each layer sees: the longest sample's prompt slots still present after the last cut."""
    out = []
    for layer in range(LAYERS):
        done = {c: s for c, s in selection.items() if c <= layer}
        out.append(max(len(kept_positions(batch.vision_mask, done, b)) for b in range(batch.vision_mask.shape[0])))
    return out


def test_one_entry_per_layer_with_the_length_each_layer_sees():
    model = _model()
    compiled = tp.compile(model, SPEC, SCHEDULE)
    batch = _batch(model)
    _run(model, batch)  # the original recording first must not double the compiled model's entries
    out = _run(compiled, batch)
    assert len(out.hidden_states) == LAYERS + 1 and len(out.attentions) == LAYERS
    lengths = _slots_per_layer(batch, tp.last_selection(compiled))
    assert lengths[1] < lengths[0] and lengths[3] < lengths[2]  # both cuts pruned
    for i in range(LAYERS):
        assert out.hidden_states[i].shape[1] == lengths[i]  # hidden_states[i] is layer i's input
        assert tuple(out.attentions[i].shape[-2:]) == (lengths[i], lengths[i])
    assert out.hidden_states[LAYERS].shape[1] == lengths[-1]
    assert out.logits.shape[1] == lengths[-1]


def test_values_match_the_masking_reference_at_the_kept_positions():
    model = _model()
    compiled = tp.compile(model, SPEC, SCHEDULE)
    batch = _batch(model, images=(1,), texts=(6,))
    out = _run(compiled, batch)
    selection = tp.last_selection(compiled)
    dropped = dropped_per_layer(batch.vision_mask, selection, LAYERS)
    with masked_reference(model.model.language_model.layers, dropped):
        ref = _run(model, batch)
    for i in range(LAYERS + 1):
        kept = kept_positions(batch.vision_mask, {c: s for c, s in selection.items() if c <= min(i, LAYERS - 1)}, 0)
        torch.testing.assert_close(out.hidden_states[i], ref.hidden_states[i][:, kept], rtol=1e-4, atol=1e-5)
        if i < LAYERS:
            torch.testing.assert_close(out.attentions[i], ref.attentions[i][:, :, kept][..., kept],
                                       rtol=1e-4, atol=1e-6)


def test_keep_all_schedule_gives_the_original_outputs_bit_for_bit():
    model = _model()
    batch = _batch(model)
    _assert_same_outputs(_run(tp.compile(model, SPEC, tp.Schedule.keep_all(LAYERS)), batch), _run(model, batch))


@pytest.mark.parametrize("original_first", [False, True])
def test_original_model_unchanged_by_a_compiled_copy_that_ran_with_flags(original_first):
    model, twin = _model(), _model()  # same seed: same weights; the twin is never compiled
    batch = _batch(model)
    compiled = tp.compile(model, SPEC, SCHEDULE)
    if original_first:
        _run(model, batch)
    _run(compiled, batch)
    _assert_same_outputs(_run(model, batch), _run(twin, batch))
    assert len(_run(compiled, batch).hidden_states) == LAYERS + 1


def test_return_dict_false_keeps_the_aligned_hidden_states():
    model = _model()
    compiled = tp.compile(model, SPEC, SCHEDULE)
    batch = _batch(model, images=(1,), texts=(6,))
    lm = compiled.model.language_model
    embeds = model.get_input_embeddings()(batch.input_ids)
    with torch.no_grad():
        as_dict = lm(inputs_embeds=embeds, tokenprune_vision_mask=batch.vision_mask, output_hidden_states=True)
        as_tuple = lm(inputs_embeds=embeds, tokenprune_vision_mask=batch.vision_mask, output_hidden_states=True,
                      return_dict=False)
    hidden = next(t for t in as_tuple if isinstance(t, tuple) and len(t) == LAYERS + 1)
    assert [h.shape for h in hidden] == [h.shape for h in as_dict.hidden_states]
    assert hidden[1].shape[1] < hidden[0].shape[1]


def test_generate_returns_one_entry_per_layer_at_every_step():
    model, twin = _model(), _model()
    compiled = tp.compile(model, SPEC, SCHEDULE)
    batch = _batch(model)
    options = dict(max_new_tokens=3, do_sample=False, return_dict_in_generate=True, **FLAGS,
                   suppress_tokens=[model.config.image_token_id])
    with torch.no_grad():
        original = model.generate(**batch.kwargs, **options)
        pruned = compiled.generate(**batch.kwargs, **options)
        reference = twin.generate(**batch.kwargs, **options)
    assert len(pruned.attentions) == len(pruned.hidden_states) == 3
    lengths = _slots_per_layer(batch, tp.last_selection(compiled))
    for step, (attentions, hidden) in enumerate(zip(pruned.attentions, pruned.hidden_states)):
        assert len(attentions) == LAYERS and len(hidden) == LAYERS + 1
        for i in range(LAYERS):
            assert attentions[i].shape[-1] == lengths[i] + step  # each layer's (pruned) cache plus new tokens
    assert torch.equal(original.sequences, reference.sequences)
    for a, b in zip(original.attentions, reference.attentions):
        assert len(a) == len(b) == LAYERS and all(torch.equal(x, y) for x, y in zip(a, b))


def test_no_output_hooks_until_a_flag_is_asked_for():
    """Hooks appear on the shared layers only with the first flagged call (of either model), and only once."""
    model = _model()
    layers = model.model.language_model.layers
    pruned = tp.compile(model, SPEC, SCHEDULE)
    batch = _batch(model)
    with torch.no_grad():
        pruned(**batch.kwargs)
    assert all(not layer._forward_hooks for layer in layers)
    _run(pruned, batch)
    hooks = [len(layer._forward_hooks) for layer in layers]
    assert all(hooks)
    _run(model, batch)
    assert [len(layer._forward_hooks) for layer in layers] == hooks
