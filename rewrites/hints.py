"""Tracing hints (contract :class:`tokenprune.plugins.contracts.TracingHint`): the standard ones and their
composition.

fx specialises Python branches at trace time without guards. A hint names the branches a family takes
on its inputs (the *variants*), traces one graph per variant, and picks the right graph at run time,
so no input ever runs through a graph specialised for another. The ``standard`` hint covers
decoders called with 1-D position ids and one mask (one variant); specs list extra hints under ``tracing.hints``.
Hints that serve one family live in that family's plug-in module (``model_specs/<family>.py``).
"""

from __future__ import annotations

import itertools

import torch
import torch.fx as fx

from tokenprune.errors import TraceError, describe
from tokenprune.plugins import register
from tokenprune.plugins.contracts import STANDARD_INPUTS, TracingHint

__all__ = ["STANDARD_INPUTS", "TracingHint", "CompositeHint", "call_method_leaf"]


def call_method_leaf(path: str, *args):
    """Run ``module:Class.method`` with ``self=None``: an opaque graph node for a method that uses no state.

    fx cannot trace some methods (item assignment on a proxy); a hint lists them as leaf methods.
    """
    import importlib

    module_name, _, qualname = path.partition(":")
    owner = importlib.import_module(module_name)
    for part in qualname.split("."):
        owner = getattr(owner, part)
    return owner(None, *args)


@register("tracing_hint", "standard")
class StandardHint(TracingHint):
    def prepare(self, lm, params, past_len):
        if params.get("position_ids") is None:
            length = params["inputs_embeds"].shape[1]
            params["position_ids"] = (torch.arange(length, device=params["inputs_embeds"].device) + past_len)[None]


class StaticShapeProxy(fx.Proxy):
    """A proxy whose rank and leading size are known at trace time (one graph is traced per value)."""

    def __init__(self, node, tracer, ndim: int, first: int):
        super().__init__(node, tracer)
        self._static = (ndim, first)

    @property
    def ndim(self):
        return self._static[0]

    def dim(self):
        return self._static[0]

    @property
    def shape(self):
        return _LeadingShape(self, self._static[1])

    def size(self, dim=None):
        return self._static[1] if dim == 0 else self.shape if dim is None else fx.Proxy.__getattr__(self, "size")(dim)


class _LeadingShape:
    def __init__(self, proxy, first):
        self._proxy, self._first = proxy, first

    def __getitem__(self, index):
        if index == 0:
            return self._first
        return fx.Proxy.__getattr__(self._proxy, "shape")[index]


@register("tracing_hint", "mrope_position_ids")
class MRopePositionIds(TracingHint):
    """Multimodal RoPE: position ids are (3, B, S), or (4, B, S) with a text row prepended; ``forward()`` and
    ``generate()`` pass the two shapes and the text model branches on them."""

    name = "mrope_position_ids"

    def variants(self):
        return [3, 4]

    def placeholder_proxy(self, tracer, node, variant):
        if node.target == "position_ids":
            return StaticShapeProxy(node, tracer, ndim=3, first=variant)
        return None

    def prepare(self, lm, params, past_len):
        pos = params.get("position_ids")
        embeds = params["inputs_embeds"]
        bsz, length = embeds.shape[:2]
        if pos is None:
            pos = (torch.arange(length, device=embeds.device) + past_len).view(1, 1, -1).expand(3, bsz, -1)
        elif pos.dim() == 2:
            pos = pos[None].expand(3, pos.shape[0], -1)
        params["position_ids"] = pos

    def choose(self, params, variant_key):
        rows = params["position_ids"].shape[0]
        if rows not in (3, 4):
            raise TraceError(describe(f"position ids with {rows} rows", "position_ids",
                                      "3 (mRoPE) or 4 (text row + mRoPE) rows"))
        return rows

    def probe_variants(self, lm, params):
        embeds = params["inputs_embeds"]
        bsz, length = embeds.shape[:2]
        text = (params["attention_mask"].cumsum(-1) - 1).clamp_min(0)  # (B, S)
        three = text[None].expand(3, bsz, length)
        return [(3, {"position_ids": three}), (4, {"position_ids": torch.cat([text[None], three], dim=0)})]


class CompositeHint:
    """The standard behaviour plus every hint a spec lists (their resolved classes), applied in order."""

    def __init__(self, hint_types: tuple[type[TracingHint], ...] = (), lm=None, model_config=None):
        self.hints = [StandardHint(lm, model_config)]
        self.hints += [cls(lm, model_config) for cls in hint_types if cls is not StandardHint]

    def variants(self) -> list[tuple]:
        return list(itertools.product(*(h.variants() for h in self.hints)))

    @property
    def leaf_methods(self) -> tuple[str, ...]:
        return tuple(m for h in self.hints for m in h.leaf_methods)

    @property
    def plain_globals(self) -> tuple[str, ...]:
        return tuple(n for h in self.hints for n in h.plain_globals)

    @property
    def root_methods(self) -> dict:
        return {name: fn for h in self.hints for name, fn in h.root_methods.items()}

    def input_names(self, variant) -> tuple[str, ...]:
        """Each hint names its placeholders from the standard ones; several hints compose: a standard input
        one of them drops (mask_dict drops attention_mask) is dropped, an input one of them adds is added."""
        names: list[str] | None = None
        for hint, v in zip(self.hints, variant):
            if type(hint).input_names is TracingHint.input_names:
                continue
            own = hint.input_names(v)
            if names is None:
                names = list(own)  # a single overriding hint keeps its own order
                continue
            dropped = set(STANDARD_INPUTS) - set(own)
            added = [n for n in own if n not in names and n not in STANDARD_INPUTS]  # not one an earlier hint dropped
            names = [n for n in names if n not in dropped] + added
        return tuple(names) if names is not None else STANDARD_INPUTS

    def inner_kwargs(self, inputs, variant) -> dict:
        kwargs = dict(inputs)
        for hint, v in zip(self.hints, variant):
            kwargs = hint.inner_kwargs(kwargs, v)
        return kwargs

    def placeholder_proxy(self, tracer, node, variant):
        for hint, v in zip(self.hints, variant):
            proxy = hint.placeholder_proxy(tracer, node, v)
            if proxy is not None:
                return proxy
        return None

    def constant_node(self, tracer, value, variant):
        for hint, v in zip(self.hints, variant):
            node = hint.constant_node(tracer, value, v)
            if node is not None:
                return node
        return None

    def prepare(self, lm, params, past_len) -> None:
        for hint in self.hints:
            hint.prepare(lm, params, past_len)

    def consume(self, extra, params) -> None:
        for hint in self.hints:
            hint.consume(extra, params)

    def choose(self, params) -> tuple:
        return tuple(hint.choose(params, None) for hint in self.hints)

    def graph_inputs(self, params, variant) -> dict:
        values = {name: params.get(name) for name in STANDARD_INPUTS}
        for hint, v in zip(self.hints, variant):
            values.update(hint.graph_inputs(params, v))
        return values

    def slot_stores_no_kv(self, slot) -> bool:
        return any(h.slot_stores_no_kv(slot) for h in self.hints)

    def probe_variants(self, lm, params) -> list[tuple[tuple, dict]]:
        per_hint = [h.probe_variants(lm, params) for h in self.hints]
        out = []
        for combo in itertools.product(*per_hint):
            overrides = {}
            for _, o in combo:
                overrides.update(o)
            out.append((tuple(v for v, _ in combo), overrides))
        return out


@register("tracing_hint", "mask_dict")
class MaskDict(TracingHint):
    """The multimodal model passes a dict of full and sliding-window masks (carrying a bidirectional block over
    each image). Traced with a tensor placeholder, the ``isinstance(dict)`` branch would be specialised away and
    the block lost, so the dict variant takes the two masks as separate placeholders and rebuilds the dict
    inside the graph."""

    name = "mask_dict"
    KEYS = ("full_attention", "sliding_attention")

    def variants(self):
        # Only text models with sliding-window layers receive a dict (checkpoints of one family may differ).
        config = getattr(self.lm, "config", None)
        types = getattr(config, "layer_types", None) or []
        sliding = "sliding_attention" in types or getattr(config, "sliding_window", None) is not None
        return ["tensor", "dict"] if sliding else ["tensor"]

    def input_names(self, variant):
        if variant == "tensor":
            return STANDARD_INPUTS
        return ("inputs_embeds", "full_attention_mask", "sliding_attention_mask", "position_ids", "past_key_values")

    def inner_kwargs(self, inputs, variant):
        if variant == "tensor":
            return inputs
        out = {k: v for k, v in inputs.items() if k not in ("full_attention_mask", "sliding_attention_mask")}
        out["attention_mask"] = {key: inputs[f"{key}_mask"] for key in self.KEYS}
        return out

    def choose(self, params, variant_key):
        mask = params.get("attention_mask")
        if isinstance(mask, dict):
            if set(mask) != set(self.KEYS):
                raise TraceError(describe(f"attention-mask dict with keys {sorted(mask)}", "attention_mask",
                                          f"exactly {list(self.KEYS)}"))
            return "dict"
        return "tensor"

    def graph_inputs(self, params, variant):
        if variant == "tensor":
            return {}
        return {f"{key}_mask": params["attention_mask"][key] for key in self.KEYS}

    def probe_variants(self, lm, params):
        from transformers import masking_utils

        if self.variants() == ["tensor"]:
            return [("tensor", {})]
        kwargs = {"config": lm.config, "inputs_embeds": params["inputs_embeds"],
                  "attention_mask": params["attention_mask"], "past_key_values": None,
                  "position_ids": torch.arange(params["inputs_embeds"].shape[1])[None]}
        masks = {"full_attention": masking_utils.create_causal_mask(**kwargs),
                 "sliding_attention": masking_utils.create_sliding_window_causal_mask(**kwargs)}
        return [("tensor", {}), ("dict", {"attention_mask": masks})]


@register("tracing_hint", "deepstack")
class DeepStack(TracingHint):
    """Visual features are added to the hidden states at vision positions after the first
    ``K`` layers (``visual_pos_masks``, ``deepstack_visual_embeds``). They become placeholders of their own
    graph variant; a cut before one of those layers gathers the mask and the rows of the kept vision positions
    (:mod:`.vision_features`)."""

    name = "deepstack"
    consumed_kwargs = ("visual_pos_masks", "deepstack_visual_embeds")
    vision_position_inputs = {"deepstack_": "visual_pos_masks"}  # placeholder prefix -> the mask its rows follow
    leaf_methods = ("_deepstack_process",)

    def __init__(self, lm=None, model_config=None):
        super().__init__(lm, model_config)
        # The graph needs the number of feature levels at trace time; the vision config holds it.
        vision = getattr(model_config, "vision_config", None)
        self.depth = len(getattr(vision, "deepstack_visual_indexes", None) or [])

    def variants(self):
        return ["plain", "deepstack"]

    def input_names(self, variant):
        if variant == "plain":
            return STANDARD_INPUTS
        return STANDARD_INPUTS + ("visual_pos_masks",) + tuple(f"deepstack_{i}" for i in range(self.depth))

    def inner_kwargs(self, inputs, variant):
        if variant == "plain":
            return inputs
        out = {k: v for k, v in inputs.items() if not k.startswith("deepstack_")}
        out["deepstack_visual_embeds"] = [inputs[f"deepstack_{i}"] for i in range(self.depth)]
        return out

    def choose(self, params, variant_key):
        embeds = params.get("deepstack_visual_embeds")
        if embeds is None:
            return "plain"
        if len(embeds) != self.depth:
            raise TraceError(describe(f"{len(embeds)} deepstack feature levels", "deepstack_visual_embeds",
                                      f"{self.depth}, as configured"))
        return "deepstack"

    def graph_inputs(self, params, variant):
        if variant == "plain":
            return {}
        out = {"visual_pos_masks": params["visual_pos_masks"]}
        out.update({f"deepstack_{i}": e for i, e in enumerate(params["deepstack_visual_embeds"])})
        return out

    def probe_variants(self, lm, params):
        embeds = params["inputs_embeds"]
        mask = torch.zeros(embeds.shape[:2], dtype=torch.bool, device=embeds.device)
        mask[:, 1:4] = True  # the probe's vision slots
        gen = torch.Generator(device="cpu").manual_seed(7)
        feats = [torch.randn(int(mask.sum()), embeds.shape[-1], generator=gen).to(embeds) for _ in range(self.depth)]
        return [("plain", {}), ("deepstack", {"visual_pos_masks": mask, "deepstack_visual_embeds": feats})]

