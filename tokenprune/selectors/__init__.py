"""Selectors: which vision tokens survive a cut, as pure tensor functions.

``tokenprune.scoring`` registers selectors built on them for ``compile(scorer=NAME)`` at any cut of a schedule,
the cut before the first decoder layer (``keep_ratio[0] < 1``) included: the drop-selectors (``drop_selectors``),
the merging ``tome`` (``merge_selectors``) and the vision-encoder selectors (``vision_selectors``).

Pure, batched tensor functions with no model dependency. Common inputs: ``x`` (B, N, D) vision token features,
``valid`` (B, N) bool (False at padding slots), ``k`` (B,) long keep counts (``keep_counts(valid, ratio)`` gives
the project's ``ceil(r * N_b)``). Selectors return a :class:`Selection`, merging selectors a :class:`Merge`.
"""

from ._common import Merge, Selection, SelectorInputError, keep_counts
from .cdpruner import cdpruner, instruction_relevance
from .dart import dart
from .divprune import divprune
from .grid import grid_downsample, grid_pool, grid_pool_around
from .grid_marked import marked_count_fits, marked_grid_downsample, marked_grid_pool_around, split_tiled
from .random_keep import random_keep
from .tome import tome_merge, tome_merge_to
from .visionzip import default_contextual, visionzip

__all__ = ["Merge", "Selection", "SelectorInputError", "keep_counts", "cdpruner", "instruction_relevance", "dart",
           "divprune", "grid_downsample", "grid_pool", "grid_pool_around", "marked_count_fits", "marked_grid_downsample",
           "marked_grid_pool_around", "split_tiled", "random_keep", "tome_merge", "tome_merge_to",
           "visionzip",
           "default_contextual"]
