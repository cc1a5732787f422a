"""The benchmarked variants: original, compiled keep-all, FastV, PyramidDrop, a multi-cut schedule, masking,
and any of them under ``torch.compile`` (name + ``-compiled``, inductor).

A :class:`Variant` is a callable model plus what the reports need to know about it. Compiled variants
share weights with the original (``tokenprune.compile`` is non-destructive); the masking baseline runs
on an eager twin that shares them too.
"""

from __future__ import annotations

from dataclasses import dataclass

import tokenprune as tp
from tokenprune.schedule import Schedule

from .masking import MaskingBaseline
from .presets import build_eager_twin


@dataclass
class Variant:
    name: str
    model: object  # callable like the HF model (a compiled model or a MaskingBaseline)
    schedule: Schedule
    kind: str  # "original" | "compiled" | "masked" | "torch.compile" (another variant under torch.compile)
    label: str

    def __call__(self, **inputs):
        return self.model(**inputs)


def gsearch_like(num_layers: int) -> Schedule:
    """A G-Search-shaped staircase: 50% before layer 2, 25% at L/4, 10% at L/2, none from 3L/4.

    Illustrative of the multi-cut schedules a greedy search returns; not a searched result.
    """
    cuts = sorted({2, max(3, num_layers // 4), max(4, num_layers // 2), max(5, 3 * num_layers // 4)})
    levels = dict(zip(cuts, (0.5, 0.25, 0.1, 0.0)))
    ratios, current = [], 1.0
    for layer in range(num_layers):
        current = levels.get(layer, current)
        ratios.append(current)
    return Schedule(ratios, name="g-search-like(" + ",".join(f"{c}:{levels[c]:g}" for c in cuts) + ")")


def schedules(num_layers: int) -> dict[str, Schedule]:
    """The pruned schedules of the speed benchmark, by variant name."""
    return {
        "fastv": Schedule.fastv(num_layers, layer=2, keep=0.25),
        "pdrop": Schedule.pdrop(num_layers, ratio=0.5),
        "gsearch-like": gsearch_like(num_layers),
    }


LABELS = {"original": "original (HF, sdpa)", "keep-all": "compiled keep-all", "fastv": "FastV K=2 keep 25%",
          "pdrop": "PyramidDrop 4 stages x0.5", "gsearch-like": "G-Search-like 4 cuts",
          "masked-fastv": "FastV by masking (eager)"}
TORCH_COMPILED = "-compiled"  # suffix: the variant without it, run under torch.compile (inductor)
# Selectors whose inserted nodes the speed benchmark times (``--selectors``): each compiled at the FastV schedule.
SELECTORS = ("divprune", "dart", "cdpruner", "random-keep")


def build_variants(model, names: list[str] | None = None, spec: str = "llava") -> dict[str, Variant]:
    """Variants over ``model`` (a random LLaVA from :mod:`.presets`), in the order of ``names``."""
    layers = model.config.text_config.num_hidden_layers
    pruned = schedules(layers)
    names = names or ["original", "keep-all", "fastv", "pdrop", "gsearch-like", "masked-fastv"]
    out: dict[str, Variant] = {}
    for name in names:
        if name == "original":
            out[name] = Variant(name, model, Schedule.keep_all(layers), "original", LABELS[name])
        elif name == "keep-all":
            sched = Schedule.keep_all(layers)
            out[name] = Variant(name, tp.compile(model, spec, sched), sched, "compiled", LABELS[name])
        elif name in pruned:
            out[name] = Variant(name, tp.compile(model, spec, pruned[name]), pruned[name], "compiled", LABELS[name])
        elif name.endswith(TORCH_COMPILED):
            base = name[: -len(TORCH_COMPILED)]
            out[name] = _torch_compiled(build_variants(model, [base], spec)[base], name)
        elif name.startswith("masked-") and name[len("masked-"):] in pruned:
            sched = pruned[name[len("masked-"):]]
            baseline = MaskingBaseline(build_eager_twin(model), sched)
            out[name] = Variant(name, baseline, sched, "masked", LABELS.get(name, name))
        else:
            raise KeyError(f"unknown variant {name!r}")
    return out


def _torch_compiled(base: Variant, name: str) -> Variant:
    """``base`` under ``torch.compile`` (default inductor backend); the first call compiles, so time it apart."""
    import torch

    return Variant(name, torch.compile(base.model), base.schedule, "torch.compile",
                   f"{base.label} + torch.compile")


def selector_variants(model, selectors, spec: str = "llava") -> dict[str, Variant]:
    """The FastV schedule compiled with each of ``selectors`` (``compile(scorer=NAME)``), named ``fastv-NAME``:
    the same cut as ``fastv``, so its inserted nodes differ only by what the selector costs."""
    schedule = schedules(model.config.text_config.num_hidden_layers)["fastv"]
    return {f"fastv-{name}": Variant(f"fastv-{name}", tp.compile(model, spec, schedule, scorer=name), schedule,
                                     "compiled", f"{LABELS['fastv']}, selector {name}") for name in selectors}
