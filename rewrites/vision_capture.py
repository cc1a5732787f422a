"""Capture, during each call of a pruned model, what the vision-encoder selectors read (spec ``vision_side``).

Installed only for a selector that declares ``needs_vision_side``. The modules on the path to the vision tower
and to the read layer's attention module become shallow clones in the pruned model (the input model keeps its
own, hook-free modules), and three forward pre-hooks record, per call and per thread:

- on the tower: one :class:`TowerCall` per tower call (images, then videos), with its ``grid_thw`` if any;
- on the multimodal model: the call's ``input_ids``. ``generate`` runs the tower *before* the multimodal model's
  forward (it hands the encoder outputs in), so tower calls made since the last multimodal call belong to the
  next one; a forward hook closes the record when the multimodal call ends;
- on the read layer's attention module: the attention each language-model token of that call receives
  (:mod:`tokenprune.scoring.tower_attention`).

transformers' own output-capture hooks are installed on the tower before it is cloned, so the clones carry the
same hooks as the originals and neither side installs them a second time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tokenprune.errors import UnsupportedError, describe
from tokenprune.plugins import registry
from tokenprune.scoring.tower_attention import ImageScores, TowerLayout
from tokenprune.spec import _resolve_config_ref, resolve_module

from .accelerate_hooks import rebind_hooks
from .install import shallow_clone
from .state import PruneSession


@dataclass
class TowerCall:
    grid_thw: torch.Tensor | None = None  # (images, 3) the tower's grid argument, if it takes one
    scores: ImageScores | None = None  # what the read layer gave, once it ran


@dataclass
class VisionCapture:
    """One call's record of the tower."""

    fill_ids: list[int]  # spec vision_side.token_ids resolved: the ids the tower calls fill, in call order
    vision_ids: list[int]  # spec vision_tokens.token_ids resolved: every vision token id
    input_ids: torch.Tensor | None = None  # (B, S) as the multimodal model received them
    image_sizes: torch.Tensor | None = None  # (images, 2) the multimodal model's image_sizes, if any
    layout: object = None  # tiling: maps a tower call's ImageScores (and image_sizes) to the prompt's tokens
    calls: list[TowerCall] = field(default_factory=list)
    claimed: bool = False  # a multimodal call has started with it
    done: bool = False  # that multimodal call has ended
    probe: bool = False  # a call of the compile self-check (text tokens marked as vision, no tower)
    maps: object = None  # the prompt-position maps built from it (tokenprune.scoring.vision_side), once


def needs_vision_side(selector) -> bool:
    return bool(getattr(selector, "needs_vision_side", False))


def install_vision_capture(pruned: torch.nn.Module, original: torch.nn.Module, base: torch.nn.Module,
                           session: PruneSession) -> None:
    """Clone the tower path of ``pruned`` and hook it so that each call records its tower attention."""
    spec, name = session.spec, session.plugins.scorer_name
    side = spec.vision_side
    if side is None:
        raise UnsupportedError(describe(
            f"selector {name!r} reads the vision tower's attention", f"spec {spec.name!r}: vision_side",
            "a vision_side section saying where the tower's layers and [CLS] token are and how its tokens map to "
            "the language model's vision tokens", "add vision_side to the spec (docs: the spec format), or pick a "
            "selector that reads no vision tower (random-keep, divprune, dart, cdpruner, an attention scorer)"))
    where = f"spec {spec.name!r}: vision_side"
    tower = resolve_module(original, side.tower, f"{where}.tower")
    layers = resolve_module(tower, side.encoder_layers, f"{where}.encoder_layers")
    index = _layer_index(side.layer, len(layers), original.config, f"{where}.layer")
    attention_path = f"{side.tower}.{side.encoder_layers}.{index}.{side.attention}"
    resolve_module(original, attention_path, f"{where}.attention")
    layout = TowerLayout(side.cls_token, _cls_kept(side, original.config, where),
                         _merge_factor(side.merge, original.config, f"{where}.merge"), side.merge_order,
                         _pooled_tokens(side.pooled_tokens, original.config, f"{where}.pooled_tokens"))
    fill_ids = [int(_resolve_config_ref(original.config, ref)) for ref in side.token_ids]
    vision_ids = spec.vision_token_ids(original.config)
    _install_output_capture(tower)
    tower_clone = _clone_down(pruned, original, side.tower)
    attention_clone = _clone_down(pruned, original, attention_path)
    read = registry("tower_reader").get(side.reader, f"{where}.reader")
    tiling = None
    if side.tiling != "none":
        config, layout_of = original.config, registry("vision_tiling").get(side.tiling, f"{where}.tiling")

        def tiling(scores, image_sizes):
            return layout_of(scores, image_sizes, config, where)

    def open_capture(claiming: bool) -> VisionCapture:
        capture = session.thread.vision_capture
        if capture is None or capture.done or (claiming and capture.claimed):
            capture = VisionCapture(fill_ids, vision_ids, probe=session.thread.probing, layout=tiling)
            session.thread.vision_capture = capture
        return capture

    @torch.compiler.disable  # Python bookkeeping on the session's thread state
    def open_call(module, args, kwargs):
        capture = open_capture(claiming=True)
        capture.input_ids, capture.claimed = kwargs.get("input_ids", args[0] if args else None), True

    @torch.compiler.disable
    def close_call(module, args, kwargs, output):
        capture = session.thread.vision_capture
        if capture is not None:
            capture.done = True

    @torch.compiler.disable
    def open_tower_call(module, args, kwargs):
        grid_thw = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        open_capture(claiming=False).calls.append(TowerCall(grid_thw))

    @torch.compiler.disable
    def read_layer(module, args, kwargs):
        capture = session.thread.vision_capture
        if capture is None or not capture.calls:
            return
        call = capture.calls[-1]
        with torch.no_grad():
            call.scores = read(module, args, kwargs, layout, grid_thw=call.grid_thw, tower=tower_clone)

    if tiling is not None:
        _record_image_sizes(base, lambda: open_capture(claiming=False))
    base.register_forward_pre_hook(open_call, with_kwargs=True)
    base.register_forward_hook(close_call, with_kwargs=True, always_call=True)
    tower_clone.register_forward_pre_hook(open_tower_call, with_kwargs=True)
    attention_clone.register_forward_pre_hook(read_layer, with_kwargs=True)


def _record_image_sizes(base: torch.nn.Module, current) -> None:
    """Wrap the (cloned) multimodal model's ``get_image_features`` to record its ``image_sizes``: ``generate``
    encodes the images through it before the multimodal call and does not pass image_sizes to that call."""
    encode = base.get_image_features

    @torch.compiler.disable  # Python bookkeeping on the session's thread state
    def remember(image_sizes):
        current().image_sizes = image_sizes

    def get_image_features(pixel_values, image_sizes, *args, **kwargs):
        remember(image_sizes)
        return encode(pixel_values, image_sizes, *args, **kwargs)

    object.__setattr__(base, "get_image_features", get_image_features)


def _layer_index(layer: int | str, count: int, config, where: str) -> int:
    """The encoder layer read: an index into the layers, or a config's hidden-state index (0: embeddings)."""
    value = layer
    if isinstance(layer, str):
        value = _resolve_config_ref(config, layer)
        if not isinstance(value, int):
            raise UnsupportedError(describe(
                f"config {layer} = {value!r}", where, "one hidden-state index (an int)",
                "the vision-encoder selectors read one layer's attention: give vision_side.layer as a layer index"))
        value = value - 1 if value >= 0 else count + value  # hidden_states[h] is the output of layer h - 1
    index = value + count if value < 0 else value
    if not 0 <= index < count:
        raise UnsupportedError(describe(f"layer {layer!r} gives layer {index}", where,
                                        f"a layer of the tower's {count}", "fix vision_side.layer"))
    return index


def _cls_kept(side, config, where: str) -> bool:
    if side.cls_token is None or side.cls_in_features is None:
        return False
    return _resolve_config_ref(config, side.cls_in_features) == "full"


def _merge_factor(merge: int | str, config, where: str) -> int:
    value = _resolve_config_ref(config, merge) if isinstance(merge, str) else merge
    factor = round(1 / value) if 0 < value < 1 else round(value)
    if factor < 1 or abs(factor - (1 / value if value < 1 else value)) > 1e-6:
        raise UnsupportedError(describe(f"merge {merge!r} = {value!r}", where,
                                        "a whole number of patches per side (or its inverse, e.g. 0.5)",
                                        "fix vision_side.merge"))
    return factor


def _pooled_tokens(ref: str | None, config, where: str) -> int | None:
    if ref is None:
        return None
    value = _resolve_config_ref(config, ref)
    if not isinstance(value, int) or value < 1:
        raise UnsupportedError(describe(f"config {ref} = {value!r}", where, "a positive token count per image",
                                        "name the config key of the pooled token count"))
    return value


def _install_output_capture(tower: torch.nn.Module) -> None:
    """transformers' output-capture hooks on the tower's models, installed now so the clones copy them."""
    from transformers import PreTrainedModel
    from transformers.utils.output_capturing import maybe_install_capturing_hooks

    for module in tower.modules():
        if isinstance(module, PreTrainedModel):
            maybe_install_capturing_hooks(module)


def _clone_down(pruned: torch.nn.Module, original: torch.nn.Module, path: str) -> torch.nn.Module:
    """The module at ``path`` of ``pruned``, every module on the way that ``pruned`` still shares with
    ``original`` replaced by a shallow clone (its accelerate hook re-bound)."""
    parent, parent_original = pruned, original
    for part in path.split("."):
        child, child_original = getattr(parent, part), getattr(parent_original, part)
        if child is child_original:
            child = shallow_clone(child_original)
            rebind_hooks(child_original, child)
            parent._modules[part] = child
        parent, parent_original = child, child_original
    return parent
