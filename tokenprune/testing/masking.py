"""The masking reference: the *original* model with dropped vision tokens masked out of every later layer.

A cut that merges replaces, in the reference too, each survivor's hidden state entering the cut by the weighted
mean of the tokens it absorbs (:func:`add_merge_hooks`); the absorbed tokens are then masked like dropped ones.

Dropping a token while keeping its original position is mathematically the same as masking it out of the keys
of every later layer, so a pruned model's outputs must match this to float tolerance. It shares no code with
tokenprune's rewrite: plain forward pre-hooks that edit the 4-D attention mask each decoder layer of an
eager-attention model receives. The conformance tests, ``tokenprune validate`` and the benchmarks' masking
baseline all mask through :func:`add_mask_hooks`.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence

import torch

from tokenprune.errors import UnsupportedError, describe
from tokenprune.spec import ModelSpec, resolve_module


def decoder_layers(model, spec: ModelSpec):
    """The decoder layers of ``model``'s language model, where the reference's hooks go."""
    lm = resolve_module(model, spec.language_model, f"spec {spec.name!r}: language_model")
    return resolve_module(lm, spec.decoder_layers, f"spec {spec.name!r}: decoder_layers")


def dropped_per_layer(vision_mask: torch.Tensor, selection: dict[int, list[torch.Tensor]], num_layers: int):
    """For each layer j, a (B, S) bool mask of prompt positions dropped before j.

    ``selection``: per cut layer, the kept vision positions of each sample (``tokenprune.last_selection``)."""
    bsz, length = vision_mask.shape
    dropped = [torch.zeros(bsz, length, dtype=torch.bool) for _ in range(num_layers)]
    for layer in range(num_layers):
        cuts = [c for c in selection if c <= layer]
        if not cuts:
            continue
        last = max(cuts)
        for b in range(bsz):
            keep = torch.zeros(length, dtype=torch.bool)
            keep[selection[last][b].cpu()] = True
            dropped[layer][b] = vision_mask[b].cpu() & ~keep
    return dropped


def kept_positions(vision_mask: torch.Tensor, selection, b: int) -> torch.Tensor:
    """Prompt positions of sample ``b`` still present after the last cut (text, padding, kept vision), sorted."""
    present = ~vision_mask[b].cpu().clone()
    if selection:
        present[selection[max(selection)][b].cpu()] = True
    else:
        present |= vision_mask[b].cpu()
    return torch.nonzero(present).flatten()


def kept_rows(pruned: torch.Tensor, reference: torch.Tensor, vision_mask: torch.Tensor, selection,
              attention_mask: torch.Tensor | None = None) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Per sample ``b``: ``(b, got, expected)``, the pruned and the reference rows (n, ...) of the prompt
    positions still present after the last cut, padding positions left out (they attend to nothing).

    ``pruned`` holds the pruned length, right-aligned (left padding); ``reference`` the full length. A pruned
    output that lacks positions gives a shorter ``got``: compare shapes."""
    for b in range(vision_mask.shape[0]):
        keep = kept_positions(vision_mask, selection, b)
        got = pruned[b, max(pruned.shape[1] - len(keep), 0):]  # (n_kept, ...); shorter if positions are missing
        expected = reference[b, keep.to(reference.device)]  # (n_kept, ...)
        if attention_mask is not None and len(got) == len(keep):
            real = attention_mask[b, keep.to(attention_mask.device)].bool()  # (n_kept,)
            got, expected = got[real.to(got.device)], expected[real.to(expected.device)]
        yield b, got, expected


DroppedPerLayer = Sequence[torch.Tensor] | Callable[[int], torch.Tensor | None]


@contextlib.contextmanager
def masked_reference(layers, dropped: DroppedPerLayer, merges: dict[int, torch.Tensor] | None = None):
    """Mask, in every call, the key columns of dropped prompt positions (prefill and decode alike).

    ``dropped``: per layer, a (B, P) bool mask (:func:`dropped_per_layer`), or a function of the layer index
    returning it (``None``: nothing hidden in that layer), called when the layer runs. A sliding-window cache
    that has evicted its oldest tokens gets a mask whose columns start that many positions late (they end at
    the query); a cache that keeps the prompt gets one whose columns start at 0.
    ``merges``: per cut layer, (B, P, P) merge weights (``tokenprune.last_merges``), see :func:`add_merge_hooks`."""
    handles = add_merge_hooks(layers, merges or {}) + add_mask_hooks(layers, dropped)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def add_mask_hooks(layers, dropped: DroppedPerLayer) -> list:
    """The hooks of :func:`masked_reference`, left in place: the caller removes the returned handles."""
    dropped_at = dropped if callable(dropped) else dropped.__getitem__
    past: dict[str, int] = {}  # cache length before this call, read when the first layer runs
    return [layer.register_forward_pre_hook(_mask_hook(dropped_at, j, past), with_kwargs=True)
            for j, layer in enumerate(layers)]


def add_merge_hooks(layers, merges: dict[int, torch.Tensor], token_axis: int = 1, batch_axis: int = 0) -> list:
    """Hooks that merge as a cut does: in every call that carries the whole prompt (a prefill, or a re-run
    without cache), the hidden state entering layer ``cut`` at prompt position ``p`` becomes
    ``merges[cut][b, p] @ hidden[b, :P]`` wherever that row is not zero. Decode steps pass: the keys and values
    the later layers stored at prefill are the merged tokens'. Hidden states (B, S, D), or other layouts by axes."""
    return [layers[cut].register_forward_pre_hook(_merge_hook(weights, token_axis, batch_axis), with_kwargs=True)
            for cut, weights in merges.items()]


def _merge_hook(weights: torch.Tensor, token_axis: int, batch_axis: int):
    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        states = hidden.movedim((batch_axis, token_axis), (0, 1))  # (B, S, ...)
        prompt_len = weights.shape[-1]
        if states.shape[1] < prompt_len:  # a decode step
            return args, kwargs
        w = weights.to(states.device)  # (B, P, P)
        if w.shape[0] != states.shape[0]:  # beam search expands each sample to num_beams rows
            w = w.repeat_interleave(states.shape[0] // w.shape[0], dim=0)
        prompt = states[:, :prompt_len]  # (B, P, ...)
        dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
        mean = torch.bmm(w.to(dtype), prompt.reshape(*prompt.shape[:2], -1).to(dtype))  # (B, P, F)
        merged_rows = (w.sum(dim=2) > 0).view(*w.shape[:2], *[1] * (prompt.dim() - 2))  # (B, P, 1...)
        prompt = torch.where(merged_rows, mean.to(hidden.dtype).view(prompt.shape), prompt)
        merged = torch.cat([prompt, states[:, prompt_len:]], dim=1).movedim((0, 1), (batch_axis, token_axis))
        if args:
            return (merged, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": merged}

    return hook


def _mask_hook(dropped_at: Callable[[int], torch.Tensor | None], layer: int, past: dict[str, int]):
    def hook(module, args, kwargs):
        cache = kwargs.get("past_key_values")
        if layer == 0:  # the first layer runs before any other writes this call's tokens into the cache
            past["length"] = cache.get_seq_length(0) if cache is not None else 0
        dropped = dropped_at(layer)
        if dropped is None:
            return args, kwargs
        # The mask is a keyword, or a positional argument (Kosmos-2 layers take it second).
        position = _positional_index(module, "attention_mask") if "attention_mask" not in kwargs else None
        if position is not None and position < len(args):
            mask = args[position]
        else:
            mask, position = kwargs.get("attention_mask"), None
        if mask is None:  # a decode step without padding may get no mask (Kosmos-2): every key is visible
            mask = _causal_mask(args[0] if args else kwargs["hidden_states"], kwargs.get("past_key_values"), layer)
        if mask.dim() != 4:
            raise UnsupportedError(describe(
                f"the masking reference got a {mask.dim()}-D attention mask", "decoder layer attention_mask",
                "the 4-D mask of eager attention", "load the model with attn_implementation='eager'"))
        drop = dropped.to(mask.device)  # (B, P)
        if mask.shape[0] == 1 < drop.shape[0]:  # one mask broadcast over the batch
            mask = mask.expand(drop.shape[0], *mask.shape[1:])
        elif mask.shape[0] != drop.shape[0]:  # beam search expands each sample to num_beams rows
            drop = drop.repeat_interleave(mask.shape[0] // drop.shape[0], dim=0)
        offset = _evicted_columns(cache, layer, past.get("length", 0) + mask.shape[-2], mask.shape[-1])
        cols = torch.zeros(mask.shape[0], offset + mask.shape[-1], dtype=torch.bool, device=mask.device)
        cols[:, : drop.shape[1]] = drop
        blocked = cols[:, None, None, offset:]  # (B, 1, 1, k)
        if mask.dtype == torch.bool:  # True = may attend
            masked = mask & ~blocked
        else:
            masked = mask.masked_fill(blocked, torch.finfo(mask.dtype).min)
        if position is None:
            kwargs["attention_mask"] = masked
        else:
            args = (*args[:position], masked, *args[position + 1:])
        return args, kwargs

    return hook


def _evicted_columns(cache, layer: int, total: int, mask_len: int) -> int:
    """How many of the ``total`` positions so far lie before the mask's first column."""
    slots = getattr(cache, "layers", None) or []
    if layer < len(slots) and hasattr(slots[layer], "prefill_length"):  # keeps the prompt: columns start at 0
        return 0
    return max(total - mask_len, 0)


def _causal_mask(hidden: torch.Tensor, cache, layer: int) -> torch.Tensor:
    """An additive causal (B, 1, q, past + q) mask for a call that got none."""
    bsz, q = hidden.shape[:2]
    past = cache.get_seq_length(layer) if cache is not None else 0
    future = torch.arange(past + q)[None, :] > past + torch.arange(q)[:, None]  # (q, past + q)
    mask = torch.zeros(q, past + q, dtype=hidden.dtype).masked_fill(future, torch.finfo(hidden.dtype).min)
    return mask.to(hidden.device).expand(bsz, 1, q, past + q)


def _positional_index(module, name: str) -> int | None:
    """Index of parameter ``name`` among ``module.forward``'s positional arguments (``self`` excluded)."""
    params = list(inspect.signature(module.forward).parameters)
    return params.index(name) if name in params else None
