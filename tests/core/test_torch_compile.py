"""``torch.compile`` of a pruned model: exact, few graph breaks, no recompilation on a repeated call.

Dynamo traces a whole tiny LLaVA a handful of times here (tens of seconds on 2 cores), so the models and the
compiled calls are shared by the module. The backend only counts the graphs and runs them as they are: what is
tested is what dynamo captures, not a code generator.
"""

from __future__ import annotations

import pytest
import torch

import tokenprune as tp
from tokenprune.testing import build_test_model, make_test_inputs

SPEC = tp.load_spec("llava")
PYRAMID = tp.Schedule([1.0, 0.75, 0.5, 0.25])  # three cuts


class GraphCounter:
    """A torch.compile backend that counts the graphs dynamo hands it and runs them unchanged."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs):
        self.graphs += 1
        return gm.forward


def _selection(model) -> dict[int, list[list[int]]]:
    return {layer: [t.tolist() for t in kept] for layer, kept in tp.last_selection(model).items()}


@pytest.fixture(scope="module")
def setup():
    torch._dynamo.reset()
    model = build_test_model(SPEC)
    batch = make_test_inputs(SPEC, model, [1, 1], [5, 8], seed=1)
    yield model, batch, tp.compile(model, SPEC, PYRAMID)
    torch._dynamo.reset()


@pytest.fixture(scope="module")
def compiled_pruned(setup):
    """The pruned model under torch.compile, called once before any eager call of either model (which would
    install transformers' lazy output-capture hooks outside the trace): (compiled model, graphs, logits, selection)."""
    _, batch, pruned = setup
    counter = GraphCounter()
    compiled = torch.compile(pruned, backend=counter)
    with torch.no_grad():
        logits = compiled(**batch.kwargs).logits
    return compiled, counter.graphs, logits, _selection(pruned)


@pytest.fixture(scope="module")
def expected(setup, compiled_pruned):
    """Eager logits of both models (after the first compiled call)."""
    model, batch, pruned = setup
    with torch.no_grad():
        return {"original": model(**batch.kwargs).logits, "pruned": pruned(**batch.kwargs).logits}


@pytest.fixture(scope="module")
def original_graphs(setup, expected):
    model, batch, _ = setup
    counter = GraphCounter()
    with torch.no_grad():
        logits = torch.compile(model, backend=counter)(**batch.kwargs).logits
    assert torch.equal(logits, expected["original"])
    return counter.graphs


def test_graph_breaks_are_at_most_the_originals_plus_one_per_cut(setup, original_graphs, compiled_pruned):
    """Each cut's selection runs eagerly behind one break. The pruned model has dynamo resume inside nested calls
    after a break, so the language-model call costs no break of its own (by default dynamo would end the
    caller's graph before it), and the original's own break costs one graph less, which pays for the eager
    Python before and after the traced language model."""
    _, graphs, _, _ = compiled_pruned
    breaks, original_breaks = graphs - 1, original_graphs - 1
    assert breaks <= original_breaks + len(PYRAMID.cuts), (breaks, original_breaks)


def test_compiling_the_pruned_model_leaves_dynamo_config_alone(compiled_pruned):
    assert torch._dynamo.config.nested_graph_breaks is False


def test_compiled_pruned_equals_eager_pruned(setup, compiled_pruned, expected):
    _, batch, pruned = setup
    _, _, logits, selection = compiled_pruned
    assert torch.equal(logits, expected["pruned"])
    with torch.no_grad():
        pruned(**batch.kwargs)
    assert selection == _selection(pruned) and len(selection) == len(PYRAMID.cuts)


def test_a_repeated_call_does_not_recompile(setup, compiled_pruned, expected):
    _, batch, _ = setup
    compiled = compiled_pruned[0]
    with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):
        logits = compiled(**batch.kwargs).logits
    assert torch.equal(logits, expected["pruned"])


def test_compiled_generate_equals_eager_generate(setup):
    model, batch, pruned = setup
    settings = dict(max_new_tokens=2, min_new_tokens=2, do_sample=False, suppress_tokens=batch.suppress_ids,
                    pad_token_id=0, return_dict_in_generate=True, output_logits=True)
    with torch.no_grad():
        eager = pruned.generate(**batch.kwargs, **settings)
        eager_selection = _selection(pruned)
        compiled = tp.compile(model, SPEC, PYRAMID)
        compiled.forward = torch.compile(compiled.forward, backend=GraphCounter())
        out = compiled.generate(**batch.kwargs, **settings)
    assert torch.equal(out.sequences, eager.sequences)
    for got, want in zip(out.logits, eager.logits, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert _selection(compiled) == eager_selection
