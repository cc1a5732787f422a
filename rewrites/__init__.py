"""torch.fx machinery: trace a Hugging Face text decoder with its layers as leaves, insert cuts, install."""

from .install import clone_path, make_language_model_forward, make_vision_hook
from .prune_pass import insert_cuts
from .selfcheck import SELF_CHECKS, run_probe_check, run_self_check
from .tracer import TracedLanguageModel, trace_language_model

__all__ = ["TracedLanguageModel", "trace_language_model", "insert_cuts", "clone_path",
           "make_language_model_forward", "make_vision_hook", "run_probe_check", "run_self_check", "SELF_CHECKS"]
