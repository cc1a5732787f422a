"""Seeded TPE proposals in rounds (hyperopt), for searchers that evaluate several points at once.

hyperopt's ``fmin`` owns its loop and evaluates one point at a time. :class:`TPEProposer` makes the same
calls as ``fmin`` in the same order -- one ``rstate.integers`` draw per ``tpe.suggest`` call, warm-start
points evaluated first -- but lets the caller ask for a round of ``width`` points, evaluate them together (on
Ray workers, say) and report their losses. With ``width=1`` the proposals are exactly ``fmin``'s for the same
seed; with a larger width they depend only on the seed and the width (points of a round are proposed while
the others of the round are pending, which TPE counts as not yet good), never on which worker finished first.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import numpy as np


class TPEProposer:
    """Proposals of ``{name: value}`` points over ``ranges`` (``"log"`` or ``"linear"`` scale per name) and
    ``choices`` (categoricals, ``hp.choice``: the value is one of the listed options)."""

    def __init__(self, ranges: dict[str, tuple[float, float, str]], *, seed: int, startup: int,
                 first: list[dict[str, Any]] | None = None, choices: dict[str, list[str]] | None = None) -> None:
        from hyperopt import Domain, Trials, hp, tpe
        from hyperopt.fmin import generate_trials_to_calculate

        space = {name: (hp.loguniform(name, math.log(lo), math.log(hi)) if scale == "log"
                        else hp.uniform(name, lo, hi)) for name, (lo, hi, scale) in ranges.items()}
        self._choices = {name: list(options) for name, options in (choices or {}).items()}
        space.update({name: hp.choice(name, options) for name, options in self._choices.items()})
        # hyperopt records a categorical by the index of its option
        first = [{name: (self._choices[name].index(value) if name in self._choices else value)
                  for name, value in point.items()} for point in first or []]
        self._domain = Domain(lambda point: 0.0, space)
        self._algo = partial(tpe.suggest, n_startup_jobs=int(startup))
        self._trials = generate_trials_to_calculate(first) if first else Trials()
        self._rstate = np.random.default_rng(seed)
        self._round: list[dict[str, Any]] = []

    @property
    def count(self) -> int:
        """Points proposed so far (warm-start points included)."""
        return len(self._trials._dynamic_trials)

    def ask(self, width: int, limit: int) -> list[dict[str, Any]]:
        """The next round: pending warm-start points first, then TPE's, at most ``width`` and ``limit`` in all."""
        from hyperopt import JOB_STATE_NEW
        from hyperopt.base import spec_from_misc

        trials = self._trials
        docs = [d for d in trials._dynamic_trials if d["state"] == JOB_STATE_NEW][:width]
        while len(docs) < width and self.count < limit:
            new_ids = trials.new_trial_ids(1)
            trials.refresh()
            proposed = self._algo(new_ids, self._domain, trials, self._rstate.integers(2**31 - 1))
            trials.insert_trial_docs(proposed)
            trials.refresh()
            docs.extend(proposed)
        self._round = docs
        return [{name: (self._choices[name][int(value)] if name in self._choices else float(value))
                 for name, value in spec_from_misc(d["misc"]).items()} for d in docs]

    def tell(self, losses: list[float | None]) -> None:
        """Losses of the last round, in order (``None``: the point failed or was infeasible)."""
        from hyperopt import JOB_STATE_DONE, STATUS_FAIL, STATUS_OK

        assert len(losses) == len(self._round)
        for doc, loss in zip(self._round, losses):
            doc["state"] = JOB_STATE_DONE
            doc["result"] = {"status": STATUS_FAIL} if loss is None else {"status": STATUS_OK, "loss": float(loss)}
        self._round = []
        self._trials.refresh()
