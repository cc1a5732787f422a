"""An independent masking reference: the *original* model with dropped tokens masked out of later layers.

Dropping a token while keeping original positions is mathematically the same as masking it out of every
later layer (design.md §3 "Positions"), so pruned outputs must match this to float tolerance. It shares
no code with tokenprune's rewrite: plain forward pre-hooks on the decoder layers of an eager model.
"""

from __future__ import annotations

import contextlib
import inspect

import torch


def dropped_per_layer(vision_mask: torch.Tensor, selection: dict[int, list[torch.Tensor]], num_layers: int):
    """For each layer j, a (B, S) bool mask of prompt positions dropped before j."""
    bsz, length = vision_mask.shape
    dropped = [torch.zeros(bsz, length, dtype=torch.bool) for _ in range(num_layers)]
    for layer in range(num_layers):
        cuts = [c for c in selection if c <= layer]
        if not cuts:
            continue
        last = max(cuts)
        for b in range(bsz):
            keep = torch.zeros(length, dtype=torch.bool)
            keep[selection[last][b]] = True
            dropped[layer][b] = vision_mask[b] & ~keep
    return dropped


@contextlib.contextmanager
def masked_reference(layers, dropped: list[torch.Tensor]):
    """Mask, in every call, the key columns of dropped prompt positions (prefill and decode alike).

    A sliding-window cache that has evicted its oldest tokens gets a mask whose columns start that many
    positions late (they end at the query); a cache that keeps the prompt gets one whose columns start at 0."""
    past = {}

    def make_hook(j):
        def hook(module, args, kwargs):
            cache = kwargs.get("past_key_values")
            if j == 0:  # the first layer runs before any other writes this call's tokens into the cache
                past["length"] = cache.get_seq_length(0) if cache is not None else 0
            # The mask is a keyword, or a positional argument (Kosmos-2 layers take it second).
            position = _positional_index(module, "attention_mask") if "attention_mask" not in kwargs else None
            if position is not None and position < len(args):
                mask = args[position]
            else:
                mask, position = kwargs.get("attention_mask"), None
            if mask is None:  # a decode step without padding may get no mask (Kosmos-2): every key is visible
                mask = _causal_mask(args[0], kwargs.get("past_key_values"), j)
            assert mask.dtype != torch.bool, "the reference runs eager attention"
            drop = dropped[j].to(mask.device)  # (B, P)
            if mask.shape[0] != drop.shape[0]:  # beam search expands each sample to num_beams rows
                drop = drop.repeat_interleave(mask.shape[0] // drop.shape[0], dim=0)
            offset = _evicted_columns(cache, j, past.get("length", 0) + mask.shape[-2], mask.shape[-1])
            cols = torch.zeros(mask.shape[0], offset + mask.shape[-1], dtype=torch.bool, device=mask.device)
            cols[:, : drop.shape[1]] = drop
            cols = cols[:, offset:]
            masked = mask.masked_fill(cols[:, None, None, :], torch.finfo(mask.dtype).min)
            if position is None:
                kwargs["attention_mask"] = masked
            else:
                args = (*args[:position], masked, *args[position + 1:])
            return args, kwargs

        return hook

    handles = [layer.register_forward_pre_hook(make_hook(j), with_kwargs=True) for j, layer in enumerate(layers)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


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


def kept_positions(vision_mask: torch.Tensor, selection, b: int) -> torch.Tensor:
    """Prompt positions of sample ``b`` still present after the last cut (text, padding, kept vision), sorted."""
    present = ~vision_mask[b].clone()
    if selection:
        present[selection[max(selection)][b]] = True
    else:
        present |= vision_mask[b]
    return torch.nonzero(present).flatten()


LAYER_INPUTS = {"rope": "position_embeddings", "mask": "attention_mask"}


def capture_layer_io(model, layer, attention, model_kwargs: dict, inputs: dict[str, str] = LAYER_INPUTS) -> dict:
    """One forward of ``model``: what ``layer`` received (``hidden`` and each ``inputs`` keyword, renamed) and the
    weights (B, H, S, S) its ``attention`` module returned, i.e. HF's own eager attention probabilities."""
    seen = {}

    def pre(_, args, kwargs):
        seen.update(hidden=args[0], **{key: kwargs[name] for key, name in inputs.items()})

    def post(_, args, output):
        seen["weights"] = output[1]

    hooks = [layer.register_forward_pre_hook(pre, with_kwargs=True), attention.register_forward_hook(post)]
    try:
        with torch.no_grad():
            model(**model_kwargs)
    finally:
        for hook in hooks:
            hook.remove()
    return seen
