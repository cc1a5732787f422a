"""tokenprune: layer-wise vision-token pruning for Hugging Face multimodal LLMs.

    import tokenprune as tp
    pruned = tp.compile(model, "auto", tp.Schedule.fastv(num_layers=32, layer=2, keep=0.5))
"""

from .api import compile, graph_of, last_merges, last_selection, schedule_of, scoring_key_sources, self_check_of
from .errors import (ScheduleError, SpecError, SpecMatchError, TokenPruneError, TraceError,
                     UnsupportedError)
from .flops import FlopsReport, prefill_flops
from .schedule import Schedule, keep_count
from .spec import ModelSpec, bundled_spec_names, load_spec, match_spec
from .saving import load_pruned, save_pruned  # noqa: F401  (tokenprune.yaml next to a checkpoint)
from . import search  # noqa: E402,F401  the package is callable: tp.search(model, spec, calibration, ...)

from .version import __version__  # noqa: E402,F401  (tp.__version__)

__all__ = [
    "compile", "last_selection", "last_merges", "graph_of", "schedule_of", "scoring_key_sources", "self_check_of", "Schedule",
    "keep_count", "prefill_flops",
    "FlopsReport", "ModelSpec", "load_spec", "match_spec", "bundled_spec_names", "TokenPruneError", "SpecError",
    "SpecMatchError", "ScheduleError", "TraceError", "UnsupportedError",
]
