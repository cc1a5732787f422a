"""The conformance cases: every bundled spec (and its config variants) x attention backend."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

import tokenprune as tp
from tokenprune.spec_testdata import TestModelSpec, load_test_model
from tokenprune.testing import build_test_model, make_test_inputs
from tokenprune.testing.masking import decoder_layers

ATTENTION = ("eager", "sdpa")
# Batch shapes: images per sample and text tokens per sample (different lengths -> left padding).
BATCHES = {"batch1": ([1], [6]), "batch3": ([1, 2, 1], [5, 9, 3])}


def spec_cases() -> list[tuple[str, str | None]]:
    cases = []
    for name in tp.bundled_spec_names():
        cases.append((name, None))
        cases += [(name, variant) for variant in load_test_model(name).variants]
    return cases


def backends(name: str, variant: str | None) -> tuple[str, ...]:
    """Attention backends the family's text model has in transformers (Gemma 2 has no sdpa)."""
    eager_only = load_test_model(name).eager_only
    return ("eager",) if (variant or "default") in eager_only else ATTENTION


def case_backend_pairs() -> list[tuple[tuple[str, str | None], str]]:
    return [(case, attn) for case in spec_cases() for attn in backends(*case)]


def case_id(case) -> str:
    name, variant = case
    return name if variant is None else f"{name}-{variant}"


def pair_id(pair) -> str:
    case, attn = pair
    return f"{case_id(case)}-{attn}"


@dataclass
class Case:
    spec: tp.ModelSpec
    test: TestModelSpec  # the spec's test data (NAME.test.yaml)
    variant: str | None
    models: dict  # attention implementation -> model (same weights)

    @property
    def default_model(self):
        return self.models.get("sdpa", self.models["eager"])

    @property
    def num_layers(self) -> int:
        return self.models["eager"].config.get_text_config().num_hidden_layers

    def batch(self, model, key: str):
        images, texts = BATCHES[key]
        if self.test.max_images_per_sample == 1:
            images = [1] * len(images)
        return make_test_inputs(self.spec, model, images, texts, seed=len(images))

    def schedules(self) -> dict[str, tp.Schedule]:
        n, first = self.num_layers, self.test.first_cut
        multi = [1.0] * first + [0.75, 0.5, 0.25] + [0.25] * n
        return {"fastv": tp.Schedule.fastv(n, layer=max(2, first), keep=0.5), "multi": tp.Schedule(multi[:n]),
                "withdraw": tp.Schedule.vtw(n, layer=max(2, first))}


@functools.lru_cache(maxsize=None)
def load_case(name: str, variant: str | None) -> Case:
    spec = tp.load_spec(name)
    models = {attn: build_test_model(spec, variant, attn_implementation=attn, seed=0) for attn in backends(name, variant)}
    ref = models["eager"].state_dict()
    for model in models.values():
        for key, value in model.state_dict().items():
            assert torch.equal(value, ref[key]), f"seeded builds differ at {key}"
    return Case(spec, load_test_model(spec), variant, models)


# The compiled models of the case whose tests are running. Those tests only call them (forward, generate,
# last_selection), so one compile serves all of them; ``conftest.py`` runs each case's tests together, so
# holding one case at a time reuses every compile and keeps memory bounded.
_COMPILED: dict[tuple, torch.nn.Module] = {}


def compiled_case(case_key: tuple[str, str | None], attn: str, schedule_key: str):
    """``case_key``'s ``attn`` model compiled with ``schedule_key`` (``"keep-all"`` or a key of
    :meth:`Case.schedules`), compiled once per case; never mutate it."""
    key = (case_key, attn, schedule_key)
    if key not in _COMPILED:
        if any(held[0] != case_key for held in _COMPILED):
            _COMPILED.clear()
        case = load_case(*case_key)
        schedule = (tp.Schedule.keep_all(case.num_layers) if schedule_key == "keep-all"
                    else case.schedules()[schedule_key])
        _COMPILED[key] = tp.compile(case.models[attn], case.spec, schedule)
    return _COMPILED[key]


def case_of(item) -> tuple[str, str | None] | None:
    """The conformance case a collected test item runs, from its parameters."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    if "pair" in params:
        return params["pair"][0]
    return params.get("case_key")


def layers_of(case: Case, model):
    return decoder_layers(model, case.spec)


def greedy(model, batch, steps: int = 8, **kw) -> torch.Tensor:
    with torch.no_grad():
        out = model.generate(**batch.kwargs, max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                             suppress_tokens=batch.suppress_ids, pad_token_id=0, **kw)
    return out[:, batch.input_ids.shape[1]:]
