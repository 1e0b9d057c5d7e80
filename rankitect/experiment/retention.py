"""Which checkpoints a search keeps on disk (`budget.keep_checkpoints`), and RUN/best/.

A trial's checkpoint.pt (over 1 GB on a real table) is needed only while its trial runs and to
be exported: an interrupted trial is trained again from its start under the same number (its
checkpoint is never resumed from), the final seeds retrain from scratch, and `rankitect export
RUN` exports RUN/best/, a copy of the best trial's folder (best by the first objective on the validation
dates, lowest number on ties: `results.ranked_trials`). So a search keeps:

- `best` (default): the checkpoint of the trial that is best now, besides RUN/best/ (whose
  checkpoint.pt is a hard link to it where the file system allows: one copy on disk);
- `top_k`: those of the `budget.keep_top_k` (3) best trials;
- `all`: every trial's, baseline's and final seed's (the behaviour before this setting).

Other finished trials, the baselines and the final-seed runs keep arch.json, config.json,
metrics.json, outcome.json, worker.json and a note, checkpoint_not_kept.json, that `rankitect
export` reads to say why there is nothing to export. The planning phase's files (RUN/planning/)
are not touched: epoch checkpoints of its jobs go when each job finishes; one-shot and proxy
keep their trained supernet (one file per search) so that a larger `budget.trials` plans again
on it without training it again.

Order, so that a driver killed at any point loses nothing still needed:
1. nothing of a trial is removed before it is told (its outcome is in the study); a running
   trial, or one finished and not yet told, is never touched;
2. RUN/best/ is rebuilt from the new best (in best.tmp/, swapped in by two renames, the folder
   synced; best/source.json names the trial) before the previous best's checkpoint goes;
3. the note is written before the checkpoint is unlinked.
A driver started again applies the policy at once (it publishes best/ if best/ is not the
best's, and removes what an earlier driver was killed before removing). A trial leaves the k
best only when better ones are told, and never comes back, so a policy never wants back what it
removed. A policy changed on a continued search applies from then on: removed checkpoints stay
removed, and `all` keeps every checkpoint still there.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rankitect.experiment.config import BudgetSection
from rankitect.experiment.results import BASELINES_DIR, SearchResult, ranked_trials, trial_folder
from rankitect.export.run_folder import BEST_DIR, NOT_KEPT_FILE
from rankitect.train.checkpoint import CHECKPOINT_FILE

SOURCE_FILE = "source.json"  # in RUN/best/: {"trial": n}, the trial it was copied from


class CheckpointRetention:
    """Applies `budget.keep_checkpoints` to one run folder. Not thread-safe; one per search."""

    def __init__(self, run_dir: Path, budget: BudgetSection, directions: Sequence[str] = ("minimize",),
                 candidates: int = 1) -> None:
        """`candidates`: the best trials that keep their checkpoints whatever the policy, until
        the final seeds pick one of them (FinalSection.candidates)."""
        self.run_dir, self.policy, self.k = Path(run_dir), budget.keep_checkpoints, budget.top_k
        self.candidates = candidates
        self.directions = tuple(directions)
        self.best_dir = self.run_dir / BEST_DIR
        self._published = published_trial(self.run_dir)

    @property
    def kept_text(self) -> str:
        """What the policy keeps, in words (for the note and the report)."""
        if self.policy == "top_k":
            return f"the checkpoints of the {self.k} best trials only (budget.keep_top_k)"
        if self.policy == "best":
            return "the best trial's checkpoint only, copied to best/"
        return "every checkpoint"

    def kept_trials(self, trials: list[dict[str, Any]], best: int | None = None) -> set[int] | None:
        """Numbers of the told trials whose checkpoints stay (None: all of them): trial `best`
        (the pick; without it the best ranked), the `top_k` best ranked under that policy, and
        the `candidates` best ranked."""
        if self.policy == "all":
            return None
        ranked = ranked_trials(trials, self.directions)
        keep = {t["number"] for t in ranked[:max(self.k if self.policy == "top_k" else 0, self.candidates)]}
        if best is not None:
            keep.add(best)
        elif ranked:
            keep.add(ranked[0]["number"])
        return keep

    def describe(self, result: SearchResult) -> None:
        """Name the policy in `result` (result.json's `checkpoints`, read by the report)."""
        result.checkpoints = {"keep_checkpoints": self.policy,
                              **({"keep_top_k": self.k} if self.policy == "top_k" else {}),
                              "kept": self.kept_text}

    def apply(self, result: SearchResult) -> None:
        """After a tell (and when a driver starts or ends): publish RUN/best/ if the best
        changed, then remove the checkpoints of told trials the policy does not keep; their
        records in `result` (trials, pareto, best share them) get `checkpoint: False`."""
        self.describe(result)
        self.publish_best(result.best["number"] if result.best is not None else None)
        keep = self.kept_trials(result.trials, result.best["number"] if result.best is not None else None)
        if keep is None:
            return
        for trial in result.trials:
            if trial["number"] not in keep and not trial.get("rejected"):
                self.discard(trial_folder(self.run_dir, trial["number"]))
                trial["checkpoint"] = False

    def discard_baselines(self, names: list[str]) -> None:
        """Remove the checkpoints of these finished baselines (none are running now)."""
        for name in names:
            self.discard(self.run_dir / BASELINES_DIR / name)

    def discard(self, folder: Path) -> None:
        """Remove `folder`'s checkpoint.pt (and torn temp files of one), the note first; nothing
        under `all`. Only for a folder no worker writes to any more."""
        if self.policy == "all":
            return
        checkpoint = folder / CHECKPOINT_FILE
        leftovers = sorted(folder.glob(f"{CHECKPOINT_FILE}.tmp*")) if folder.is_dir() else []
        if not checkpoint.exists() and not leftovers:
            return
        _write_json(folder / NOT_KEPT_FILE, {"keep_checkpoints": self.policy, "kept": self.kept_text,
                                             "search": str(self.run_dir.resolve())})
        for path in (checkpoint, *leftovers):
            path.unlink(missing_ok=True)

    def publish_best(self, number: int | None) -> None:
        """Make RUN/best/ a copy of trial `number`'s folder (remove it for None), unless it is."""
        tmp, old = self.run_dir / f"{BEST_DIR}.tmp", self.run_dir / f"{BEST_DIR}.old"
        for leftover in (tmp, old):  # of a driver killed while publishing
            if leftover.exists():
                shutil.rmtree(leftover)
        in_place = self.best_dir.is_dir() if number is not None else not self.best_dir.exists()
        if number == self._published and in_place:
            return
        if number is None:
            shutil.rmtree(self.best_dir, ignore_errors=True)
            self._published = None
            return
        shutil.copytree(trial_folder(self.run_dir, number), tmp, copy_function=_link_or_copy,
                        ignore=shutil.ignore_patterns(f"{CHECKPOINT_FILE}.tmp*", NOT_KEPT_FILE))
        _write_json(tmp / SOURCE_FILE, {"trial": number})
        _fsync(tmp)
        if self.best_dir.exists():
            self.best_dir.rename(old)
        tmp.rename(self.best_dir)
        _fsync(self.run_dir)  # best/ is the new best's before anything of the old one goes
        shutil.rmtree(old, ignore_errors=True)
        self._published = number


def published_trial(run_dir: Path) -> int | None:
    """The trial RUN/best/ was copied from (None when unknown or there is no best/)."""
    try:
        return int(json.loads((Path(run_dir) / BEST_DIR / SOURCE_FILE).read_text())["trial"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _link_or_copy(src: str, dst: str) -> str:
    """The checkpoint as a hard link (no second copy on disk), else copied; small files copied."""
    if Path(src).name == CHECKPOINT_FILE:
        try:
            os.link(src, dst)
            return dst
        except OSError:
            pass
    shutil.copy2(src, dst)
    if Path(src).name == CHECKPOINT_FILE:
        with open(dst, "rb+") as handle:
            os.fsync(handle.fileno())
    return dst


def _fsync(folder: Path) -> None:
    """Flush a folder's entries (renames, new files) to disk, where the platform allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_json(path: Path, value: dict[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    tmp.replace(path)
