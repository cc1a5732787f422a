"""Gathers for per-token decoder-layer arguments beyond masks, rotary values and position ids.

``tokens``: a (B, S, ...) tensor laid out like the hidden states (per-layer embeddings handed to each layer).
``shared_kv``: a mapping ``{key: (keys, values, ...)}`` of (B, H, S_k, D) tensors that a layer writes and later
layers read instead of projecting their own (a ``KVSharingDict``). The mapping is mutable state passed to
every layer: a cut hands the later layers a *new* mapping of the same type holding the kept key columns, so the
layers after the cut (and any layer after it that stores) never see the unpruned layout.
"""

from __future__ import annotations


from tokenprune.errors import UnsupportedError, describe

from .ops import _take
from .state import Gather


def gather_tokens(value, g: Gather):
    """(B|1, n, ...) -> kept query slots (axis 1); a cached decode step passes its new tokens through."""
    if value is None or g.rows is None or g.identity:
        return value
    return _take(value, g.rows, seq_dim=1, batch_dim=0)


def gather_shared_kv(shared, g: Gather):
    """A new mapping of the same type whose (B, H, S_k, D) tensors keep the key columns ``g.cols`` (axis -2)."""
    if shared is None or g.identity:
        return shared
    out = type(shared)()
    for name, tensors in shared.items():
        kept = []
        for t in tensors:
            if g.in_keys >= 0 and t.shape[-2] != g.in_keys:
                raise UnsupportedError(describe(
                    f"shared keys/values {name!r} hold {t.shape[-2]} positions, the layout before this cut "
                    f"{g.in_keys}", "shared K/V of the decoder layers",
                    "keys/values written by a layer of this compiled model in this call",
                    "do not pass shared_kv_states from another model"))
            kept.append(_take(t, g.cols, seq_dim=-2, batch_dim=0))  # (B, H, k_new, D)
        out[name] = tuple(kept)
    return out


def hand_on_unread(value, g: Gather):
    """A per-token value the later layers receive but never read, handed on unchanged (so the probe self-check
    sees what the original passes): e.g. the ``prev_topk_indices`` of sparse-attention layers, which a
    layer with its own indexer ignores. Its entries still index the layout before the cut; the spec's qk
    layout refuses models where a layer reads it."""
    return value
