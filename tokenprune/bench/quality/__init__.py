"""Quality benchmark: accuracy against exact FLOPs for every pruning method on the reference model.

``python benchmarks/quality.py`` runs it on ``reference_model/checkpoint``; see docs/benchmarks/quality.md.
"""

from .plan import Entry, QualitySettings, plan
from .run import RowStore, run_quality
from .targets import check_targets

__all__ = ["Entry", "QualitySettings", "RowStore", "check_targets", "plan", "run_quality"]
