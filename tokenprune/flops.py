"""Analytic prefill FLOPs of the language model for a schedule.

``exact`` counts every matrix multiply of a decoder layer (FLOPs = 2 x multiply-adds), with grouped-query
key/value heads and a gated or plain MLP; it is what ``torch.utils.flop_counter`` reports on eager attention.
``paper`` is the convention of the FastV / PyramidDrop tables, ``4nd^2 + 2n^2d + 2ndm`` per layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import ScheduleError, UnsupportedError, describe
from .schedule import Schedule

Convention = Literal["exact", "paper"]

_GATED_ACTIVATIONS = ("silu", "swiglu", "gelu_pytorch_tanh", "gelu", "geglu", "gelu_new")


@dataclass(frozen=True)
class TextShape:
    """The numbers of a decoder stack that its FLOPs depend on."""

    num_layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    gated_mlp: bool = True

    @classmethod
    def from_config(cls, config) -> TextShape:
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        if "indexed_attention" in (getattr(text, "layer_types", None) or ()):
            raise UnsupportedError(describe(
                f"{type(text).__name__} has DeepSeek sparse-attention layers ('indexed_attention': an indexer of "
                "index_n_heads x index_head_dim scores every key for every query, then each query attends to its "
                "index_topk best keys through a mask)", "TextShape.from_config",
                "dense attention layers, which the analytic model counts",
                "pass a TextShape describing the layers (an approximation) where a config is accepted"))
        if getattr(text, "per_layer_config", None) is not None and _per_layer_heterogeneous(text):
            raise UnsupportedError(describe(
                f"{type(text).__name__} sets head sizes or key/value heads per layer (e.g. Gemma 4)",
                "TextShape.from_config", "one head size and key/value head count for every layer",
                "pass a TextShape describing the layers (an approximation) where a config is accepted"))
        heads = text.num_attention_heads
        if getattr(text, "altup_num_inputs", None):
            raise UnsupportedError(describe(
                f"{type(text).__name__} has AltUp streams (altup_num_inputs={text.altup_num_inputs}, Gemma 3n): its "
                "layers also run AltUp prediction and correction, a LAuReL block and per-layer-input projections, "
                "and its K/V-sharing layers project no keys/values, none of which the FLOPs model counts",
                "TextShape.from_config", "a decoder of attention and MLP only",
                "pass a TextShape describing the layers (an approximation that counts attention and MLP only) "
                "where a config is accepted"))
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        # Llama-style decoders use a gated MLP (gate, up, down); BART-style configs (Kosmos-2: `ffn_dim`) a plain
        # one (fc1, fc2); a config may say otherwise.
        plain = getattr(text, "intermediate_size", None) is None and hasattr(text, "ffn_dim")
        gated = getattr(text, "mlp_gated", not plain)
        return cls(
            num_layers=text.num_hidden_layers,
            hidden=text.hidden_size,
            intermediate=text.ffn_dim if plain else text.intermediate_size,
            heads=heads,
            kv_heads=getattr(text, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            gated_mlp=gated,
        )


def _per_layer_heterogeneous(text) -> bool:
    """Whether the config's per-layer overrides change a size the uniform FLOPs model reads."""
    try:
        layers = [text.per_layer_config[i] for i in range(text.num_hidden_layers)]
        return len({(getattr(c, "head_dim", None), getattr(c, "num_key_value_heads", None)) for c in layers}) > 1
    except Exception:  # configs whose per-layer view is not indexable: treat as uniform
        return False


@dataclass(frozen=True)
class FlopsReport:
    """Per-layer and total prefill FLOPs of a schedule, next to the unpruned model's."""

    per_layer: tuple[float, ...]
    unpruned_per_layer: tuple[float, ...]
    tokens_per_layer: tuple[int, ...]
    convention: str
    num_text_tokens: int
    num_vision_tokens: int

    @property
    def total(self) -> float:
        return float(sum(self.per_layer))

    @property
    def unpruned_total(self) -> float:
        return float(sum(self.unpruned_per_layer))

    @property
    def fraction(self) -> float:
        """FLOPs of the schedule as a fraction of the unpruned language model's."""
        return self.total / self.unpruned_total

    @property
    def mean_vision_tokens(self) -> float:
        """Vision tokens per layer, averaged over the layers."""
        vis = [n - self.num_text_tokens for n in self.tokens_per_layer]
        return sum(vis) / len(vis)

    def to_dict(self) -> dict:
        return {
            "convention": self.convention,
            "num_text_tokens": self.num_text_tokens,
            "num_vision_tokens": self.num_vision_tokens,
            "tokens_per_layer": list(self.tokens_per_layer),
            "per_layer": list(self.per_layer),
            "total": self.total,
            "unpruned_total": self.unpruned_total,
            "fraction": self.fraction,
            "mean_vision_tokens": self.mean_vision_tokens,
        }


def layer_flops(shape: TextShape, n: int, convention: Convention = "exact") -> float:
    """Prefill FLOPs of one decoder layer over ``n`` tokens."""
    d, m = shape.hidden, shape.intermediate
    if convention == "paper":
        return 4.0 * n * d * d + 2.0 * n * n * d + 2.0 * n * d * m
    if convention != "exact":
        raise ScheduleError(describe(f"unknown FLOPs convention {convention!r}", "convention", "'exact' or 'paper'"))
    q_and_o = 2 * 2 * n * d * shape.heads * shape.head_dim
    k_and_v = 2 * 2 * n * d * shape.kv_heads * shape.head_dim
    attention = 2 * 2 * n * n * shape.heads * shape.head_dim
    mlp = 2 * (3 if shape.gated_mlp else 2) * n * d * m
    return float(q_and_o + k_and_v + attention + mlp)


def prefill_flops(
    config,
    schedule: Schedule,
    num_text_tokens: int,
    num_vision_tokens: int,
    convention: Convention = "exact",
) -> FlopsReport:
    """Prefill FLOPs of the language model's decoder layers under ``schedule``.

    ``config`` is a Hugging Face config (multimodal or text) or a :class:`TextShape`.
    """
    shape = config if isinstance(config, TextShape) else TextShape.from_config(config)
    schedule.check_layers(shape.num_layers)
    if num_text_tokens < 0 or num_vision_tokens < 0:
        raise ScheduleError(describe("negative token count", "prefill_flops", "num_text_tokens, num_vision_tokens >= 0"))
    counts = schedule.keep_counts(num_vision_tokens)
    tokens = tuple(num_text_tokens + c for c in counts)
    full = num_text_tokens + num_vision_tokens
    return FlopsReport(
        per_layer=tuple(layer_flops(shape, n, convention) for n in tokens),
        unpruned_per_layer=tuple(layer_flops(shape, full, convention) for _ in tokens),
        tokens_per_layer=tokens,
        convention=convention,
        num_text_tokens=num_text_tokens,
        num_vision_tokens=num_vision_tokens,
    )


def flops_fraction(config, schedule: Schedule, num_text_tokens: int, num_vision_tokens: int,
                   convention: Convention = "exact") -> float:
    return prefill_flops(config, schedule, num_text_tokens, num_vision_tokens, convention).fraction


def mean_flops_fraction(config, schedule: Schedule, counts, convention: Convention = "exact") -> float:
    """:func:`flops_fraction` averaged over samples, each with its own ``(num_text_tokens, num_vision_tokens)``."""
    counts = list(counts)
    if not counts:
        raise ScheduleError(describe("no samples", "mean_flops_fraction(counts)", "at least one (text, vision) pair"))
    return sum(flops_fraction(config, schedule, t, v, convention) for t, v in counts) / len(counts)
