"""Hiding vision tokens from a LLaVA model's decoder layers by masking their attention columns.

A key hidden from a layer on is, for every query of that layer, exactly a token removed from it: this measures
what dropping tokens does to the answer without changing the model or the prompt. Works with eager and sdpa
attention (their layers receive a 4-D mask as the ``attention_mask`` keyword; sdpa gets none when nothing is
padded, and is then given the causal mask spelled out).
"""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def keys_hidden(model, from_layer: int, hidden: torch.Tensor, queries: torch.Tensor | None = None):
    """Within the block, decoder layers ``>= from_layer`` do not let ``queries`` (B, T) bool (all positions
    when None) attend to the ``hidden`` (B, T) bool keys. Masks are aligned to the right of the sequence."""
    layers = model.model.language_model.layers
    attention = model.config.text_config._attn_implementation

    def hook(module, args, kwargs):
        mask = kwargs.get("attention_mask")
        states = args[0] if args else kwargs["hidden_states"]  # (B, T, D)
        if mask is None and attention == "sdpa" and _nothing_cached(module, kwargs):
            B, T = states.shape[:2]
            mask = torch.ones(T, T, dtype=torch.bool, device=states.device).tril().expand(B, 1, T, T)  # True: attend
        if mask is None or mask.ndim != 4:
            raise RuntimeError(f"keys_hidden needs a 4-D attention mask (got {type(mask).__name__} under "
                               f"{attention!r} attention): load the model with attn_implementation='eager' or 'sdpa'")
        T = mask.shape[-1]
        keys = hidden[:, -T:].to(mask.device)  # (B, T)
        rows = torch.ones_like(keys) if queries is None else queries[:, -T:].to(mask.device)  # (B, T)
        drop = rows[:, None, :, None] & keys[:, None, None, :]  # (B, 1, Tq, Tk)
        if mask.dtype == torch.bool:
            mask = mask & ~drop
        else:
            mask = mask.masked_fill(drop, torch.finfo(mask.dtype).min)
        kwargs["attention_mask"] = mask
        return args, kwargs

    handles = [layer.register_forward_pre_hook(hook, with_kwargs=True) for layer in layers[from_layer:]]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _nothing_cached(layer, kwargs) -> bool:
    """Whether the decoder ``layer`` sees a whole prompt from its start (its queries are all of its keys)."""
    cache = kwargs.get("past_key_values")
    index = getattr(getattr(layer, "self_attn", None), "layer_idx", None)
    return cache is None or (index is not None and cache.get_seq_length(index) == 0)


def draw_dropped(is_image: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """(B, T) bool: for each row, ``round(fraction * n)`` of its ``n`` vision positions (``is_image``), uniformly."""
    dropped = torch.zeros_like(is_image)
    for row in range(len(is_image)):
        positions = is_image[row].nonzero()[:, 0]  # (n,)
        order = torch.randperm(len(positions), generator=generator)
        dropped[row, positions[order[: round(fraction * len(positions))]]] = True
    return dropped


def random_drop(model, fraction: float, from_layer: int, seed: int = 0):
    """A ``context(input_ids)`` for ``answers.predict``: each prompt loses ``round(fraction * n)`` of its ``n``
    vision tokens, drawn uniformly (seeded, one draw per prompt in order), from decoder layer ``from_layer`` on."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"random_drop: fraction {fraction} is outside [0, 1]; pass the share of vision tokens "
                         "to drop, e.g. 0.75")
    generator = torch.Generator().manual_seed(seed)
    image_id = model.config.image_token_id
    return lambda input_ids: keys_hidden(model, from_layer, draw_dropped(input_ids == image_id, fraction, generator))
