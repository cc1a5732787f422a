"""DeepSeek sparse attention (DSA): the keys an indexer lets each query attend to.

A DSA layer runs a small *indexer* next to its attention: per query it
scores every key with a few ReLU heads mixed by per-token weights, adds the layer's attention mask, keeps the
``index_topk`` best keys and masks every other key out of the attention. The scorer must attend exactly as the
layer does, so it recomputes the indexer for its query rows and applies the same top-k.

Why this stays exact under pruning: the indexer's mask is the layer's own attention mask, so a key masked out
(by causality, padding, or the masking reference's dropped columns) can never beat an allowed key in the top-k.
The keys a query finally attends to are the best ``min(index_topk, allowed)`` allowed keys either way, whether
dropped keys are masked (reference) or removed (pruned layout). After a cut, the next layers compute their
indexer keys from the pruned hidden states, so their indexer caches hold the pruned layout by construction.
"""

from __future__ import annotations

import torch


def indexer_scores(q: torch.Tensor, k: torch.Tensor, weights: torch.Tensor, softmax_scale: float) -> torch.Tensor:
    """The indexer's score of every key for each query row, (B, Q, n) fp32, as the indexer computes it.

    ``q``: (B, Q, H_i, D_i) rotated indexer queries; ``k``: (B, n, D_i) rotated indexer keys (one head);
    ``weights``: (B, Q, H_i) fp32 per-head mixing weights, already scaled by ``H_i ** -0.5``."""
    scores = torch.matmul(q.float(), k.transpose(-1, -2).float().unsqueeze(1)) * softmax_scale  # (B, Q, H_i, n)
    scores = torch.relu(scores)
    return torch.matmul(weights.unsqueeze(-2), scores).squeeze(-2)  # (B, Q, n)


def restrict_to_topk(allowed: torch.Tensor, scores: torch.Tensor, index_topk: int) -> torch.Tensor:
    """``allowed`` (B, 1, Q, n) bool narrowed to each query's ``index_topk`` best allowed keys by ``scores``
    (B, Q, n), as the layer's sparse mask does (top ``min(index_topk, n)`` of the masked scores)."""
    masked = scores.masked_fill(~allowed[:, 0], float("-inf"))  # (B, Q, n)
    top = masked.topk(min(int(index_topk), masked.shape[-1]), dim=-1).indices  # (B, Q, k)
    picked = torch.zeros_like(allowed[:, 0]).scatter(-1, top, True)  # (B, Q, n)
    return allowed & picked[:, None]  # (B, 1, Q, n); keys picked only to fill k stay masked
