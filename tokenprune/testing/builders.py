"""Build a tiny random instance of a spec's family and prompts with real vision tokens for it.

Input builders are registered by name (kind ``test_inputs``) because pixel layouts differ by family (the testing
package imports the generic ones; a family's own come with its plug-in module);
each returns model keyword arguments for a left-padded batch whose samples may carry different numbers
of images (and so of vision tokens).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from tokenprune.plugins import registry
from tokenprune.spec import ModelSpec
from tokenprune.spec_testdata import TestModelSpec, load_test_model, locate_test_model


@dataclass
class TestBatch:
    """Keyword arguments for ``model(**kwargs)`` plus what tests need to know about them."""

    kwargs: dict
    vision_mask: torch.Tensor  # (B, S) bool
    image_token_id: int
    extra: dict = field(default_factory=dict)
    vision_token_ids: list[int] = field(default_factory=list)  # every id that marks a vision token

    @property
    def suppress_ids(self) -> list[int]:
        """Ids a random model must not generate (they would start a new image in the next step)."""
        return sorted({self.image_token_id, *self.vision_token_ids})

    @property
    def input_ids(self) -> torch.Tensor:
        return self.kwargs["input_ids"]


def _deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def test_source(spec: ModelSpec) -> str:
    """Where a spec's test data comes from, for error messages."""
    return str(locate_test_model(spec) or f"the test data of spec {spec.name!r}")


def build_test_config(spec: ModelSpec, variant: str | None = None, test: TestModelSpec | None = None):
    """The transformers config of the spec's tiny model; ``test`` overrides the test data beside the spec."""
    import transformers

    test = test or load_test_model(spec)
    kwargs = copy.deepcopy(test.config if variant is None else _deep_merge(test.config, test.variants[variant]))
    for key, stand_in in test.stand_ins.items():  # sub-configs whose pinned class cannot build a model here
        make = registry("test_stand_in").get(stand_in, f"{test_source(spec)}: stand_ins")
        kwargs[key] = make(**kwargs.get(key, {}))
    return getattr(transformers, test.config_class)(**kwargs)


def build_test_model(spec: ModelSpec, variant: str | None = None, attn_implementation: str = "sdpa",
                     dtype: torch.dtype = torch.float32, seed: int = 0, test: TestModelSpec | None = None):
    """A tiny random model of the spec's first architecture, in eval mode, from the spec's test data (the
    ``*.test.yaml`` file beside it, see :func:`tokenprune.spec_testdata.load_test_model`) or from ``test``."""
    import transformers

    test = test or load_test_model(spec)
    config = build_test_config(spec, variant, test)
    torch.manual_seed(seed)
    cls = getattr(transformers, spec.architectures[0])
    model = cls._from_config(config, attn_implementation=attn_implementation, dtype=dtype)
    if test.weights:  # parameters the family's init leaves at an identity, drawn at random
        with torch.no_grad():
            randomise = registry("test_weights").get(test.weights, f"{test_source(spec)}: weights")
            randomise(model, torch.Generator().manual_seed(seed))
    return model.eval()


def make_test_inputs(spec: ModelSpec, model, images_per_sample: list[int], text_lengths: list[int],
                     seed: int = 0, test: TestModelSpec | None = None) -> TestBatch:
    """A left-padded batch: sample ``b`` has ``images_per_sample[b]`` images and ``text_lengths[b]`` text tokens."""
    inputs = (test or load_test_model(spec)).inputs
    builder = registry("test_inputs").get(inputs, f"{test_source(spec)}: inputs")
    gen = torch.Generator().manual_seed(seed)
    return builder(model, images_per_sample, text_lengths, gen)


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S) input ids and attention mask, padded on the left."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for b, seq in enumerate(sequences):
        ids[b, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[b, width - len(seq):] = 1
    return ids, mask


def random_text(length: int, vocab: int, avoid: set[int], gen: torch.Generator) -> list[int]:
    out = []
    while len(out) < length:
        tok = int(torch.randint(3, vocab, (1,), generator=gen))
        if tok not in avoid:
            out.append(tok)
    return out
