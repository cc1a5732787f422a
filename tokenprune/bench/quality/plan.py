"""What the quality benchmark measures: one :class:`Entry` per (method, setting), in dependency order.

The grid: unpruned; FastV K in {1, 2, 3} x R in {0.5, 0.75, 0.9}; PyramidDrop at several lambda; VTW at a
few eta (layer from the KL search); G-Search at several tolerances; P-Sigmoid, FastV, PyramidDrop (matched) and
the random scorer at each FLOPs budget; every registered drop-selector on the matched FastV schedules; and,
at a few budgets, P-Sigmoid with each selector fixed against P-Sigmoid choosing the selector itself. Searches
see the calibration split only; every entry is then scored on the test split.

The selector rows are data: :data:`SELECTOR_SCHEDULES` names the earlier rows whose schedules each selector
is evaluated on, ``QualitySettings.selectors`` the selectors, so a new selector or schedule family is one entry.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tokenprune.schedule import Schedule
from tokenprune.scoring import DEFAULT_SCORER
from tokenprune.search.configs import (FastVConfig, GSearchConfig, PSigmoidConfig, PyramidDropConfig, SearchConfig,
                                       VTWConfig)


@dataclass(frozen=True)
class QualitySettings:
    n_test: int = 576  # four balanced blocks of the test split (96 per question type)
    n_calibration: int = 96  # calibration-split samples the searches see (a quarter held out inside)
    budgets: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6)
    fastv_layers: tuple[int, ...] = (1, 2, 3)
    fastv_drop: tuple[float, ...] = (0.5, 0.75, 0.9)  # R: the fraction of vision tokens FastV drops
    pdrop_lambdas: tuple[float, ...] = (0.3, 0.5, 0.7)
    vtw_etas: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1)
    gsearch_tolerances: tuple[float, ...] = (0.003, 0.01, 0.03)
    psigmoid_trials: int = 40
    # Drop-selectors evaluated on the schedules of SELECTOR_SCHEDULES, and searched over by P-Sigmoid
    # (grid-downsample needs the whole patch grid, which a cut inside the language model no longer has).
    selectors: tuple[str, ...] = ("divprune", "dart", "cdpruner", "random-keep")
    # The candidates of the selector search (None: the default scorer and every selector above); P-Sigmoid runs
    # with each of them fixed as well, for the comparison.
    search_selectors: tuple[str, ...] | None = None
    selector_search_budgets: tuple[float, ...] = (0.2, 0.3)
    selector_search_trials: int = 80  # P-Sigmoid trials when it also chooses the selector
    # Selectors run once, before the first decoder layer (the papers' setting), keeping these shares of the
    # vision tokens: LLaVA-1.5's 64, 128 and 192 of 576.
    layer0_selectors: tuple[str, ...] = ("divprune", "dart", "cdpruner", "random-keep", "fastervlm", "visionzip",
                                         "tome", "grid-downsample", "grid-pool")
    layer0_keep: tuple[int, ...] = (64, 128, 192)  # of LAYER0_OF tokens
    objective: str = "kl"  # what the searches optimise on the calibration split
    seed: int = 0
    batch_size: int = 48

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Entry:
    """One row of the benchmark.

    ``schedule``: a fixed schedule; or ``search``: the method config ``tokenprune.search`` runs with
    ``budget`` and ``objective`` (the schedule is what it finds); or ``schedule_from``: reuse the schedule of
    an earlier entry (the random scorer on the same schedule as an attention-scored method).
    """

    id: str
    method: str  # family shown in the table and plot
    label: str
    scorer: str = DEFAULT_SCORER
    budget: float | None = None
    schedule: Schedule | None = None
    search: SearchConfig | None = None
    objective: str | None = None  # of the search (None: the method's default)
    schedule_from: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    selectors: tuple[str, ...] | None = None  # the search chooses the scorer among these (see tokenprune.search)


# Row-id prefix of the matched rows whose schedules every selector is evaluated on, and how the rows are named.
SELECTOR_SCHEDULES: dict[str, str] = {"fastv": "FastV schedule"}
SELECTOR_SEARCH_ID = "psigmoid-selectors"  # P-Sigmoid choosing the selector among DEFAULT_SCORER + selectors


def search_candidates(s: QualitySettings) -> tuple[str, ...]:
    return s.search_selectors if s.search_selectors is not None else (DEFAULT_SCORER, *s.selectors)


# Settings that only say which selector rows exist (each row records its own selector or candidates): a run of
# some rows may change them and still merge into earlier results.
ROW_SET_SETTINGS = ("selectors", "search_selectors", "selector_search_budgets", "selector_search_trials",
                    "layer0_selectors", "layer0_keep")
LAYER0_OF = 576  # layer-0 keep counts are given out of LLaVA-1.5's 576 vision tokens


def fixed_selector_id(selector: str, budget: float) -> str:
    """The P-Sigmoid row searched with ``selector`` fixed (the default scorer's is the plain P-Sigmoid row)."""
    return f"psigmoid-b{budget:g}" if selector == DEFAULT_SCORER else f"psigmoid-{selector}-b{budget:g}"


def plan(num_layers: int, settings: QualitySettings) -> list[Entry]:
    """Every entry for a ``num_layers``-layer language model, earlier entries first where later ones reuse them."""
    s = settings
    entries = [Entry("unpruned", "unpruned", "all tokens", schedule=Schedule.keep_all(num_layers))]
    for layer in s.fastv_layers:
        for drop in s.fastv_drop:
            entries.append(Entry(f"fastv-K{layer}-R{drop:g}", "FastV", f"K={layer}, R={drop:g}",
                                 schedule=Schedule.fastv(num_layers, layer, round(1.0 - drop, 6)),
                                 params={"K": layer, "R": drop}))
    for lam in s.pdrop_lambdas:
        entries.append(Entry(f"pdrop-l{lam:g}", "PyramidDrop", f"lambda={lam:g}",
                             schedule=Schedule.pdrop(num_layers, None, lam), params={"lambda": lam}))
    for eta in s.vtw_etas:
        entries.append(Entry(f"vtw-eta{eta:g}", "VTW", f"eta={eta:g}",
                             search=VTWConfig(eta=eta), params={"eta": eta}))
    for tol in s.gsearch_tolerances:
        entries.append(Entry(f"gsearch-tol{tol:g}", "G-Search", f"tolerance={tol:g}",
                             search=GSearchConfig(tolerance=tol), objective=s.objective,
                             params={"tolerance": tol}))
    for budget in s.budgets:
        entries.append(Entry(f"psigmoid-b{budget:g}", "P-Sigmoid", f"budget={budget:g}", budget=budget,
                             search=PSigmoidConfig(n_trials=s.psigmoid_trials, seed=s.seed), objective=s.objective))
        entries.append(Entry(f"fastv-b{budget:g}", "FastV (matched)", f"budget={budget:g}", budget=budget,
                             search=FastVConfig(), objective=s.objective))
        entries.append(Entry(f"pdrop-b{budget:g}", "PyramidDrop (matched)", f"budget={budget:g}", budget=budget,
                             search=PyramidDropConfig(), objective=s.objective))
        entries.append(Entry(f"random-psigmoid-b{budget:g}", "random scorer", f"P-Sigmoid schedule, budget={budget:g}",
                             scorer="random", budget=budget, schedule_from=f"psigmoid-b{budget:g}"))
        entries.append(Entry(f"random-fastv-b{budget:g}", "random scorer", f"FastV schedule, budget={budget:g}",
                             scorer="random", budget=budget, schedule_from=f"fastv-b{budget:g}"))
    entries += selector_entries(s)
    entries += layer0_entries(num_layers, s)
    return entries


def layer0_entries(num_layers: int, s: QualitySettings) -> list[Entry]:
    """Each layer-0 selector with one cut before the first decoder layer keeping ``k / 576`` of the tokens."""
    return [Entry(f"{selector}-layer0-k{keep}", f"{selector} (layer 0)", f"keep {keep}/{LAYER0_OF}", scorer=selector,
                  schedule=Schedule([keep / LAYER0_OF] * num_layers), params={"selector": selector, "keep": keep})
            for keep in s.layer0_keep for selector in s.layer0_selectors]


def selector_entries(s: QualitySettings) -> list[Entry]:
    """Each selector on the schedules of :data:`SELECTOR_SCHEDULES` at every budget; then, at the selector-search
    budgets, P-Sigmoid with each selector fixed and P-Sigmoid choosing among all of them."""
    entries = []
    for budget in s.budgets:
        for source, title in SELECTOR_SCHEDULES.items():
            for selector in s.selectors:
                entries.append(Entry(f"{selector}-{source}-b{budget:g}", f"{selector} ({title})",
                                     f"budget={budget:g}", scorer=selector, budget=budget,
                                     schedule_from=f"{source}-b{budget:g}", params={"selector": selector}))
    candidates = search_candidates(s)
    for budget in s.selector_search_budgets:
        for selector in [c for c in candidates if c != DEFAULT_SCORER]:  # the default's row is plain P-Sigmoid
            entries.append(Entry(fixed_selector_id(selector, budget), "P-Sigmoid (fixed selector)",
                                 f"{selector}, budget={budget:g}", scorer=selector, budget=budget,
                                 search=PSigmoidConfig(n_trials=s.psigmoid_trials, seed=s.seed), objective=s.objective,
                                 selectors=(selector,), params={"selector": selector}))
        entries.append(Entry(f"{SELECTOR_SEARCH_ID}-b{budget:g}", "P-Sigmoid (selector search)", f"budget={budget:g}",
                             budget=budget, search=PSigmoidConfig(n_trials=s.selector_search_trials, seed=s.seed),
                             objective=s.objective, selectors=candidates, params={"selectors": list(candidates)}))
    return entries
