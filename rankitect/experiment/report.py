"""The Pareto front as a table (`rankitect report RUN`) and as a plot (RUN/pareto.png): the front
over the trials and the baselines together, and first of all whether the search beat the best
baseline."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rankitect.bootstrap import LEVEL, Difference, paired_difference, spread
from rankitect.errors import UserError
from rankitect.experiment.config import OBJECTIVES
from rankitect.experiment.results import OBJECTIVE_METRIC, RESULT_FILE, SearchResult


def _row(name: str, entry: dict[str, Any], reference: dict[str, Any] | None = None) -> list[str]:
    m, t = entry.get("metrics", {}), entry.get("test_metrics", {})
    fmt = lambda v, spec: format(v, spec) if isinstance(v, (int, float)) else "-"  # noqa: E731
    se = spread(m.get("valid_ne_replicates", []))
    valid = fmt(m.get("ne"), ".4f") + (f" ±{se:.4f}" if math.isfinite(se) else "")
    return [name, valid, _versus(entry, reference), fmt(t.get("ne"), ".4f"), fmt(t.get("auc"), ".4f"),
            fmt(m.get("flops_per_example"), ",d"), fmt(m.get("params"), ",d"),
            fmt(m.get("latency"), ".2f"), fmt(entry.get("seconds"), ".0f")]


def _difference(entry: dict[str, Any], reference: dict[str, Any] | None) -> Difference | None:
    if reference is None or entry is reference:
        return None
    return paired_difference(entry.get("metrics", {}).get("valid_ne_replicates", []),
                             reference.get("metrics", {}).get("valid_ne_replicates", []))


def _versus(entry: dict[str, Any], reference: dict[str, Any] | None) -> str:
    """The paired bootstrap difference of validation NE against `reference`: "-0.0042
    [-0.0071, -0.0013]" (a 90% interval), "*" marking an interval that excludes 0."""
    d = _difference(entry, reference)
    if d is None:
        return "-"
    return f"{d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}]" + ("*" if d.clear else "")


def best_baseline(result: dict[str, Any], key: str = "ne", sign: int = 1) -> tuple[str, dict[str, Any]] | None:
    """(name, entry) of the complete baseline with the best validation `key` (the lowest for
    `sign` 1, the highest for -1)."""
    done = {n: e for n, e in result.get("baselines", {}).items()
            if e.get("status") == "complete" and isinstance(e.get("metrics", {}).get(key), (int, float))}
    if not done:
        return None
    name = min(done, key=lambda n: sign * done[n]["metrics"][key])
    return name, done[name]


def uncertainty_lines(result: dict[str, Any]) -> list[str]:
    """Whether the validation rows tell the best apart from the best baseline and from the
    runner-up (paired bootstrap, rankitect.bootstrap)."""
    best = result.get("best")
    if best is None or not best.get("metrics", {}).get("valid_ne_replicates"):
        return []
    rows = f"{best['metrics']['rows']:,}" if isinstance(best["metrics"].get("rows"), int) else "?"
    lines = []
    base = best_baseline(result)
    others = [t for t in result.get("trials", []) if t.get("status") == "complete"
              and t.get("number") != best.get("number") and isinstance(t.get("metrics", {}).get("ne"), (int, float))]
    runner = min(others, key=lambda t: t["metrics"]["ne"], default=None)
    for what, entry in ((f"the best baseline {base[0]}" if base else "", base[1] if base else None),
                        (f"the runner-up #{runner['number']}" if runner else "", runner)):
        d = _difference(best, entry)
        if d is not None:
            lines.append(f"validation NE of best #{best['number']} minus {what}: {d.mean:+.4f}, {LEVEL:.0%} interval "
                         f"[{d.low:+.4f}, {d.high:+.4f}]: the {rows} validation rows "
                         + ("tell them apart" if d.clear else "are too few to tell them apart"))
    return lines


def _label(entry: dict[str, Any]) -> str:
    """A trial ("#7"; "#0 (dlrm in the space)" for a baseline's member) or a baseline."""
    if "number" not in entry:
        return f"baseline {entry['baseline']}"
    return f"#{entry['number']}" + (f" ({entry['baseline']} in the space)" if entry.get("baseline") else "")


def verdict(result: dict[str, Any]) -> str | None:
    """Whether the search's best beat the best baseline on the first objective (validation),
    and what the two score on test; None without a complete baseline."""
    objective = (result.get("objectives") or ["ne"])[0]
    key = OBJECTIVE_METRIC.get(objective, objective)
    sign = 1 if OBJECTIVES.get(objective) == "minimize" else -1
    top = best_baseline(result, key, sign)
    if top is None:
        return None
    name, base = top
    best = result.get("best")
    if best is None:
        return f"The search has no complete trial; the best baseline is {name} (validation {objective} " \
               f"{base['metrics'][key]:.4f})."
    value, base_value = best["metrics"][key], base["metrics"][key]
    beat = sign * value < sign * base_value and not best.get("baseline")
    test = lambda e: e.get("test_metrics", {}).get(key, e["metrics"].get(key))  # noqa: E731
    return (f"The search {'beat' if beat else 'did NOT beat'} the best baseline on validation {objective}: "
            f"best {_label(best)} {value:.4f} vs {name} {base_value:.4f} "
            f"({best['metrics'].get('flops_per_example', 0):,} vs {base['metrics'].get('flops_per_example', 0):,} "
            f"FLOPs/ex); on test {test(best):.4f} vs {test(base):.4f}"
            + ("" if beat else "; the search found nothing better than the baselines") + ".")


def report_lines(result: dict[str, Any], truth: dict[str, Any] | None = None) -> list[str]:
    """Whether the search beat the best baseline, then the front over trials and baselines (by
    FLOPs), the best trial and the baselines, side by side."""
    top = best_baseline(result)
    reference = top[1] if top else None
    header = ["", "valid NE ±se", f"vs {top[0] if top else 'best baseline'} ({LEVEL:.0%})", "test NE", "test AUC",
              "FLOPs/ex", "params", "lat. us/ex", "seconds"]
    rows = [_row(f"front {_label(t)}", t, reference) for t in result.get("pareto", [])]
    best = result.get("best")
    if best is not None:
        beaten = best.get("dominated_by")
        rows.append(_row(f"best #{best['number']}" + (f" (dominated by {', '.join(beaten)})" if beaten else ""),
                         best, reference))
    for name, entry in sorted(result.get("baselines", {}).items()):
        rows.append(_row(f"baseline {name}", entry, reference))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    trials = result.get("trials", [])
    counts = {s: sum(1 for t in trials if t["status"] == s) for s in ("complete", "failed", "pruned")}
    lines.append(f"trials: {len(trials)} ({counts['complete']} complete, {counts['failed']} failed, "
                 f"{counts['pruned']} pruned); Pareto front over trials and baselines: {len(result.get('pareto', []))}")
    dominated = [t for t in trials if t.get("dominated_by")]
    if dominated:
        lines.append(f"{len(dominated)} of {counts['complete']} complete trials are dominated by a baseline "
                     f"({', '.join(sorted({b for t in dominated for b in t['dominated_by']}))})")
    lines += uncertainty_lines(result)
    said = verdict(result)
    if said:
        lines.insert(0, said)
    lines += checkpoint_lines(result)
    if truth and best is not None:
        test_dates = best.get("test_metrics", {}).get("eval_dates", [])
        bayes = [truth["bayes_ne"][d] for d in test_dates if d in truth.get("bayes_ne", {})]
        if bayes:
            lines.append(f"Bayes-optimal test NE (synthetic truth): {sum(bayes) / len(bayes):.4f}")
    for name, summary in sorted(result.get("final", {}).items()):
        lines.append(f"final {name}: test NE {summary['test_ne_mean']:.4f} +- {summary['test_ne_std'] or 0:.4f} "
                     f"over {summary['seeds']} seeds")
    return lines + planning_lines(result.get("planning") or {})


def checkpoint_lines(result: dict[str, Any]) -> list[str]:
    """Which trials kept their checkpoint (budget.keep_checkpoints), and front members that did
    not: those cannot be exported, only retrained from their arch.json."""
    trials = [t for t in result.get("trials", []) if "checkpoint" in t and not t.get("rejected")]
    if not trials:  # a result.json from before checkpoints were tracked
        return []
    policy = result.get("checkpoints", {}).get("keep_checkpoints", "?")
    kept = [f"#{t['number']}" for t in trials if t["checkpoint"]]
    lines = [f"checkpoints: kept for {', '.join(kept) or 'no trial'}, not kept for "
             f"{len(trials) - len(kept)} trials (budget.keep_checkpoints={policy})"
             + ("; best/ holds the best's" if result.get("best") else "")]
    gone = [f"#{t['number']}" for t in result.get("pareto", []) if "number" in t and t.get("checkpoint") is False]
    if gone:
        lines.append(f"front {', '.join(gone)}: checkpoint not kept (budget.keep_checkpoints={policy}); "
                     f"retrain with `rankitect train --arch RUN/trials/NNNN/arch.json`, or search with "
                     f"budget.keep_checkpoints: all")
    return lines


def planning_lines(planning: dict[str, Any]) -> list[str]:
    """What a one-shot, DNAS or proxy search's planning phase found."""
    lines = []
    for run in planning.get("lambdas", []):
        if "shards" in run:  # distdnas
            same = sum(1 for s in run["shards"] if s["choice"] == run["choice"])
            lines.append(f"distdnas lambda={run['lambda']:g}: {same}/{len(run['shards'])} date shards chose "
                         f"the aggregated architecture ({planning.get('aggregation')}); full supernet "
                         f"{planning.get('supernet_flops') or 0:,} FLOPs/ex")
        else:
            lines.append(f"dnas lambda={run['lambda']:g}: derived {run['flops']:,} FLOPs/ex "
                         f"(expected {run['expected_flops']:,.0f} at the end of supernet training)")
    agreement = planning.get("agreement")
    if agreement:
        what = {"supernet_ne": "supernet NE (inherited weights)", "neg_proxy": f"proxy {planning.get('proxy')}"}
        name = what.get(agreement["score"], agreement["score"])
        lines.append(f"{name} vs trained validation NE over {agreement['archs']} retrained architectures: "
                     f"Kendall tau {agreement['kendall_tau']:+.3f}, Spearman {agreement['spearman']:+.3f}")
        params = agreement.get("params")
        if params:
            better = params["kendall_tau"] >= agreement["kendall_tau"]
            lines.append(f"dense parameter count (more = better) over the same architectures: Kendall tau "
                         f"{params['kendall_tau']:+.3f}, Spearman {params['spearman']:+.3f}: "
                         + (f"it ranks them at least as well as the {name}, at no cost" if better
                            else f"the {name} ranks them better"))
    return lines


def load_result(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / RESULT_FILE
    if not path.is_file():
        raise UserError(f"{run_dir}: no {RESULT_FILE}; is this a search run that has finished a trial?")
    return json.loads(path.read_text())


def load_truth(data_path: str) -> dict[str, Any] | None:
    """A synthetic dataset's truth.json (its Bayes-optimal NE per date), None for other data."""
    path = Path(data_path) / "truth.json"
    return json.loads(path.read_text()) if path.is_file() else None


def bayes_ne(truth: dict[str, Any] | None, dates: list[str]) -> float | None:
    """The mean Bayes-optimal NE of `dates` in a synthetic dataset's truth.json (None without)."""
    known = [truth["bayes_ne"][d] for d in dates if d in (truth or {}).get("bayes_ne", {})]
    return sum(known) / len(known) if known and len(known) == len(dates) else None


def write_pareto_plot(result: SearchResult, path: Path, truth: dict[str, Any] | None = None) -> None:
    """Validation NE against FLOPs: every complete trial, the front over trials and baselines
    (trial numbers on its points), each baseline with its own marker, and the Bayes-optimal NE
    as a line when the data's truth.json is given. Drawn on a Figure of its own with the Agg
    canvas: no pyplot, no global backend switched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    done = [t for t in result.trials if t["status"] == "complete" and t["metrics"].get("ne") is not None]
    ax.scatter([t["metrics"]["flops_per_example"] for t in done], [t["metrics"]["ne"] for t in done],
               s=14, c="0.7", label="trials", zorder=2)
    front = [t for t in result.pareto if t["metrics"].get("ne") is not None]
    ax.plot([t["metrics"]["flops_per_example"] for t in front], [t["metrics"]["ne"] for t in front],
            "-", c="tab:blue", label="front (trials and baselines)", zorder=3)
    for t in front:
        if "number" in t:
            ax.scatter([t["metrics"]["flops_per_example"]], [t["metrics"]["ne"]], s=30, c="tab:blue", zorder=4)
            ax.annotate(f"#{t['number']}", (t["metrics"]["flops_per_example"], t["metrics"]["ne"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=7)
    for (name, entry), marker in zip(sorted(result.baselines.items()), "sDv^P*Xph"):
        m = entry.get("metrics", {})
        if m.get("ne") is not None:
            ax.scatter([m["flops_per_example"]], [m["ne"]], marker=marker, s=48, edgecolors="black",
                       linewidths=0.5, label=f"baseline {name}", zorder=5)
    valid_dates = (result.best or {}).get("metrics", {}).get("eval_dates", [])
    bayes = bayes_ne(truth, valid_dates)
    if bayes is not None:
        ax.axhline(bayes, ls="--", c="tab:green", lw=1, label=f"Bayes-optimal NE {bayes:.4f}")
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs per example")
    ax.set_ylabel("validation NE")
    ax.set_title(f"{result.run_dir.name}: {len(done)} trials, front over trials and baselines", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
