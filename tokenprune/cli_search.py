"""``tokenprune search``: search a schedule (and, with ``--selectors``, the selector) and save the result."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

import typer

from tokenprune.cli_common import (
    MODEL_HELP,
    OBJECTIVE_HELP,
    TRUST_HELP,
    _friendly,
    _interactive,
    _silence_library_bars,
    app,
)
from tokenprune.cli_models import calibration_set, load_model

# Method options of ``tokenprune search``: the config field each one sets.
SEARCH_FLAGS = {"tolerance": "--tolerance", "grid": "--grid", "n_trials": "--n-trials", "eta": "--eta",
                "start_layer": "--start-layer", "layer": "--layer"}


@app.command()
@_friendly
def search(model: str = typer.Argument(..., help=MODEL_HELP),
           spec: Optional[str] = typer.Option(None, help="Spec name or YAML path (default: match by architecture)."),
           method: str = typer.Option("g-search", help="g-search | p-sigmoid | vtw | fastv | pdrop | random."),
           budget: Optional[float] = typer.Option(None, help="FLOPs fraction in (0, 1] (p-sigmoid and baselines)."),
           tolerance: Optional[float] = typer.Option(None, help="g-search: allowed objective change (default 0.01)."),
           grid: Optional[int] = typer.Option(None, help="g-search: candidate ratios 0, 1/N, ..., 1 (default 20)."),
           n_trials: Optional[int] = typer.Option(None, help="p-sigmoid: TPE proposals (default 30)."),
           eta: Optional[float] = typer.Option(None, help="vtw: objective threshold (default 0.003)."),
           start_layer: Optional[int] = typer.Option(None, help="vtw: first layer tried (default 1)."),
           layer: Optional[int] = typer.Option(None, help="fastv, random: the layer K of the cut (default 2)."),
           objective: Optional[str] = typer.Option(None, help=OBJECTIVE_HELP),
           selectors: Optional[list[str]] = typer.Option(
               None, help="Selectors to choose from jointly with the schedule, comma-separated or repeated "
                          "(ranking scorers or registered selectors, e.g. last-token-attention,divprune,dart). "
                          "Default: the last-token-attention scorer alone."),
           calibration: str = typer.Option("synthvqa:48", help="synthvqa:N (synthetic VQA, needs a processor) or "
                                           "random:N (the spec's random test inputs)."),
           seed: int = typer.Option(0, help="Seed of the search (p-sigmoid) and the calibration split."),
           trials: Optional[Path] = typer.Option(None, help="JSON-lines trials file (makes the search resumable)."),
           out: Path = typer.Option(Path("search_result.yaml"), "--out", "-o",
                                    help="Where to save the result."),
           trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP)) -> None:
    """Search a schedule on calibration data and save the result (apply it with --schedule FILE)."""
    if importlib.util.find_spec("tokenprune.search") is None:
        typer.secho("error: tokenprune.search is not available in this installation", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    from tokenprune.search import search as run

    options = {"tolerance": tolerance, "grid": grid, "n_trials": n_trials, "eta": eta, "start_layer": start_layer,
               "layer": layer}
    config = search_config(method, {k: v for k, v in options.items() if v is not None}, seed, budget)
    names = selector_names(selectors, config)
    if not _interactive():
        _silence_library_bars()
    loaded = load_model(model, spec, trust_remote_code=trust_remote_code)
    calib = calibration_set(loaded, calibration, seed)
    result = run(loaded.model, loaded.spec, calib, config, budget=budget, objective=objective, trials=trials,
                 quiet=not _interactive(), selectors=names)
    result.save(out)
    typer.echo(result.summary())
    if names is not None:
        typer.echo(f"selector: {result.selector} (chosen from {', '.join(names)}; compile with "
                   f"scorer={result.selector!r})")
    typer.echo(f"saved {out}")


def selector_names(values: list[str] | None, config) -> tuple[str, ...] | None:
    """The ``--selectors`` names (comma-separated, repeatable), checked before any model is loaded."""
    from tokenprune.search.selectors import check_method, check_selectors

    if not values:
        return None
    names = check_selectors([part.strip() for value in values for part in value.split(",")],
                            "tokenprune search --selectors")
    check_method(config, names, "tokenprune search --selectors")
    return names


def search_config(method: str, options: dict, seed: int, budget: float | None):
    """The method config of ``tokenprune search``, refusing options of other methods and a budget the method
    cannot use, before any model is loaded."""
    from tokenprune.errors import ScheduleError, describe
    from tokenprune.search import method_config
    from tokenprune.search.engine import method_budget

    where = f"tokenprune search --method {method}"
    config = method_config(method, where)
    fields = [f for f in type(config).model_fields if f in SEARCH_FLAGS]
    for name in options:
        if name not in fields:
            own = [SEARCH_FLAGS[f] for f in fields]
            raise ScheduleError(describe(f"{SEARCH_FLAGS[name]} does not apply to {config.title}", where,
                                         f"{', '.join(own) or 'none of the method options'} for this method",
                                         f"drop {SEARCH_FLAGS[name]} or pick the method it belongs to"))
    if "seed" in type(config).model_fields:
        options = {**options, "seed": seed}
    config = method_config(method, where, **options)
    method_budget(config, budget)
    return config
