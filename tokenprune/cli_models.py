"""Resolving the command line's MODEL, SCHEDULE and calibration arguments into objects (used by ``tokenprune.cli``)."""

from __future__ import annotations

import difflib
from pathlib import Path

from tokenprune.errors import SpecError, UnsupportedError, describe
from tokenprune.spec_testdata import load_test_model, locate_test_model


class Loaded:
    """A model, its spec, and how to make inputs for it."""

    def __init__(self, model, spec, processor=None, test_model: bool = False):
        self.model, self.spec, self.processor, self.test_model = model, spec, processor, test_model

    @property
    def num_layers(self) -> int:
        return self.model.config.get_text_config().num_hidden_layers


def load_model(name: str, spec: str | None = None, attn: str = "sdpa", family_config: Path | None = None,
               trust_remote_code: bool = False) -> Loaded:
    """Resolve a MODEL argument (bundled spec name or directory) to a model, a spec and maybe a processor.

    ``trust_remote_code`` lets a directory whose ``config.json`` maps its classes to Python files shipped
    with the checkpoint (``auto_map``) run that code.
    """
    import tokenprune as tp

    if family_config is not None:
        spec_obj = tp.load_spec(spec or name)
        return Loaded(_model_from_config(spec_obj, family_config, attn), spec_obj, test_model=True)
    path = Path(name)
    if path.is_dir():
        return _load_directory(path, spec, attn, trust_remote_code)
    if name in tp.bundled_spec_names() or name.endswith((".yaml", ".yml")):
        from tokenprune.testing import build_test_model

        spec_obj = tp.load_spec(spec or name)
        if load_test_model(spec_obj, required=False) is None:
            raise SpecError(describe(f"spec {spec_obj.name!r} has no test model file", "MODEL",
                                     f"test data in {locate_test_model(spec_obj)}, or a model directory",
                                     "write that file, or pass --model DIR or --family-config CONFIG.json"))
        return Loaded(build_test_model(spec_obj, attn_implementation=attn), spec_obj, test_model=True)
    near = difflib.get_close_matches(name, tp.bundled_spec_names(), n=3)
    raise SpecError(describe(f"MODEL {name!r} is neither a bundled spec nor a directory", "MODEL",
                             "a bundled spec name (tokenprune inspect --help) or a from_pretrained directory",
                             f"did you mean {' or '.join(map(repr, near))}?" if near else
                             "list the bundled specs with python -c 'import tokenprune; "
                             "print(tokenprune.bundled_spec_names())'"))


def _load_directory(path: Path, spec: str | None, attn: str, trust_remote_code: bool) -> Loaded:
    import tokenprune as tp
    from tokenprune.saving import model_class_for
    from tokenprune.spec import is_text_only, text_only_message

    cls = model_class_for(path, trust_remote_code=trust_remote_code)
    extra = {"trust_remote_code": True} if trust_remote_code else {}
    model = cls.from_pretrained(path, attn_implementation=attn, **extra).eval()
    if is_text_only(model.config):
        raise UnsupportedError(text_only_message(type(model).__name__, f"MODEL {str(path)!r}"))
    spec_obj = tp.load_spec(spec) if spec else tp.match_spec(model)
    return Loaded(model, spec_obj, _processor_or_none(path, trust_remote_code))


def _model_from_config(spec, config_path: Path, attn: str):
    """A random-weight model of the spec's first architecture from a config file (JSON or YAML)."""
    import torch
    import transformers
    import yaml


    path = Path(config_path)
    if not path.is_file():
        raise SpecError(describe(f"config file {str(path)!r} not found", "--family-config", "a JSON or YAML file"))
    data = yaml.safe_load(path.read_text())
    test = load_test_model(spec, required=False)
    if not isinstance(data, dict) or ("model_type" not in data and test is None):
        raise SpecError(describe(f"{str(path)!r} has no 'model_type'", "--family-config",
                                 "a config mapping with model_type (as in a checkpoint's config.json)"))
    config = transformers.AutoConfig.for_model(**data) if "model_type" in data else \
        getattr(transformers, test.config_class)(**data)
    torch.manual_seed(0)
    cls = getattr(transformers, spec.architectures[0])
    return cls._from_config(config, attn_implementation=attn).eval()


def _processor_or_none(path: Path, trust_remote_code: bool = False):
    try:
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception:  # a checkpoint without a processor: test inputs are used instead
        return None


def sample_inputs(loaded: Loaded, batch: int = 1, builder: str | None = None) -> dict:
    """Inputs with vision tokens: a registered test-input builder (``builder`` or the spec's), else the
    processor on a synthetic image."""
    import torch

    import tokenprune.testing  # noqa: F401  (registers the generic test-input builders)
    from tokenprune.plugins import registry

    spec = loaded.spec
    if builder is not None:
        gen = torch.Generator().manual_seed(0)
        make = registry("test_inputs").get(builder, "--inputs")
        return make(loaded.model, [1] * batch, [5 + 3 * i for i in range(batch)], gen).kwargs
    if load_test_model(spec, required=False) is not None:
        from tokenprune.testing import make_test_inputs

        images = [1] * batch
        return make_test_inputs(spec, loaded.model, images, [5 + 3 * i for i in range(batch)], seed=0).kwargs
    if loaded.processor is not None:
        from tokenprune.visualize import prompt_inputs

        return prompt_inputs(loaded.processor, synthetic_image(), "what is in the picture ?",
                             next(loaded.model.parameters()).dtype)
    raise UnsupportedError(describe("no way to build inputs for this model", "inputs",
                                    "a spec with a test model file, a model directory with a processor, or --inputs NAME",
                                    "name a registered test-input builder with --inputs (e.g. llava)"))


def synthetic_image(size: int = 336):
    """A deterministic test picture (colour gradients and a square) as a PIL image."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([x, y, 0.5 + 0.5 * np.sin(6 * x * y)], axis=-1)
    rgb[size // 3: size // 2, size // 3: 2 * size // 3] = (1.0, 0.2, 0.1)
    return Image.fromarray((rgb * 255).astype("uint8"))


def schedule_for(loaded: Loaded, text: str | None):
    from tokenprune.saving import read_schedule
    from tokenprune.testing.conformance import two_cut_schedule

    test = load_test_model(loaded.spec, required=False)
    first = test.first_cut if test is not None else 1
    return two_cut_schedule(loaded.num_layers, first) if text is None else read_schedule(text, loaded.num_layers)


def calibration_set(loaded: Loaded, text: str, seed: int = 0):
    """``synthvqa:N`` or ``random:N`` as a :class:`~tokenprune.search.CalibrationSet`."""
    from tokenprune.errors import TokenPruneError
    from tokenprune.search.calibration import CalibrationSet

    kind, _, count = text.partition(":")
    n = int(count) if count else 24
    if kind == "synthvqa":
        if loaded.processor is None:
            raise TokenPruneError(describe("synthvqa calibration needs a model with a processor", "--calibration",
                                           "a model directory", "use --calibration random:N for test models"))
        from tokenprune.synthvqa import make_sample

        samples = [make_sample("calibration", i, seed=seed) for i in range(n)]
        return CalibrationSet.from_triples(loaded.processor, [(s.image, s.prompt, " " + s.answer) for s in samples],
                                           seed=seed)
    if kind == "random":
        from tokenprune.testing import make_test_inputs

        batches = [make_test_inputs(loaded.spec, loaded.model, [1, 1], [5, 8], seed=seed + i).kwargs for i in range(n)]
        return CalibrationSet.from_batches(batches, heldout_fraction=0.25)
    raise TokenPruneError(describe(f"unknown calibration source {text!r}", "--calibration", "synthvqa:N or random:N"))
