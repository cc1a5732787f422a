"""G-Search (scenario I): prune as much as possible while the objective stays within a tolerance.

tokenprune's definition (docs/guides/search.md, "tokenprune's definitions"):

1. ``base`` = objective of the unpruned schedule on the search split.
2. For ``l = 1 .. L-1`` shallow to deep, with ``r[0..l-1]`` fixed, find the smallest grid value ``c <= r[l-1]``
   such that the schedule ``(r[0..l-1], c, c, ..., c)`` (deeper layers provisionally at ``c``) is within the
   tolerance of ``base``; fix ``r[l] = c``.
3. The smallest admissible ``c`` is found by bisection over the grid. The top candidate ``c = r[l-1]`` is
   the schedule accepted at step ``l-1`` (``keep-all`` at step 1), so it is known to be admissible and is
   never re-evaluated. The value fixed at each step has itself been evaluated and found admissible (it is
   checked, not inferred from monotonicity), so the final schedule -- whose tail is empty at the last step --
   is always within tolerance on the search split. When a round shows a non-monotone response (an
   inadmissible candidate above an admissible one) it is noted in the result.
4. With an evaluator that runs ``W > 1`` evaluations at once (Ray), each round evaluates ``W`` evenly spaced
   points of the open interval instead of its midpoint ("W-section"); for a monotone objective this finds the
   same value as bisection in fewer rounds.

The result is non-increasing by construction; every evaluation is a recorded trial.
"""

from __future__ import annotations

import math

from ..errors import TokenPruneError, describe
from ..schedule import Schedule
from .configs import GSearchConfig
from .result import Outcome
from .runner import TrialRunner


def g_search(runner: TrialRunner, config: GSearchConfig) -> Outcome:
    """Run G-Search through ``runner`` (see the module docstring for the definition)."""
    evaluator = runner.evaluator
    tolerance, values = config.tolerance, config.grid
    num_layers = evaluator.num_layers
    width = max(1, int(evaluator.concurrency))
    runner.set_total(1 + (num_layers - 1) * max(1, math.ceil(math.log2(len(values)) / math.log2(width + 1))))

    base_trial = runner.evaluate(Schedule.keep_all(num_layers), {"layer": 0, "candidate": 1.0, "role": "base"})
    if not base_trial.ok:
        raise TokenPruneError(describe(f"the unpruned model could not be evaluated: {base_trial.error}",
                                       "g-search base evaluation", "a finite objective for the keep-all schedule",
                                       "fix the objective or the calibration data"))
    base = base_trial.objective
    assert base is not None
    ratios = [1.0] * num_layers
    current = base  # objective of the accepted schedule so far
    notes: list[str] = []
    runner.set_best(current, 1.0)

    for layer in range(1, num_layers):
        top = ratios[layer - 1]
        candidates = sorted({c for c in values if c <= top} | {top})
        if len(candidates) == 1:  # nothing left below (e.g. already at 0): the tail stays at top
            continue
        evaluator.prefix_hint(Schedule(ratios[:layer] + [top] * (num_layers - layer)), upto=layer - 1)
        lo, hi = -1, len(candidates) - 1  # invariant: candidates[hi] admissible, candidates[lo] not (or -1)
        best_value = current
        while hi - lo > 1:
            points = _interior_points(lo, hi, width)
            items = [(_provisional(ratios, layer, candidates[p]),
                      {"layer": layer, "candidate": candidates[p]}) for p in points]
            trials = runner.evaluate_many(items)
            admissible = {p: t.ok and evaluator.within(t.objective, base, tolerance) for p, t in zip(points, trials)}
            new_hi = min((p for p in points if admissible[p]), default=hi)
            if any(not admissible[p] for p in points if p > new_hi):
                bad = [candidates[p] for p in points if p > new_hi and not admissible[p]]
                notes.append(f"layer {layer}: non-monotone response (admissible at {candidates[new_hi]:g}, "
                             f"not at {bad}); kept the smallest value checked admissible")
            if new_hi != hi:
                best_value = next(t.objective for p, t in zip(points, trials) if p == new_hi)
            lo = max([p for p in points if not admissible[p] and p < new_hi] + [lo])
            hi = new_hi
        chosen = candidates[hi]
        if chosen != top:
            current = best_value
        ratios[layer:] = [chosen] * (num_layers - layer)
        runner.set_best(current, evaluator.flops_fraction(Schedule(ratios)))
    evaluator.prefix_hint(None)
    schedule = Schedule(ratios, name=f"g-search(tolerance={tolerance:g})")
    return Outcome(schedule=schedule, objective=current, base=base,
                   params={"tolerance": tolerance, "grid": list(values)}, notes=notes)


def _provisional(ratios: list[float], layer: int, value: float) -> Schedule:
    """``(r[0..layer-1], value, value, ...)``: the candidate with deeper layers provisionally at ``value``."""
    return Schedule(ratios[:layer] + [value] * (len(ratios) - layer))


def _interior_points(lo: int, hi: int, width: int) -> list[int]:
    """Up to ``width`` evenly spaced indices strictly between ``lo`` and ``hi`` (the midpoint when width=1)."""
    if width == 1:
        return [(lo + hi) // 2]
    inner = hi - lo - 1
    if inner <= width:
        return list(range(lo + 1, hi))
    return sorted({lo + round((i + 1) * (hi - lo) / (width + 1)) for i in range(width)})
