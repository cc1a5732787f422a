"""``torch.compile`` of a pruned model: resume tracing *inside* nested calls after a graph break.

Each cut's selection runs eagerly behind a graph break, deep inside the language-model call. By default dynamo
does not resume inside a nested call after a break: it ends the caller's graph before the whole call, so the
ops of the multimodal model just before the language model (LLaVA's ``masked_scatter`` of the image features)
become a graph of their own. With ``nested_graph_breaks`` dynamo ends the graph at the break itself and resumes
in the innermost frame; the original model's own breaks inside nested calls then cost a graph less too.

The flag is switched on only while dynamo traces the pruned model (``patch_dynamo_config`` is traceable) and,
in the compiled code, around each break; other compiled code keeps the default. It has to cover every frame
from the compiled root down to the breaks (switched on deeper, dynamo fails an internal assertion), hence it
wraps the top-level model's ``forward``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import torch

from .accelerate_hooks import _OLD_FORWARD, install_forward, is_hooked


def _nesting_available() -> bool:
    return hasattr(torch._dynamo, "patch_dynamo_config") and hasattr(torch._dynamo.config, "nested_graph_breaks")


def resuming_inside_calls(forward: Callable) -> Callable:
    """``forward`` that, when dynamo traces it, resumes inside nested calls after a graph break. Eager calls
    run ``forward`` untouched (entering the patch there would change dynamo's global config for every thread)."""
    nested = torch._dynamo.patch_dynamo_config(nested_graph_breaks=True)

    @functools.wraps(forward)
    def forward_resuming_inside_calls(*args, **kwargs):
        if not torch.compiler.is_compiling():
            return forward(*args, **kwargs)
        with nested:
            return forward(*args, **kwargs)

    # generate() reads the forward's parameters; dynamo must trace this frame, not unwrap past it.
    forward_resuming_inside_calls.__signature__ = inspect.signature(forward)
    del forward_resuming_inside_calls.__wrapped__
    return forward_resuming_inside_calls


def resume_inside_calls(model: torch.nn.Module) -> None:
    """Give the top-level compiled ``model`` a forward that ``torch.compile`` resumes inside (no-op on a torch
    without nested graph breaks). An accelerate hook on ``model`` stays outermost."""
    if not _nesting_available():
        return
    current = model.__dict__[_OLD_FORWARD] if is_hooked(model) else model.forward
    install_forward(model, resuming_inside_calls(current))
