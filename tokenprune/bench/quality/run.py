"""Run the quality benchmark: search on the calibration split, score every entry on the test split.

Rows are appended to a JSON-lines file as they finish and searches keep their own trials files, so an
interrupted run resumes where it stopped (finished rows are not recomputed).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import time
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path

import torch

from tokenprune.errors import ScheduleError, TokenPruneError, describe
from tokenprune.flops import mean_flops_fraction
from tokenprune.schedule import Schedule
from tokenprune.spec import resolve_module
from tokenprune.synthvqa import answers
from tokenprune.synthvqa.suites import SUITES

from .plan import Entry, QualitySettings, plan

ROWS_FILE = "rows.jsonl"


def model_fingerprint(model) -> str:
    """SHA-256 over the model's parameter names, shapes and values: rows of another checkpoint are not reused."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


class RowStore:
    """The benchmark's JSON-lines file: a header (settings, model fingerprint), then one row per finished entry."""

    def __init__(self, path: Path, settings: QualitySettings, model_id: str | None = None):
        self.path = path
        self.rows: dict[str, dict] = {}
        # Through JSON so that tuples compare as the lists they are read back as.
        header = json.loads(json.dumps({"settings": settings.to_dict(), "model": model_id}))
        if path.exists():
            lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if lines and lines[0].get("model") != header["model"]:
                raise TokenPruneError(describe(
                    f"{path} was written for another model (fingerprint {lines[0].get('model')}, this one "
                    f"{header['model']})", "quality benchmark resume", "rows of the same model",
                    "pass a new --work-dir or delete the folder (e.g. after retraining the reference model)"))
            if lines and lines[0] != header:
                raise TokenPruneError(describe(
                    f"{path} was written with different settings", "quality benchmark resume",
                    f"the same settings as {lines[0].get('settings')}", "pass a new --work-dir or delete the file"))
            self.rows = {row["id"]: row for row in lines[1:]}
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._append(header)

    def add(self, row: dict) -> None:
        row = json.loads(json.dumps(row))  # a fresh row looks exactly like a resumed one
        self.rows[row["id"]] = row
        self._append(row)

    def _append(self, obj: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(obj) + "\n")
            f.flush()
            os.fsync(f.fileno())  # a killed run keeps every finished row


def run_quality(model, spec, processor, settings: QualitySettings, work_dir: Path, progress: bool = True,
                only: Collection[str] | None = None, published: dict[str, dict] | None = None,
                suite: str = "grid") -> list[dict]:
    """Every entry of :func:`plan` (or those matching ``only``: ids or shell patterns such as ``dart-*``), as
    rows in plan order. ``published``: rows of an earlier run by id; entries not run come from it (so a subset
    merges into the published results), and entries run here may reuse its schedules. ``suite``: whose questions
    (:data:`tokenprune.synthvqa.suites.SUITES`: the grid or the photo reference model's)."""
    import tokenprune as tp
    from tokenprune.search import CalibrationSet

    language_model = resolve_module(model, spec.language_model, f"spec {spec.name!r}: language_model")
    num_layers = len(resolve_module(language_model, spec.decoder_layers, f"spec {spec.name!r}: decoder_layers"))
    everything = plan(num_layers, settings)
    entries = [e for e in everything if only is None or any(fnmatch.fnmatchcase(e.id, p) for p in only)]
    if only is not None and not entries:
        raise TokenPruneError(describe(f"--only {sorted(only)} matches no entry", "quality benchmark",
                                       f"ids or patterns of {[e.id for e in everything]}"))
    published = dict(published or {})
    store = RowStore(work_dir / ROWS_FILE, settings, model_fingerprint(model))
    make_split = SUITES[suite].make_split
    test = make_split("test", settings.n_test, settings.seed)
    counts = answers.prompt_token_counts(processor, test, spec.vision_token_ids(model.config))
    calibration = None
    bar = _bar(len(entries), progress)
    for entry in entries:
        bar.set_description(entry.id)
        if entry.id not in store.rows:
            if entry.search is not None and calibration is None:
                calib_samples = make_split("calibration", settings.n_calibration, settings.seed)
                calibration = CalibrationSet.from_triples(
                    processor, [(s.image, s.prompt, " " + s.answer) for s in calib_samples], seed=settings.seed)
            store.add(_run_entry(tp, model, spec, processor, entry, settings, test, counts, calibration,
                                 {**published, **store.rows}, work_dir))
        bar.update(1)
    bar.close()
    rows = {**published, **store.rows}
    return [rows[e.id] for e in everything if e.id in rows]


def _unreachable(entry: Entry, reason: str) -> dict:
    """A row for an entry whose budget its method cannot reach (e.g. FastV K=2 below its all-withdrawn cost)."""
    return {"id": entry.id, "method": entry.method, "label": entry.label, "scorer": entry.scorer,
            "budget": entry.budget, "params": entry.params, "schedule": None, "flops_fraction": None,
            "accuracy": None, "search": None, "unreachable": reason, "seconds": 0.0}


def _run_entry(tp, model, spec, processor, entry: Entry, settings, test, counts, calibration, done: dict, work_dir):
    start = time.perf_counter()
    search_info = None
    if entry.search is not None:
        trials = work_dir / "trials" / f"{entry.id}.jsonl"
        trials.parent.mkdir(parents=True, exist_ok=True)
        try:
            result = tp.search(model, spec, calibration, entry.search, budget=entry.budget, objective=entry.objective,
                               trials=trials, quiet=True, selectors=entry.selectors)
        except ScheduleError as err:
            if "unreachable" not in str(err):
                raise
            return _unreachable(entry, str(err))
        schedule = result.schedule
        search_info = {"calibration_flops_fraction": result.flops_fraction, "objective": result.objective,
                       "baseline": result.baseline, "objective_name": result.objective_name,
                       "found": result.settings.get("found"), "trials": len(result.trials),
                       "selector": result.selector, "selector_results": result.selector_results}
        if entry.selectors is not None:  # the scorer is what the search chose
            entry = replace(entry, scorer=result.selector)
    elif entry.schedule_from is not None:
        source = done.get(entry.schedule_from)
        if source is None:
            raise TokenPruneError(describe(f"entry {entry.id!r} reuses {entry.schedule_from!r}, which has not run",
                                           "quality benchmark plan", "the source entry earlier in the plan"))
        if source.get("unreachable"):
            return _unreachable(entry, f"reuses {entry.schedule_from}, which is unreachable")
        schedule = Schedule.from_dict(source["schedule"])
    else:
        schedule = entry.schedule
    if schedule.is_keep_all() and entry.id == "unpruned":
        scored = model  # the reference row is the original model itself
    else:
        scored = tp.compile(model, spec, schedule, scorer=entry.scorer, seed=settings.seed)
    predictions = answers.predict(scored, processor, test, batch_size=settings.batch_size)
    return {
        "id": entry.id, "method": entry.method, "label": entry.label, "scorer": entry.scorer, "budget": entry.budget,
        "params": entry.params, "schedule": schedule.to_dict(),
        "flops_fraction": mean_flops_fraction(model.config, schedule, counts),
        "accuracy": answers.score(test, predictions), "search": search_info,
        "seconds": round(time.perf_counter() - start, 2),
    }


def _bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="entry")
