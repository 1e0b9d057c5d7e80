"""DistDNAS's promise is speed: its wall time to its pick against TPE's wall time to its first
trial of equal or better validation NE, on the same workers, as the training days grow.

For each number of training days D (`--days`, default 2,4,8) the generator writes D + 2 days of
Criteo-shaped rows (`--profile criteo`: 26 id columns of Criteo's cardinalities, capped by the
profile's default, 13 dense columns; `--rows-per-day`, seed 0): train on days 1..D (DistDNAS:
one shard per day), select on day D+1, test on day D+2. DistDNAS over `--space` with every
default runs first; then TPE over the same space with the same training defaults, for at most
`--tpe-trials` trials. Neither trains baselines (their time would count for both). Measured on
the local Ray, one worker per core, in one run:
- DistDNAS's wall time to its pick (planning on the shards and the retraining of its
  distinct architectures), the pick's validation and test NE;
- the wall time at which TPE's first trial of validation NE at most DistDNAS's pick's completed
  (from the study's completion times, counted from the search's start), and the ratio TPE /
  DistDNAS: above 1, DistDNAS got there sooner.

Each finished run is kept under `--out`; a run started again with the same `--out` skips it.

    python -m benchmarks.bench_distdnas_speed [--days 2,4,8] [--rows-per-day 20000] [--space nasrec]
                                              [--tpe-trials 20] [--out bench_out/distdnas_speed]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from benchmarks.common import print_table
from rankitect.data.synth import SynthConfig, generate


def _config(data: Path, days: int, space: str, searcher: str, trials: int) -> dict[str, Any]:
    """Train on the first `days` dates of `data`, select on the next one, test on the one after."""
    from rankitect.data.dataset import Dataset

    dates = Dataset.open(str(data)).dates
    return {"data": {"path": str(data), "train_dates": f"first:{days}", "valid_dates": dates[days],
                     "test_dates": dates[days + 1]},
            "space": {"name": space}, "searcher": {"name": searcher}, "objectives": ["ne", "flops"],
            "budget": {"trials": trials}, "baselines": [], "seed": 0}


def _run(out: Path, name: str, config: dict[str, Any]) -> tuple[Path, float, float]:
    """(run folder, wall seconds, start time) of the search `name` under `out`, run unless kept."""
    from rankitect.experiment.run import search

    run_dir, stamp = out / name, out / f"{name}.time.json"
    if not stamp.exists():
        started = time.time()
        search(config, run_dir, force=True, progress=False)
        stamp.write_text(json.dumps({"start": started, "wall": time.time() - started}))
    timing = json.loads(stamp.read_text())
    return run_dir, timing["wall"], timing["start"]


def _completion_seconds(run_dir: Path, start: float) -> dict[int, float]:
    """{trial number: seconds from the search's start to the trial's completion} of the run's study."""
    import optuna

    from rankitect.searchers.base import search_trials

    study = optuna.load_study(study_name=None, storage=f"sqlite:///{run_dir / 'study.db'}")
    return {t.number: t.datetime_complete.timestamp() - start for t in search_trials(study)
            if t.datetime_complete is not None}


def measure(out: Path, days_list: list[int], rows_per_day: int, space: str, tpe_trials: int) -> list[dict[str, Any]]:
    from rankitect.experiment.executor import ray_session
    from rankitect.experiment.ray_env import loopback_environment

    loopback_environment()
    rows = []
    with ray_session(None):
        for days in days_list:
            data = out / f"data_{days}"
            if not (data / "truth.json").exists():
                generate(data, SynthConfig(days=days + 2, rows_per_day=rows_per_day, seed=0, profile="criteo"),
                         force=True)
            dist_dir, dist_wall, _ = _run(out, f"distdnas_{days}", _config(data, days, space, "distdnas", 1))
            pick = json.loads((dist_dir / "result.json").read_text())["best"]
            tpe_dir, tpe_wall, tpe_start = _run(out, f"tpe_{days}", _config(data, days, space, "tpe", tpe_trials))
            done = json.loads((tpe_dir / "result.json").read_text())["trials"]
            at = _completion_seconds(tpe_dir, tpe_start)
            target = pick["metrics"]["ne"]
            hits = sorted((at[t["number"]], t) for t in done
                          if t["status"] == "complete" and t["metrics"]["ne"] <= target and t["number"] in at)
            row = {"days": days, "rows": days * rows_per_day, "dist_wall": dist_wall, "dist_valid": target,
                   "dist_test": pick["test_metrics"]["ne"], "tpe_wall": tpe_wall, "tpe_trials": len(done),
                   "tpe_best": min(t["metrics"]["ne"] for t in done if t["status"] == "complete"),
                   "match_s": hits[0][0] if hits else None, "match_number": hits[0][1]["number"] if hits else None}
            print(f"{days} days: distdnas {dist_wall:.0f}s (valid NE {target:.4f}); tpe "
                  + (f"matched at {row['match_s']:.0f}s (#{row['match_number']})" if hits else
                     f"did not match in {len(done)} trials ({tpe_wall:.0f}s)"), flush=True)
            rows.append(row)
    return rows


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    table = []
    for r in rows:
        match = f"{r['match_s']:.0f} (#{r['match_number']})" if r["match_s"] is not None else f"> {r['tpe_wall']:.0f}"
        ratio = r["match_s"] / r["dist_wall"] if r["match_s"] is not None else r["tpe_wall"] / r["dist_wall"]
        table.append([r["days"], f"{r['rows']:,}", f"{r['dist_wall']:.0f}", f"{r['dist_valid']:.4f}",
                      f"{r['dist_test']:.4f}", f"{r['tpe_best']:.4f} ({r['tpe_trials']})", match,
                      f"{'>' if r['match_s'] is None else ''}{ratio:.2f}"])
    print_table(f"criteo profile, {args.rows_per_day:,} rows per day, space {args.space}: DistDNAS's wall to its pick "
                "vs TPE's wall to a trial of validation NE <= the pick's", ["train days", "train rows", "distdnas s",
                                                                          "pick valid NE", "pick test NE",
                                                                          "tpe best valid (trials)", "tpe match s",
                                                                          "tpe / distdnas"], table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", default="2,4,8", help="training days, comma-separated")
    parser.add_argument("--rows-per-day", type=int, default=20_000)
    parser.add_argument("--space", default="nasrec", choices=("nasrec", "interactions"))
    parser.add_argument("--tpe-trials", type=int, default=20)
    parser.add_argument("--out", default="bench_out/distdnas_speed", help="folder kept between runs")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = measure(out, [int(d) for d in args.days.split(",")], args.rows_per_day, args.space, args.tpe_trials)
    report(rows, args)


if __name__ == "__main__":
    main()
