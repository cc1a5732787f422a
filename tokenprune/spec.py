"""Declarative model specs: *where* the language model, its layers and the vision tokens are.

A spec is a YAML file validated by pydantic (unknown keys rejected). Module paths are dotted attribute
paths; vision token ids are *references* into the model config (``image_token_id``), never numbers.
"""

from __future__ import annotations

import difflib
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from .errors import SpecError, SpecMatchError, TokenPruneError, describe
from .plugins import load_plugins
from .spec_vision import VisionSide

BUNDLED_PACKAGE = "tokenprune.model_specs"
# A spec x.yaml keeps its test data (tokenprune.spec_testdata) in x.test.yaml beside it.
TESTDATA_SUFFIX = ".test.yaml"

# How a decoder-layer argument carries per-token data, i.e. how a cut must gather it. Besides the masks, rotary
# values and position ids: "tokens" is a (B, S, ...) tensor laid out like the hidden states (Gemma 4's per-layer
# input), "shared_kv" a mapping of (key, value) tensors (B, H, S_k, D) that layers write and later layers read
# (Gemma 4's KVSharingDict), gathered along the key axis. "unread" is a per-token value the layers receive but
# never read (Mistral Large 4's prev_topk_indices on layers with their own indexer): handed on unchanged.
GatherKind = Literal["mask", "rope", "positions", "tokens", "shared_kv", "unread", "cache", "constant"]

DEFAULT_LAYER_KWARGS: dict[str, GatherKind] = {
    "attention_mask": "mask",
    "position_embeddings": "rope",
    "position_ids": "positions",
    "past_key_values": "cache",
    "use_cache": "constant",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LayerPaths(_Strict):
    """Paths inside one decoder layer, relative to the layer."""

    attention: str = Field("self_attn", description="The attention module of the layer.")
    q_proj: str = Field("self_attn.q_proj", description="Query projection (a Linear).")
    k_proj: str = Field("self_attn.k_proj", description="Key projection (a Linear).")
    q_norm: str | None = Field(None, description="Per-head query norm applied before RoPE, if the family has one.")
    k_norm: str | None = Field(None, description="Per-head key norm applied before RoPE, if the family has one.")
    input_norm: str | None = Field("input_layernorm", description="The norm applied to the layer input before "
                                   "attention; null for post-norm layers that attend to the raw input (Exaone 4).")


class SharedKV(_Strict):
    """Attribute names of an attention module that shares keys/values with other layers through a mapping passed
    to every layer (Gemma 4's KVSharingDict; declare that argument as ``shared_kv`` in ``tracing``)."""

    reuse: str = Field(description="Attribute, true when the layer reads its keys/values from the mapping instead "
                       "of projecting them (such a layer has no k_proj; the scorer reads the keys from the mapping).")
    store: str = Field(description="Attribute, true when the layer writes its keys/values into the mapping.")
    key: str = Field("layer_type", description="Attribute holding the layer's key in the mapping.")


class AttentionAttrs(_Strict):
    """Attribute names read from the attention module to score tokens exactly as the layer attends."""

    head_dim: str = Field("head_dim", description="Attribute holding the per-head size.")
    scaling: str = Field("scaling", description="Attribute holding the softmax scale (e.g. head_dim**-0.5).")
    kv_groups: str | None = Field("num_key_value_groups", description="Attribute holding query heads per key/value "
                                  "head; null for attention without grouped-query heads (one key head per query head).")
    rope: str = Field("rotate_half", description="Registered name of the function that applies RoPE to q and k.")
    softcap: str = Field("attn_logit_softcapping", description="Attribute holding the attention-logit soft cap "
                         "(Gemma 2); a missing attribute or None means no cap.")
    q_scale: str | None = Field(None, description="Attribute holding a multiplier applied to the queries after "
                                "q_norm and before RoPE, on top of `scaling` (Muse Glimmer's qk_scale_factor); "
                                "null for none.")
    qk_norm_after_rope: bool = Field(False, description="True when layer.q_norm/k_norm are applied after RoPE "
                                     "(HunYuanVL's query_layernorm/key_layernorm), not before it.")
    qk_norm_scope: Literal["head", "projection"] = Field(
        "head", description="What layer.q_norm/k_norm normalise: 'head', each head's Dh channels after the head "
        "split (Qwen3, Gemma 3); 'projection', the whole q_proj/k_proj output before the split (OLMo 2, OLMo 3).")
    shared_kv: SharedKV | None = Field(None, description="For layers that share keys/values through a mapping "
                                       "passed to every layer (Gemma 4); null for none.")
    qk: str | None = Field(None, description="Registered query/key layout (kind 'qk') for attention modules without "
                           "separate q_proj/k_proj (multi-head latent attention: 'mla'; fused query_key_value: "
                           "'fused_qkv'). It replaces layer.q_proj/k_proj/q_norm/k_norm and attention.rope, "
                           "head_dim and q_scale; null for the standard layout.")

    @model_validator(mode="after")
    def _projection_norms_before_rope(self) -> AttentionAttrs:
        # A norm over the whole projection runs before the head split, hence before RoPE.
        if self.qk_norm_scope == "projection" and self.qk_norm_after_rope:
            raise ValueError("qk_norm_scope 'projection' norms the projection output before the head split and "
                             "RoPE: it cannot be combined with qk_norm_after_rope: true")
        if self.qk_norm_scope == "projection" and self.qk:
            raise ValueError(f"qk_norm_scope 'projection' applies to layer.q_norm/k_norm, which the qk layout "
                             f"{self.qk!r} replaces: remove one of the two")
        return self


class VisionTokens(_Strict):
    """How vision tokens are found in ``input_ids``."""

    token_ids: list[str] = Field(
        default_factory=list,
        description="Dotted references into the model config whose values are vision token ids, "
        "e.g. 'image_token_id' or 'text_config.video_token_id'.",
    )
    locator: str | None = Field(None, description="Registered name of a locator for families that need Python.")


class WindowedLayer(_Strict):
    """A decoder-layer type (``config.layer_types``) whose KV cache is bounded by a window."""

    size: str = Field(description="Attribute of the text model's config holding the window, e.g. 'sliding_window'.")
    keeps_prompt: bool = Field(False, description="The cache keeps every prompt token and slides only the later "
                               "ones (reference sliding-window attention): pruned layers drop the evicted decoded "
                               "columns from their decode masks. Otherwise (transformers' sliding and chunked "
                               "caches) a pruned model keeps these layers' caches whole and the mask slides.")


# Layer types of transformers whose caches slide (cache_utils sizes chunked layers by attention_chunk_size).
DEFAULT_WINDOWED_LAYERS: dict[str, WindowedLayer] = {
    "sliding_attention": WindowedLayer(size="sliding_window"),
    "chunked_attention": WindowedLayer(size="attention_chunk_size"),
}


class Tracing(_Strict):
    """Tracing specialisations for families that need them."""

    hints: list[str] = Field(default_factory=list, description="Registered tracing hints applied in order.")
    layer_kwargs: dict[str, GatherKind] = Field(
        default_factory=dict,
        description="Extra decoder-layer keyword arguments and how a cut gathers them "
        "(merged over the defaults: attention_mask=mask, position_embeddings=rope, position_ids=positions, "
        "past_key_values=cache, use_cache=constant).",
    )
    layer_args: list[GatherKind] = Field(
        default_factory=list,
        description="How a cut gathers each positional argument of a decoder-layer call after the hidden states, "
        "in order (Gemma 4: [tokens] for its per-layer input; Kosmos-2: [mask] for the attention mask).",
    )
    windowed_layers: dict[str, WindowedLayer] = Field(
        default_factory=dict,
        description="Layer types whose KV cache is bounded by a window, merged over the defaults "
        "(sliding_attention: sliding_window, chunked_attention: attention_chunk_size; neither keeps the prompt).",
    )
    hidden_states: str = Field(
        "plain", description="Registered layout (kind 'hidden_states') of the hidden states the decoder layers pass "
        "each other: 'plain' for (B, S, D); a family's own layout such as 'gemma3n_altup' for a stack of AltUp "
        "streams (streams, B, S, D), whose attention reads input_norm(altup.predict(stack)[altup_active_idx]). Cuts gather along its token axis and "
        "the scorers read what the attention reads.",
    )
    length_limits: list[str] = Field(
        default_factory=list,
        description="Dotted references into the text model's config: a call of a pruned model (prompt + generated "
        "tokens) must stay below each value and is refused otherwise. For layers that compute something from "
        "their own slot index or cache length, which a cut shortens (Llama 4's attn_temperature_tuning: "
        "floor_scale).",
    )


class ModelSpec(_Strict):
    """Where a multimodal model keeps its language model, decoder layers and vision tokens."""

    name: str = Field(description="Short name, used by load_spec(name).")
    description: str = Field("", description="A few lines on the family; how tokenprune handles it in detail "
                             "belongs in its docs page (bundled specs: docs/models/NAME.md).")
    architectures: list[str] = Field(description="HF architecture class names this spec matches.")
    plugins: list[str] = Field([], description="Plug-in modules whose registered entries the spec names: a bundled "
                               "family module (the .py beside the family's YAML) or an entry point of the "
                               "'tokenprune.plugins' group.")
    multimodal_model: str = Field(
        description="Dotted path (from the loaded model) of the module that receives input_ids and calls the "
        "language model; tokenprune reads vision-token positions from its input_ids. '' for the model itself."
    )
    language_model: str = Field(description="Dotted path (from the loaded model) of the text decoder stack.")
    decoder_layers: str = Field("layers", description="Dotted path, relative to the language model, of its layers.")
    rotary_embedding: str | None = Field("rotary_emb", description="Path of the rotary module, relative to the LM.")
    layer: LayerPaths = LayerPaths()
    attention: AttentionAttrs = AttentionAttrs()
    vision_tokens: VisionTokens
    tracing: Tracing = Tracing()
    vision_side: VisionSide | None = Field(
        None, description="Where the vision tower's attention is and how its tokens map to the language model's "
        "vision tokens; needed only by selectors that read the vision encoder (fastervlm, visionzip, grid-*).")
    # The file the spec was read from (None for one built from a mapping): its test data sits beside it.
    _source_file: Path | Traversable | None = PrivateAttr(None)

    @property
    def source_file(self) -> Path | Traversable | None:
        return self._source_file

    def __eq__(self, other: object) -> bool:
        # Two specs with the same keys are the same spec wherever they were read from.
        if not isinstance(other, ModelSpec):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    @field_validator("architectures")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("list at least one architecture class name")
        return value

    @model_validator(mode="after")
    def _projection_scope_has_norms(self) -> ModelSpec:
        if self.attention.qk_norm_scope == "projection" and not (self.layer.q_norm or self.layer.k_norm):
            raise ValueError("attention.qk_norm_scope 'projection' names no norm to apply: set layer.q_norm and/or "
                             "layer.k_norm, or drop qk_norm_scope")
        return self

    @property
    def layer_kwargs(self) -> dict[str, GatherKind]:
        return {**DEFAULT_LAYER_KWARGS, **self.tracing.layer_kwargs}

    @property
    def windowed_layers(self) -> dict[str, WindowedLayer]:
        return {**DEFAULT_WINDOWED_LAYERS, **self.tracing.windowed_layers}

    def __setstate__(self, state) -> None:
        # A spec unpickled in another process (a search worker) imports the plug-in modules it names there too.
        super().__setstate__(state)
        load_plugins(self.plugins, f"spec {self.name!r}: plugins")

    # -------------------------------------------------------------- resolution
    def vision_token_ids(self, config) -> list[int]:
        """Resolve ``vision_tokens.token_ids`` references against a model config."""
        ids = []
        for ref in self.vision_tokens.token_ids:
            value = _resolve_config_ref(config, ref)
            if value is None:
                raise SpecError(describe(
                    f"config reference {ref!r} resolves to None", f"spec {self.name!r}: vision_tokens.token_ids",
                    "an integer token id", "check the config attribute name"))
            ids.extend(value if isinstance(value, (list, tuple)) else [value])
        return [int(i) for i in ids]


def _resolve_config_ref(config, ref: str):
    obj = config
    for part in ref.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")] + list(getattr(obj, "attribute_map", {}))
            near = difflib.get_close_matches(part, names, n=3)
            raise SpecError(describe(
                f"config has no attribute {part!r}", f"config reference {ref!r}",
                "an attribute of the model config", f"nearest names: {near}" if near else None))
        obj = getattr(obj, part)
    return obj


def resolve_module(root, path: str, where: str):
    """Follow a dotted path from ``root``; on failure name the nearest existing children."""
    obj = root
    walked = []
    for part in [p for p in path.split(".") if p]:
        children = dict(obj.named_children()) if hasattr(obj, "named_children") else {}
        if part in children:
            obj = children[part]
        elif hasattr(obj, part):
            obj = getattr(obj, part)
        else:
            near = difflib.get_close_matches(part, list(children), n=3) or sorted(children)[:8]
            at = ".".join(walked) or "<model>"
            raise SpecError(describe(
                f"module path {path!r} does not exist on {type(root).__name__}: {at!r} has no child {part!r}",
                where, f"one of {near}" if near else "an existing attribute",
                "fix the dotted path in the spec (print(model) shows the module tree)"))
        walked.append(part)
    return obj


# ------------------------------------------------------------------ loading
def format_validation_error(err: ValidationError, source: str, what: str = "model spec") -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        got = e.get("input")
        got_text = "" if isinstance(got, dict) else f" (got {got!r})"
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown key {loc!r}{got_text}: remove it or check its spelling")
        elif e["type"] == "missing":
            lines.append(f"missing key {loc!r}: it is required")
        else:
            lines.append(f"{loc}: {e['msg']}{got_text}")
    return f"invalid {what} {source}:\n  " + "\n  ".join(lines)


def sibling_test_file(spec_file: Path | Traversable) -> Path | Traversable:
    """The test-data file beside a spec file: x.yaml -> x.test.yaml."""
    stem = spec_file.name.rsplit(".", 1)[0]
    return spec_file.parent / f"{stem}{TESTDATA_SUFFIX}" if isinstance(spec_file, Path) else \
        resources.files(BUNDLED_PACKAGE) / f"{stem}{TESTDATA_SUFFIX}"


def spec_from_dict(data: dict, source: str = "<dict>", source_file: Path | Traversable | None = None) -> ModelSpec:
    """Validate a spec mapping; ``source_file`` is the file it was read from (its test data sits beside it)."""
    if not isinstance(data, dict):
        raise SpecError(describe(f"spec is a {type(data).__name__}", source, "a YAML mapping"))
    if "test_model" in data:
        target = str(sibling_test_file(source_file)) if source_file is not None else f"NAME{TESTDATA_SUFFIX}"
        raise SpecError(describe(
            "the spec has an inline 'test_model' section; test data now lives in a file of its own",
            f"{source}: test_model", f"only runtime keys in the spec, the test data in {target} beside it",
            f"move the keys under test_model (config_class, config, inputs, ...) to the top level of {target}, "
            "unindented, and delete the section from the spec"))
    try:
        spec = ModelSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, source)) from None
    try:
        load_plugins(spec.plugins, f"{source}: plugins")
    except TokenPruneError as err:
        raise SpecError(str(err)) from None
    # The names of plug-in entries are checked when the spec is resolved (tokenprune.plugins.resolve): the core's
    # built-in entries import this module, so it cannot load them here without an import circle.
    spec._source_file = source_file
    return spec


def bundled_spec_names() -> list[str]:
    files = resources.files(BUNDLED_PACKAGE).iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".yaml") and not f.name.endswith(TESTDATA_SUFFIX))


def load_spec(name_or_path: str | Path | ModelSpec) -> ModelSpec:
    """Load a bundled spec by name (``"llava"``) or a YAML file by path."""
    if isinstance(name_or_path, ModelSpec):
        return name_or_path
    text_path = str(name_or_path)
    path = Path(text_path)
    if text_path.endswith(TESTDATA_SUFFIX):
        raise SpecError(describe(f"{text_path!r} is a test model file, not a spec", "load_spec",
                                 "the spec file beside it", f"pass {text_path[:-len(TESTDATA_SUFFIX)]}.yaml"))
    if text_path.endswith((".yaml", ".yml")) or path.exists():
        if not path.is_file():
            raise SpecError(describe(f"spec file {text_path!r} not found", "load_spec", "an existing YAML file"))
        source, text, file = str(path), path.read_text(), path
    else:
        resource = resources.files(BUNDLED_PACKAGE) / f"{text_path}.yaml"
        if not resource.is_file():
            names = bundled_spec_names()
            near = difflib.get_close_matches(text_path, names, n=3)
            raise SpecError(describe(f"no bundled spec named {text_path!r}", "load_spec",
                                     f"one of {names}", f"did you mean {near}?" if near else
                                     "or pass the path of a YAML file"))
        source, text, file = f"bundled spec {text_path!r}", resource.read_text(), resource
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpecError(describe(f"YAML syntax error: {err}", source, "valid YAML")) from None
    return spec_from_dict(data, source, file)


def bundled_specs() -> list[ModelSpec]:
    return [load_spec(n) for n in bundled_spec_names()]


def match_spec(model) -> ModelSpec:
    """The bundled spec whose ``architectures`` list the model's class name."""
    arch = type(model).__name__
    configured = list(getattr(getattr(model, "config", None), "architectures", None) or [])
    candidates = [s for s in bundled_specs() if arch in s.architectures]
    if not candidates:
        candidates = [s for s in bundled_specs() if set(configured) & set(s.architectures)]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        config = getattr(model, "config", None)
        if config is not None and is_text_only(config):
            raise SpecMatchError(text_only_message(arch, "compile(model, 'auto')"))
        known = sorted({a for s in bundled_specs() for a in s.architectures})
        near = difflib.get_close_matches(arch, known, n=3, cutoff=0.7)
        raise SpecMatchError(describe(
            f"no bundled spec matches architecture {arch!r}", "compile(model, 'auto')",
            f"one of the {len(known)} bundled architectures" + (f", e.g. the similar {near}" if near else ""),
            "write a spec for it (docs: 'Add a new model') and pass its path"))
    raise SpecMatchError(describe(
        f"several bundled specs match architecture {arch!r}: {[s.name for s in candidates]}",
        "compile(model, 'auto')", "exactly one match", "pass the spec name explicitly"))


_VISION_HINTS = ("vision_config", "image_token_id", "image_token_index", "video_token_id", "vision_start_token_id")


def is_text_only(config) -> bool:
    """Whether a model config describes a text-only model: no sub-config besides the text one, no vision hints."""
    if any(key != "text_config" for key in getattr(config, "sub_configs", None) or {}):
        return False
    return not any(getattr(config, hint, None) is not None for hint in _VISION_HINTS)


def text_only_message(arch: str, where: str) -> str:
    return describe(f"{arch} is a text-only model: it has no vision tokens to prune", where,
                    "a multimodal model whose prompts carry image or video tokens (e.g. LlavaForConditionalGeneration)",
                    "load the vision-language checkpoint instead of its text-only language model")


def json_schema() -> dict:
    """The JSON Schema of the spec format (exported to ``model_specs/spec.schema.json`` and the docs)."""
    return ModelSpec.model_json_schema()
