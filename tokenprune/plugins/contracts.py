"""The typed contract of every plug-in kind: what a registered entry must be and how the core calls it.

Class kinds (tracing hints, q/k layouts, hidden-state layouts) are abstract base classes: an entry subclasses
one. Function kinds (rope appliers, locators, scorers, test builders) are Protocols whose ``__call__`` is the
signature the core calls: an entry is a function accepting those parameters. Objectives are instances.

A leaf module: it imports torch and the error helpers only, so any plug-in may import it.
"""

from __future__ import annotations

import abc
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
import torch.fx as fx

from tokenprune.errors import SpecError, describe

STANDARD_INPUTS = ("inputs_embeds", "attention_mask", "position_ids", "past_key_values")


# ----------------------------------------------------------------------------------------------- class kinds
class TracingHint(abc.ABC):
    """Kind ``tracing_hint``: the family-specific part of tracing and calling a text model.

    fx specialises Python branches at trace time without guards; a hint names the branches a family takes on
    its inputs (the *variants*), and the tracer builds one graph per variant. Every method has the standard
    behaviour (one variant, the standard inputs), so a hint overrides only what its family needs.
    """

    name = "standard"
    leaf_methods: tuple[str, ...] = ()  # methods of the text model traced as opaque call_method_leaf nodes
    # Methods of the text model replaced, on the tracing root only, by the given functions (``self`` first): for
    # helpers whose branches the trace cannot take but whose effect on the traced call is known exactly.
    root_methods: dict = {}
    # Public names of the modeling module that must stay the real objects while tracing (fx autowraps every
    # public callable of it, classes included, which breaks ``isinstance`` checks against them).
    plain_globals: tuple[str, ...] = ()
    # Graph inputs that add vision features at vision positions between layers: placeholder-name prefix of the
    # (M, D) feature rows -> name of the (B, S[, 1]) bool mask of those positions. A cut gathers both for the
    # nodes after it (``tokenprune.rewrites.vision_features``).
    vision_position_inputs: dict[str, str] = {}

    def __init__(self, lm=None, model_config=None):
        self.lm = lm
        self.model_config = model_config  # the multimodal model's config (vision settings live there)

    def variants(self) -> list[Hashable]:
        return [None]

    def input_names(self, variant) -> tuple[str, ...]:
        """Names of the traced root's placeholders (a subset of the graph inputs' order is up to the hint)."""
        return STANDARD_INPUTS

    def inner_kwargs(self, inputs: dict, variant) -> dict:
        """Keyword arguments of the text model's undecorated forward, built from the placeholders."""
        return dict(inputs)

    def placeholder_proxy(self, tracer: fx.Tracer, node: fx.Node, variant) -> fx.Proxy | None:
        """A proxy that answers trace-time questions (rank, leading size) for one placeholder, or None."""
        return None

    def constant_node(self, tracer: fx.Tracer, value, variant) -> fx.Node | None:
        """A graph node standing for ``value``, an object the traced forward built at trace time and passes to a
        graph call (e.g. a mutable mapping the layers share), instead of baking it in as a constant; or None."""
        return None

    def prepare(self, lm, params: dict, past_len: int) -> None:
        """Fill run-time defaults the traced graph does not compute (the branches specialised away)."""

    consumed_kwargs: tuple[str, ...] = ()  # call keywords this hint handles (the default ``consume`` moves them)

    def consume(self, extra: dict, params: dict) -> None:
        """Move the call keywords this hint handles from ``extra`` (otherwise refused) into ``params``."""
        for key in self.consumed_kwargs:
            if key in extra:  # named parameters of the forward arrive in params already
                params[key] = extra.pop(key)

    def choose(self, params: dict, variant_key) -> Hashable:
        return None

    def graph_inputs(self, params: dict, variant) -> dict:
        """Values for this hint's placeholders, from the call's parameters."""
        return {}

    def probe_variants(self, lm, params: dict) -> list[tuple[Hashable, dict]]:
        """Calls that exercise each variant in the self-check: ``(variant, lm keyword overrides)``."""
        return [(None, {})]

    def slot_stores_no_kv(self, slot) -> bool:
        """True for a KV-cache slot (``cache.layers[i]``) of a layer that writes no keys/values of its own (it
        reuses another layer's): the runtime's cache-length checks skip it."""
        return False


class QKLayout(abc.ABC):
    """Kind ``qk``: queries and keys of an attention module without separate ``q_proj``/``k_proj``.

    ``x`` is the layer's normed input, (B, S, D); ``rope`` the position embeddings as the layer received them,
    ``(cos, sin)`` each (B|1, S, r) with the same rows as ``x``, or None for a layer called without them (NoPE).
    """

    name = "?"
    required: tuple[str, ...] = ()  # attributes the attention module must have
    cache_holds_keys = False  # True: the layer's cache entry is exactly its keys (B, H_kv, n, D_h)
    cache_note = ""  # why the cache entry is not the keys (when cache_holds_keys is False)

    def check(self, attn: torch.nn.Module, where: str = "spec attention.qk") -> None:
        missing = [a for a in self.required if not hasattr(attn, a)]
        if missing:
            raise SpecError(describe(
                f"attention module {type(attn).__name__} has no {missing}", where,
                f"an attention module of the {self.name!r} layout (attributes {list(self.required)})",
                "name the layout of this attention module or none"))

    @abc.abstractmethod
    def queries(self, attn, x: torch.Tensor, rope, positions=None) -> torch.Tensor:  # (B, H, S, Dh)
        """``positions``: the layer's position ids of these rows, (B|1, S), for layouts that scale queries by
        position; None when the layer received none."""

    @abc.abstractmethod
    def keys(self, attn, x: torch.Tensor, rope) -> torch.Tensor:  # (B, H_kv, S, Dh)
        """Every key, computed as the layer computes it."""

    @abc.abstractmethod
    def key_shape(self, attn) -> tuple[int, int]:
        """(H_kv, D_h) of the keys: what a cache entry must have to be read back."""

    def shared_keys(self, attn, shared_kv) -> torch.Tensor | None:
        """(B, H_kv, n, D_h) keys of a layer that reads what another layer shared with it (the mapping passed to
        every layer, declared ``shared_kv`` in ``tracing``) instead of projecting its own; None when it projects."""
        return None

    def restrict_keys(self, attn, x, rope, x_rows, rope_rows, allowed: torch.Tensor, positions=None) -> torch.Tensor:
        """``allowed`` (B, 1, Q, n) narrowed to the keys the layer lets each query attend to beyond its mask
        (sparse attention); ``x_rows``/``rope_rows`` are the query rows of ``x``/``rope``."""
        return allowed


class HiddenStateLayout(abc.ABC):
    """Kind ``hidden_states``: where the batch and token axes of a decoder layer's hidden-state input are (a cut
    gathers along the token axis) and what the layer's attention reads from it before its input norm."""

    batch_axis = 0
    token_axis = 1

    def batch_and_length(self, hidden: torch.Tensor) -> tuple[int, int]:
        return hidden.shape[self.batch_axis], hidden.shape[self.token_axis]

    @abc.abstractmethod
    def attention_input(self, layer: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """(B, n, D): what the layer's input norm receives."""


# -------------------------------------------------------------------------------------------- function kinds
class RopeApplier(Protocol):
    """Kind ``rope``: rotate ``x`` (B, H, S, Dh) exactly as the layer does. ``position_embeddings`` is what the
    layer received, each tensor with the token axis at -2: ``(cos, sin)`` for most families, one complex
    ``(freqs_cis,)`` for others. ``attn`` is the attention module (some families rotate only some layers)."""

    def __call__(self, x: torch.Tensor, position_embeddings: tuple[torch.Tensor, ...],
                 attn: torch.nn.Module | None) -> torch.Tensor: ...


class Locator(Protocol):
    """Kind ``locator``: (B, S) bool mask of the vision tokens of a call of the multimodal model, from its
    arguments; None when the call carries no input positions."""

    def __call__(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> torch.Tensor | None: ...


class Scorer(Protocol):
    """Kind ``scorer`` (a selector that ranks): scores (B, n) fp32 of the slots of a cut's ``ScoreContext``;
    the highest-scoring vision tokens survive."""

    def __call__(self, ctx: Any) -> torch.Tensor: ...


@dataclass(frozen=True)
class CutMerge:
    """A selector's answer that merges as well as drops.

    ``owner`` (B, n) long names, for each still-kept vision slot of the cut's context, the slot whose output
    token absorbs it: the slot itself for a survivor, another surviving vision slot for a token merged into it,
    -1 for a dropped token; entries at other slots are ignored. A survivor's hidden state becomes the
    ``sizes``-weighted mean (1 per slot when omitted) of the hidden states it absorbs; it keeps its own slot's
    position. The survivors (owner == own slot) count as the kept tokens.
    """

    owner: torch.Tensor                 # (B, n) long
    sizes: torch.Tensor | None = None   # (B, n) original tokens each slot already stands for


class Selector(Protocol):
    """Kind ``selector``: which vision tokens survive a cut. Given the cut's ``ScoreContext`` (``n`` slots per
    sample) and ``counts`` (B,) long, return a (B, n) bool keep mask that is True at exactly ``counts[b]`` of
    sample ``b``'s still-kept vision slots (``ctx.vision & ctx.valid``) and nowhere else, or a :class:`CutMerge`
    whose survivors are exactly those. Every registered scorer is also a selector (its top ``counts[b]``
    scores, see ``tokenprune.scoring.selection``)."""

    def __call__(self, ctx: Any, counts: torch.Tensor) -> torch.Tensor | CutMerge: ...


class TowerReader(Protocol):
    """Kind ``tower_reader``: the attention a vision-tower layer gives each token, recomputed from what its
    attention module ``attn`` received (``args``, ``kwargs``); ``layout`` is the spec's resolved vision side,
    ``grid_thw`` the tower call's grid input (or None), ``tower`` the tower module. Returns the per-image scores
    (``tokenprune.scoring.tower_attention.ImageScores``)."""

    def __call__(self, attn: torch.nn.Module, args: tuple, kwargs: dict, layout: Any, grid_thw: Any = None,
                 tower: Any = None) -> Any: ...


class VisionTiling(Protocol):
    """Kind ``vision_tiling``: how a family lays out an image's tower crops as language-model tokens (spec
    ``vision_side.tiling``). Given one tower call's per-crop scores (``ImageScores``), the call's
    ``image_sizes`` and the model config, return the per-image scores in the prompt's token order."""

    def __call__(self, crops: Any, image_sizes: Any, config: Any, where: str) -> Any: ...


class TestInputBuilder(Protocol):
    """Kind ``test_inputs``: a left-padded ``TestBatch`` for a tiny model, sample ``b`` with
    ``images_per_sample[b]`` images and ``text_lengths[b]`` text tokens."""

    def __call__(self, model: torch.nn.Module, images_per_sample: list[int], text_lengths: list[int],
                 gen: torch.Generator) -> Any: ...


class TestStandIn(Protocol):
    """Kind ``test_stand_in``: a sub-config (from the test config's keywords) whose classes build here."""

    def __call__(self, **config: Any) -> Any: ...


class TestWeights(Protocol):
    """Kind ``test_weights``: draw at random, in place, the parameters the family's init leaves at an identity."""

    def __call__(self, model: torch.nn.Module, gen: torch.Generator) -> None: ...


class ObjectiveFunction(Protocol):
    """Kind ``objective`` as a plain function: how good ``model`` is on ``batch``, higher is better."""

    def __call__(self, model: torch.nn.Module, batch: dict) -> float: ...


# -------------------------------------------------------------------------------------------- instance kinds
@runtime_checkable
class Objective(Protocol):
    """Kind ``objective``: a named scoring rule of the search (see ``tokenprune.search.objectives``)."""

    name: str
    mode: str  # "min" or "max"
    needs_reference: bool

    def reference(self, target_logits: torch.Tensor) -> torch.Tensor | None: ...
