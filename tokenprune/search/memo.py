"""Prefix reuse: candidates that share their first layers' keep ratios reuse those layers' outputs.

The output of decoder layer ``j`` on calibration batch ``i`` depends only on the batch and on
``keep_ratio[0..j]`` (the cut before layer ``j`` is scored from layer ``j-1``'s input, which the prefix
fixes, and every scorer is deterministic). So it is stored under the key ``(batch, j, keep_ratio[:j+1])`` and
returned instead of running the layer when another schedule with the same prefix comes by. G-Search step
``l`` evaluates several candidates sharing ``keep_ratio[0..l-1]``: each runs only layers ``l..L-1``.

How: for the duration of one evaluation, each decoder layer referenced by the compiled model's *own* fx
graph module is replaced (in that graph module's container only; the input model and its module tree are
not touched) by a :class:`MemoLayer` that looks the key up before running the real layer. The cut nodes
receive the layer as an argument to read its projections, so :class:`MemoLayer` forwards attribute access
to the real layer. Calls carrying a KV cache are never memoised.

What is stored is bounded: with a hint from the searcher (:meth:`PrefixMemo.set_hint`), layers up to one past
the shared prefix; without one, layer 0 only (searched schedules keep everything there; the key holds
``keep_ratio[0]``, so a schedule cutting before layer 0 never reuses an unpruned entry); and never more than
``max_bytes`` in total.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

Key = tuple[Any, int, tuple[float, ...]]


class PrefixMemo:
    """Stored layer outputs keyed by (batch key, layer index, keep ratios of layers 0..j)."""

    def __init__(self, max_bytes: int = 2 * 1024**3) -> None:
        self.max_bytes = int(max_bytes)
        self.entries: dict[Key, Any] = {}
        self.bytes = 0
        self.hint: tuple[tuple[float, ...], int] | None = None
        self.context: tuple[Any, tuple[float, ...]] | None = None  # (batch key, keep ratios) of the running forward
        self.hits = 0
        self.skipped_for_memory = 0

    # ------------------------------------------------------------- policy
    def set_hint(self, ratios: tuple[float, ...] | None, upto: int = -1) -> None:
        """The next evaluations share ``ratios[:upto + 1]``; drop entries they cannot use."""
        self.hint = None if ratios is None else (tuple(ratios), int(upto))
        keep = {k: v for k, v in self.entries.items() if self._useful(k[1], k[2])}
        self.entries = keep
        self.bytes = sum(_nbytes(v) for v in keep.values())

    def _useful(self, layer: int, prefix: tuple[float, ...]) -> bool:
        if self.hint is None:
            return layer == 0
        ratios, upto = self.hint
        if layer > upto + 1:
            return False
        n = min(layer, upto) + 1
        return prefix[:n] == ratios[:n]

    # ------------------------------------------------------------- lookup
    @contextmanager
    def running(self, batch_key: Any, ratios: tuple[float, ...]) -> Iterator[None]:
        self.context = (batch_key, tuple(ratios))
        try:
            yield
        finally:
            self.context = None

    def key(self, layer: int) -> Key | None:
        if self.context is None:
            return None
        batch_key, ratios = self.context
        return (batch_key, layer, ratios[:layer + 1])

    def get(self, layer: int) -> Any | None:
        key = self.key(layer)
        if key is None or key not in self.entries:
            return None
        self.hits += 1
        return self.entries[key]

    def put(self, layer: int, output: Any) -> None:
        key = self.key(layer)
        if key is None or key in self.entries or not self._useful(layer, key[2]):
            return
        size = _nbytes(output)
        if self.bytes + size > self.max_bytes:
            self.skipped_for_memory += 1
            return
        self.entries[key] = output
        self.bytes += size

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0


class MemoLayer(torch.nn.Module):
    """Stands in for decoder layer ``index`` inside a compiled graph module; attribute access reaches the layer."""

    def __init__(self, layer: torch.nn.Module, index: int, memo: PrefixMemo) -> None:
        super().__init__()
        # Not registered as a child: the graph module's parameters must not change.
        object.__setattr__(self, "_tp_layer", layer)
        object.__setattr__(self, "_tp_index", index)
        object.__setattr__(self, "_tp_memo", memo)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("past_key_values") is not None:  # a layer with a cache writes to it: always run it
            return self._tp_layer(*args, **kwargs)
        cached = self._tp_memo.get(self._tp_index)
        if cached is not None:
            return cached
        out = self._tp_layer(*args, **kwargs)  # (B, n, D) hidden states
        self._tp_memo.put(self._tp_index, out)
        return out

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_tp_layer"], name)

    def named_children(self):  # path lookups (spec.layer.q_proj, ...) see the real layer's children
        return self._tp_layer.named_children()


@contextmanager
def memo_layers(graph_module: torch.nn.Module, layers: list[torch.nn.Module], memo: PrefixMemo,
                original: torch.nn.Module) -> Iterator[bool]:
    """Swap :class:`MemoLayer` in for ``layers`` wherever ``graph_module``'s own containers hold them.

    Yields False (and swaps nothing) when a container is shared with ``original``: the input model must
    never see a swap.
    """
    index = {id(layer): i for i, layer in enumerate(layers)}
    shared = {id(m) for m in original.modules()}
    slots = []
    for parent in graph_module.modules():
        for name, child in list(parent._modules.items()):
            if child is not None and id(child) in index:
                slots.append((parent, name, child))
    if not slots or any(id(parent) in shared for parent, _, _ in slots):
        yield False
        return
    for parent, name, child in slots:
        parent._modules[name] = MemoLayer(child, index[id(child)], memo)
    try:
        yield True
    finally:
        for parent, name, child in slots:
            parent._modules[name] = child


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return 0
