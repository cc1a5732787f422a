"""The attention a vision-tower layer gives each of its tokens, recomputed from what its attention module receives.

Towers usually run sdpa or flash attention and return no weights, so the probabilities are recomputed in fp32
from the module's own projections. A token's score is the attention it receives from the [CLS] query, averaged
over heads, or, for towers without [CLS], the attention it receives summed over every query of its image and
divided by the image's token count (the mean over queries), averaged over heads.

Each reader returns, per image of the tower call, the score of every language-model token the image becomes
(merged patches *sum* their scores: the attention the merged group receives) and the image's grid of
language-model tokens, (rows, columns), a :class:`TiledGrid` (any-resolution images), or None when the tokens
are not a grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokenprune.errors import UnsupportedError, describe
from tokenprune.plugins import register

_QUERY_CHUNK = 1024  # queries per softmax block: bounds memory at (images, heads, 1024, tokens)


@dataclass(frozen=True)
class TowerLayout:
    """What a reader needs besides the module's input, resolved from the spec and config at compile."""

    cls_token: int | None  # [CLS] index in each image's tower sequence
    cls_kept: bool  # the [CLS] token is itself a language-model token
    merge: int  # patches per side merged into one language-model token
    merge_order: str  # "blocks" or "consecutive"
    pooled_tokens: int | None = None  # tokens per image after an average pool of the grid (sets the merge)


@dataclass(frozen=True)
class TiledGrid:
    """An any-resolution image's language-model tokens: the ``base`` (rows, columns) patch grid row-major, then
    the ``tiles`` (rows, columns) patch grid row-major with a newline token ending each of its rows."""

    base: tuple[int, int]
    tiles: tuple[int, int]

    def counts(self) -> tuple[int, int]:
        """(base tokens, tile tokens with their newlines)."""
        return self.base[0] * self.base[1], self.tiles[0] * (self.tiles[1] + 1)


@dataclass
class ImageScores:
    scores: torch.Tensor  # (T_llm,) fp32: each language-model token of the call, in feature order
    grids: list  # per image: (rows, columns) of its language-model tokens, a TiledGrid, or None
    counts: list[int]  # per image: its language-model tokens


def received_attention(q: torch.Tensor, k: torch.Tensor, scale: float, cls_token: int | None,
                       bias: torch.Tensor | None = None) -> torch.Tensor:
    """(N, T) fp32 attention each token receives: from query ``cls_token``, or summed over all queries (the caller
    divides by the query count); averaged over heads. ``q``/``k`` (N, H, T, Dh); ``bias`` additive, broadcastable
    to (N, H, T, T)."""
    keys_t = k.float().transpose(-1, -2)  # (N, H, Dh, T)
    rows = [(cls_token, cls_token + 1)] if cls_token is not None else \
        [(s, min(s + _QUERY_CHUNK, q.shape[2])) for s in range(0, q.shape[2], _QUERY_CHUNK)]
    total = torch.zeros(q.shape[0], k.shape[2], dtype=torch.float32, device=q.device)
    for start, stop in rows:
        logits = q[:, :, start:stop].float() @ keys_t * scale  # (N, H, Q, T)
        if bias is not None:
            logits = logits + (bias[..., start:stop, :] if bias.shape[-2] > 1 else bias)
        total += logits.softmax(dim=-1).sum(dim=2).mean(dim=1)  # (N, T)
    return total


def _as_bias(mask) -> torch.Tensor | None:
    """A 4-D attention mask as an additive fp32 bias (True/0 attends), or None."""
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, device=mask.device).masked_fill(~mask, float("-inf"))
    return mask.float()


def attention_scale(attn) -> float:
    for name in ("scale", "scaling"):
        value = getattr(attn, name, None)
        if value is not None:
            return float(value)
    raise UnsupportedError(describe(f"tower attention module {type(attn).__name__} has no softmax scale",
                                    "spec vision_side.reader", "an attribute `scale` or `scaling`",
                                    "name a reader that fits this tower"))


@register("tower_reader", "qk_proj")
def read_qk_proj(attn, args: tuple, kwargs: dict, layout: TowerLayout, grid_thw=None, tower=None) -> ImageScores:
    """Separate q_proj/k_proj (optional q_norm/k_norm over the whole projection), images as the batch axis."""
    x = args[0] if args else kwargs["hidden_states"]  # (N, T, D)
    images, length, _ = x.shape
    heads = int(getattr(attn, "num_heads", None) or attn.num_attention_heads)
    q, k = attn.q_proj(x), attn.k_proj(x)  # (N, T, H * Dh)
    q = attn.q_norm(q) if hasattr(attn, "q_norm") else q
    k = attn.k_norm(k) if hasattr(attn, "k_norm") else k
    q = q.reshape(images, length, heads, -1).transpose(1, 2)  # (N, H, T, Dh)
    k = k.reshape(images, length, heads, -1).transpose(1, 2)
    mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
    received = received_attention(q, k, attention_scale(attn), layout.cls_token, _as_bias(mask))  # (N, T)
    if layout.cls_token is None:
        received = received / length
    elif not layout.cls_kept:
        keep = torch.arange(length, device=x.device) != layout.cls_token
        received = received[:, keep]  # (N, P)
    patches = received.shape[1]
    side = round(patches ** 0.5)
    square = side * side == patches and not (layout.cls_token is not None and layout.cls_kept)
    s = layout.merge if layout.pooled_tokens is None else _pool_factor(side, square, layout.pooled_tokens)
    if s > 1:
        if not square or side % s:
            raise UnsupportedError(describe(f"{patches} tower tokens per image merged {s} x {s}", "spec vision_side.merge",
                                            "a square patch grid whose side the merge factor divides",
                                            "check vision_side.merge and cls_token"))
        blocks = received.reshape(images, side // s, s, side // s, s).sum(dim=(2, 4))  # (N, side/s, side/s)
        received = blocks.reshape(images, -1)
    grid = (side // s, side // s) if square else None
    return ImageScores(received.reshape(-1), [grid] * images, [received.shape[1]] * images)


def _pool_factor(side: int, square: bool, pooled: int) -> int:
    """Patches per side an average pool to ``pooled`` tokens per image merges: the pooled grid is square."""
    pooled_side = round(pooled ** 0.5)
    if not square or pooled_side * pooled_side != pooled or side % pooled_side:
        raise UnsupportedError(describe(
            f"a {side} x {side} patch grid pooled to {pooled} tokens per image", "spec vision_side.pooled_tokens",
            "a square patch grid pooled to a square token count whose side divides the grid's side",
            "check vision_side.pooled_tokens and cls_token"))
    return side // pooled_side
