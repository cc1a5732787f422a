"""Attention probabilities of a few queries over all keys, recomputed from a layer's own projections.

Never materialises the L x L matrix and never needs eager attention: only the chosen query rows are
projected. The matmul runs in the model dtype and the softmax in fp32, as Hugging Face's eager
attention does, so the kept set equals the top-k of HF's own attention weights.
"""

from __future__ import annotations

import torch

from tokenprune.registry import lookup
from tokenprune.spec import ModelSpec, resolve_module


def attention_probs(
    spec: ModelSpec,
    layer: torch.nn.Module,
    hidden: torch.Tensor,
    rope,
    mask,
    positions: torch.Tensor,
    valid: torch.Tensor,
    query_index: torch.Tensor,
) -> torch.Tensor:
    """Head-averaged attention of the queries ``query_index`` (Q,) over all ``n`` keys: (B, Q, n) fp32."""
    paths, attrs = spec.layer, spec.attention
    attn = resolve_module(layer, paths.attention, "layer.attention")
    head_dim = int(getattr(attn, attrs.head_dim))
    groups = int(getattr(attn, attrs.kv_groups))
    scaling = float(getattr(attn, attrs.scaling))
    apply_rope = lookup("rope", attrs.rope)

    x = resolve_module(layer, paths.input_norm, "layer.input_norm")(hidden)  # (B, n, D)
    bsz, n, _ = x.shape
    q = resolve_module(layer, paths.q_proj, "layer.q_proj")(x[:, query_index])  # (B, Q, H*Dh)
    k = resolve_module(layer, paths.k_proj, "layer.k_proj")(x)  # (B, n, Hkv*Dh)
    q = q.view(bsz, len(query_index), -1, head_dim)  # (B, Q, H, Dh)
    k = k.view(bsz, n, -1, head_dim)  # (B, n, Hkv, Dh)
    if paths.q_norm:
        q = resolve_module(layer, paths.q_norm, "layer.q_norm")(q)
    if paths.k_norm:
        k = resolve_module(layer, paths.k_norm, "layer.k_norm")(k)
    q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, H, Q, Dh), (B, Hkv, n, Dh)
    if rope is not None:
        cos, sin = rope
        q = apply_rope(q, cos[..., query_index, :], sin[..., query_index, :], attn)
        k = apply_rope(k, cos, sin, attn)
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)  # (B, H, n, Dh)

    logits = torch.matmul(q, k.transpose(2, 3)) * scaling  # (B, H, Q, n), model dtype like HF eager
    softcap = getattr(attn, attrs.softcap, None)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    allowed = _allowed_keys(mask, positions, valid, query_index)  # (B, 1, Q, n) bool
    logits = logits.float().masked_fill(~allowed, float("-inf"))
    if mask is not None and mask.dtype != torch.bool:
        # Additive float masks may carry more than -inf/0 (e.g. soft biases): add them as HF does.
        rows = mask[:, :, query_index, :].float()
        logits = logits + torch.where(allowed, rows, torch.zeros_like(rows))
    probs = torch.softmax(logits, dim=-1)  # (B, H, Q, n) fp32
    return probs.mean(dim=1)  # (B, Q, n)


def _allowed_keys(mask, positions: torch.Tensor, valid: torch.Tensor, query_index: torch.Tensor) -> torch.Tensor:
    """Keys each query may attend to: causal by original position, real slots, and the model's own mask."""
    q_pos = positions[:, query_index]  # (B, Q)
    allowed = (positions[:, None, :] <= q_pos[:, :, None]) & valid[:, None, :]  # (B, Q, n)
    allowed = allowed[:, None]  # (B, 1, Q, n)
    if mask is not None:
        rows = mask[:, :, query_index, :]  # (B|1, 1, Q, n)
        if rows.dtype == torch.bool:
            allowed = allowed & rows
        else:
            allowed = allowed & (rows > torch.finfo(rows.dtype).min)
    return allowed
