"""A mini conformance check for one model and spec (``tokenprune validate``, the docs' support table).

It is a small, installed cousin of the test suite's conformance tests:

1. ``compile`` with a keep-all schedule (this runs the probe self-check) and compare the logits with the
   original model's: they must be bit-identical;
2. ``compile`` with a 2-cut schedule and compare the pruned logits with a *masking reference*: the original
   model, with the dropped vision tokens masked out of the attention of every later layer. Dropping with
   original positions equals masking, so the two agree to a tolerance that follows the model's dtype;
3. compare the kept set at each cut with the top-k of the model's *own* eager attention weights in the
   scoring layer (:mod:`.eager_topk`). Check 2 masks tokenprune's own choice, so only this one catches a spec
   whose norms, scale or RoPE make the scorer rank tokens differently from the model.

The references need eager attention (they edit the 4-D attention mask each decoder layer receives and read
the attention weights).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from tokenprune.errors import TokenPruneError, UnsupportedError, describe
from tokenprune.schedule import Schedule
from tokenprune.spec import ModelSpec, resolve_module
from tokenprune.spec_testdata import load_test_model

from .eager_topk import eager_topk_agreement, scorer_keys, summary
from .masking import decoder_layers, dropped_per_layer, kept_rows, masked_reference
from .tolerance import Tolerance, logits_tolerance, score_tolerance, weight_dtype


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
    enough, else one cut. ``first_cut`` is the ``first_cut`` of the spec's test data (families that add per-token
    features in early layers refuse shallower cuts)."""
    if num_layers >= first_cut + 2:
        return Schedule([1.0] * first_cut + [0.5] + [0.25] * (num_layers - first_cut - 1), name="two-cut")
    if num_layers >= first_cut + 1:
        return Schedule([1.0] * first_cut + [0.5], name="one-cut")
    raise UnsupportedError(describe("a 1-layer language model has nowhere to cut", "two_cut_schedule",
                                    "at least 2 decoder layers"))


def run_mini_conformance(model, spec: ModelSpec, inputs: dict, *, schedule: Schedule | None = None,
                         atol: float | None = None,
                         progress: Callable[[str], None] | None = None) -> ConformanceReport:
    """Keep-all exactness, pruned-vs-masking-reference and kept-set-vs-eager-attention on one batch of
    ``inputs`` (an eager model). ``atol``: a fixed logit tolerance; by default it follows the model's dtype
    (:mod:`.tolerance`)."""
    import tokenprune as tp

    report = ConformanceReport(spec.name)
    layers = decoder_layers(model, spec)
    test = load_test_model(spec, required=False)
    first = test.first_cut if test is not None else 1
    schedule = schedule or two_cut_schedule(len(layers), first)
    note = progress or (lambda _msg: None)
    dtype = weight_dtype(layers)
    logits_tol = Tolerance(atol, 0.0) if atol is not None else logits_tolerance(dtype)

    note("original forward")
    with torch.no_grad():
        reference = model(**inputs).logits

    note("keep-all compile + self-check")
    report.checks.append(_timed("keep-all is bit-exact", lambda: _keep_all(tp, model, spec, inputs, reference,
                                                                           len(layers))))
    cuts = list(schedule.cuts)
    note(f"pruned compile ({schedule.name})")
    report.checks.append(_timed(f"pruned matches masking reference ({schedule.name}, cuts {cuts})",
                                lambda: _pruned(tp, model, spec, inputs, schedule, layers, logits_tol, report)))
    note("kept sets vs the model's own eager attention")
    report.checks.append(_timed(f"kept set is the top-k of the model's own eager attention (cuts {cuts})",
                                lambda: _eager_topk(tp, model, spec, inputs, score_tolerance(dtype), report)))
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


def _pruned(tp, model, spec, inputs, schedule, layers, tolerance: Tolerance, report) -> tuple[bool, str]:
    compiled = tp.compile(model, spec, schedule)
    report.pruned_model = compiled
    with torch.no_grad():
        pruned = compiled(**inputs).logits
    selection = tp.last_selection(compiled)
    vision = _vision_mask(model, spec, inputs)
    if not bool(vision.any()):
        return False, "the inputs carry no vision tokens"
    dropped = dropped_per_layer(vision, selection, len(layers))
    with masked_reference(layers, dropped), torch.no_grad():
        reference = model(**inputs).logits
    worst = scale = 0.0
    for b, got, expected in kept_rows(pruned, reference, vision, selection, inputs.get("attention_mask")):
        if got.shape != expected.shape:
            return False, f"sample {b}: pruned logits {tuple(got.shape)}, the reference keeps {tuple(expected.shape)}"
        if got.numel():
            worst = max(worst, (got.float() - expected.float()).abs().max().item())
            scale = max(scale, expected.float().abs().max().item())
    kept = {layer: int(sel[0].numel()) for layer, sel in selection.items()}
    bound = tolerance.bound(scale)
    return worst <= bound, (f"max |diff| {worst:.2e} (tolerance {bound:.2g} for {str(reference.dtype)[6:]} logits "
                            f"up to {scale:.3g}); kept vision tokens of sample 0 per cut {kept}")


def _eager_topk(tp, model, spec, inputs, tolerance: Tolerance, report) -> tuple[bool, str]:
    if report.pruned_model is None:
        return False, "not run: the pruned model did not compile (see the check above)"
    selection = tp.last_selection(report.pruned_model)
    agreements = eager_topk_agreement(model, spec, inputs, _vision_mask(model, spec, inputs), selection, tolerance)
    counts = f"kept tokens in HF's top-k per cut and sample: {summary(agreements)}"
    wrong = [a for a in agreements if not a.agrees]
    if not wrong:
        return True, f"{counts} (ties within {tolerance.describe()} are exchangeable)"
    first = wrong[0]
    return False, (f"the scorer keeps other tokens than the model's own attention: at cut {first.cut}, sample "
                   f"{first.sample} keeps only {first.overlap} of HF's top {first.kept} (a dropped token scores "
                   f"{first.best_dropped:.4g} in HF's eager attention, a kept one {first.worst_kept:.4g}); {counts}. "
                   f"A spec key the scorer reads is wrong or missing: {scorer_keys(model, spec, first.cut)}")


def _vision_mask(model, spec: ModelSpec, inputs: dict) -> torch.Tensor:
    """(B, S) bool: the vision tokens of ``inputs``, by the spec's locator or its token ids."""
    if spec.vision_tokens.locator:
        from tokenprune.plugins.resolve import resolve_spec

        base = resolve_module(model, spec.multimodal_model, "multimodal_model") if spec.multimodal_model else model
        return resolve_spec(spec).locator(base, (), inputs)
    return torch.isin(inputs["input_ids"], torch.tensor(spec.vision_token_ids(model.config)))


def check_spec(spec: ModelSpec, variant: str | None = None, progress=None) -> ConformanceReport:
    """Build the spec's tiny test model (eager) and run :func:`run_mini_conformance` on a left-padded batch.

    The report's ``pruned_model`` is the test model compiled with the 2-cut schedule."""
    from .builders import build_test_model, make_test_inputs

    test = load_test_model(spec)
    model = build_test_model(spec, variant, attn_implementation="eager", test=test)
    images = [1, 1] if test.max_images_per_sample == 1 else [1, 2]
    batch = make_test_inputs(spec, model, images, [5, 8], seed=0, test=test)
    return run_mini_conformance(model, spec, batch.kwargs, progress=progress)
