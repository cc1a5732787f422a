"""A spec is resolved once, at compile: the compiled model runs without looking any name up."""

from __future__ import annotations

import torch

import tokenprune as tp
from tokenprune.plugins import Registry, registry
from tokenprune.testing import build_test_model, make_test_inputs


def test_a_compiled_model_looks_nothing_up_when_it_runs(monkeypatch):
    spec = tp.load_spec("llava")
    model = build_test_model(spec)
    batch = make_test_inputs(spec, model, [1, 2], [4, 6])
    layers = model.config.text_config.num_hidden_layers
    pruned = tp.compile(model, spec, tp.Schedule.fastv(layers, layer=1, keep=0.5), scorer="text-mean-attention")
    session = pruned._tokenprune_session
    assert session.plugins.scorer is registry("scorer").get("text-mean-attention")
    assert session.plugins.rope is registry("rope").get("rotate_half")

    def refuse(self, name, *args, **kwargs):
        raise AssertionError(f"{self.kind} {name!r} looked up while the compiled model runs")

    monkeypatch.setattr(Registry, "get", refuse)
    with torch.no_grad():
        pruned(**batch.kwargs)
        out = pruned.generate(**batch.kwargs, max_new_tokens=2, do_sample=False, pad_token_id=0,
                              suppress_tokens=batch.suppress_ids)
    assert out.shape[1] == batch.input_ids.shape[1] + 2
    assert sorted(tp.last_selection(pruned)) == [1]
