"""Schedule search: G-Search, P-Sigmoid, VTW and matched-budget baselines (docs/guides/search.md).

``search(model, spec, calibration, PSigmoidConfig(n_trials=40), budget=0.4)`` returns a :class:`SearchResult`
whose ``schedule`` can be passed to ``tokenprune.compile``. Each method is chosen by its config class;
searches are resumable through a trials file and can evaluate on Ray workers (``backend="ray"``).
"""

import sys as _sys
import types as _types

from .budget import check_budget
from .configs import (
    DEFAULT_GRID,
    METHODS,
    FastVConfig,
    GSearchConfig,
    LocalBackend,
    PSigmoidConfig,
    PyramidDropConfig,
    RandomScorerConfig,
    RayBackend,
    SearchConfig,
    VTWConfig,
    config_from_dict,
    method_config,
)
from .engine import build_evaluator, run_search, search
from .evaluator import Evaluator, FunctionEvaluator
from .greedy import g_search
from .result import SearchResult, Trial, load_schedule
from .sigmoid import fit_sigmoid, p_sigmoid, sigmoid_for_budget
from .trials import TrialStore

__all__ = [
    "DEFAULT_GRID",
    "METHODS",
    "Evaluator",
    "FastVConfig",
    "FunctionEvaluator",
    "GSearchConfig",
    "LocalBackend",
    "PSigmoidConfig",
    "PyramidDropConfig",
    "RandomScorerConfig",
    "RayBackend",
    "SearchConfig",
    "SearchResult",
    "Trial",
    "TrialStore",
    "VTWConfig",
    "build_evaluator",
    "check_budget",
    "config_from_dict",
    "fit_sigmoid",
    "g_search",
    "load_schedule",
    "method_config",
    "p_sigmoid",
    "run_search",
    "search",
    "sigmoid_for_budget",
]


class _CallableModule(_types.ModuleType):
    """``tokenprune.search`` is both this package and the verb: ``tp.search(model, spec, calibration, ...)``.

    The public API calls ``tp.search(...)`` while the engine lives in the package of the same name;
    making the package callable keeps both ``tp.search(...)`` and ``import tokenprune.search`` working without
    rebinding the package attribute to a function.
    """

    def __call__(self, *args, **kwargs):
        return search(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule


def __getattr__(name: str):
    # Model-facing pieces import torch/transformers; load them on first use.
    if name == "CalibrationSet":
        from .calibration import CalibrationSet
        return CalibrationSet
    if name in ("ModelEvaluator",):
        from .model_eval import ModelEvaluator
        return ModelEvaluator
    if name in ("OBJECTIVES", "Objective", "get_objective"):
        from . import objectives
        return getattr(objectives, name)
    raise AttributeError(f"module 'tokenprune.search' has no attribute {name!r}")
