"""The events of a job as the store keeps them: `kind` and a JSON payload.

  state     {"state": QUEUED|RUNNING|..., "message"}          (JobStore.transition writes these)
  progress  {"phase", "done", "total", "unit"}                a phase starts, or work within it
  trial     {"trial": result.json trial, "done", "total"}     a trial was told to the searcher
  best      {"trial"}                                         the best trial changed
  pareto    {"points": [trial, ...]}                          the NE-vs-FLOPs front changed
  log       {"text", "source"}                                a line of the driver's output

The worker's JSON lines (launcher.jobs.worker.JsonLineEvents) become these; the partial result
(a dict shaped like result.json) is kept up to date from them while the job runs.
"""

from __future__ import annotations

from typing import Any


def empty_result() -> dict[str, Any]:
    return {"trials": [], "pareto": [], "best": None, "baselines": {}}


def progress_payload(message: dict[str, Any]) -> dict[str, Any]:
    """A worker's "phase" line (a phase starts) or "progress" line (work within one)."""
    if message["kind"] == "phase":
        return {"phase": str(message["phase"]), "done": 0, "total": 0, "unit": "", "message": str(message["message"])}
    return {"phase": str(message["phase"]), "done": int(message["done"]), "total": int(message["total"]),
            "unit": str(message["unit"])}


def trial_payload(message: dict[str, Any]) -> dict[str, Any]:
    return {"trial": message["trial"], "done": int(message["done"]), "total": int(message["total"])}


def add_trial(result: dict[str, Any], trial: dict[str, Any]) -> None:
    """Put `trial` into the partial result's trials (replacing one of the same number)."""
    trials = [t for t in result.setdefault("trials", []) if t.get("number") != trial.get("number")]
    trials.append(trial)
    result["trials"] = sorted(trials, key=lambda t: t.get("number", 0))


def baseline_log(name: str, record: dict[str, Any]) -> dict[str, Any]:
    """The log event that says a baseline finished (and its validation NE)."""
    ne = (record.get("metrics") or {}).get("ne")
    score = f", validation NE {ne:.4f}" if isinstance(ne, (int, float)) else ""
    return {"text": f"baseline {name}: {record.get('status', '?')}{score}", "source": "driver"}
