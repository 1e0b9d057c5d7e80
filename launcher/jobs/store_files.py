"""The job store's file and the runs folder it goes with: what is checked before a server uses them.

`open_store_file` refuses a file that is not a sound job store: cut short, its header
overwritten, a page damaged (SQLite's quick_check), another program's database, or one of a
newer Rankitect. `check_runs_dir` refuses a store that does not belong to its runs folder: a
job folder (`job-NNNNNN`) with an id beyond every id the store issued (the store was emptied,
cut short or replaced: `truncate -s 0 jobs.sqlite3` is the simplest way there), or one whose
`config.yaml` is not the config the store has for that job. Both raise StoreUnusable, a
UserError whose one-line message names the store and the folder: `rankitect serve` prints it
and exits 2; nothing the store holds is changed (a new, empty file gets its tables).
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from rankitect.errors import UserError

JOB_FOLDER = re.compile(r"job-(\d{6,})")  # the name of a job's run folder: its id
TABLES = frozenset({"jobs", "events", "results"})
CONFIG_FILE = "config.yaml"  # launcher.jobs.worker.CONFIG_FILE (not imported: the worker imports torch)


class StoreUnusable(UserError):
    """The store file is damaged, or does not belong to the runs folder it is used with: the
    server does not start on it (the CLI prints the message and exits 2)."""


def job_id(number: int) -> str:
    return f"job-{number:06d}"


def open_store_file(db: sqlite3.Connection, path: Path, schema: str, version: int) -> None:
    """Put the connection in WAL mode and create the schema if the file is new; StoreUnusable
    for a file that is not a sound job store. A sound store is not written to (it opens on a
    full disk)."""
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses nothing
        problems = [row[0] for row in db.execute("PRAGMA quick_check(3)").fetchall()]
        found = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise _damaged(path, str(exc)) from None
    if problems != ["ok"]:
        raise _damaged(path, "; ".join(p.replace("\n", " ") for p in problems)[:300])
    if found > version:
        raise StoreUnusable(f"job store {path}: written by a newer Rankitect (schema {found} > {version}); "
                            f"use that version")
    if found == version and TABLES <= tables:
        return
    if tables - {"sqlite_sequence"} and not TABLES <= tables:
        raise StoreUnusable(f"job store {path}: an SQLite database, but not a job store (its tables: "
                            f"{', '.join(sorted(tables))}); give another --db")
    try:
        db.executescript(schema)
        db.execute(f"PRAGMA user_version={version}")
    except sqlite3.DatabaseError as exc:
        raise StoreUnusable(f"job store {path}: cannot create its tables ({exc})") from None


def _damaged(path: Path, detail: str) -> StoreUnusable:
    return StoreUnusable(f"job store {path}: damaged, not a readable SQLite database ({detail}); the server does "
                         f"not start on it: restore it from a backup, or move it aside together with its runs "
                         f"folder to start afresh")


def issued(db: sqlite3.Connection) -> int:
    """The highest job number the store ever gave (AUTOINCREMENT's sequence, or a row's)."""
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'").fetchone()
    top = db.execute("SELECT MAX(seq) FROM jobs").fetchone()[0]
    return max(row[0] if row else 0, top or 0)


def check_runs_dir(db: sqlite3.Connection, path: Path, runs_dir: Path) -> None:
    """StoreUnusable (naming the store and `runs_dir`) unless every job folder in `runs_dir` is
    one of the store's ids, with the config the store has for it where both have one."""
    folders = {}
    if runs_dir.is_dir():
        for entry in runs_dir.iterdir():
            match = JOB_FOLDER.fullmatch(entry.name)
            if match and entry.is_dir():
                folders[int(match.group(1))] = entry
    top = issued(db)
    unknown = sorted(n for n in folders if n > top)
    if unknown:
        which = job_id(unknown[0]) if len(unknown) == 1 else f"{job_id(unknown[0])} .. {job_id(unknown[-1])}"
        gave = "no ids" if top == 0 else f"ids up to {job_id(top)}"
        raise StoreUnusable(
            f"job store {path} does not match its runs folder {runs_dir}: the folder holds {len(unknown)} job "
            f"folders the store has no record of ({which}; the store issued {gave}): the store was emptied, cut "
            f"short or replaced. The server does not start: restore the store from a backup, or give another "
            f"--runs-dir (or move {runs_dir} aside)")
    names = [job_id(n) for n in folders]
    configs: dict[str, str] = {}
    for i in range(0, len(names), 500):
        chunk = names[i:i + 500]
        configs.update(db.execute(f"SELECT job_id, config_yaml FROM jobs WHERE job_id IN "
                                  f"({', '.join('?' * len(chunk))})", chunk).fetchall())
    for number, folder in sorted(folders.items()):
        config = folder / CONFIG_FILE
        if job_id(number) in configs and config.is_file() and config.read_text() != configs[job_id(number)]:
            raise StoreUnusable(
                f"job store {path} does not match its runs folder {runs_dir}: {config} is not the config the "
                f"store has for {job_id(number)} (the store belongs to other run folders?). The server does not "
                f"start: give the --db and --runs-dir that belong together")
