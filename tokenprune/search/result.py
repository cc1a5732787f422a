"""Records of a search: one :class:`Trial` per evaluated schedule, one :class:`SearchResult` per search.

Both are plain data that round-trip through JSON (the trials file, see :mod:`.trials`) and YAML/JSON files
(:meth:`SearchResult.save`); a result records the method config it ran with and loads it back. A saved
result's ``schedule`` is an ordinary :class:`~tokenprune.schedule.Schedule`
that ``tokenprune.compile`` accepts.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ScheduleError, TokenPruneError, describe
from ..schedule import Schedule
from .configs import SearchConfig, config_from_dict

OK, FAILED, INFEASIBLE = "ok", "failed", "infeasible"
STATUSES = (OK, FAILED, INFEASIBLE)


def schedule_key(keep_ratio, split: str = "search", selector: str | None = None) -> str:
    """The identity of one evaluation: the split, the selector when a search tries several (``None``: the
    evaluator's own) and the exact keep ratios (repr-precision floats)."""
    ratios = ",".join(repr(float(r)) for r in keep_ratio)
    return split + ":" + ("" if selector is None else f"selector={selector}:") + ratios


@dataclass
class Trial:
    """One evaluation of one schedule on one calibration split (or a (k, alpha) found infeasible)."""

    number: int
    method: str
    params: dict[str, Any]
    keep_ratio: list[float] | None
    split: str = "search"
    status: str = OK
    objective: float | None = None
    flops_fraction: float | None = None
    error: str | None = None
    seconds: float = 0.0
    layer_passes: int = 0
    selector: str | None = None  # set when the search tried several selectors (None: the evaluator's own)

    @property
    def key(self) -> str:
        if self.keep_ratio is None:  # infeasible parameter points have no schedule
            return f"{self.split}:params:" + json.dumps(self.params, sort_keys=True)
        return schedule_key(self.keep_ratio, self.split, self.selector)

    @property
    def schedule(self) -> Schedule | None:
        return None if self.keep_ratio is None else Schedule(self.keep_ratio, name=f"trial-{self.number}")

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["selector"] is None:  # trials of single-selector searches are written as they always were
            del data["selector"]
        data["key"] = self.key
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trial:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        trial = cls(**fields)
        if trial.status not in STATUSES:
            raise TokenPruneError(describe(f"unknown trial status {trial.status!r}", f"trial {trial.number}",
                                           f"one of {STATUSES}", "the trials file may be corrupt"))
        return trial


@dataclass
class SearchResult:
    """The outcome of a search: the best schedule, every trial and the objective on both splits."""

    method: str
    schedule: Schedule
    objective_name: str
    objective_mode: str  # "min" or "max"
    objective: dict[str, float | None]  # {"search": ..., "heldout": ...} of the best schedule
    baseline: dict[str, float | None]  # the same for the unpruned model
    flops_fraction: float
    config: SearchConfig | None = None  # the method's settings (None in results saved before configs existed)
    trials: list[Trial] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # The selector the schedule was found with and is meant to be compiled with (compile(scorer=selector));
    # None when the search ran on a user evaluator without selectors.
    selector: str | None = None
    # When several selectors were tried: each one's best {"objective", "flops_fraction", "keep_ratio"}.
    selector_results: dict[str, dict[str, Any]] | None = None

    # ------------------------------------------------------------- summaries
    @property
    def ok_trials(self) -> list[Trial]:
        return [t for t in self.trials if t.ok]

    def summary(self) -> str:
        obj = self.objective
        return (f"{self.method}: FLOPs fraction {self.flops_fraction:.4f}, {self.objective_name} "
                f"search={_fmt(obj.get('search'))} heldout={_fmt(obj.get('heldout'))} "
                f"(unpruned {_fmt(self.baseline.get('search'))} / {_fmt(self.baseline.get('heldout'))}), "
                f"{self._trial_counts()}; schedule {self.schedule!r}{self._selector_text()}")

    def _selector_text(self) -> str:
        if self.selector is None or not self.selector_results:  # one selector: as it always read
            return ""
        tried = ", ".join(f"{name} {_fmt(best.get('objective'))} at FLOPs {_fmt(best.get('flops_fraction'))}"
                          for name, best in self.selector_results.items())
        return f"; selector {self.selector} won (each selector's best: {tried})"

    def _trial_counts(self) -> str:
        """Search trials apart from the reference evaluations (unpruned baseline, best on held-out data)."""
        references = sum(1 for t in self.trials if (t.params or {}).get("role") in ("base", "best"))
        text = f"{len(self.trials) - references} search trials"
        return text + (f" + {references} reference evaluations (unpruned, held-out)" if references else "")

    # ------------------------------------------------------------- serialise
    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "schedule": self.schedule.to_dict(),
            "objective_name": self.objective_name,
            "objective_mode": self.objective_mode,
            "objective": dict(self.objective),
            "baseline": dict(self.baseline),
            "flops_fraction": self.flops_fraction,
            "config": None if self.config is None else self.config.model_dump(mode="json"),
            "settings": _jsonable(self.settings),
            "stats": _jsonable(self.stats),
            "notes": list(self.notes),
            **({} if self.selector is None else {"selector": self.selector}),
            **({} if self.selector_results is None else {"selector_results": _jsonable(self.selector_results)}),
            "trials": [t.to_dict() for t in self.trials],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchResult:
        try:
            return cls(
                method=data["method"],
                schedule=Schedule.from_dict(data["schedule"]),
                objective_name=data["objective_name"],
                objective_mode=data["objective_mode"],
                objective=dict(data["objective"]),
                baseline=dict(data["baseline"]),
                flops_fraction=float(data["flops_fraction"]),
                config=None if data.get("config") is None else config_from_dict(data["config"],
                                                                                  "SearchResult.from_dict: config"),
                trials=[Trial.from_dict({k: v for k, v in t.items() if k != "key"}) for t in data.get("trials", [])],
                settings=dict(data.get("settings", {})),
                stats=dict(data.get("stats", {})),
                notes=list(data.get("notes", [])),
                selector=data.get("selector"),
                selector_results=data.get("selector_results"),
            )
        except KeyError as err:
            raise TokenPruneError(describe(f"search result is missing key {err.args[0]!r}", "SearchResult.from_dict",
                                           "a mapping written by SearchResult.save")) from None

    def save(self, path: str | Path) -> Path:
        """Write the result as YAML (``.yaml``/``.yml``) or JSON (anything else)."""
        path = Path(path)
        data = self.to_dict()
        if path.suffix in (".yaml", ".yml"):
            path.write_text(yaml.safe_dump(data, sort_keys=False))
        else:
            path.write_text(json.dumps(data, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> SearchResult:
        path = Path(path)
        if not path.is_file():
            raise TokenPruneError(describe(f"search result file {str(path)!r} not found", "SearchResult.load",
                                           "a file written by SearchResult.save"))
        text = path.read_text()
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
        return cls.from_dict(data)


@dataclass
class Outcome:
    """What a searcher found (the engine adds held-out objectives and builds the SearchResult)."""

    schedule: Schedule
    objective: float | None
    base: float | None
    params: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    selector: str | None = None  # the selector the schedule was found with, when the searcher chose one
    selector_results: dict[str, dict[str, Any]] | None = None  # each selector's best, when several were tried


def load_schedule(path: str | Path) -> Schedule:
    """The schedule of a saved :class:`SearchResult` or of a plain saved schedule (YAML/JSON)."""
    path = Path(path)
    if not path.is_file():
        raise ScheduleError(describe(f"schedule file {str(path)!r} not found", "load_schedule", "an existing file"))
    text = path.read_text()
    data = yaml.safe_load(text)  # JSON is YAML
    if isinstance(data, dict) and "schedule" in data and "method" in data:
        data = data["schedule"]
    return Schedule.from_dict(data)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)
