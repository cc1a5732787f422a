"""Micro-benchmark of the nodes ``tokenprune.compile`` inserts: time every ``cut{l}_*`` node of a prefill.

The compiled language model's GraphModule is run by an :class:`torch.fx.Interpreter` subclass that times
each node (with a device synchronisation around it), while the model is called exactly as usual. The
interpreter replaces the GraphModule's ``forward`` on that instance only, for the duration of the run.
Decoder-layer nodes are timed too, so the cost of a cut is set against the layers it saves.
"""

from __future__ import annotations

import contextlib
import re
import statistics
import time
from collections import defaultdict

import torch
import torch.fx as fx

import tokenprune as tp

from tokenprune.timing import synchronize

_CUT = re.compile(r"^cut(\d+)_")


class NodeTimer(fx.Interpreter):
    """Runs a GraphModule, accumulating seconds per node name."""

    def __init__(self, gm: fx.GraphModule, device=None):
        super().__init__(gm, garbage_collect_values=True)
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)

    def run_node(self, n: fx.Node):
        synchronize(self.device)
        start = time.perf_counter()
        result = super().run_node(n)
        synchronize(self.device)
        self.seconds[n.name] += time.perf_counter() - start
        return result


def graph_modules(compiled) -> list[fx.GraphModule]:
    """Every rewritten graph of a compiled model (families with tracing hints may have one per variant)."""
    graphs = getattr(getattr(compiled, "_tokenprune_language_model", None), "_tokenprune_graphs", None)
    return list(graphs.values()) if graphs else [tp.graph_of(compiled)]


class _Timers:
    def __init__(self, timers: list[NodeTimer]):
        self.timers = timers

    @property
    def seconds(self) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for timer in self.timers:
            for name, sec in timer.seconds.items():
                out[name] += sec
        return out


@contextlib.contextmanager
def timed_graph(compiled, device=None):
    """While active, every forward of ``compiled``'s language model is interpreted by :class:`NodeTimer` s."""
    graphs = graph_modules(compiled)
    timers = [NodeTimer(gm, device) for gm in graphs]
    for gm, timer in zip(graphs, timers):
        gm.forward = timer.run  # instance attribute: the class is untouched
    try:
        yield _Timers(timers)
    finally:
        for gm in graphs:
            del gm.forward


def layer_prefix(compiled) -> str:
    for node in graph_modules(compiled)[0].graph.nodes:
        if node.op == "call_module" and str(node.target).rsplit(".", 1)[-1].isdigit():
            return str(node.target).rsplit(".", 1)[0]
    return "layers"


def cut_costs(compiled, inputs: dict, repeats: int = 5, device=None) -> dict:
    """Per cut: median seconds of its inserted nodes and their share of the (interpreted) prefill.

    Also returns the per-node medians and each decoder layer's median time.
    """
    prefix = layer_prefix(compiled)
    per_node: dict[str, list[float]] = defaultdict(list)
    totals: list[float] = []
    for _ in range(repeats + 1):  # the first run is a warm-up
        with timed_graph(compiled, device) as timer, torch.no_grad():
            synchronize(device)
            start = time.perf_counter()
            compiled(**inputs, use_cache=True, logits_to_keep=1)
            synchronize(device)
            total = time.perf_counter() - start
        if _ == 0:
            continue
        totals.append(total)
        for name, sec in timer.seconds.items():
            per_node[name].append(sec)
    nodes = {name: statistics.median(v) for name, v in per_node.items()}
    prefill = statistics.median(totals)
    cuts: dict[int, dict] = {}
    for name, sec in nodes.items():
        m = _CUT.match(name)
        if m:
            entry = cuts.setdefault(int(m.group(1)), {"seconds": 0.0, "nodes": {}})
            entry["seconds"] += sec
            entry["nodes"][name] = sec
    for entry in cuts.values():
        entry["fraction_of_prefill"] = entry["seconds"] / prefill
    layers = {int(name.rsplit("_", 1)[-1]): sec for name, sec in nodes.items()
              if name.startswith(prefix.replace(".", "_") + "_") and name.rsplit("_", 1)[-1].isdigit()}
    graph_total = sum(nodes.values())
    return {"prefill_seconds": prefill, "graph_seconds": graph_total,
            "outside_graph_seconds": max(prefill - graph_total, 0.0), "repeats": repeats,
            "cuts": {str(k): v for k, v in sorted(cuts.items())},
            "layer_seconds": [layers[i] for i in sorted(layers)], "nodes": nodes}
