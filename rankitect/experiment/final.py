"""Final seeds (`final.seeds` >= 2): the `final.top_k` best trials (by the first objective on
validation) and the baselines retrained with several seeds, for a mean and a spread of their
NE. The pick, `best`, becomes the candidate of the best mean validation NE: one lucky run no
longer decides. `best`'s and every baseline's `test_metrics` then become the means over the
seeds (`with_seed_means`)."""

from __future__ import annotations

import statistics
from typing import Any

from rankitect.arch.graph import Architecture
from rankitect.arch.validate import validate
from rankitect.experiment.driver import trial_spec
from rankitect.experiment.executor import TrialPool
from rankitect.experiment.plan import Plan
from rankitect.experiment.results import SearchResult, ranked_trials
from rankitect.experiment.retention import CheckpointRetention
from rankitect.experiment.trial import TrialOutcome

FINAL_SEED_OFFSET = 10_000  # final seeds start here above the search's seed, apart from trial seeds


def final_seeds(plan: Plan, result: SearchResult, pool: TrialPool, retention: CheckpointRetention) -> dict[str, Any]:
    """Mean and std of validation and test NE per architecture, keyed by baseline name and
    `trialNNNN` for the candidates, with "best" for the pick (also `trial`: its number), which
    becomes `result.best`. Their checkpoints are kept only under budget.keep_checkpoints: all."""
    cfg = plan.config
    candidates = {candidate_name(t["number"]): t for t in ranked_trials(result.trials, cfg.directions)[:cfg.final.top_k]}
    archs = {name: validate(Architecture.from_dict(t["arch"]), plan.dataset.schema) for name, t in candidates.items()}
    archs |= dict(plan.baselines)
    pending = [(name, k) for name in archs for k in range(cfg.final.seeds)]
    outcomes: dict[str, list[TrialOutcome]] = {name: [] for name in archs}
    while pending or pool.busy:
        while pending and pool.free > 0:
            name, k = pending.pop(0)
            pool.submit((name, k), trial_spec(plan, f"final {name} seed {k}", archs[name],
                                              cfg.seed + FINAL_SEED_OFFSET + k, f"final/{name}/seed{k}"))
        for (name, k), outcome, _ in pool.wait(timeout=0.5):
            outcomes[name].append(outcome)
            retention.discard(plan.run_dir / "final" / name / f"seed{k}")
    summaries = {name: _summary(runs) for name, runs in outcomes.items()}
    if not candidates:
        return summaries
    order = list(candidates)  # best single run first: it wins ties and candidates without a mean
    pick = min(order, key=lambda n: (_mean_or_inf(summaries[n]["valid_ne_mean"]), order.index(n)))
    result.best = candidates[pick]
    return {"best": {**summaries[pick], "trial": candidates[pick]["number"]}, **summaries}


def candidate_name(number: int) -> str:
    """The final-seed name (and RUN/final/ folder) of trial `number`."""
    return f"trial{number:04d}"


def _mean_or_inf(value: float | None) -> float:
    return value if value is not None else float("inf")


def with_seed_means(result: SearchResult) -> None:
    """`best`'s and every baseline's `test_metrics` as the means over their final seeds (with
    `seeds`: how many), where the final seeds ran; the single run's NE stays as `single_run_ne`.
    The trial's own record in `trials` keeps its single run."""
    for name, summary in result.final.items():
        entry = result.best if name == "best" else result.baselines.get(name)
        if entry is None or not summary["seeds"]:
            continue
        single = entry.get("test_metrics", {})
        means = {**single, **summary["test_metrics_mean"], "seeds": summary["seeds"], "single_run_ne": single.get("ne")}
        if name == "best":
            result.best = {**entry, "test_metrics": means}
        else:
            result.baselines[name] = {**entry, "test_metrics": means}


def _summary(runs: list[TrialOutcome]) -> dict[str, Any]:
    done = [o for o in runs if o.status == "complete"]
    valid = [o.metrics["ne"] for o in done]
    test = [o.test_metrics["ne"] for o in done]
    numeric = [k for k, v in (done[0].test_metrics.items() if done else ()) if isinstance(v, (int, float))]
    means = {k: statistics.fmean(o.test_metrics[k] for o in done) for k in numeric}
    return {"seeds": len(done), "test_metrics_mean": means,
            "valid_ne_mean": statistics.fmean(valid) if valid else None,
            "valid_ne_std": statistics.stdev(valid) if len(valid) > 1 else None,
            "test_ne_mean": statistics.fmean(test) if test else None,
            "test_ne_std": statistics.stdev(test) if len(test) > 1 else None}
