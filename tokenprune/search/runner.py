"""Runs trials for a searcher: reuse finished ones, record new ones durably, show progress.

Every searcher asks a :class:`TrialRunner` (never the evaluator directly) for objectives, so recording,
resuming, failure handling and the progress bar behave the same for every method and backend.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from ..schedule import Schedule
from .evaluator import Evaluator
from .result import FAILED, INFEASIBLE, OK, Trial, schedule_key
from .trials import TrialStore


class TrialRunner:
    """Evaluates schedules through a :class:`TrialStore` with a tqdm bar (``quiet=True`` hides it)."""

    def __init__(self, evaluator: Evaluator, store: TrialStore, method: str, *, total: int | None = None,
                 quiet: bool = False, retry_failed: bool = False) -> None:
        self.evaluator = evaluator
        self.store = store
        self.method = method
        self.retry_failed = retry_failed
        # The selector evaluations run with unless a call names one (None: the evaluator's own); a search over
        # several selectors sets it while it searches for each one.
        self.selector: str | None = None
        self.used: list[Trial] = []  # trials this search asked for, in order (reused ones included)
        self.counts = {"evaluated": 0, "reused": 0, "failed": 0, "infeasible": 0}
        self._passes_mark = 0
        self._bar = tqdm(total=total, desc=method, unit="trial", disable=quiet, leave=not quiet,
                         dynamic_ncols=True, delay=0.2)

    # ----------------------------------------------------------- evaluation
    def evaluate(self, schedule: Schedule, params: dict[str, Any], split: str = "search",
                 selector: str | None = None) -> Trial:
        return self.evaluate_many([(schedule, params)], split, None if selector is None else [selector])[0]

    def evaluate_many(self, items: Sequence[tuple[Schedule, dict[str, Any]]], split: str = "search",
                      selectors: Sequence[str | None] | None = None) -> list[Trial]:
        """Trials for ``(schedule, params)`` pairs; finished ones are reused, the rest run (maybe in parallel).

        ``selectors``: the selector of each item (default: :attr:`selector` for all). The keep-all schedule
        runs no selector, so it is evaluated (and recorded) once for all of them.
        """
        chosen = [self.selector] * len(items) if selectors is None else list(selectors)
        chosen = [None if schedule.is_keep_all() else name for (schedule, _), name in zip(items, chosen)]
        results: list[Trial | None] = [None] * len(items)
        todo: list[int] = []
        pending: dict[str, int] = {}
        for i, (schedule, _) in enumerate(items):
            key = schedule_key(schedule.keep_ratio, split, chosen[i])
            found = self.store.get(key)
            if found is not None and found.status == FAILED and self.retry_failed:
                self.store.forget(key)
                found = None
            if found is not None:
                results[i] = found
                self.counts["reused"] += 1
                self._tick(found)
            elif key in pending:  # the same schedule twice in one batch: evaluate once
                continue
            else:
                pending[key] = i
                todo.append(i)
        if todo:
            starts = {j: time.perf_counter() for j in range(len(todo))}
            self._passes_mark = self.evaluator.stats().get("layer_passes", 0)

            def record(j: int, value: float | BaseException) -> None:
                i = todo[j]
                schedule, params = items[i]
                results[i] = self._record(schedule, params, split, value, time.perf_counter() - starts[j],
                                          chosen[i])

            names = [chosen[i] for i in todo]
            extra = {} if all(name is None for name in names) else {"selectors": names}
            self.evaluator.evaluate_many([items[i][0] for i in todo], split, on_result=record, **extra)
        for i, (schedule, _) in enumerate(items):  # fill duplicates within the batch
            if results[i] is None:
                results[i] = self.store.get(schedule_key(schedule.keep_ratio, split, chosen[i]))
        out = [r for r in results if r is not None]
        assert len(out) == len(items)
        self.used.extend(out)
        return out

    def record_infeasible(self, params: dict[str, Any], reason: str) -> Trial:
        """Record a parameter point that cannot meet the budget (no schedule, nothing evaluated)."""
        trial = Trial(number=self.store.next_number(), method=self.method, params=dict(params), keep_ratio=None,
                      status=INFEASIBLE, error=reason)
        found = self.store.get(trial.key)
        if found is None:
            self.store.add(trial)
            self.counts["infeasible"] += 1
        else:
            trial = found
            self.counts["reused"] += 1
        self.used.append(trial)
        self._tick(trial)
        return trial

    def _record(self, schedule: Schedule, params: dict[str, Any], split: str, value: float | BaseException,
                seconds: float, selector: str | None) -> Trial:
        passes_now = self.evaluator.stats().get("layer_passes", 0)
        trial = Trial(number=self.store.next_number(), method=self.method, params=dict(params),
                      keep_ratio=list(schedule.keep_ratio), split=split,
                      flops_fraction=self.evaluator.flops_fraction(schedule), seconds=round(seconds, 6),
                      selector=selector)
        if isinstance(value, BaseException):
            trial.status = FAILED
            trial.error = f"{type(value).__name__}: {value}"
            self.counts["failed"] += 1
        else:
            trial.status = OK
            trial.objective = float(value)
            self.counts["evaluated"] += 1
        trial.layer_passes = int(passes_now - self._passes_mark)  # decoder-layer passes since the last record
        self._passes_mark = passes_now
        self.store.add(trial)
        self._tick(trial)
        return trial

    # -------------------------------------------------------------- progress
    def set_best(self, objective: float | None, flops_fraction: float | None) -> None:
        post = {}
        if objective is not None:
            post["best"] = f"{objective:.4g}"
        if flops_fraction is not None:
            post["flops"] = f"{flops_fraction:.3f}"
        self._bar.set_postfix(post, refresh=False)

    def set_total(self, total: int) -> None:
        self._bar.total = max(total, self._bar.n)
        self._bar.refresh()

    def expect_more(self, count: int) -> None:
        """Finish the search's bar and start one for ``count`` reference evaluations (unpruned baseline,
        held-out split): counting them in the search's bar would make it overshoot the trials asked for."""
        self.set_total(self._bar.n)
        self._bar.close()
        disable, leave = self._bar.disable, self._bar.leave
        self._bar = tqdm(total=count, desc=f"{self.method} reference evaluations", unit="run", disable=disable,
                         leave=leave, dynamic_ncols=True, delay=0.2)

    def _tick(self, trial: Trial) -> None:
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> TrialRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
