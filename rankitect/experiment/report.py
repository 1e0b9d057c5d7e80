"""The Pareto front as a table (`rankitect report RUN`) and as a plot (RUN/pareto.png)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rankitect.errors import UserError
from rankitect.experiment.results import RESULT_FILE, SearchResult


def _row(name: str, entry: dict[str, Any]) -> list[str]:
    m, t = entry.get("metrics", {}), entry.get("test_metrics", {})
    fmt = lambda v, spec: format(v, spec) if isinstance(v, (int, float)) else "-"  # noqa: E731
    return [name, fmt(m.get("ne"), ".4f"), fmt(t.get("ne"), ".4f"), fmt(t.get("auc"), ".4f"),
            fmt(m.get("flops_per_example"), ",d"), fmt(m.get("params"), ",d"),
            fmt(m.get("latency"), ".2f"), fmt(entry.get("seconds"), ".0f")]


def report_lines(result: dict[str, Any], truth: dict[str, Any] | None = None) -> list[str]:
    """The front (by FLOPs), the best trial and the baselines, side by side."""
    header = ["", "valid NE", "test NE", "test AUC", "FLOPs/ex", "params", "lat. us/ex", "seconds"]
    rows = [_row(f"front #{t['number']}", t) for t in result.get("pareto", [])]
    best = result.get("best")
    if best is not None:
        rows.append(_row(f"best #{best['number']}", best))
    for name, entry in sorted(result.get("baselines", {}).items()):
        rows.append(_row(f"baseline {name}", entry))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    trials = result.get("trials", [])
    counts = {s: sum(1 for t in trials if t["status"] == s) for s in ("complete", "failed", "pruned")}
    lines.append(f"trials: {len(trials)} ({counts['complete']} complete, {counts['failed']} failed, "
                 f"{counts['pruned']} pruned); Pareto front: {len(result.get('pareto', []))}")
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
    gone = [f"#{t['number']}" for t in result.get("pareto", []) if t.get("checkpoint") is False]
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
        lines.append(f"{what.get(agreement['score'], agreement['score'])} vs trained validation NE over "
                     f"{agreement['archs']} retrained architectures: Kendall tau {agreement['kendall_tau']:+.3f}, "
                     f"Spearman {agreement['spearman']:+.3f}")
    return lines


def load_result(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / RESULT_FILE
    if not path.is_file():
        raise UserError(f"{run_dir}: no {RESULT_FILE}; is this a search run that has finished a trial?")
    return json.loads(path.read_text())


def write_pareto_plot(result: SearchResult, path: Path) -> None:
    """Validation NE against FLOPs of every complete trial, the front (over the configured
    objectives), and the baselines. Drawn on a Figure of its own with the Agg canvas: no
    pyplot, no global backend switched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    done = [t for t in result.trials if t["status"] == "complete" and t["metrics"].get("ne") is not None]
    ax.scatter([t["metrics"]["flops_per_example"] for t in done], [t["metrics"]["ne"] for t in done],
               s=14, c="0.7", label="trials")
    front = result.pareto
    ax.plot([t["metrics"]["flops_per_example"] for t in front], [t["metrics"]["ne"] for t in front],
            "o-", c="tab:blue", label="Pareto front")
    for name, entry in sorted(result.baselines.items()):
        m = entry.get("metrics", {})
        if m.get("ne") is not None:
            ax.scatter([m["flops_per_example"]], [m["ne"]], marker="s", s=36, label=f"baseline {name}")
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs per example")
    ax.set_ylabel("validation NE")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
