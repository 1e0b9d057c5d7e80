"""MLflow logger: `logging: {mlflow: URI}`, or `MLflowLogger(URI)` as a callback.

A search is one parent run in the experiment `logging.mlflow_experiment` (tagged with its run
folder, so a continued search logs into the same parent); each trial and baseline is a child
run, logged when its outcome is told: params are its architecture choices, metrics the
validation curve (`valid/<metric>` by epoch) and the final valid/, test/, cost/ and time/
values (rankitect/experiment/log_values.py). The parent gets best/valid_ne when the best
changes and front/size when the front does (step: trials told). Talks to the tracking store through MlflowClient only, so a user's own active
MLflow run is left alone. Any tracking URI works: sqlite:///mlflow.db (a local store),
http://host:5000 (a tracking server), databricks.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rankitect.errors import UserError
from rankitect.experiment.events import SearchEvents
from rankitect.experiment.log_values import choice_params, record_scalars, run_name

RUN_DIR_TAG = "rankitect.run_dir"
ROLE_TAG = "rankitect.role"  # "search" (the parent), "trial" or "baseline"
_BATCH = 100  # params per log_batch call (MLflow's limit per request)


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise UserError("logging.mlflow: needs MLflow; pip install 'rankitect[mlflow]'") from None
    return mlflow


@contextlib.contextmanager
def _store_notes_quiet() -> Iterator[None]:
    """MLflow's INFO notes while it opens a store ("Creating initial MLflow database tables...")
    kept off a search's output; warnings still show. Its logger's level is restored after."""
    logger = logging.getLogger("mlflow.store")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


class MLflowLogger(SearchEvents):
    """Logs a search into the MLflow tracking store at `tracking_uri`, under `experiment`."""

    def __init__(self, tracking_uri: str, experiment: str = "rankitect") -> None:
        mlflow = _mlflow()
        self.entities = mlflow.entities
        try:
            with _store_notes_quiet():
                self.client = mlflow.MlflowClient(tracking_uri=tracking_uri)
                found = self.client.get_experiment_by_name(experiment)
                if found is not None and found.lifecycle_stage == "deleted":
                    raise UserError(f"logging.mlflow_experiment: the experiment {experiment!r} is deleted in "
                                    f"{tracking_uri!r}; restore it (mlflow experiments restore) or name another")
                self.experiment_id = found.experiment_id if found else self._create_experiment(experiment)
        except UserError:
            raise
        except Exception as exc:  # MLflow raises its own errors, OSError, SQLAlchemy's...: all mean "not usable"
            raise UserError(f"logging.mlflow: cannot use the tracking store {tracking_uri!r}: "
                            f"{type(exc).__name__}: {exc}") from None
        self.uri, self.parent_id, self.finished, self.told = tracking_uri, None, False, 0

    def _create_experiment(self, name: str) -> str:
        try:
            return self.client.create_experiment(name)
        except Exception:  # another search created it in between
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def search_started(self, run_dir: Path, config: dict[str, Any], continued: bool) -> None:
        folder = str(Path(run_dir).resolve())
        # Matched here rather than in the filter string, which a quote in the path would break.
        parents = self.client.search_runs([self.experiment_id], max_results=5000,
                                          filter_string=f"tags.`{ROLE_TAG}` = 'search'",
                                          order_by=["attributes.start_time DESC"])
        earlier = [r for r in parents if r.data.tags.get(RUN_DIR_TAG) == folder] if continued else []
        if earlier:  # a continued search: its latest parent, running again (--force starts a new one)
            self.parent_id = earlier[0].info.run_id
            self.client.update_run(self.parent_id, status="RUNNING")
        else:
            tags = {RUN_DIR_TAG: folder, ROLE_TAG: "search"}
            run = self.client.create_run(self.experiment_id, run_name=Path(run_dir).name, tags=tags)
            self.parent_id = run.info.run_id
            params = {"space": config["space"]["name"], "searcher": config["searcher"]["name"],
                      "objectives": ",".join(config.get("objectives", [])), "seed": config.get("seed", 0),
                      "budget.trials": config.get("budget", {}).get("trials"), "data.path": config["data"]["path"]}
            self._log(self.parent_id, {}, params)

    def _log(self, run_id: str, scalars: dict[str, float], params: dict[str, Any],
             curve: dict[str, Any] | None = None, step: int = 0) -> None:
        now = int(time.time() * 1000)
        metric = self.entities.Metric
        metrics = [metric(tag, value, now, step) for tag, value in scalars.items()]
        if curve:
            metrics += [metric(f"valid/{curve['metric']}", value, now, epoch)
                        for epoch, value in zip(curve["epochs"], curve["values"])]
        items = [self.entities.Param(k, str(v)) for k, v in params.items() if v is not None]
        for start in range(0, max(len(items), 1), _BATCH):
            self.client.log_batch(run_id, metrics=metrics if start == 0 else [], params=items[start:start + _BATCH])

    def _child(self, name: str, role: str, record: dict[str, Any], params: dict[str, Any],
               tags: dict[str, str]) -> None:
        started = int((time.time() - float(record.get("wall_seconds") or record.get("seconds") or 0.0)) * 1000)
        run = self.client.create_run(self.experiment_id, run_name=name, start_time=started,
                                     tags={"mlflow.parentRunId": self.parent_id, ROLE_TAG: role, **tags})
        scalars = record_scalars(record)
        curve = record.get("curve")
        if curve:
            scalars.pop(f"valid/{curve['metric']}", None)  # logged by epoch, its last value last
        self._log(run.info.run_id, scalars, params, curve)
        status = "FINISHED" if record.get("status") == "complete" else "FAILED"
        self.client.set_terminated(run.info.run_id, status=status)

    def trial(self, trial: dict[str, Any], done: int, total: int) -> None:
        self.told = done
        tags = {"rankitect.trial": str(trial["number"]), "rankitect.status": trial["status"]}
        if trial.get("baseline"):
            tags["rankitect.baseline"] = trial["baseline"]
        if trial.get("error"):
            tags["rankitect.error"] = str(trial["error"])[:5000]
        self._child(run_name(trial), "trial", trial, choice_params(trial.get("choices") or {}), tags)

    def baseline(self, name: str, record: dict[str, Any]) -> None:
        tags = {"rankitect.baseline": name, "rankitect.status": str(record.get("status"))}
        self._child(f"baseline {name}", "baseline", record, {"baseline": name}, tags)

    def best(self, trial: dict[str, Any]) -> None:
        value = record_scalars(trial).get("valid/ne")
        if value is not None and self.parent_id:
            self._log(self.parent_id, {"best/valid_ne": value}, {}, step=self.told)

    def pareto(self, points: list[dict[str, Any]]) -> None:
        if self.parent_id:
            self._log(self.parent_id, {"front/size": float(len(points))}, {}, step=self.told)

    def search_finished(self, result: Any) -> None:
        if self.parent_id and result.best:
            self.client.set_tag(self.parent_id, "rankitect.best_trial", str(result.best["number"]))
        self.finished = True

    def close(self) -> None:
        """Ends the parent run: FINISHED after search_finished, KILLED for a search stopped early."""
        if self.parent_id:
            self.client.set_terminated(self.parent_id, status="FINISHED" if self.finished else "KILLED")
            self.parent_id = None
