"""VTW layer search: the first layer from which every vision token can be withdrawn.

tokenprune's definition (docs/guides/search.md, "tokenprune's definitions"): for ``K = start_layer, start_layer + 1, ...``
evaluate the schedule ``VTW(K)`` (all vision tokens before layer ``K``, none from ``K`` on) and return the
first ``K`` whose objective is within ``eta`` of the unpruned model's. With the default objective for this
method -- mean KL divergence of the last prompt token's next-token distribution, pruned against unpruned --
the unpruned value is 0 and the test is exactly "mean KL <= eta". Published thresholds: 0.003 (LLaVA-1.5-7B),
0.0005 (13B), 0.0001 (LLaVA-1.6-7B); the paper starts at layer 5, tokenprune at ``start_layer=1`` unless told.
If no layer qualifies, the result is the keep-all schedule and a note says so.
"""

from __future__ import annotations

from ..errors import ScheduleError, TokenPruneError, describe
from ..schedule import Schedule
from .configs import VTWConfig
from .result import Outcome
from .runner import TrialRunner


def vtw_search(runner: TrialRunner, config: VTWConfig) -> Outcome:
    evaluator = runner.evaluator
    num_layers = evaluator.num_layers
    eta, start_layer = config.eta, config.start_layer
    if start_layer >= num_layers:
        raise ScheduleError(describe(f"start_layer={start_layer!r}", "VTWConfig(start_layer=...)",
                                     f"1 <= start_layer < {num_layers} (the model's decoder layers)"))
    runner.set_total(1 + num_layers - start_layer)
    base_trial = runner.evaluate(Schedule.keep_all(num_layers), {"layer": num_layers, "role": "base"})
    if not base_trial.ok:
        raise TokenPruneError(describe(f"the unpruned model could not be evaluated: {base_trial.error}",
                                       "vtw base evaluation", "a finite objective for the keep-all schedule"))
    base = float(base_trial.objective)
    runner.set_best(base, 1.0)
    for layer in range(start_layer, num_layers):
        schedule = Schedule.vtw(num_layers, layer)
        evaluator.prefix_hint(schedule, upto=layer - 1)
        trial = runner.evaluate(schedule, {"layer": layer, "eta": eta})
        if trial.ok and evaluator.within(trial.objective, base, eta):
            evaluator.prefix_hint(None)
            runner.set_best(trial.objective, trial.flops_fraction)
            return Outcome(schedule=schedule, objective=trial.objective, base=base,
                           params={"eta": eta, "start_layer": start_layer, "layer": layer})
    evaluator.prefix_hint(None)
    return Outcome(schedule=Schedule.keep_all(num_layers), objective=base, base=base,
                   params={"eta": eta, "start_layer": start_layer, "layer": None},
                   notes=[f"no layer in [{start_layer}, {num_layers - 1}] met eta={eta:g}; returning keep-all"])
