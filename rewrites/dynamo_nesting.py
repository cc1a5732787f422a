"""``torch.compile`` of a pruned model: resume tracing *inside* nested calls after a graph break.

Each cut's selection runs eagerly behind a graph break, deep inside the language-model call. By default dynamo
does not resume inside a nested call after a break: it ends the caller's graph before the whole call, so the
ops of the multimodal model just before the language model (e.g. a ``masked_scatter`` of the image features)
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
from .output_flags import records_outputs, recording_chain


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


def resume_inside_calls(pruned: torch.nn.Module, original: torch.nn.Module, language_model_path: str) -> None:
    """Give the top-level ``pruned`` model a forward that ``torch.compile`` resumes inside (nothing on a torch
    without nested graph breaks). An accelerate hook on ``pruned`` stays outermost."""
    if not _nesting_available():
        return
    _install_encoder_capture_hooks(original, language_model_path)
    current = pruned.__dict__[_OLD_FORWARD] if is_hooked(pruned) else pruned.forward
    install_forward(pruned, resuming_inside_calls(current))


def _install_encoder_capture_hooks(original: torch.nn.Module, language_model_path: str) -> None:
    """Install transformers' output-capture hooks on the recording models outside the language model (the vision
    tower), which the pruned model shares with ``original``.

    transformers installs them lazily, at the first call that asks a model for its outputs (image
    features always ask the vision tower for hidden states). Traced with nested graph breaks, that installation
    makes dynamo fail internally (a signature bound after the module's hook dicts changed). Installed now,
    outside any trace, they are what the first eager call would install; the language model's are left to
    :func:`.output_flags.defer_output_capture` (installed only when an output flag asks for them).
    """
    from transformers import PreTrainedModel
    from transformers.utils.output_capturing import maybe_install_capturing_hooks

    language_model = original.get_submodule(language_model_path) if language_model_path else original
    skipped = {id(m) for m in (*recording_chain(original, language_model_path), *language_model.modules())}
    for module in original.modules():
        if isinstance(module, PreTrainedModel) and id(module) not in skipped and records_outputs(type(module).forward):
            maybe_install_capturing_hooks(module)
