"""Layers that read keys/values another layer shared with them (KV sharing, spec ``attention.shared_kv``).

Such a layer has no key projection: its attention uses the keys a *store* layer of the same type wrote into a
mapping passed to every layer. The scorer reads them from that mapping, exactly as the layer does; the prune
pass gathers the mapping at every cut (``shared_kv`` gather kind), so it always holds the current layout.
"""

from __future__ import annotations

import torch

from tokenprune.errors import TraceError, describe
from tokenprune.spec import ModelSpec

from .keys import KeyLookup


def reuses_shared_kv(spec: ModelSpec, attn: torch.nn.Module) -> bool:
    shared = spec.attention.shared_kv
    return shared is not None and bool(getattr(attn, shared.reuse, False))


def stores_shared_kv(spec: ModelSpec, attn: torch.nn.Module) -> bool:
    shared = spec.attention.shared_kv
    return shared is not None and bool(getattr(attn, shared.store, False))


def shared_kv_key(spec: ModelSpec, attn: torch.nn.Module):
    return getattr(attn, spec.attention.shared_kv.key)


def find_shared_keys(spec: ModelSpec, attn: torch.nn.Module, shared_kv, hidden: torch.Tensor,
                     kv_shape: tuple[int, int]) -> KeyLookup | None:
    """The keys a reusing layer attends to, (B, H_kv, n, D_h), or None when ``attn`` projects its own."""
    if not reuses_shared_kv(spec, attn):
        return None
    key = shared_kv_key(spec, attn)
    if shared_kv is None or key not in shared_kv:
        raise TraceError(describe(
            f"the scoring layer reuses the shared keys {key!r}, which it did not receive", "scorer",
            "the layer's shared K/V argument declared as 'shared_kv' in tracing.layer_kwargs or layer_args",
            "declare it in the spec; the next-layer scorer cannot score a cut whose next layer stores them"))
    keys = shared_kv[key][0]
    expected = (hidden.shape[0], kv_shape[0], hidden.shape[1], kv_shape[1])
    if tuple(keys.shape) != expected:
        raise TraceError(describe(f"shared keys {key!r} of shape {tuple(keys.shape)}", "scorer",
                                  f"{expected}: this call's keys in the current layout"))
    return KeyLookup(keys, "shared", f"shared K/V {key!r}")
