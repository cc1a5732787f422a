"""``tokenprune demo``: a reference model answering with and without pruning (``--suite photo``, the default: the
photo-like model in ``reference_model/photo/checkpoint``, 576 vision tokens of mostly background; ``--suite grid``:
the 3x3-grid model in ``reference_model/checkpoint``; with ``--checkpoint`` alone, the suite its images fit).

Shows a few questions answered by the original and the pruned model, accuracy on held-out test questions,
the exact FLOPs fraction, prefill time (interleaved medians) and a picture of the patches kept at each cut.
The schedule is the P-Sigmoid schedule that ``benchmarks/quality.py`` searched on the calibration split at
budget 0.3, with the selector that search chose (``schedules/p-sigmoid-selectors-b0.3.yaml`` beside the
checkpoint, e.g. in ``reference_model/photo/schedules``; else ``p-sigmoid-b0.3.yaml`` with the default scorer),
or one given with ``--schedule``. The checkpoint is a folder of the repository, not of the installed package:
the demo runs from the root of a checkout, or is given ``--checkpoint``.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

import tokenprune as tp
from tokenprune.demo import explain_terms, time_prefills
from tokenprune.errors import TokenPruneError, describe
from tokenprune.flops import mean_flops_fraction
from tokenprune.saving import read_schedule_file
from tokenprune.scoring import DEFAULT_SCORER
from tokenprune.synthvqa import answers
from tokenprune.synthvqa.suites import SUITES, Suite

# The reference models ship with the repository, not the wheel: by default one is looked up from the working
# directory (the root of a checkout, ``Suite.checkpoint``); elsewhere pass its directory.
DEFAULT_SUITE = "photo"  # mostly background, like real photos: pruning costs what it costs on real checkpoints
# Beside the checkpoint, written by benchmarks/quality.py: the selector search's setup (schedule and the selector it
# chose) at budget 0.3, else the P-Sigmoid schedule there (default scorer).
SEARCHED = (Path("schedules") / "p-sigmoid-selectors-b0.3.yaml", Path("schedules") / "p-sigmoid-b0.3.yaml")


def suite_named(name: str) -> Suite:
    if name not in SUITES:
        raise TokenPruneError(describe(f"unknown reference suite {name!r}", "tokenprune demo --suite",
                                       f"one of {sorted(SUITES)}", "pick one of those names"))
    return SUITES[name]


def default_checkpoint(suite: str = DEFAULT_SUITE) -> Path:
    """The suite's shipped model under the working directory (``reference_model/photo/checkpoint`` for ``photo``)."""
    return Path.cwd() / suite_named(suite).checkpoint


def searched_schedule(checkpoint: Path) -> Path | None:
    """The searched setup or schedule saved for the reference model at ``checkpoint`` (None: none was saved)."""
    return next((Path(checkpoint).parent / p for p in SEARCHED if (Path(checkpoint).parent / p).is_file()), None)


class DemoPruning(NamedTuple):
    schedule: tp.Schedule
    scorer: str
    origin: str  # where the schedule came from, as printed


def load_reference(checkpoint: Path | None = None):
    """A reference model (float32, sdpa, eval) and its processor (default: the default suite's
    :func:`default_checkpoint`)."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    checkpoint = Path(checkpoint) if checkpoint is not None else default_checkpoint()
    if not (checkpoint / "config.json").exists():
        raise TokenPruneError(describe(
            f"no reference model at {checkpoint}", "tokenprune demo --checkpoint",
            "a directory with the trained reference model (config.json, model.safetensors, processor files)",
            "run the demo from the root of a checkout of the repository (reference_model/checkpoint, "
            "reference_model/photo/checkpoint), pass --checkpoint, or use `tokenprune demo --random` for the "
            "random-weight demo"))
    model = LlavaForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32, attn_implementation="sdpa")
    return model.eval(), AutoProcessor.from_pretrained(checkpoint)


def demo_schedule(num_layers: int, path: Path | None, checkpoint: Path | None = None) -> DemoPruning:
    """What the demo prunes with: ``path`` (a schedule YAML, a saved search result or a ``tokenprune.yaml`` setup,
    the last two with the scorer they were found with), else
    the search result saved for ``checkpoint`` (default: :func:`default_checkpoint`), else FastV."""
    if path is None:
        path = searched_schedule(checkpoint or default_checkpoint())
        if path is None:
            return DemoPruning(tp.Schedule.fastv(num_layers, layer=2, keep=0.25), DEFAULT_SCORER,
                               "FastV(K=2, keep 25%) (no searched schedule found)")
    path, here = Path(path), Path.cwd()
    shown = str(path.relative_to(here) if path.is_absolute() and path.is_relative_to(here) else path)
    if not path.is_file():
        raise TokenPruneError(describe(f"schedule file {shown!r} not found", "tokenprune demo --schedule",
                                       "a schedule YAML or a tokenprune.yaml setup", "check the path"))
    schedule, scorer = read_schedule_file(path)  # a setup or search result keeps the scorer it was found with
    return DemoPruning(schedule, scorer or DEFAULT_SCORER, shown)


def suite_of_model(config, suite: str | None, checkpoint: Path) -> Suite:
    """The suite whose images the model at ``checkpoint`` reads: ``suite`` if given (checked), else the only one
    with the model's image size and patch grid. Asking a model questions about images of another size would
    resize them silently and measure nothing."""
    vision = config.vision_config
    side = vision.image_size // vision.patch_size
    fits = [name for name, s in SUITES.items() if (s.image_size, s.patches_per_side) == (vision.image_size, side)]
    if suite is not None and suite not in fits:
        wanted = suite_named(suite)
        raise TokenPruneError(describe(
            f"the model at {checkpoint} reads {vision.image_size}x{vision.image_size} images as {side}x{side} "
            f"patches, but the {suite!r} suite's questions are {wanted.image_size}x{wanted.image_size} images of "
            f"{wanted.patches_per_side}x{wanted.patches_per_side} patches", "tokenprune demo --suite/--checkpoint",
            f"a suite that fits the model ({fits or 'none does'})",
            f"pass --suite {fits[0]}" if fits else "pass the checkpoint of a reference model"))
    if suite is None and len(fits) != 1:
        raise TokenPruneError(describe(
            f"cannot tell which reference suite the model at {checkpoint} was trained on (its "
            f"{vision.image_size}x{vision.image_size} images fit {fits or 'none'})", "tokenprune demo --checkpoint",
            f"one of {sorted(SUITES)}", "pass --suite"))
    return suite_named(suite if suite is not None else fits[0])


@torch.no_grad()
def run_reference_demo(echo=print, checkpoint: Path | None = None, schedule_path: Path | None = None,
                       questions: int = 144, repeats: int = 5, picture: Path | None = None,
                       suite: str | None = None) -> dict:
    """Print the demo through ``echo``; ``picture`` is where to save the kept-patches PNG (None: no picture).
    ``suite``: which reference model's questions (:data:`tokenprune.synthvqa.suites.SUITES`; None: the one that
    fits ``checkpoint``, or :data:`DEFAULT_SUITE`); ``checkpoint``: the model's directory (default:
    :func:`default_checkpoint` of the suite)."""
    if checkpoint is None:
        checkpoint = default_checkpoint(suite_named(suite or DEFAULT_SUITE).name)
    checkpoint = Path(checkpoint)
    model, processor = load_reference(checkpoint)
    questions_of = suite_of_model(model.config, suite, checkpoint)
    spec = tp.load_spec("llava")
    layers = model.config.text_config.num_hidden_layers
    schedule, scorer, origin = demo_schedule(layers, schedule_path, checkpoint)
    side, size = questions_of.patches_per_side, questions_of.image_size
    echo(f"Model: reference LLaVA ({layers} decoder layers, {side * side} vision tokens per {size}x{size} image, "
         f"{questions_of.description.split(',')[0]}), {checkpoint}")
    echo(f"Schedule: {schedule.name}, tokens chosen by {scorer}, from {origin}")
    echo("  keep ratio per layer: " + " ".join(f"{r:.2f}" for r in schedule.keep_ratio))
    keep_all = tp.compile(model, spec, tp.Schedule.keep_all(layers))
    pruned = tp.compile(model, spec, schedule, scorer=scorer)

    shown = [questions_of.make_sample("test", i) for i in range(6)]  # one question of each type
    plain, cut = answers.predict(model, processor, shown), answers.predict(pruned, processor, shown)
    echo("\nQuestions (truth | original | pruned):")
    for s, a, b in zip(shown, plain, cut):
        echo(f"  {s.question.question + ' ?':<52} {s.answer:<9}| {a:<9}| {b}")

    test = questions_of.make_split("test", questions)
    acc = {name: answers.accuracy(m, processor, test) for name, m in (("original", model), ("pruned", pruned))}
    exact = _keep_all_exact(model, keep_all, processor, shown[0])
    counts = answers.prompt_token_counts(processor, test, spec.vision_token_ids(model.config))
    fraction = mean_flops_fraction(model.config, schedule, counts)
    echo(f"\nAccuracy on {questions} test questions: original {acc['original']['overall']:.3f}, "
         f"pruned {acc['pruned']['overall']:.3f}")
    per_type = acc["original"]["per_type"]
    echo("  per type (original / pruned): " + ", ".join(
        f"{t} {per_type[t]:.2f}/{acc['pruned']['per_type'][t]:.2f}" for t in per_type))
    echo(f"Keep-all compiled model bit-identical to the original: {exact}")
    echo(f"Prefill FLOPs fraction (exact, language model): {fraction:.3f}")

    inputs = _inputs(processor, test[:16])
    times = time_prefills(echo, {"original": lambda: model(**inputs), "pruned": lambda: pruned(**inputs)}, repeats,
                          f"Prefill time, batch of 16 prompts (median of {repeats} interleaved runs)")
    if picture is not None:
        from tokenprune.visualize import plot_for_question

        sample = shown[0]
        plot_for_question(pruned, processor, sample.image, sample.prompt, answer=cut[0], path=picture,
                          grid=(side, side), title="Patches the pruned model kept (dropped ones darkened)")
        echo(f"\nKept patches at each cut (question 1): {picture}")
    explain_terms(echo)
    return {"accuracy": acc, "flops_fraction": fraction, "exact": exact, "times": times, "schedule": schedule,
            "scorer": scorer}


def _inputs(processor, samples) -> dict:
    enc = dict(processor(text=[s.prompt for s in samples], images=[s.image for s in samples], return_tensors="pt",
                         padding=True))
    enc["position_ids"] = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # (B, T); left padding
    return enc


def _keep_all_exact(model, keep_all, processor, sample) -> bool:
    inputs = _inputs(processor, [sample])
    return torch.equal(model(**inputs).logits, keep_all(**inputs).logits)
