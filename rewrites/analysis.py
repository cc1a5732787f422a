"""Analysis of a traced decoder graph with networkx: find the layer chain and prove a rewrite is complete.

A cut is only correct if *every* per-token value consumed after it has been gathered; a value that
skips the cut (a residual from before it, per-layer visual features added to the hidden state, ...)
would silently mix pruned and unpruned layouts. :func:`check_cuts_complete` refuses such graphs.
"""

from __future__ import annotations

import networkx as nx
import torch.fx as fx

from tokenprune.errors import TraceError, describe

# Node meta flag a tracing hint sets on values that carry per-token state without depending on a per-token input
# (a mutable mapping of shared keys/values the layers fill): the analysis treats them like per-token inputs.
PER_TOKEN_META = "tokenprune_per_token"

# Tensor attributes that carry no tokens: reading a value's dtype or device from before a cut is harmless (a forward
# may cast its output to ``inputs_embeds.dtype``). Its shape does carry the sequence length.
_METADATA_ATTRIBUTES = ("dtype", "device")


def to_networkx(graph: fx.Graph) -> nx.DiGraph:
    """A DiGraph with one vertex per fx node (by name) and an edge for every use."""
    g = nx.DiGraph()
    for node in graph.nodes:
        g.add_node(node.name, op=node.op, target=str(node.target))
        for used in node.all_input_nodes:
            g.add_edge(used.name, node.name)
    return g


def layer_nodes(graph: fx.Graph, prefix: str, num_layers: int) -> list[fx.Node]:
    """The ``call_module`` node of every decoder layer, in order; exactly one call each."""
    calls: dict[int, list[fx.Node]] = {}
    for node in graph.nodes:
        if node.op == "call_module" and str(node.target).startswith(prefix + "."):
            rest = str(node.target)[len(prefix) + 1:]
            if rest.isdigit():
                calls.setdefault(int(rest), []).append(node)
    found = sorted(calls)
    if found != list(range(num_layers)) or any(len(v) != 1 for v in calls.values()):
        raise TraceError(describe(
            f"the traced graph calls decoder layers {found} (counts {[len(calls[i]) for i in found]})",
            f"{prefix}.*", f"each of the {num_layers} layers called exactly once",
            "check decoder_layers in the spec, or add a tracing hint for this family"))
    nodes = [calls[i][0] for i in range(num_layers)]
    order = {n: i for i, n in enumerate(graph.nodes)}
    if any(order[a] > order[b] for a, b in zip(nodes, nodes[1:])):
        raise TraceError(describe("decoder layers are not called in order", f"{prefix}.*", "layer 0, 1, 2, ..."))
    return nodes


def per_token_nodes(graph: fx.Graph, token_inputs: tuple[str, ...]) -> set[str]:
    """Nodes whose value depends on a per-token placeholder (embeddings, masks, positions) or on a node a hint
    marked as per-token state (``PER_TOKEN_META``)."""
    g = to_networkx(graph)
    g.remove_nodes_from([n.name for n in graph.nodes if _is_metadata(n)])
    sources = [n.name for n in graph.nodes
               if (n.op == "placeholder" and n.target in token_inputs) or n.meta.get(PER_TOKEN_META)]
    result: set[str] = set()
    for src in sources:
        result |= nx.descendants(g, src) | {src}
    return result


def _is_metadata(node: fx.Node) -> bool:
    """``x.dtype`` or ``x.device`` as fx records it: ``getattr(x, name)``."""
    return (node.op == "call_function" and node.target is getattr and len(node.args) == 2
            and node.args[1] in _METADATA_ATTRIBUTES)


def _reachable(g: nx.DiGraph, sources: list[str]) -> set[str]:
    """The sources and every node that depends on one of them (one traversal for all sources)."""
    seen, frontier = set(sources), list(sources)
    while frontier:
        for nxt in g.successors(frontier.pop()):
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    return seen


def check_cuts_complete(graph: fx.Graph, layers: list[fx.Node], cut_layers: list[int],
                        gathered: dict[int, set[str]], token_inputs: tuple[str, ...], exempt: set[str]) -> None:
    """Every node at or after a cut may read per-token values from before the cut only through its gathers.

    ``gathered[l]``: names of the nodes inserted at the cut before layer ``l``; ``exempt``: values that are
    not laid out along the sequence (the KV cache object, constants). A node is *after* the cut when it depends
    on the cut's nodes (later layers, whatever they feed); a per-token value is *from before* the cut when it
    does not (wherever the graph computes it: a value built inside the layer loop from an input counts too).
    """
    g = to_networkx(graph)
    per_token = per_token_nodes(graph, token_inputs)
    for layer in cut_layers:
        start = layers[layer].name
        cut_nodes = gathered[layer]
        # Seeds: the cut's value nodes (get_attr nodes such as the shared session object carry no tokens).
        downstream = _reachable(g, [n for n in cut_nodes if g.nodes[n]["op"] != "get_attr"]) | cut_nodes
        after = ({start} | nx.descendants(g, start) | downstream) - cut_nodes
        before = set(g.nodes) - downstream
        for node in after:
            for used in g.predecessors(node):
                if used in before and used in per_token and used not in exempt and g.nodes[node]["op"] != "output":
                    raise TraceError(describe(
                        f"node {node!r} after the cut before layer {layer} reads per-token value {used!r} "
                        "from before the cut, which the cut does not gather", "traced language model",
                        "every per-token input of later layers to be a decoder-layer argument the cut gathers",
                        "declare it under tracing.layer_kwargs (or layer_args) in the spec, or register a tracing "
                        "hint"))
