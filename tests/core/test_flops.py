import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import LlamaConfig, LlamaModel

import tokenprune as tp
from tokenprune.flops import TextShape


def test_paper_convention_matches_the_published_worked_numbers():
    # The FastV paper's numbers: LLaVA-1.5-7B at n=640 is 3.33 TFLOPs; FastV K=2 R=50% with 64 text tokens is 0.571.
    shape = TextShape(num_layers=32, hidden=4096, intermediate=11008, heads=32, kv_heads=32, head_dim=128)
    full = tp.prefill_flops(shape, tp.Schedule.keep_all(32), 64, 576, convention="paper")
    assert full.total / 1e12 == pytest.approx(3.33, abs=0.005)
    fastv = tp.prefill_flops(shape, tp.Schedule.fastv(32, 2, 0.5), 64, 576, convention="paper")
    assert fastv.fraction == pytest.approx(0.571, abs=0.0005)


def _tiny_llama():
    cfg = LlamaConfig(hidden_size=64, intermediate_size=176, num_hidden_layers=3, num_attention_heads=8,
                      num_key_value_heads=2, vocab_size=32, attn_implementation="eager")
    return cfg, LlamaModel(cfg).eval()


def test_exact_convention_matches_flop_counter_on_eager_attention():
    cfg, model = _tiny_llama()
    n = 50
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(inputs_embeds=torch.randn(1, n, 64))
    counted = counter.get_total_flops()
    predicted = tp.prefill_flops(cfg, tp.Schedule.keep_all(3), n, 0).total
    assert predicted == pytest.approx(counted, rel=0.01)


def test_exact_convention_per_layer_matches_a_pruned_model():
    from tokenprune.testing import build_test_model, make_test_inputs

    spec = tp.load_spec("llava")
    model = build_test_model(spec, attn_implementation="eager")
    batch = make_test_inputs(spec, model, [1], [6])
    schedule = tp.Schedule([1.0, 0.5, 0.5, 0.25])
    compiled = tp.compile(model, spec, schedule)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        compiled(**batch.kwargs)
    per_module = counter.get_flop_counts()
    n_vis = int(batch.vision_mask.sum())
    n_text = batch.input_ids.shape[1] - n_vis
    report = tp.prefill_flops(model.config, schedule, n_text, n_vis)
    for layer in range(4):
        # The graph module calls the decoder layers, so FlopCounterMode names them by its class.
        key = next(k for k in per_module if k.startswith("Traced") and k.endswith(f".layers.{layer}"))
        counted = sum(per_module[key].values())
        assert report.per_layer[layer] == pytest.approx(counted, rel=0.01), layer
    assert report.fraction < 1.0
    assert report.tokens_per_layer == tuple(n_text + c for c in schedule.keep_counts(n_vis))


def test_mean_vision_tokens_and_fraction_are_consistent():
    shape = TextShape(num_layers=4, hidden=64, intermediate=128, heads=4, kv_heads=4, head_dim=16)
    report = tp.prefill_flops(shape, tp.Schedule([1, 0.5, 0.5, 0.0]), 10, 100)
    assert report.mean_vision_tokens == (100 + 50 + 50 + 0) / 4
    assert 0 < report.fraction < 1
    assert report.to_dict()["fraction"] == report.fraction
