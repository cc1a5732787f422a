"""The fx pass: insert *select -> gather* nodes at every cut of a schedule.

For a cut before layer ``l`` it adds ``cut{l}_select`` (scores the tokens with layer ``l-1`` and picks the
survivors; a cut before layer 0 has no scoring layer, its selector sees the embeddings entering layer 0) and
one ``cut{l}_<name>`` gather node per per-token value layer ``l`` and the later layers read (hidden state,
attention mask, rotary cos/sin, position ids, per-token positional arguments, shared keys/values).
Later layers are rewired to the gathered values;
the pass then proves with :mod:`.analysis` that nothing per-token skips the cut, and lints the graph.
"""

from __future__ import annotations

import torch.fx as fx

from tokenprune.errors import TraceError, describe
from tokenprune.schedule import Schedule
from tokenprune.spec import GatherKind

from . import gathers, ops, vision_features
from .analysis import check_cuts_complete, layer_nodes
from .state import PruneSession
from .tracer import TracedLanguageModel

SESSION_ATTR = "_tokenprune_session"

_GATHERS = {"mask": ops.gather_mask, "rope": ops.gather_rope, "positions": ops.gather_positions,
            "tokens": gathers.gather_tokens, "shared_kv": gathers.gather_shared_kv, "unread": gathers.hand_on_unread}

Slot = int | str  # a layer call's argument: position (1, 2, ... after the hidden states) or keyword name


def _classify_args(layer: fx.Node, kinds: dict[str, GatherKind], arg_kinds=()) -> dict[Slot, GatherKind]:
    """Gather kind of every node-valued argument of a layer call (positional ones after the hidden states by
    ``arg_kinds``, keywords by ``kinds``); undeclared node-valued arguments are refused."""
    if not layer.args or not isinstance(layer.args[0], fx.Node):
        raise TraceError(describe(
            f"decoder layer call {layer.target!r} does not take the hidden states first", "traced language model",
            "the hidden states as the first positional argument", "register a tracing hint for this family"))
    out: dict[Slot, GatherKind] = {}
    for pos, value in enumerate(layer.args[1:], start=1):
        if not isinstance(value, fx.Node):
            continue  # None or a constant
        if pos > len(arg_kinds):
            raise TraceError(describe(
                f"decoder layer call {layer.target!r} receives a graph value as positional argument {pos} "
                f"({value.name!r}), which tokenprune does not know how to gather at a cut", "traced language model",
                f"declared kinds for {len(arg_kinds)} positional arguments after the hidden states",
                "declare it in the spec under tracing.layer_args (mask, rope, positions, tokens, shared_kv, unread, "
                "cache or constant)"))
        out[pos] = arg_kinds[pos - 1]
    for name, value in layer.kwargs.items():
        if not isinstance(value, fx.Node):
            continue
        if name not in kinds:
            raise TraceError(describe(
                f"decoder layer call {layer.target!r} receives keyword {name!r}, which tokenprune does not know "
                "how to gather at a cut", "traced language model", f"one of {sorted(kinds)}",
                "declare it in the spec under tracing.layer_kwargs (mask, rope, positions, tokens, shared_kv, unread, "
                "cache or constant)"))
        out[name] = kinds[name]
    return out


def insert_cuts(traced: TracedLanguageModel, schedule: Schedule, session: PruneSession,
                kwarg_kinds: dict[str, GatherKind], arg_kinds: tuple[GatherKind, ...] | list = ()) -> fx.GraphModule:
    """Rewrite ``traced.graph_module`` in place so every cut of ``schedule`` prunes tokens; return it.

    ``kwarg_kinds``/``arg_kinds``: how to gather the layers' keyword and positional arguments (spec ``tracing``).
    """
    gm = traced.graph_module
    graph = gm.graph
    schedule.check_layers(traced.num_layers)
    layers = layer_nodes(graph, traced.layer_prefix, traced.num_layers)
    kinds = [_classify_args(node, kwarg_kinds, arg_kinds) for node in layers]
    setattr(gm, SESSION_ATTR, session)
    with graph.inserting_before(layers[0]):
        session_node = graph.create_node("get_attr", SESSION_ATTR, name="tokenprune_session")

    layout = session.plugins.hidden_states
    hidden_axes = (layout.token_axis, layout.batch_axis)  # where a cut gathers the hidden states
    gathered: dict[int, set[str]] = {}
    previous_cut = None
    # Vision features added between layers at vision positions (hint-declared inputs), in the current layout.
    masks, rows = vision_features.declared_inputs(session.plugins.hint_types, graph)
    current = {node: node for node in (*masks.values(), *rows)}
    for cut in schedule.cuts:
        windows = _mask_windows(layers, traced.config, session.spec.windowed_layers)
        gathered[cut] = _insert_cut(graph, gm, traced.layer_prefix, layers, kinds, cut, previous_cut, session_node,
                                    windows, hidden_axes)
        select = next(n for n in graph.nodes if n.name == f"cut{cut}_select")
        gathered[cut] |= vision_features.insert_position_gathers(graph, select, layers[cut], _downstream(layers[cut]),
                                                                  current, rows, cut)
        previous_cut = cut
    exempt = {n.name for n in graph.nodes if n.op == "placeholder" and n.target == "past_key_values"}
    token_inputs = tuple(n for n in traced.input_names if n != "past_key_values")
    check_cuts_complete(graph, layers, list(schedule.cuts), gathered, token_inputs, exempt)
    graph.lint()
    gm.recompile()
    return gm


def _mask_windows(layers: list[fx.Node], config, windowed: dict) -> dict[fx.Node, tuple[int | None, bool]]:
    """Per mask node that only layers of one windowed type read: (window, cache keeps the prompt)."""
    types = getattr(config, "layer_types", None)
    window = getattr(config, "sliding_window", None)
    users: dict[fx.Node, set[str]] = {}
    for i, layer in enumerate(layers):
        mask = layer.kwargs.get("attention_mask")
        if isinstance(mask, fx.Node):
            kind = types[i] if types is not None else ("sliding_attention" if window else "full_attention")
            users.setdefault(mask, set()).add(kind)
    out = {}
    for node, kinds in users.items():
        policy = windowed.get(next(iter(kinds))) if len(kinds) == 1 else None
        size = getattr(config, policy.size, None) if policy is not None else None
        out[node] = (size, policy.keeps_prompt) if size else (None, False)
    return out


def _downstream(node: fx.Node) -> set[fx.Node]:
    """Every node that depends on ``node``."""
    seen, frontier = set(), [node]
    while frontier:
        for user in frontier.pop().users:
            if user not in seen:
                seen.add(user)
                frontier.append(user)
    return seen


def _arg(layer: fx.Node, slot: Slot):
    return layer.args[slot] if isinstance(slot, int) else layer.kwargs[slot]


def _arg_of_kind(layer: fx.Node, kinds: dict[Slot, GatherKind], kind: GatherKind):
    """The value of the layer call's first argument of gather ``kind`` (e.g. its KV cache), or None."""
    return next((_arg(layer, slot) for slot, k in kinds.items() if k == kind), None)


def _scoring_inputs(graph: fx.Graph, prefix: str, layers: list[fx.Node], kinds: list[dict[Slot, GatherKind]],
                    cut: int) -> dict:
    """What the select node reads from the layer before the cut; a cut before the first layer has none (None)."""
    if cut == 0:
        return dict.fromkeys(("hidden_in", "mask", "rope", "scoring_layer", "cache", "shared_kv", "position_ids"))
    scoring, scoring_kinds = layers[cut - 1], kinds[cut - 1]
    return {
        "hidden_in": scoring.args[0],
        "mask": _arg_of_kind(scoring, scoring_kinds, "mask"),
        "rope": _arg_of_kind(scoring, scoring_kinds, "rope"),
        "scoring_layer": graph.create_node("get_attr", f"{prefix}.{cut - 1}", name=f"cut{cut}_scoring_layer"),
        # The scoring layer has written its keys there; the scorer reads them back instead of recomputing k_proj
        # over every token. The node runs after the scoring layer (it reads ``hidden_out``), so the cache is
        # filled by then.
        "cache": _arg_of_kind(scoring, scoring_kinds, "cache"),
        # Layers that read shared keys/values instead of projecting them are scored from them.
        "shared_kv": _arg_of_kind(scoring, scoring_kinds, "shared_kv"),
        # Layouts that scale queries by position read the layer's own position ids.
        "position_ids": scoring.kwargs.get("position_ids"),
    }


def _insert_cut(graph: fx.Graph, gm: fx.GraphModule, prefix: str, layers: list[fx.Node],
                kinds: list[dict[Slot, GatherKind]], cut: int, previous_cut: int | None,
                session_node: fx.Node, windows: dict, hidden_axes: tuple[int, int]) -> set[str]:
    target = layers[cut]
    inserted: set[str] = set()
    with graph.inserting_before(target):
        select = graph.create_node(
            "call_function", ops.select_tokens, (), {
                "session": session_node, "layer": cut, "prev_layer": previous_cut,
                "hidden_out": target.args[0],
                "next_mask": _arg_of_kind(target, kinds[cut], "mask"),
                "next_rope": _arg_of_kind(target, kinds[cut], "rope"),
                "next_layer": graph.create_node("get_attr", f"{prefix}.{cut}", name=f"cut{cut}_next_layer"),
                **_scoring_inputs(graph, prefix, layers, kinds, cut),
            }, name=f"cut{cut}_select")
        inserted |= {select.name, *(n.name for n in select.all_input_nodes if n.op == "get_attr")}
        hidden = graph.create_node("call_function", ops.gather_hidden, (target.args[0], select, *hidden_axes), {},
                                   name=f"cut{cut}_hidden")
        target.args = (hidden, *target.args[1:])
        inserted.add(hidden.name)
    replaced: dict[fx.Node, fx.Node] = {}
    # Values a layer after the cut computes (e.g. top-k indices handed from layer to layer) are in
    # the new layout already: only what comes from before the cut is gathered.
    after_cut = _downstream(target)
    for later, later_kinds in zip(layers[cut:], kinds[cut:]):
        new_args, new_kwargs = list(later.args), dict(later.kwargs)
        for slot, kind in later_kinds.items():
            if kind not in _GATHERS or _arg(later, slot) in after_cut:
                continue
            value = _arg(later, slot)
            if value not in replaced:
                args = ((value, select, *windows.get(value, (None, False))) if kind == "mask"
                        else (value, select))
                # Before the first later layer that reads it: a value computed inside the layer loop (e.g. a
                # per-layer input) exists only from there on.
                name = f"cut{cut}_{slot}" if isinstance(slot, str) else f"cut{cut}_arg{slot}"
                with graph.inserting_before(later):
                    replaced[value] = graph.create_node("call_function", _GATHERS[kind], args, {}, name=name)
                inserted.add(replaced[value].name)
            if isinstance(slot, int):
                new_args[slot] = replaced[value]
            else:
                new_kwargs[slot] = replaced[value]
        later.args, later.kwargs = tuple(new_args), new_kwargs
    return inserted
