"""Test data of a spec: the tiny random configuration the conformance suite, ``tokenprune validate`` and the docs
build a model of the family from.

It lives beside the spec, never inside it: ``path/to/x.yaml`` has its test data in ``path/to/x.test.yaml``
(bundled specs likewise: ``model_specs/llava.test.yaml``), whose top-level keys are the fields of
:class:`TestModelSpec`. A runtime spec therefore stays what ``compile`` needs and nothing else.
"""

from __future__ import annotations

import json
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from .errors import SpecError, describe
from .spec import json_schema as spec_json_schema
from .spec import BUNDLED_PACKAGE, TESTDATA_SUFFIX, ModelSpec, _Strict, format_validation_error, sibling_test_file


class TestModelSpec(_Strict):
    """A tiny random configuration of the family, so the conformance suite needs no downloads: the file
    ``NAME.test.yaml`` beside a spec ``NAME.yaml``, whose top-level keys are these (a spec never holds them)."""

    __test__ = False  # a library class, not a pytest test class

    config_class: str = Field(description="Name of the transformers config class, e.g. 'LlavaConfig'.")
    config: dict[str, Any] = Field(description="Keyword arguments for the config class.")
    inputs: str = Field(description="Registered name of the test-input builder (pixel values and image tokens).")
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Named overrides of `config` (deep-merged), each tested as well."
    )
    max_images_per_sample: int = Field(4, ge=1, description="Most images one prompt of this family may carry.")
    first_cut: int = Field(1, ge=1, description="Shallowest layer the conformance schedules cut before "
                           "(families that add per-token features in early layers refuse shallower cuts).")
    eager_only: list[str] = Field(default_factory=list, description="Variants ('default' for the base config) "
                                  "whose text model has no sdpa implementation in transformers.")
    stand_ins: dict[str, str] = Field(default_factory=dict, description="Keys of `config` built by a registered "
                                      "stand-in (kind 'test_stand_in') from their mapping before the config class "
                                      "gets them: for sub-configs the family's config class pins to a class whose "
                                      "model cannot be built here (Gemma 3n's timm vision tower).")
    padded_decode_differs: bool = Field(False, description="Hugging Face's own model generates differently with "
                                        "and without a KV cache for a left-padded sample (Kosmos-2 / 2.5: positions "
                                        "skip padding in a prefill, not in a cached step); the suite then compares "
                                        "cached and uncached generation on unpadded samples only.")
    weights: str | None = Field(None, description="Registered test-weight initialiser (kind 'test_weights') "
                                "applied after the family's own initialisation: for parameters a fresh model "
                                "sets to an identity that a scorer must nevertheless reproduce (Mistral Large 4's "
                                "position-dependent query scaling).")


def parse_test_model(data: Any, source: str = "<dict>") -> TestModelSpec:
    """Validate a test-data mapping (the content of a ``*.test.yaml`` file)."""
    if not isinstance(data, dict):
        raise SpecError(describe(f"test data is a {type(data).__name__}", source,
                                 "a YAML mapping with config_class, config and inputs"))
    try:
        test = TestModelSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, source, "test model file")) from None
    # Builder names are checked when a test model is built (tokenprune.testing registers the built-in ones).
    return test


def locate_test_model(spec_or_name: ModelSpec | str | Path) -> Path | Traversable | None:
    """Where the test data of a spec is (or would be): the ``*.test.yaml`` file beside it; None for a spec that
    was not read from a file (``spec_from_dict``)."""
    if isinstance(spec_or_name, ModelSpec):
        return sibling_test_file(spec_or_name.source_file) if spec_or_name.source_file is not None else None
    text = str(spec_or_name)
    if text.endswith(TESTDATA_SUFFIX):
        return Path(text)
    if text.endswith((".yaml", ".yml")) or Path(text).exists():
        return sibling_test_file(Path(text))
    return resources.files(BUNDLED_PACKAGE) / f"{text}{TESTDATA_SUFFIX}"


def load_test_model(spec_or_name: ModelSpec | str | Path, *, required: bool = True) -> TestModelSpec | None:
    """The test data of a spec (a loaded spec, a bundled spec name, a spec path or a ``*.test.yaml`` path).

    A spec without a test file gives None when ``required`` is false, else a :class:`SpecError` naming the file.
    """
    location = locate_test_model(spec_or_name)
    name = spec_or_name.name if isinstance(spec_or_name, ModelSpec) else str(spec_or_name)
    if location is None or not location.is_file():
        if not required:
            return None
        if location is None:
            raise SpecError(describe(
                f"spec {name!r} was built from a mapping, so no test model file sits beside it", "load_test_model",
                f"a spec read from a file, with its test data in NAME{TESTDATA_SUFFIX} beside it",
                "load the spec with load_spec(PATH), or hand the test data over explicitly "
                "(build_test_model(spec, test=load_test_model(TEST_PATH)))"))
        raise SpecError(describe(
            f"spec {name!r} has no test model file", str(location),
            f"a YAML file beside the spec, named like it with the suffix {TESTDATA_SUFFIX}, whose keys are "
            "config_class, config, inputs, ... (the tiny random model of the family)",
            "create that file (docs: 'Add a new model'), or pass a real model instead of building a test model"))
    source = str(location)
    try:
        data = yaml.safe_load(location.read_text())
    except yaml.YAMLError as err:
        raise SpecError(describe(f"YAML syntax error: {err}", source, "valid YAML")) from None
    return parse_test_model(data, source)


def json_schema_of_test_model() -> dict:
    """The JSON Schema of a test model file (exported to ``model_specs/test.schema.json`` and the docs)."""
    return TestModelSpec.model_json_schema()


def write_json_schemas(folder: Path) -> None:
    """Write ``spec.schema.json`` (specs) and ``test.schema.json`` (their ``*.test.yaml`` files) into ``folder``."""
    (folder / "spec.schema.json").write_text(json.dumps(spec_json_schema(), indent=2) + "\n")
    (folder / "test.schema.json").write_text(json.dumps(json_schema_of_test_model(), indent=2) + "\n")


if __name__ == "__main__":  # python -m tokenprune.spec_testdata: regenerate the shipped JSON Schemas
    write_json_schemas(Path(__file__).resolve().parents[1] / "model_specs")
