"""Vision features added to the hidden states at vision positions between decoder layers, across a cut.

Some families add more vision features after the first layers (a "deep stack" of encoder levels): a graph input
marks the vision positions (a (B, S) or (B, S, 1) bool mask) and others hold one row per marked position, in
row-major order of the mask ((M, D) features). A cut before such an addition must hand it the mask of the kept
slots and the rows of the kept positions; a hint declares which graph inputs these are
(``TracingHint.vision_position_inputs``) and the cut gathers them for the nodes after it, as it gathers the
layers' own arguments.
"""

from __future__ import annotations

import torch.fx as fx

from .ops import _take
from .state import Gather


def gather_position_mask(mask, g: Gather):
    """(B, n, 1...) bool vision-position mask -> (B, n_new, 1...) over the kept slots (batch-padding slots False)."""
    if mask is None or g.rows is None or g.identity:
        return mask
    pad = g.col_pad.view(*g.col_pad.shape, *[1] * (mask.dim() - 2))  # (B, n_new, 1...)
    return _take(mask, g.rows, seq_dim=1, batch_dim=0) & ~pad


def gather_position_rows(rows, mask, g: Gather):
    """(M, D) rows of the True slots of ``mask`` (B, n, 1...), row-major -> the rows of the slots the cut keeps."""
    if rows is None or mask is None or g.rows is None or g.identity:
        return rows
    rank = mask.flatten().long().cumsum(0).view_as(mask) - 1  # (B, n, 1...): row of each marked slot
    kept = gather_position_mask(mask, g)  # (B, n_new)
    return rows[_take(rank, g.rows, seq_dim=1, batch_dim=0)[kept]]  # (M_new, D), row-major again


def declared_inputs(hint_types, graph: fx.Graph) -> tuple[dict[str, fx.Node], dict[fx.Node, fx.Node]]:
    """The graph's vision-position inputs the hints declare: ``(masks by name, rows -> their mask)``."""
    placeholders = {n.target: n for n in graph.nodes if n.op == "placeholder"}
    masks: dict[str, fx.Node] = {}
    rows: dict[fx.Node, fx.Node] = {}
    for hint in hint_types:
        for prefix, mask_name in hint.vision_position_inputs.items():
            if mask_name not in placeholders:
                continue  # a variant without these inputs
            masks[mask_name] = placeholders[mask_name]
            rows.update({node: placeholders[mask_name] for name, node in placeholders.items()
                         if name.startswith(prefix) and name != mask_name})
    return masks, rows


def insert_position_gathers(graph: fx.Graph, select: fx.Node, target: fx.Node, after_cut: set[fx.Node],
                            current: dict[fx.Node, fx.Node], rows: dict[fx.Node, fx.Node], cut: int) -> set[str]:
    """Before ``target``, gather the declared inputs that nodes after the cut read; rewire those nodes.

    ``current``: each declared input's value in the layout before this cut (updated to the gathered one)."""
    inserted: set[str] = set()
    readers = [n for n in after_cut if any(v in set(current.values()) for v in n.all_input_nodes)]
    if not readers:
        return inserted
    new: dict[fx.Node, fx.Node] = {}
    with graph.inserting_before(target):
        for source, value in current.items():
            if source in rows:
                args, fn = (value, current[rows[source]], select), gather_position_rows
            else:
                args, fn = (value, select), gather_position_mask
            new[value] = graph.create_node("call_function", fn, args, {}, name=f"cut{cut}_{source.name}")
            inserted.add(new[value].name)
    for node in readers:
        node.args = fx.map_arg(node.args, lambda a: new.get(a, a))
        node.kwargs = fx.map_arg(node.kwargs, lambda a: new.get(a, a))
    for source, value in list(current.items()):
        current[source] = new[value]
    return inserted

