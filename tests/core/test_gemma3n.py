"""Gemma 3n beyond the conformance suite: the AltUp hidden-state layout, the KV-sharing dict the forward builds,
per-layer inputs, the stand-in vision tower, the analysis of dtype reads, and the FLOPs refusal."""

import operator

import pytest
import torch
import torch.fx as fx

import tokenprune as tp
from tokenprune.errors import SpecError, TraceError, UnsupportedError
from tokenprune.plugins import registry
from tokenprune.plugins.resolve import resolve_spec
from tokenprune.rewrites.analysis import PER_TOKEN_META, per_token_nodes
from tokenprune.rewrites.hints_shared_kv import new_kv_sharing_dict
from tokenprune.rewrites.ops import gather_hidden
from tokenprune.rewrites.probe_stack import tuple_output_layers
from tokenprune.rewrites.state import Gather
from tokenprune.spec_testdata import load_test_model
from tokenprune.testing import build_test_model, make_test_inputs
from tokenprune.testing.builders import build_test_config


@pytest.fixture(scope="module")
def spec():
    return tp.load_spec("gemma3n")


@pytest.fixture(scope="module")
def model(spec):
    return build_test_model(spec, attn_implementation="eager")


def _layers(model):
    return model.model.language_model.layers


def _gather(rows: torch.Tensor) -> Gather:
    return Gather(rows=rows, cols=rows, col_pad=torch.zeros_like(rows, dtype=torch.bool), q_pos=rows, k_pos=rows)


def test_altup_layout_gathers_every_stream_along_the_token_axis(spec):
    layout = registry("hidden_states").get("gemma3n_altup")()
    stack = torch.randn(4, 2, 7, 8)  # (streams, B, S, D)
    rows = torch.tensor([[0, 2, 5], [1, 3, 6]])  # (B, kept)
    kept = gather_hidden(stack, _gather(rows), layout.token_axis, layout.batch_axis)
    assert kept.shape == (4, 2, 3, 8)
    for b in range(2):
        assert torch.equal(kept[:, b], stack[:, b, rows[b]])
    assert layout.batch_and_length(stack) == (2, 7)
    plain = registry("hidden_states").get("plain")()
    assert torch.equal(gather_hidden(stack[0], _gather(rows)), torch.stack([stack[0, b, rows[b]] for b in range(2)]))
    assert plain.batch_and_length(stack[0]) == (2, 7)


def test_altup_attention_input_is_the_active_streams_prediction(model):
    layer = _layers(model)[1]
    stack = torch.randn(layer.config.altup_num_inputs, 2, 5, layer.config.hidden_size)
    got = registry("hidden_states").get("gemma3n_altup")().attention_input(layer, stack)
    with torch.no_grad():
        assert torch.equal(got, layer.altup.predict(stack)[layer.config.altup_active_idx])
    assert registry("hidden_states").get("plain")().attention_input(layer, stack) is stack


def test_altup_layout_refuses_a_layer_without_altup(spec):
    llama = build_test_model(tp.load_spec("llava"), attn_implementation="eager")
    layer = llama.model.language_model.layers[0]
    with pytest.raises(SpecError, match="tracing.hidden_states: gemma3n_altup.*use tracing.hidden_states: plain"):
        registry("hidden_states").get("gemma3n_altup")().attention_input(layer, torch.randn(2, 5, layer.hidden_size))


def test_unknown_hidden_states_layout_is_refused(spec, tmp_path):
    import yaml

    data = spec.model_dump(exclude_defaults=True)
    data["tracing"]["hidden_states"] = "stacked"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    expected = r"unknown hidden states 'stacked'.*tracing.hidden_states.*'gemma3n_altup', 'plain'"
    with pytest.raises(SpecError, match=expected):
        resolve_spec(tp.load_spec(path))


def test_the_forwards_kv_sharing_dict_becomes_one_fresh_dict_per_call(spec, model):
    compiled = tp.compile(model, spec, tp.Schedule([1.0, 1.0, 0.5, 0.5, 0.5, 0.5]))
    for gm in compiled._tokenprune_language_model._tokenprune_graphs.values():
        nodes = [n for n in gm.graph.nodes if n.target is new_kv_sharing_dict]
        assert len(nodes) == 1 and nodes[0].meta[PER_TOKEN_META]
        layer_calls = [n for n in gm.graph.nodes if n.op == "call_module" and str(n.target).startswith("layers.")]
        # Layers before the cut read the dict itself, the later ones the dict the cut gathered from it.
        assert all(n.kwargs["shared_kv_states"] is nodes[0] for n in layer_calls[:2])
        assert all(n.kwargs["shared_kv_states"].name.startswith("cut2_") for n in layer_calls[2:])
    assert new_kv_sharing_dict() is not new_kv_sharing_dict()


def test_a_cut_that_does_not_gather_the_kv_sharing_dict_is_refused(spec, model):
    undeclared = spec.model_copy(update={"tracing": spec.tracing.model_copy(
        update={"layer_kwargs": {"shared_kv_states": "constant"}})})
    with pytest.raises(TraceError, match="reads per-token value 'kv_sharing_dict' from before the cut"):
        tp.compile(model, undeclared, tp.Schedule([1.0, 1.0, 0.5, 0.5, 0.5, 0.5]))


def test_language_model_called_with_ids_or_embeddings_matches_the_original(spec, model):
    compiled = tp.compile(model, spec, tp.Schedule.keep_all(6))
    ids = torch.randint(3, 200, (2, 9), generator=torch.Generator().manual_seed(0))
    lm, lm_compiled = model.model.language_model, compiled.model.language_model
    embeds = lm.embed_tokens(ids)
    with torch.no_grad():
        # Token ids: the per-layer inputs are derived from them (hint gemma3n_per_layer_inputs, "present").
        assert torch.equal(lm_compiled(input_ids=ids).last_hidden_state, lm(input_ids=ids).last_hidden_state)
        # Embeddings only: the projection alone, as the original computes it ("absent").
        assert torch.equal(lm_compiled(inputs_embeds=embeds).last_hidden_state,
                           lm(inputs_embeds=embeds).last_hidden_state)


def test_stand_in_vision_tower_has_the_timm_towers_layout(spec, model):
    from transformers import Gemma3nVisionConfig

    config = build_test_config(spec)
    assert isinstance(config.vision_config, Gemma3nVisionConfig)  # the class Gemma3nConfig pins
    assert type(model.model.vision_tower).__name__ == "StandInVisionTower"
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out = model.model.vision_tower(pixel_values=pixels, do_pooling=False, return_dict=True).last_hidden_state
    side = 32 // config.vision_config.model_args["patch_size"]
    assert out.shape == (3, config.vision_config.hidden_size, side, side)  # (images, C, h, w)
    assert side * side == config.vision_soft_tokens_per_image
    batch = make_test_inputs(spec, model, [1, 2], [4, 6])
    assert batch.vision_mask.sum(dim=1).tolist() == [16, 32]


def test_unknown_stand_in_is_refused(tmp_path):
    import yaml

    data = load_test_model("gemma3n").model_dump(exclude_defaults=True)
    data["stand_ins"] = {"vision_config": "timm_mobilenet"}
    path = tmp_path / "bad.test.yaml"
    path.write_text(yaml.safe_dump(data))
    test = load_test_model(path)  # stand-in names are checked when the test model is built
    with pytest.raises(SpecError, match=r"unknown test stand in .timm_mobilenet.*stand_ins.*gemma3n_vision"):
        build_test_model(tp.load_spec("gemma3n"), test=test)


def test_dtype_and_device_reads_carry_no_tokens():
    def forward(x, y):
        return (y + 1).to(dtype=x.dtype, device=x.device), x * 2

    graph = fx.symbolic_trace(forward).graph
    per_token = per_token_nodes(graph, ("x",))
    names = {n.name: n for n in graph.nodes}
    attrs = [n for n in graph.nodes if n.target is getattr]
    assert {n.args[1] for n in attrs} == {"dtype", "device"}
    assert not per_token & {n.name for n in attrs}
    assert "mul" in per_token and "to" not in per_token and "x" in per_token
    assert names["to"].op == "call_method"


def test_a_stack_indexed_at_several_positions_is_not_a_tuple_output():
    class Stack(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)])

        def forward(self, x):
            first = self.layers[0](x)[0]  # a tuple-returning layer's hidden states
            stack = self.layers[1](first)
            return stack[0] + stack[1]  # a stack of streams, indexed along its first axis

    gm = fx.symbolic_trace(Stack())
    assert tuple_output_layers({None: gm}, "layers") == {0: 1}  # layer 0 returns a 1-tuple
    assert any(n.target is operator.getitem for n in gm.graph.nodes)


def test_flops_refuse_altup_models_and_accept_an_explicit_shape(model):
    with pytest.raises(UnsupportedError, match=r"AltUp streams \(altup_num_inputs=4, Gemma 3n\).*pass a TextShape"):
        tp.prefill_flops(model.config, tp.Schedule.keep_all(6), 10, 16)
    text = model.config.text_config
    shape = tp.flops.TextShape(num_layers=6, hidden=text.hidden_size, intermediate=text.intermediate_size[0],
                               heads=text.num_attention_heads, kv_heads=text.num_key_value_heads,
                               head_dim=text.head_dim)
    assert tp.prefill_flops(shape, tp.Schedule.fastv(6, 2, 0.5), 10, 16).fraction < 1.0


def test_next_layer_scorer_reads_the_next_layers_active_stream():
    # The 'streams' variant attends to the second of two streams: scoring any other stream picks other tokens.
    from tests.conformance.cases import layers_of, load_case
    from tokenprune.testing.masking import dropped_per_layer, masked_reference

    case = load_case("gemma3n", "streams")
    eager = case.models["eager"]
    batch = case.batch(eager, "batch3")
    schedule = case.schedules()["multi"]
    compiled = tp.compile(eager, case.spec, schedule, scorer="next-layer-attention")
    with torch.no_grad():
        compiled(**batch.kwargs)
    selection = tp.last_selection(compiled)
    dropped = dropped_per_layer(batch.vision_mask, selection, case.num_layers)
    for layer, per_sample in selection.items():
        # The reference's layer `layer` must see what the scorer saw: the tokens left before this cut.
        before = [dropped[min(j, layer - 1)] for j in range(case.num_layers)]
        with masked_reference(layers_of(case, eager), before), torch.no_grad():
            attentions = eager(**batch.kwargs, output_attentions=True).attentions
        weights = attentions[layer][:, :, -1, :].float().mean(dim=1)  # (B, S): last query of layer `layer`
        for b, kept in enumerate(per_sample):
            candidates = batch.vision_mask[b] & ~dropped[layer - 1][b]
            assert len(kept) < int(candidates.sum())  # the cut drops some of them
            expected = torch.topk(weights[b].masked_fill(~candidates, -1.0), len(kept)).indices.sort().values
            assert torch.equal(expected, kept), (layer, b)
