"""Typed settings of every search method and evaluation backend (docs/guides/search.md).

``search(model, spec, calibration, PSigmoidConfig(n_trials=40))``: a method is chosen by passing its config.
Configs are frozen pydantic models that refuse unknown and out-of-range settings when they are built, with a
message saying which setting, where, what was expected and what to pass instead. They serialise to plain JSON
(``config.model_dump(mode="json")``, with a ``method`` tag), so a saved :class:`~.result.SearchResult` records
the config it ran with and :func:`config_from_dict` rebuilds it.

Cross-cutting options -- the FLOPs ``budget``, the ``objective``, the evaluator or backend, the trials file,
progress -- are arguments of ``search`` itself, not of a config: one budget compares several methods.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from ..errors import ScheduleError, describe

DEFAULT_GRID = tuple(i / 20 for i in range(21))  # 0.00, 0.05, ..., 1.00
DEFAULT_K_RANGE = (0.05, 10.0)
DEFAULT_STARTUP_TRIALS = 10  # random proposals before TPE models the losses
DEFAULT_ETA = 0.003  # the VTW paper's threshold for LLaVA-1.5-7B

# Options of search() itself: named here so that a config given one of them says where it belongs.
SEARCH_OPTIONS = ("budget", "objective", "evaluator", "backend", "convention", "compile_kwargs", "trials",
                  "retry_failed", "quiet", "selectors")


def _as_ratios(value: Any) -> Any:
    """A Schedule (or a SearchResult's) as its keep ratios: configs hold plain data that serialises."""
    value = getattr(value, "schedule", value)
    return getattr(value, "keep_ratio", value)


def _is_schedule(value: tuple[float, ...]) -> tuple[float, ...]:
    from ..schedule import Schedule

    Schedule(value)  # non-increasing ratios in [0, 1], or the Schedule's own message
    return value


Ratios = Annotated[tuple[float, ...], BeforeValidator(_as_ratios), AfterValidator(_is_schedule)]


class _Settings(BaseModel):
    """Frozen, unknown keys refused, pydantic's errors turned into one tokenprune message per problem."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise ScheduleError(explain(err, type(self))) from None


class SearchConfig(_Settings):
    """Base of the method configs. ``method`` tags the serialised form; the class attributes say how the
    engine runs it: whether it spends a FLOPs ``budget``, its default objective, and the scorer its
    candidates are compiled with (``None``: the caller's)."""

    method: str
    needs_budget: ClassVar[bool] = False
    default_objective: ClassVar[str] = "kl"
    scorer: ClassVar[str | None] = None
    title: ClassVar[str] = ""

    def uses_budget(self) -> bool:
        return self.needs_budget


class GSearchConfig(SearchConfig):
    """G-Search: the cheapest non-increasing schedule whose objective stays within ``tolerance`` of the
    unpruned model's; each layer's ratio is the smallest admissible value of ``grid`` (bisection)."""

    method: Literal["g-search"] = "g-search"
    tolerance: float = Field(0.01, ge=0.0, allow_inf_nan=False,
                             description="a finite tolerance >= 0 on the objective (e.g. 0.01 nats of KL)")
    grid: tuple[float, ...] = Field(DEFAULT_GRID, description="candidate keep ratios in [0, 1], or a step count "
                                                              "n >= 1 (ratios 0, 1/n, ..., 1)")
    title: ClassVar[str] = "G-Search"

    @field_validator("grid", mode="before")
    @classmethod
    def _grid(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("a bool is not a grid")
        if isinstance(value, int):
            if value < 1:
                raise ValueError(f"a step count must be >= 1, got {value}")
            return tuple(i / value for i in range(value + 1))
        return value

    @field_validator("grid")
    @classmethod
    def _grid_range(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        for v in value:
            if math.isnan(v) or not 0.0 <= v <= 1.0:
                raise ValueError(f"grid value {v!r} is outside [0, 1]")
        return tuple(sorted(set(value) | {1.0}))  # the top candidate (keep all) is always admissible


class PSigmoidConfig(SearchConfig):
    """P-Sigmoid: Bayesian optimisation (seeded TPE) of the sigmoid ``(k, alpha)`` whose schedule, with its
    floor solved for the budget, scores best."""

    method: Literal["p-sigmoid"] = "p-sigmoid"
    n_trials: int = Field(30, ge=1, description="the number of (k, alpha) proposals, >= 1")
    seed: int = Field(0, description="an integer seed of the proposals")
    startup_trials: int = Field(DEFAULT_STARTUP_TRIALS, ge=0,
                                description="random proposals before TPE, >= 0 (not tied to n_trials, so a "
                                            "longer run with the same trials file continues the same sequence)")
    k_range: tuple[float, float] = Field(DEFAULT_K_RANGE, description="steepness range (low, high), 0 < low <= high")
    alpha_range: tuple[float, float] | None = Field(
        None, description="midpoint range (low, high), low <= high; default [0, L-1] narrowed to midpoints that "
                          "can meet the budget")
    warm_start: Ratios | None = Field(
        None, description="a Schedule or SearchResult (e.g. G-Search's) whose sigmoid fit is evaluated first")
    needs_budget: ClassVar[bool] = True
    title: ClassVar[str] = "P-Sigmoid"

    @field_validator("k_range", "alpha_range")
    @classmethod
    def _range(cls, value: tuple[float, float] | None, info) -> tuple[float, float] | None:
        if value is None:
            return value
        low, high = value
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise ValueError(f"({low!r}, {high!r}) is not a finite range with low <= high")
        if info.field_name == "k_range" and low <= 0:
            raise ValueError(f"the steepness must be positive, got low={low!r}")
        return value


class VTWConfig(SearchConfig):
    """VTW: the first layer from ``start_layer`` on whose withdrawal of every vision token keeps the objective
    within ``eta`` of the unpruned model's (mean KL at the last prompt token by default)."""

    method: Literal["vtw"] = "vtw"
    eta: float = Field(DEFAULT_ETA, ge=0.0, allow_inf_nan=False,
                       description="a finite threshold >= 0 (the paper: 0.003 for LLaVA-1.5-7B)")
    start_layer: int = Field(1, ge=1, description="the first layer tried, >= 1 (the paper starts at 5)")
    default_objective: ClassVar[str] = "kl_last"
    title: ClassVar[str] = "VTW"


class FastVConfig(SearchConfig):
    """FastV at a matched budget: from ``layer`` K on, the largest keep ratio that fits the budget."""

    method: Literal["fastv"] = "fastv"
    layer: int = Field(2, ge=1, description="the layer K from which tokens are dropped, >= 1 (FastV: 2)")
    needs_budget: ClassVar[bool] = True
    title: ClassVar[str] = "FastV"


class PyramidDropConfig(SearchConfig):
    """PyramidDrop at a matched budget: stages split at ``layers``, the largest decay that fits the budget."""

    method: Literal["pdrop"] = "pdrop"
    layers: tuple[int, ...] | None = Field(None, description="strictly increasing stage layers >= 1 (default: "
                                                             "quarters of the stack)")
    needs_budget: ClassVar[bool] = True
    title: ClassVar[str] = "PyramidDrop"

    @field_validator("layers")
    @classmethod
    def _increasing(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and (not value or value[0] < 1 or any(b <= a for a, b in zip(value, value[1:]))):
            raise ValueError(f"{list(value)} is not a non-empty, strictly increasing list of layers >= 1")
        return value


class RandomScorerConfig(SearchConfig):
    """The random-scorer baseline: ``schedule`` (default: FastV at the budget from ``layer``) evaluated with the
    seeded random scorer instead of the attention scorer, to isolate what the scorer contributes."""

    method: Literal["random"] = "random"
    schedule: Ratios | None = Field(None, description="a Schedule to evaluate, or none for FastV at the budget")
    layer: int = Field(2, ge=1, description="FastV's layer K when no schedule is given, >= 1")
    scorer: ClassVar[str | None] = "random"
    title: ClassVar[str] = "random scorer"

    def uses_budget(self) -> bool:
        return self.schedule is None


METHOD_CONFIGS: dict[str, type[SearchConfig]] = {
    cls.model_fields["method"].default: cls
    for cls in (GSearchConfig, PSigmoidConfig, VTWConfig, FastVConfig, PyramidDropConfig, RandomScorerConfig)}
METHODS = tuple(METHOD_CONFIGS)
_ALIASES = {"gsearch": "g-search", "g_search": "g-search", "greedy": "g-search", "psigmoid": "p-sigmoid",
            "p_sigmoid": "p-sigmoid", "sigmoid": "p-sigmoid", "pyramiddrop": "pdrop"}


def method_config(method: SearchConfig | str | None, where: str = "search(method=...)",
                  **settings: Any) -> SearchConfig:
    """``method`` as a config: a config is returned as is; a method name gives its config built from ``settings``."""
    if isinstance(method, SearchConfig):
        if settings:
            raise ScheduleError(describe(f"settings {sorted(settings)} next to a ready config", where,
                                         "either a config or a method name with settings"))
        return method
    if method is None:
        method = "g-search"
    if not isinstance(method, str):
        raise ScheduleError(describe(f"method of type {type(method).__name__}", where,
                                     f"a search config ({', '.join(c.__name__ for c in METHOD_CONFIGS.values())}) "
                                     "or a method name", "e.g. method=PSigmoidConfig(n_trials=40)"))
    key = method.lower()
    key = _ALIASES.get(key, key)
    if key not in METHOD_CONFIGS:
        near = difflib.get_close_matches(key, METHODS, n=1)
        raise ScheduleError(describe(f"unknown search method {method!r}", where, f"one of {METHODS}",
                                     f"did you mean {near[0]!r}?" if near else None))
    return METHOD_CONFIGS[key](**settings)


def config_from_dict(data: Any, where: str = "search config") -> SearchConfig:
    """Rebuild a config from its ``model_dump(mode="json")`` form (the ``method`` tag picks the class)."""
    if not isinstance(data, dict) or data.get("method") not in METHOD_CONFIGS:
        raise ScheduleError(describe(f"not a search config: {data!r}", where,
                                     f"a mapping whose 'method' is one of {METHODS}",
                                     "it is written by SearchResult.save; do not edit the 'method' key"))
    settings = {k: v for k, v in data.items() if k != "method"}
    return METHOD_CONFIGS[data["method"]](**settings)


def misplaced_setting(name: str, where: str) -> ScheduleError:
    """The error for a setting passed where it does not belong, naming where it does."""
    owners = [cls.__name__ for cls in METHOD_CONFIGS.values() if name in cls.model_fields and name != "method"]
    if name in SEARCH_OPTIONS:
        return ScheduleError(describe(f"{name!r} is not a method setting", where,
                                      f"{name}= as an argument of search() (or compile())",
                                      f"e.g. search(model, spec, calibration, PSigmoidConfig(), {name}=...)"))
    if owners:
        return ScheduleError(describe(f"{name!r} is a setting of {' and '.join(owners)}, not an option here", where,
                                      "it inside the method config", f"e.g. method={owners[0]}({name}=...)"))
    return ScheduleError(describe(f"unknown option {name!r}", where, f"one of {list(SEARCH_OPTIONS)} or a method "
                                  "config's setting", "see docs/guides/search.md"))


def explain(err: ValidationError, cls: type[BaseModel]) -> str:
    """One ``describe`` line per problem pydantic found: the setting, its value, what it should be."""
    lines = []
    for problem in err.errors():
        loc = [str(p) for p in problem["loc"]]
        name = loc[0] if loc else ""
        at = cls.__name__
        if problem["type"] == "extra_forbidden":
            fields = [f for f in cls.model_fields if f not in ("method", "kind")]
            lines.append(str(misplaced_setting(name, at)) if name in SEARCH_OPTIONS or _owned_elsewhere(name)
                         else describe(f"unknown setting {name!r}", at, f"one of {fields}", _near(name, fields)))
            continue
        field = cls.model_fields.get(name)
        value = problem.get("input")
        what = f"{name}={value!r}: {problem['msg'].removeprefix('Value error, ')}" if name else problem["msg"]
        lines.append(describe(what, at, field.description if field else None))
    return " | ".join(lines)


def _owned_elsewhere(name: str) -> bool:
    return any(name in cls.model_fields for cls in METHOD_CONFIGS.values())


def _near(name: str, fields: Sequence[str]) -> str | None:
    near = difflib.get_close_matches(name, fields, n=1)
    return f"did you mean {near[0]!r}?" if near else None


# ------------------------------------------------------------------ backends
class LocalBackend(_Settings):
    """Evaluate on the model in this process."""

    kind: Literal["local"] = "local"
    prefix_reuse: bool = Field(True, description="reuse the outputs of leading layers candidates share (exact)")


class RayBackend(_Settings):
    """Evaluate on ``workers`` Ray actors, each holding the model (docs/guides/distributed.md)."""

    kind: Literal["ray"] = "ray"
    workers: int = Field(2, ge=1, description="the number of actors, >= 1 (each holds a copy of the model)")
    resources: dict[str, float] | None = Field(None, description="Ray resources of each actor, e.g. {'num_gpus': 1} "
                                                                  "(default: half a CPU)")
    torch_threads: int | None = Field(1, ge=1, description="torch threads per actor (None: torch's default)")
    prefix_reuse: bool = Field(True, description="reuse the outputs of leading layers candidates share (exact)")


BACKENDS = {"local": LocalBackend, "ray": RayBackend}


def backend_config(backend: LocalBackend | RayBackend | str) -> LocalBackend | RayBackend:
    if isinstance(backend, (LocalBackend, RayBackend)):
        return backend
    if isinstance(backend, str) and backend in BACKENDS:
        return BACKENDS[backend]()
    raise ScheduleError(describe(f"unknown backend {backend!r}", "search(backend=...)",
                                 "'local', 'ray', LocalBackend(...) or RayBackend(workers=..., resources=...)"))

