"""The fx pass: insert *select -> gather* nodes at every cut of a schedule.

For a cut before layer ``l`` it adds ``cut{l}_select`` (scores the tokens with layer ``l-1`` and picks the
survivors) and one ``cut{l}_<name>`` gather node per per-token value the later layers read (hidden
state, attention mask, rotary cos/sin, position ids). Later layers are rewired to the gathered values;
the pass then proves with :mod:`.analysis` that nothing per-token skips the cut, and lints the graph.
"""

from __future__ import annotations

import torch.fx as fx

from tokenprune.errors import TraceError, describe
from tokenprune.schedule import Schedule
from tokenprune.spec import GatherKind

from . import ops
from .analysis import check_cuts_complete, layer_nodes
from .state import PruneSession
from .tracer import TracedLanguageModel

SESSION_ATTR = "_tokenprune_session"

_GATHERS = {"mask": ops.gather_mask, "rope": ops.gather_rope, "positions": ops.gather_positions}


def _classify_kwargs(layer: fx.Node, kinds: dict[str, GatherKind]) -> dict[str, GatherKind]:
    """Gather kind of every node-valued keyword of a layer call; unknown per-token keywords are refused."""
    out = {}
    for name, value in layer.kwargs.items():
        if not isinstance(value, fx.Node):
            continue
        if name not in kinds:
            raise TraceError(describe(
                f"decoder layer call {layer.target!r} receives keyword {name!r}, which tokenprune does not know "
                "how to gather at a cut", "traced language model", f"one of {sorted(kinds)}",
                "declare it in the spec under tracing.layer_kwargs (mask, rope, positions, cache or constant)"))
        out[name] = kinds[name]
    if len(layer.args) != 1 or not isinstance(layer.args[0], fx.Node):
        raise TraceError(describe(
            f"decoder layer call {layer.target!r} takes {len(layer.args)} positional arguments",
            "traced language model", "exactly one, the hidden states", "register a tracing hint for this family"))
    return out


def insert_cuts(traced: TracedLanguageModel, schedule: Schedule, session: PruneSession,
                kwarg_kinds: dict[str, GatherKind]) -> fx.GraphModule:
    """Rewrite ``traced.graph_module`` in place so every cut of ``schedule`` prunes tokens; return it."""
    gm = traced.graph_module
    graph = gm.graph
    schedule.check_layers(traced.num_layers)
    layers = layer_nodes(graph, traced.layer_prefix, traced.num_layers)
    kinds = [_classify_kwargs(node, kwarg_kinds) for node in layers]
    setattr(gm, SESSION_ATTR, session)
    with graph.inserting_before(layers[0]):
        session_node = graph.create_node("get_attr", SESSION_ATTR, name="tokenprune_session")

    gathered: dict[int, set[str]] = {}
    previous_cut = None
    for cut in schedule.cuts:
        windows = _mask_windows(layers, traced.config)
        gathered[cut] = _insert_cut(graph, gm, traced.layer_prefix, layers, kinds, cut, previous_cut, session_node,
                                    windows)
        previous_cut = cut
    exempt = {n.name for n in graph.nodes if n.op == "placeholder" and n.target == "past_key_values"}
    token_inputs = tuple(n for n in traced.input_names if n != "past_key_values")
    check_cuts_complete(graph, layers, list(schedule.cuts), gathered, token_inputs, exempt)
    graph.lint()
    gm.recompile()
    return gm


def _mask_windows(layers: list[fx.Node], config) -> dict[fx.Node, int | None]:
    """The sliding window of each mask node that only sliding-window layers read (None otherwise)."""
    types = getattr(config, "layer_types", None)
    window = getattr(config, "sliding_window", None)
    users: dict[fx.Node, set[str]] = {}
    for i, layer in enumerate(layers):
        mask = layer.kwargs.get("attention_mask")
        if isinstance(mask, fx.Node):
            kind = types[i] if types is not None else ("sliding_attention" if window else "full_attention")
            users.setdefault(mask, set()).add(kind)
    return {node: window if kinds == {"sliding_attention"} else None for node, kinds in users.items()}


def _cache_arg(layer: fx.Node, kinds: dict[str, GatherKind]):
    """The KV cache a layer call receives (the node of its ``cache`` keyword), or None."""
    return next((layer.kwargs[name] for name, kind in kinds.items() if kind == "cache"), None)


def _insert_cut(graph: fx.Graph, gm: fx.GraphModule, prefix: str, layers: list[fx.Node],
                kinds: list[dict[str, GatherKind]], cut: int, previous_cut: int | None,
                session_node: fx.Node, windows: dict) -> set[str]:
    scoring, target = layers[cut - 1], layers[cut]
    inserted: set[str] = set()
    with graph.inserting_before(target):
        select = graph.create_node(
            "call_function", ops.select_tokens, (), {
                "session": session_node, "layer": cut, "prev_layer": previous_cut,
                "hidden_in": scoring.args[0], "hidden_out": target.args[0],
                "mask": scoring.kwargs.get("attention_mask"), "rope": scoring.kwargs.get("position_embeddings"),
                "next_mask": target.kwargs.get("attention_mask"),
                "next_rope": target.kwargs.get("position_embeddings"),
                "scoring_layer": graph.create_node("get_attr", f"{prefix}.{cut - 1}", name=f"cut{cut}_scoring_layer"),
                "next_layer": graph.create_node("get_attr", f"{prefix}.{cut}", name=f"cut{cut}_next_layer"),
                # The scoring layer has written its keys there; the scorer reads them back instead of
                # recomputing k_proj over every token. The node runs after the scoring layer (it reads
                # ``hidden_out``), so the cache is filled by then.
                "cache": _cache_arg(scoring, kinds[cut - 1]),
            }, name=f"cut{cut}_select")
        inserted |= {select.name, *(n.name for n in select.all_input_nodes if n.op == "get_attr")}
        hidden = graph.create_node("call_function", ops.gather_hidden, (target.args[0], select), {},
                                   name=f"cut{cut}_hidden")
        target.args = (hidden,)
        inserted.add(hidden.name)
        replaced: dict[fx.Node, fx.Node] = {}
        for later, later_kinds in zip(layers[cut:], kinds[cut:]):
            new_kwargs = dict(later.kwargs)
            for name, kind in later_kinds.items():
                if kind not in _GATHERS:
                    continue
                value = later.kwargs[name]
                if value not in replaced:
                    args = (value, select, session_node, windows.get(value)) if kind == "mask" else (value, select)
                    replaced[value] = graph.create_node("call_function", _GATHERS[kind], args, {},
                                                        name=f"cut{cut}_{name}")
                    inserted.add(replaced[value].name)
                new_kwargs[name] = replaced[value]
            later.kwargs = new_kwargs
    return inserted
