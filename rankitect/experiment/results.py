"""The search result: trials from the study, the front over the objectives, the best trial,
baselines.

`result.json` is a view of the study (trial outcomes are stored as user attributes) plus the
baselines file, so it can be rebuilt at any time, also for a search still running. Each trial
and baseline says whether its folder still holds its checkpoint (`checkpoint`: true/false, see
`budget.keep_checkpoints` in retention.py), and `checkpoints` names the policy applied.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from rankitect.searchers.base import search_trials
from rankitect.searchers.pareto import dominates, minimized, pareto_ranks
from rankitect.searchers.planned import read_plan_summary
from rankitect.searchers.rank_stats import kendall_tau, spearman
from rankitect.train.checkpoint import CHECKPOINT_FILE

RESULT_FILE = "result.json"
BASELINES_FILE = "baselines.json"
TRIALS_DIR = "trials"
BASELINES_DIR = "baselines"
OBJECTIVE_METRIC = {"flops": "flops_per_example"}  # objectives named otherwise than their metric
_STATES = {TrialState.COMPLETE: "complete", TrialState.FAIL: "failed", TrialState.PRUNED: "pruned"}


@dataclass
class SearchResult:
    run_dir: Path
    trials: list[dict[str, Any]]
    pareto: list[dict[str, Any]]
    best: dict[str, Any] | None
    baselines: dict[str, dict[str, Any]]
    final: dict[str, Any] = field(default_factory=dict)
    planning: dict[str, Any] = field(default_factory=dict)  # one-shot, DNAS or proxy searchers
    checkpoints: dict[str, Any] = field(default_factory=dict)  # the budget.keep_checkpoints policy applied
    objectives: list[str] = field(default_factory=lambda: ["ne", "flops"])

    def to_dict(self) -> dict[str, Any]:
        out = {"objectives": self.objectives, "trials": self.trials, "pareto": self.pareto, "best": self.best,
               "baselines": self.baselines}
        if self.checkpoints:
            out["checkpoints"] = self.checkpoints
        if self.final:
            out["final"] = self.final
        if self.planning:
            out["planning"] = self.planning
        if "supernet_flops" in self.planning:  # DistDNAS: every shard's weights and choice, per lambda
            out["supernet_flops"] = self.planning["supernet_flops"]
            out["shards"] = [shard for run in self.planning.get("lambdas", []) for shard in run.get("shards", [])]
        return out

    def save(self) -> None:
        path = self.run_dir / RESULT_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n")
        tmp.replace(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"not JSON serializable: {value!r}")


def curve_metric(objectives: Sequence[str]) -> str:
    """The validation metric a trial records per epoch (its learning curve, what pruners
    compare): the first objective when it is a model metric, else ne."""
    return objectives[0] if objectives and objectives[0] in ("ne", "logloss", "auc") else "ne"


def curve_of(intermediate: dict[Any, float], metric: str) -> dict[str, Any] | None:
    """The `curve` entry of a trial record, from its per-epoch values ({epoch: value}, keys
    int or str); None when none was recorded."""
    if not intermediate:
        return None
    epochs = sorted(int(k) for k in intermediate)
    values = {int(k): v for k, v in intermediate.items()}
    return {"metric": metric, "epochs": epochs, "values": [values[e] for e in epochs]}


def trial_record(frozen: optuna.trial.FrozenTrial, metric: str = "ne") -> dict[str, Any] | None:
    """The result.json form of a finished trial (None for a running one); `metric` names the
    values of its curve (`curve_metric`)."""
    state = _STATES.get(frozen.state)
    if state is None:
        return None
    attrs = frozen.user_attrs
    record = {"number": frozen.number, "status": state, "values": list(frozen.values) if frozen.values else None,
              "arch": attrs.get("arch"),
              "choices": dict(frozen.params), "metrics": attrs.get("metrics", {}),
              "test_metrics": attrs.get("test_metrics", {}), "seconds": attrs.get("seconds", 0.0),
              "wall_seconds": attrs.get("wall_seconds", 0.0),
              "attempts": attrs.get("attempts", 1)}
    if attrs.get("error"):
        record["error"] = attrs["error"]
    if attrs.get("rejected"):
        record["rejected"] = True
    if attrs.get("baseline"):  # the trial is a baseline's member of the space, asked first
        record["baseline"] = attrs["baseline"]
    if attrs.get("proposal"):
        record["proposal"] = attrs["proposal"]
    # Optuna keeps per-epoch values of single-objective studies itself, others in a user attribute.
    curve = curve_of(frozen.intermediate_values or attrs.get("intermediate") or {}, metric)
    if curve:
        record["curve"] = curve
    return record


def _scored(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Complete trials whose objective values are all finite."""
    return [t for t in trials if t["status"] == "complete" and t.get("values")
            and all(_finite(v) for v in t["values"])]


def pareto_front(trials: list[dict[str, Any]], directions: Sequence[str]) -> list[dict[str, Any]]:
    """Complete entries (trials, or baselines) not dominated on the objectives (validation
    values), ordered by the last objective (FLOPs by default), then number (baselines last)."""
    scored = _scored(trials)
    points = [minimized(t["values"], directions) for t in scored]
    front = [t for t, rank in zip(scored, pareto_ranks(points)) if rank == 0]
    return sorted(front, key=lambda t: (minimized(t["values"], directions)[-1], t.get("number", len(trials))))


def ranked_trials(trials: list[dict[str, Any]], directions: Sequence[str] = ("minimize",)) -> list[dict[str, Any]]:
    """Complete trials best first by the first objective on the validation dates, ties broken by
    the next objectives, then the lowest number: so the first is on the front. The one rule
    for `best` (RUN/best/) and for which checkpoints `budget.keep_checkpoints` keeps."""
    return sorted(_scored(trials), key=lambda t: (minimized(t["values"], directions), t["number"]))


def best_trial(trials: list[dict[str, Any]], directions: Sequence[str] = ("minimize",)) -> dict[str, Any] | None:
    """The best trial by the first objective among the front (`ranked_trials`' first)."""
    ranked = ranked_trials(trials, directions)
    return ranked[0] if ranked else None


def trial_folder(run_dir: Path, number: int) -> Path:
    """RUN/trials/<number>: where trial `number` trains (laid out like a `rankitect train` run)."""
    return run_dir / TRIALS_DIR / f"{number:04d}"


def has_checkpoint(folder: Path) -> bool:
    """Whether `folder` (a trial's or a baseline's) still holds its checkpoint.pt."""
    return (folder / CHECKPOINT_FILE).is_file()


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def load_baselines(run_dir: Path) -> dict[str, dict[str, Any]]:
    path = run_dir / BASELINES_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def save_baselines(run_dir: Path, baselines: dict[str, dict[str, Any]]) -> None:
    path = run_dir / BASELINES_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(baselines, indent=2, default=_json_default) + "\n")
    tmp.replace(path)


def proxy_agreement(trials: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """How well the planning phase's score `proposal[key]` (lower = predicted better: a
    supernet NE, a negated proxy) ranks the trained trials by validation NE: Kendall tau and
    Spearman rho over the complete trials that carry it (None with fewer than 3); beside it,
    `params`: the same for the trivial ranking by dense parameters (more predicted better), the
    reference a proxy has to beat to be worth its cost."""
    scored = [t for t in trials if t["status"] == "complete" and _finite(t.get("proposal", {}).get(key))
              and _finite(t["metrics"].get("ne"))]
    if len(scored) < 3:
        return None
    trained = [t["metrics"]["ne"] for t in scored]
    out = {"score": key, "archs": len(scored), **_rank_agreement([t["proposal"][key] for t in scored], trained)}
    params = [t["metrics"].get("dense_params") for t in scored]
    if all(_finite(p) for p in params):
        out["params"] = _rank_agreement([-p for p in params], trained)
    return out


def _rank_agreement(predicted: list[float], trained: list[float]) -> dict[str, float]:
    return {"kendall_tau": kendall_tau(predicted, trained), "spearman": spearman(predicted, trained)}


def objective_values(objectives: Sequence[str], metrics: dict[str, Any]) -> list[float]:
    """The values of `objectives` in a run's validation metrics, as the study holds them (NaN
    where one is missing)."""
    keys = [OBJECTIVE_METRIC.get(name, name) for name in objectives]
    return [float(metrics[k]) if k in metrics and _finite(metrics[k]) else float("nan") for k in keys]


def mark_front(trials: list[dict[str, Any]], baselines: dict[str, dict[str, Any]],
               directions: Sequence[str]) -> list[dict[str, Any]]:
    """The front over the trials and the baselines together (a baseline on it is its entry with
    `baseline`: its name, and no `number`). A trial a baseline dominates gets `dominated_by`:
    those baselines."""
    entries = [{"baseline": name, **entry} for name, entry in sorted(baselines.items())]
    for trial in _scored(trials):
        point = minimized(trial["values"], directions)
        beaten_by = [e["baseline"] for e in _scored(entries) if dominates(minimized(e["values"], directions), point)]
        if beaten_by:
            trial["dominated_by"] = beaten_by
    return pareto_front([*trials, *entries], directions)


def collect(run_dir: Path, study: optuna.Study, objectives: Sequence[str],
            with_planning: bool = True) -> SearchResult:
    """The result as the study and run folder hold it now; `with_planning` False skips reading
    the planning summary (for the progress bar, after every tell)."""
    metric = curve_metric(objectives)
    trials = [r for r in (trial_record(t, metric) for t in search_trials(study)) if r is not None]
    trials.sort(key=lambda t: t["number"])
    for trial in trials:  # kept or not: budget.keep_checkpoints (experiment/retention.py)
        trial["checkpoint"] = not trial.get("rejected") and has_checkpoint(trial_folder(run_dir, trial["number"]))
    baselines = {name: {**entry, "checkpoint": has_checkpoint(run_dir / BASELINES_DIR / name),
                        "values": objective_values(objectives, entry.get("metrics") or {})
                        if entry.get("status") == "complete" else None}
                 for name, entry in load_baselines(run_dir).items()}
    planning = read_plan_summary(run_dir) if with_planning else {}
    score_key = planning.get("score_key")
    if score_key:
        planning = {**planning, "agreement": proxy_agreement(trials, score_key)}
    directions = [d.name.lower() for d in study.directions]
    return SearchResult(run_dir=run_dir, trials=trials, pareto=mark_front(trials, baselines, directions),
                        best=best_trial(trials, directions),
                        baselines=baselines, planning=planning, objectives=list(objectives))
