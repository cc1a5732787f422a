"""Quality benchmark: test accuracy against the exact FLOPs fraction for every method.

Runs on the shipped reference model (reference_model/checkpoint): unpruned; FastV K x R; PyramidDrop at several
lambda; VTW (KL layer search) at several eta; G-Search at several tolerances; P-Sigmoid, matched FastV and
PyramidDrop and the random scorer at each budget. Searches see the calibration split only.

    python benchmarks/quality.py                 # full grid; writes docs/benchmarks/quality.{md,json,png}
    python benchmarks/quality.py --quick         # a small grid for a smoke run (writes to --docs-dir)
    python benchmarks/quality.py --only 'dart-*' 'psigmoid-selectors-*'   # some rows, merged into the page
    python benchmarks/quality.py --suite photo   # the photo reference model: docs/benchmarks/photo/quality.*

Interrupted runs resume from --work-dir (finished rows and search trials are kept). With --only, the rows not
run come from DOCS_DIR/quality.json when it was written with the same settings (new settings may be added), so
a subset of rows merges into the published results.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
# Per suite: the shipped model, where its page and its resumable rows go, and what the page says it is.
SUITE_DEFAULTS = {
    "grid": {"docs_dir": "docs/benchmarks", "work_dir": "benchmarks/work/quality",
             "description": "`tokenprune.synthvqa`'s 3x3 grids"},
    "photo": {"docs_dir": "docs/benchmarks/photo", "work_dir": "benchmarks/work/quality-photo",
              "description": "`tokenprune.synthvqa.photo`'s photo-like scenes (mostly background)"},
}

INTRO = (
    "Measured by `python benchmarks/quality.py{flag}` on the shipped reference model "
    "(`{checkpoint}`: a {layers}-layer LLaVA trained on {description}, {vision} vision "
    "tokens per image; see `{readme}`). Searches ran on the calibration split only; every "
    "row is scored on the same {n} test-split questions (exact match of the first greedy token). "
    "Single run, seed {seed}: with {n} questions one question is {unit:.2f} points, so differences of a "
    "point or two are within noise.\n\n"
    "The unpruned model answers {base:.1%} of these questions, against {majority:.1%} for always giving each "
    "question type's commonest answer.{caveat}"
)
# Appended while the shipped model is below its accuracy gate (reference_model/README.md).
BELOW_GATE = (
    " **Read with care:** the reference model has not reached its 90% accuracy gate yet (see "
    "`reference_model/README.md`); on the question types where the unpruned model is itself near the prior (the "
    "per-type columns), pruning has little to lose, so differences between methods there say little."
)


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=sorted(SUITE_DEFAULTS), default="grid",
                   help="which reference model: grid (144 vision tokens) or photo (576, mostly background)")
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the suite's shipped model")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="finished rows and search trials of this run, for resuming (git-ignored; default: "
                        "benchmarks/work/quality, or quality-photo for the photo suite)")
    p.add_argument("--docs-dir", type=Path, default=None,
                   help="where the page goes (default: docs/benchmarks, or docs/benchmarks/photo); the published "
                        "ones need a clean git tree")
    p.add_argument("--schedules-dir", type=Path, default=None,
                   help="where the searched P-Sigmoid schedules are saved (default: the checkpoint's sibling "
                        "schedules/; the demo loads p-sigmoid-b0.3.yaml)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n-test", type=int, default=None)
    p.add_argument("--n-calibration", type=int, default=None)
    p.add_argument("--trials", type=int, default=None, help="P-Sigmoid trials per budget")
    p.add_argument("--selectors", default=None, help="comma-separated drop-selectors evaluated on the matched "
                                                       "schedules (default: every one the settings name)")
    p.add_argument("--search-selectors", default=None,
                   help="comma-separated candidates of the selector search (default: the default scorer and "
                        "--selectors); P-Sigmoid also runs with each one fixed")
    p.add_argument("--selector-search-trials", type=int, default=None, help="P-Sigmoid trials of the selector search")
    p.add_argument("--note", default=None, help="a sentence shown under the page's introduction (e.g. why a run "
                                                  "covered only some rows)")
    p.add_argument("--quick", action="store_true", help="a small grid (smoke run, not for the docs)")
    p.add_argument("--only", nargs="*", default=None,
                   help="run only these entry ids or shell patterns (e.g. 'dart-*'); other rows come from the "
                        "quality.json in --docs-dir")
    return p.parse_args(argv)


def _names(text: str | None) -> tuple[str, ...] | None:
    """A comma-separated option as a tuple of names (None when the option was not given)."""
    return None if text is None else tuple(n.strip() for n in text.split(",") if n.strip())


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def save_searched_schedules(rows: list[dict], folder: Path, seed: int = 0) -> dict[str, Path]:
    """Each P-Sigmoid row's schedule as ``<id>.yaml`` (found on the calibration split); each selector-search row
    as a pruning setup (``tokenprune.yaml`` format: schedule and the selector it chose). The demo loads the
    selector search's setup at budget 0.3, else the P-Sigmoid schedule there."""
    from tokenprune import Schedule, load_spec
    from tokenprune.bench.quality.plan import SELECTOR_SEARCH_ID
    from tokenprune.saving import PruningSetup

    folder.mkdir(parents=True, exist_ok=True)
    saved = {}
    for row in rows:
        if row.get("unreachable") or row["method"] not in ("P-Sigmoid", "P-Sigmoid (selector search)"):
            continue
        path = folder / f"{row['id'].replace('psigmoid', 'p-sigmoid')}.yaml"
        schedule = Schedule.from_dict(row["schedule"])
        if row["id"].startswith(SELECTOR_SEARCH_ID):
            path.write_text(PruningSetup(load_spec("llava"), schedule, scorer=row["scorer"], seed=seed).to_yaml())
        else:
            path.write_text(schedule.to_yaml())
        saved[row["id"]] = path
    return saved


def published_report(docs_dir: Path, settings) -> dict | None:
    """The report in ``docs_dir`` if its settings agree with ``settings`` on every key it has, else None."""
    import json

    path = docs_dir / "quality.json"
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    now = json.loads(json.dumps(settings.to_dict()))
    from tokenprune.bench.quality.plan import ROW_SET_SETTINGS

    differing = {k for k, v in report["settings"].items() if now.get(k) != v and k not in ROW_SET_SETTINGS}
    if differing:
        sys.exit(f"error: {path} was written with other settings ({sorted(differing)}); run every row "
                 "(without --only) or pass another --docs-dir")
    return report


def main(argv=None) -> dict:
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from tokenprune import load_spec
    from tokenprune.bench.machine import machine_info
    from tokenprune.bench.quality import QualitySettings, check_targets, run_quality
    from tokenprune.bench.quality.page import write_outputs
    from tokenprune.synthvqa.suites import SUITES

    args = parse(argv)
    suite = SUITE_DEFAULTS[args.suite]
    shipped = ROOT / SUITES[args.suite].checkpoint    # the model's folder; its README says how it was trained
    args.checkpoint = args.checkpoint or shipped
    args.work_dir = args.work_dir or ROOT / suite["work_dir"]
    args.docs_dir = args.docs_dir or ROOT / suite["docs_dir"]
    args.schedules_dir = args.schedules_dir or args.checkpoint.parent / "schedules"
    if not (args.checkpoint / "config.json").is_file():
        sys.exit(f"error: no model at {args.checkpoint} (config.json missing); expected the {args.suite} suite's "
                 f"trained checkpoint: train it (see {_shown(shipped.parent / 'README.md')}) or pass --checkpoint DIR")
    if args.docs_dir.resolve() == (ROOT / suite["docs_dir"]).resolve():
        from tokenprune.bench.publish import require_clean_checkout
        from tokenprune.errors import TokenPruneError

        try:  # the published page names its commit: no uncommitted code may be behind it
            require_clean_checkout(ROOT, "--docs-dir (default: the published docs/benchmarks)")
        except TokenPruneError as err:
            sys.exit(f"error: {err}; or pass --docs-dir DIR to write the page elsewhere")
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    settings = QualitySettings()
    if args.quick:
        settings = replace(settings, n_test=48, n_calibration=16, budgets=(0.3,), fastv_layers=(2,),
                           fastv_drop=(0.5,), pdrop_lambdas=(0.5,), vtw_etas=(0.01,), gsearch_tolerances=(0.03,),
                           psigmoid_trials=4)
    overrides = {"n_test": args.n_test, "n_calibration": args.n_calibration, "psigmoid_trials": args.trials,
                 "selectors": _names(args.selectors), "search_selectors": _names(args.search_selectors),
                 "selector_search_trials": args.selector_search_trials}
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    model = LlavaForConditionalGeneration.from_pretrained(args.checkpoint, dtype=torch.float32,
                                                          attn_implementation="sdpa").eval()
    processor = AutoProcessor.from_pretrained(args.checkpoint)
    spec = load_spec("llava")
    machine = machine_info("cpu", torch.float32)
    start = time.perf_counter()
    earlier = published_report(args.docs_dir, settings) if args.only else None
    rows = run_quality(model, spec, processor, settings, args.work_dir, only=args.only or None,
                       published={r["id"]: r for r in earlier["rows"]} if earlier else None, suite=args.suite)
    text, vision = model.config.text_config, model.config.vision_config
    report = {
        "model": {"name": "reference LLaVA", "suite": args.suite, "checkpoint": _shown(args.checkpoint),
                  "layers": text.num_hidden_layers, "hidden": text.hidden_size},
        "settings": settings.to_dict(), "machine": machine,
        # Compute time of the rows (a resumed run only regenerates the outputs).
        "seconds": sum(r["seconds"] for r in rows), "wall_seconds_this_invocation": time.perf_counter() - start,
        "targets": check_targets(rows), "rows": rows,
    }
    if args.note:
        report["note"] = args.note
    if earlier:
        report["ran"] = "--only " + " ".join(args.only)
        report["merged_from"] = {"timestamp_utc": earlier["machine"].get("timestamp_utc"),
                                 "commit": earlier["machine"].get("source", {}).get("commit")}
    from tokenprune.synthvqa import answers

    majority = answers.majority_baselines(SUITES[args.suite].make_split("test", settings.n_test, settings.seed))
    base = next(r for r in rows if r["id"] == "unpruned")["accuracy"]["overall"] if any(
        r["id"] == "unpruned" for r in rows) else float("nan")
    intro = INTRO.format(flag="" if args.suite == "grid" else f" --suite {args.suite}",
                         checkpoint=_shown(args.checkpoint), description=suite["description"],
                         readme=_shown(shipped.parent / "README.md"),
                         base=base, majority=majority["per_type_answer"], layers=text.num_hidden_layers, vision=(vision.image_size // vision.patch_size) ** 2, n=settings.n_test,
                         seed=settings.seed, unit=100 / settings.n_test, caveat=BELOW_GATE if not base >= 0.9 else "")
    paths = write_outputs(report, args.docs_dir, intro)
    if not args.quick:
        paths.update(save_searched_schedules(rows, args.schedules_dir, settings.seed))
    for t in report["targets"]:
        print(f"[{ {True: 'met', False: 'MISSED', None: 'n/a'}[t['met']] }] {t['target']}: {t['detail']}")
    print("wrote", ", ".join(str(p) for p in paths.values()))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
