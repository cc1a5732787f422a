"""The conformance cases: every bundled spec (and its config variants) x attention backend."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

import tokenprune as tp
from tokenprune.spec_testdata import TestModelSpec, load_test_model
from tokenprune.testing import build_test_model, make_test_inputs

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


def layers_of(case: Case, model):
    lm = tp.spec.resolve_module(model, case.spec.language_model, "language_model")
    return tp.spec.resolve_module(lm, case.spec.decoder_layers, "decoder_layers")


def greedy(model, batch, steps: int = 8, **kw) -> torch.Tensor:
    with torch.no_grad():
        out = model.generate(**batch.kwargs, max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                             suppress_tokens=batch.suppress_ids, pad_token_id=0, **kw)
    return out[:, batch.input_ids.shape[1]:]
