"""A mini conformance check for one model and spec (``tokenprune validate``, the docs' support table).

It is a small, installed cousin of the test suite's conformance tests:

1. ``compile`` with a keep-all schedule (this runs the probe self-check) and compare the logits with the
   original model's: they must be bit-identical;
2. ``compile`` with a 2-cut schedule and compare the pruned logits with a *masking reference*: the original
   model, with the dropped vision tokens masked out of the attention of every later layer. Dropping with
   original positions equals masking, so the two agree to float tolerance.

The reference needs eager attention (it edits the 4-D attention mask each decoder layer receives).
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from tokenprune.errors import TokenPruneError, UnsupportedError, describe
from tokenprune.schedule import Schedule
from tokenprune.spec import ModelSpec, resolve_module


@dataclass
class CheckResult:
    """One named check: passed or not, with a one-line detail."""

    name: str
    passed: bool
    detail: str = ""
    seconds: float = 0.0


@dataclass
class ConformanceReport:
    spec: str
    checks: list[CheckResult] = field(default_factory=list)
    pruned_model: object = field(default=None, repr=False)  # the 2-cut compiled model, for inspection

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def lines(self) -> list[str]:
        return [f"{'PASS' if c.passed else 'FAIL'}  {c.name}: {c.detail}" for c in self.checks]


def two_cut_schedule(num_layers: int, first_cut: int = 1) -> Schedule:
    """Cuts before layers ``first_cut`` and ``first_cut + 1`` (keep 1/2, then 1/4) when the stack is deep
    enough, else one cut. ``first_cut`` is the spec's ``test_model.first_cut`` (families that add per-token
    features in early layers refuse shallower cuts)."""
    if num_layers >= first_cut + 2:
        return Schedule([1.0] * first_cut + [0.5] + [0.25] * (num_layers - first_cut - 1), name="two-cut")
    if num_layers >= first_cut + 1:
        return Schedule([1.0] * first_cut + [0.5], name="one-cut")
    raise UnsupportedError(describe("a 1-layer language model has nowhere to cut", "two_cut_schedule",
                                    "at least 2 decoder layers"))


def decoder_layers(model, spec: ModelSpec):
    lm = resolve_module(model, spec.language_model, f"spec {spec.name!r}: language_model")
    return resolve_module(lm, spec.decoder_layers, f"spec {spec.name!r}: decoder_layers")


def run_mini_conformance(model, spec: ModelSpec, inputs: dict, *, schedule: Schedule | None = None,
                         atol: float = 1e-4, progress: Callable[[str], None] | None = None) -> ConformanceReport:
    """Keep-all exactness and pruned-vs-masking-reference on one batch of ``inputs`` (an eager model)."""
    import tokenprune as tp

    report = ConformanceReport(spec.name)
    layers = decoder_layers(model, spec)
    first = spec.test_model.first_cut if spec.test_model is not None else 1
    schedule = schedule or two_cut_schedule(len(layers), first)
    note = progress or (lambda _msg: None)

    note("original forward")
    with torch.no_grad():
        reference = model(**inputs).logits

    note("keep-all compile + self-check")
    report.checks.append(_timed("keep-all is bit-exact", lambda: _keep_all(tp, model, spec, inputs, reference,
                                                                           len(layers))))
    note(f"pruned compile ({schedule.name})")
    report.checks.append(_timed(f"pruned matches masking reference ({schedule.name}, cuts {list(schedule.cuts)})",
                                lambda: _pruned(tp, model, spec, inputs, schedule, layers, atol, report)))
    return report


def _timed(name: str, fn: Callable[[], tuple[bool, str]]) -> CheckResult:
    start = time.perf_counter()
    try:
        passed, detail = fn()
    except TokenPruneError as err:
        passed, detail = False, f"{type(err).__name__}: {err}"
    return CheckResult(name, passed, detail, time.perf_counter() - start)


def _keep_all(tp, model, spec, inputs, reference, num_layers) -> tuple[bool, str]:
    compiled = tp.compile(model, spec, Schedule.keep_all(num_layers))  # raises if the self-check fails
    with torch.no_grad():
        logits = compiled(**inputs).logits
    same = torch.equal(logits, reference)
    return same, "self-check passed; logits torch.equal to the original" if same else \
        f"logits differ by up to {(logits - reference).abs().max().item():.3g}"


def _pruned(tp, model, spec, inputs, schedule, layers, atol, report) -> tuple[bool, str]:
    compiled = tp.compile(model, spec, schedule)
    report.pruned_model = compiled
    with torch.no_grad():
        pruned = compiled(**inputs).logits
    selection = tp.last_selection(compiled)
    vision = _vision_mask(model, spec, inputs)
    if not bool(vision.any()):
        return False, "the inputs carry no vision tokens"
    dropped = dropped_per_layer(vision, selection, len(layers))
    with masked(layers, dropped), torch.no_grad():
        reference = model(**inputs).logits
    worst = 0.0
    for b in range(vision.shape[0]):
        keep = kept_positions(vision, selection, b)
        if pruned.shape[1] < len(keep):
            return False, f"pruned logits have {pruned.shape[1]} positions, the reference keeps {len(keep)}"
        got_b = pruned[b, pruned.shape[1] - len(keep):]  # (n_kept, V): right-aligned (left padding)
        ref_b = reference[b, keep]
        mask = inputs.get("attention_mask")
        real = mask[b, keep].bool() if mask is not None else torch.ones(len(keep), dtype=torch.bool)
        if bool(real.any()):  # padding rows attend to nothing: their logits are meaningless
            worst = max(worst, (got_b[real].float() - ref_b[real].float()).abs().max().item())
    kept = {layer: int(sel[0].numel()) for layer, sel in selection.items()}
    ok = worst <= atol
    return ok, f"max |diff| {worst:.2e} (tolerance {atol:g}); kept vision tokens of sample 0 per cut {kept}"


def _vision_mask(model, spec: ModelSpec, inputs: dict) -> torch.Tensor:
    """(B, S) bool: the vision tokens of ``inputs``, by the spec's locator or its token ids."""
    if spec.vision_tokens.locator:
        from tokenprune.registry import lookup

        base = resolve_module(model, spec.multimodal_model, "multimodal_model") if spec.multimodal_model else model
        return lookup("locator", spec.vision_tokens.locator)(base, (), inputs)
    return torch.isin(inputs["input_ids"], torch.tensor(spec.vision_token_ids(model.config)))


def dropped_per_layer(vision: torch.Tensor, selection: dict[int, list[torch.Tensor]], num_layers: int):
    """(B, S) bool per layer: prompt positions dropped before that layer."""
    bsz, length = vision.shape
    out = []
    for layer in range(num_layers):
        cuts = [c for c in selection if c <= layer]
        drop = torch.zeros(bsz, length, dtype=torch.bool)
        if cuts:
            for b in range(bsz):
                keep = torch.zeros(length, dtype=torch.bool)
                keep[selection[max(cuts)][b]] = True
                drop[b] = vision[b] & ~keep
        out.append(drop)
    return out


def kept_positions(vision: torch.Tensor, selection, b: int) -> torch.Tensor:
    """Prompt positions of sample ``b`` present after the last cut (text, padding, kept vision), sorted."""
    present = ~vision[b].clone()
    if selection:
        present[selection[max(selection)][b]] = True
    else:
        present |= vision[b]
    return torch.nonzero(present).flatten()


@contextlib.contextmanager
def masked(layers, dropped: list[torch.Tensor]):
    """Mask dropped prompt positions out of the keys of every decoder layer (eager attention)."""

    def make_hook(j):
        def hook(module, args, kwargs):
            # A keyword, or a positional argument (Kosmos-2 layers take the mask second).
            params = list(inspect.signature(module.forward).parameters)
            slot = params.index("attention_mask") if "attention_mask" not in kwargs and "attention_mask" in params \
                else None
            if slot is not None and slot >= len(args):
                slot = None
            mask = args[slot] if slot is not None else kwargs.get("attention_mask")
            if mask is None or mask.dim() != 4:
                raise UnsupportedError(describe("the masking reference got no 4-D attention mask",
                                                "decoder layer attention_mask", "eager attention",
                                                "load the model with attn_implementation='eager'"))
            cols = torch.zeros(mask.shape[0], mask.shape[-1], dtype=torch.bool, device=mask.device)
            cols[:, : dropped[j].shape[1]] = dropped[j].to(mask.device)
            if mask.dtype == torch.bool:  # True = may attend
                mask = mask & ~cols[:, None, None, :]
            else:
                mask = mask.masked_fill(cols[:, None, None, :], torch.finfo(mask.dtype).min)
            if slot is None:
                kwargs["attention_mask"] = mask
            else:
                args = (*args[:slot], mask, *args[slot + 1:])
            return args, kwargs

        return hook

    handles = [layer.register_forward_pre_hook(make_hook(j), with_kwargs=True) for j, layer in enumerate(layers)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def check_spec(spec: ModelSpec, variant: str | None = None, progress=None) -> ConformanceReport:
    """Build the spec's tiny test model (eager) and run :func:`run_mini_conformance` on a left-padded batch.

    The report's ``pruned_model`` is the test model compiled with the 2-cut schedule."""
    from .builders import build_test_model, make_test_inputs

    if spec.test_model is None:
        raise UnsupportedError(describe(f"spec {spec.name!r} has no test_model section", "check_spec",
                                        "a tiny test configuration", "pass a real model instead"))
    model = build_test_model(spec, variant, attn_implementation="eager")
    images = [1, 1] if spec.test_model.max_images_per_sample == 1 else [1, 2]
    batch = make_test_inputs(spec, model, images, [5, 8], seed=0)
    return run_mini_conformance(model, spec, batch.kwargs, progress=progress)
