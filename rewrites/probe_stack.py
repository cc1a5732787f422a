"""A cheap stand-in decoder stack for the ``"layers"`` self-check.

The traps the self-check exists for live in the *traced* code: the language model's own forward (mask
building, rotary embeddings, position ids, cache bookkeeping, the hint variants) and the inserted cut nodes.
Decoder layers are fx leaves, called as the same module with whatever inputs the graph hands them, so two
stacks agree exactly when every layer receives the same inputs. The ``"layers"`` check therefore runs the
first decoder layer of each attention type for real, replaces every other layer (in the original and in the
rewritten model alike) by a :class:`RecordingLayer` that records its inputs, writes correctly shaped keys and
values to the cache and passes the hidden states through, and compares the recordings exactly. Cost: one
real layer per attention type instead of the whole stack.
"""

from __future__ import annotations

import collections
import copy
import functools
import operator

import torch
import torch.fx as fx

from tokenprune.scoring.shared_kv import reuses_shared_kv, shared_kv_key, stores_shared_kv
from tokenprune.plugins.resolved import ResolvedSpec
from tokenprune.spec import resolve_module

from .accelerate_hooks import install_forward
from .install import clone_path, make_language_model_forward
from .ops import gather_hidden


def real_layer_indices(config, num_layers: int) -> list[int]:
    """The first layer of each attention type (``config.layer_types``); layer 0 when there are none."""
    types = getattr(config, "layer_types", None) or ["full_attention"] * num_layers
    first: dict[str, int] = {}
    for i, kind in enumerate(types[:num_layers]):
        first.setdefault(kind, i)
    return sorted(set(first.values()) | {0})


class RecordingLayer(torch.nn.Module):
    """Stands in for a decoder layer: records what it receives, fills its cache slot, returns its input.

    Attributes it does not have (``self_attn``, ``attention_type``, ...) are read from the real layer, so
    scorers and the model's forward see the layer they expect. The real layer is not registered as a child.
    """

    def __init__(self, real: torch.nn.Module, index: int, plugins: ResolvedSpec, log: list, tuple_output: int = 0):
        object.__setattr__(self, "_real", real)  # first: __getattr__ falls back to it
        super().__init__()
        self.index = index
        self._log = log
        # The real layer returns a tuple of this length (0: a tensor), hidden states first: see tuple_output_layers.
        self._tuple_output = tuple_output
        spec = plugins.spec
        attn = resolve_module(real, spec.layer.attention, "layer.attention")
        self._head_dim = int(getattr(attn, spec.attention.head_dim))
        # A layer that reuses shared keys/values has no key projection and writes no cache.
        self._reuses = reuses_shared_kv(spec, attn)
        self._stores = stores_shared_kv(spec, attn)
        self._shared_key = shared_kv_key(spec, attn) if self._stores else None
        self._shared_slots = {slot for slot, kind in [*enumerate(spec.tracing.layer_args, start=1),
                                                      *spec.layer_kwargs.items()] if kind == "shared_kv"}
        if plugins.qk is not None:  # a registered layout (MLA, fused QKV) knows its key shape; see scoring.qk
            self._kv_heads, self._head_dim = plugins.qk.key_shape(attn)
        elif not self._reuses:
            k_proj = resolve_module(real, spec.layer.k_proj, "layer.k_proj")
            self._kv_heads = k_proj.weight.shape[0] // self._head_dim
        self._layer_idx = getattr(attn, "layer_idx", index)
        self._hidden_layout = plugins.hidden_states

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_real"], name)

    def forward(self, hidden: torch.Tensor, *args, **kwargs) -> torch.Tensor | tuple[torch.Tensor]:
        caches = [v for v in (*args, *kwargs.values()) if _is_cache(v)]
        shared = [v for slot, v in [*enumerate(args, start=1), *kwargs.items()]
                  if slot in self._shared_slots and v is not None]
        snap = functools.partial(_snapshot, layer_idx=self._layer_idx)
        record = {"hidden": hidden, "args": tuple(map(snap, args)), "kwargs": {k: snap(v) for k, v in kwargs.items()}}
        self._log.append((self.index, record))
        # Items after the hidden states (e.g. top-k indices handed on) become None: the same in both stacks.
        out = (hidden, *[None] * (self._tuple_output - 1)) if self._tuple_output else hidden
        if self._reuses:
            return out
        bsz, n = self._hidden_layout.batch_and_length(hidden)
        kv = full = torch.zeros(bsz, self._kv_heads, n, self._head_dim, dtype=hidden.dtype, device=hidden.device)
        for cache in caches:  # keys/values of the right shape, so cache lengths and mask sizes stay right
            full = cache.update(kv, kv, self._layer_idx)[0]  # (B, H_kv, past + n, D_h)
        for mapping in shared if self._stores else ():  # what later layers that reuse them attend to
            mapping[self._shared_key] = (full, full)
        return out


def tuple_output_layers(graphs: dict, layers_path: str) -> dict[int, int]:
    """Decoder layers that return a tuple with the hidden states first, mapped to its length, so their stand-ins
    return one too (``layer_outputs[0]``, or ``hidden_states, topk_indices = layer(...)``).
    A layer's output is such a tuple when the traced forward reads it only by index and hands item 0 to the next
    layer (the last layer: when its predecessor's is a tuple read up to the same index), or when it reads only
    item 0. Other indexing means a tensor indexed along its first axis (a stack of hidden streams, which the next
    layer gets whole)."""
    found: dict[int, int] = {}
    for gm in graphs.values():
        calls = {}
        for node in gm.graph.nodes:
            head, _, tail = str(node.target).rpartition(".")
            if node.op == "call_module" and head == layers_path and tail.isdigit():
                calls[int(tail)] = node
        for i, node in sorted(calls.items()):
            items = [user.args[1] for user in node.users if user.op == "call_function"
                     and user.target is operator.getitem and isinstance(user.args[1], int)]
            if not node.users or len(items) != len(node.users):
                continue
            nxt = calls.get(i + 1)
            feeds_next = nxt is not None and bool(nxt.args) and _is_item(nxt.args[0], node, 0)
            length = max(items) + 1
            if items == [0] * len(items) or feeds_next or (nxt is None and found.get(i - 1) == length):
                found[i] = max(found.get(i, 1), length)
    return found


def _is_item(value, node: fx.Node, index: int) -> bool:
    """``value`` is ``node[index]``, possibly through a cut's gather of the hidden states."""
    while isinstance(value, fx.Node) and value.op == "call_function" and value.target is gather_hidden:
        value = value.args[0]
    return (isinstance(value, fx.Node) and value.op == "call_function" and value.target is operator.getitem
            and value.args[0] is node and value.args[1] == index)


def _is_cache(value) -> bool:
    return hasattr(value, "update") and hasattr(value, "get_seq_length") and not isinstance(value, dict)


def _snapshot(value, layer_idx: int):
    """A recordable view of one layer input: a cache becomes what the layer can observe of it before it
    writes (its kind and its slot's length); a mutable mapping (shared keys/values) a copy of what it holds
    now; everything else is kept as is."""
    if isinstance(value, collections.UserDict):
        return dict(value)
    if not _is_cache(value):
        return value
    layers = getattr(value, "layers", [])
    if layer_idx < len(layers) and not hasattr(layers[layer_idx], "get_seq_length"):
        return ("cache", type(value).__name__, None)  # a placeholder slot: its layer stores nothing (shared K/V)
    length = value.get_seq_length(layer_idx) if layer_idx < len(layers) else 0
    return ("cache", type(value).__name__, length)


# ------------------------------------------------------------------ the two probe models
def standin_original(lm: torch.nn.Module, layers_path: str, standins: dict[int, RecordingLayer]) -> torch.nn.Module:
    """A shallow clone of the original language model whose layer list holds the stand-ins."""
    root, clones = clone_path(lm, [layers_path])
    layer_list = clones[layers_path]
    for i, standin in standins.items():
        layer_list._modules[str(i)] = standin
    return root


def standin_compiled(lm: torch.nn.Module, graphs: dict, input_names: dict, hint, session, cut_layers,
                     layers_path: str, standins: dict[int, RecordingLayer]) -> torch.nn.Module:
    """A shallow clone of the compiled language model running copies of its rewritten graphs whose decoder
    layers (calls and the scorers' references alike) are the stand-ins."""
    probe_graphs = standin_graphs(graphs, layers_path, standins)
    clone = clone_path(lm, [])[0]  # re-binds an accelerate hook of the language model to the clone
    install_forward(clone, make_language_model_forward(clone, probe_graphs, input_names, hint, session, cut_layers))
    return clone


def standin_graphs(graphs: dict, layers_path: str, standins: dict[int, RecordingLayer]) -> dict:
    """Copies of the rewritten ``graphs`` (one per hint variant) calling ``standins`` for those decoder layers."""
    return {variant: _with_standins(gm, layers_path, standins) for variant, gm in graphs.items()}


def _with_standins(gm: fx.GraphModule, prefix: str, standins: dict[int, RecordingLayer]) -> fx.GraphModule:
    graph = copy.deepcopy(gm.graph)
    root = {}
    for node in graph.nodes:
        if node.op in ("call_module", "get_attr"):
            target = str(node.target)
            head, _, tail = target.rpartition(".")
            if head == prefix and tail.isdigit() and int(tail) in standins:
                root[target] = standins[int(tail)]
            else:
                root[target] = resolve_module(gm, target, "graph target")
    return fx.GraphModule(root, graph, class_name=f"{type(gm).__name__}Probe")
