"""DistDNAS on synthetic data with planted interactions and day-to-day drift.

8 days x 50k rows (default difficulty, seed 0): train on days 1-6 (one shard per day), select
on day 7, test on day 8. Measured in one run on a local Ray with 2 workers:
1. quality: the DistDNAS search (default options), its pick's test NE against the Bayes NE of
   day 8 and its FLOPs against the full supernet's; which module types it kept, and for each
   planted interaction the NE of the Bayes predictor without it (a pick scoring below that
   models the interaction, whichever module does it). Then each
   day's own lambda=0 choice retrained like the trials: the aggregate against the median day;
   and the true form (examples/archs/dlrm_cross.json: DLRM plus a DCN layer, which can express
   every planted interaction) retrained the same way: the floor this recipe and drift allow.
   Every architecture pools the tags list by its mean (space option pooling: mean), the form
   of the generator's tag term; with sum pooling the true form lands at +1.44% of Bayes, with
   mean pooling at +1.14% (one run each).
2. scaling of the shard phase: the six lambda=0 shard trainings on 2 workers against the same
   six one after the other on 1 worker (1 thread each), next to the ceiling: two independent
   trainings of one shard on 2 workers against one after the other; and the first four
   shards on 2 workers, for how the phase grows with the number of dates.
3. the TPE search of bench_search (nasrec, 40 trials) on the same data and dates.

    python -m benchmarks.bench_distdnas [--skip-tpe]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import print_table
from rankitect.data.synth import SynthConfig, ablated_bayes_ne, generate
from rankitect.experiment.run import search
from search_spaces.interactions import MODULES

DATES = {"train_dates": "first:6", "valid_dates": "2024-01-07", "test_dates": "2024-01-08"}
# Every trial, single day and reference is trained so. 3 epochs at batch 512 costs fewer steps than
# bench_search's 2 at 256 and lands closer to the Bayes NE (true form +1.44% against +1.86%).
TRAIN = {"epochs": 3, "batch_size": 512, "lr": 0.005}
POOLING = "mean"


def _config(data: Path, space: dict[str, Any], searcher: dict[str, Any], trials: int = 1) -> dict[str, Any]:
    return {"data": {"path": str(data), **DATES}, "space": space, "searcher": searcher,
            "objectives": ["ne", "flops"], "budget": {"trials": trials}, "train": TRAIN, "baselines": [], "seed": 0}


def _timed_calls(pool: Any, calls: list[tuple[Any, dict[str, Any]]]) -> float:
    """Seconds to run every call on the pool, queued as workers free up."""
    started, pending = time.perf_counter(), list(enumerate(calls))
    while pending or pool.busy:
        while pending and pool.free > 0:
            key, (fn, kwargs) = pending.pop(0)
            pool.submit_call(key, fn, **kwargs)
        pool.wait(timeout=0.2)
    return time.perf_counter() - started


def measure(work: Path, skip_tpe: bool) -> dict[str, Any]:
    import ray

    from distdnas.searcher import DistDnasOptions
    from rankitect.arch.graph import Architecture
    from rankitect.arch.validate import validate
    from rankitect.data.dataset import Dataset
    from rankitect.experiment.executor import TrialPool, ray_session
    from rankitect.experiment.ray_env import loopback_environment
    from rankitect.experiment.trial import TrialSpec
    from rankitect.searchers.dnas import train_dnas
    from rankitect.space import make_space
    from rankitect.train.config import TrainConfig
    from rankitect.train.run import RunDates

    loopback_environment()
    data = work / "data"
    synth = SynthConfig(days=8, rows_per_day=50_000, seed=0)
    generate(data, synth, force=True)
    truth = json.loads((data / "truth.json").read_text())
    out: dict[str, Any] = {"bayes_test_ne": truth["bayes_ne"]["2024-01-08"], "planted": truth["interactions"],
                           "ablated": ablated_bayes_ne(synth, 7)}
    space = {"name": "interactions", "layers": 3, "pooling": POOLING}
    with ray_session(None):
        started = time.perf_counter()
        result = search(_config(data, space, {"name": "distdnas"}), work / "distdnas", force=True, progress=False)
        out["distdnas"] = {"wall": time.perf_counter() - started, "result": result.to_dict()}
        print(f"distdnas: {out['distdnas']['wall']:.0f}s", flush=True)

        # Each day's own lambda=0 choice, retrained like a trial.
        shards = [s for s in result.to_dict()["shards"] if s["lambda"] == 0.0]
        ds = Dataset.open(str(data))
        interactions = make_space("interactions", ds.schema, {"layers": 3, "pooling": POOLING})
        pool = TrialPool(2, 1, 0.0, 1)
        train_dates = tuple(ds.select_dates("first:6", "data.train_dates"))
        days: dict[int, Any] = {}
        archs = [interactions.decode(interactions.check_choices(s["choice"])).to_dict() for s in shards]
        true_form = json.loads((Path(__file__).parents[1] / "examples" / "archs" / "dlrm_cross.json").read_text())
        archs.append({**true_form, "embedding": {**true_form["embedding"], "pooling": POOLING}})
        for j, arch in enumerate(archs):
            spec = TrialSpec(name=f"day {j}", arch=validate(Architecture.from_dict(arch), ds.schema), data_path=ds.uri,
                             dates=RunDates(train_dates, ("2024-01-07",), ("2024-01-08",)),
                             train=TrainConfig(**TRAIN, seed=0, checkpoint_every=0),
                             out_dir=str(work / "days" / str(j)))
            while pool.free < 1:
                days.update((key, outcome) for key, outcome, _ in pool.wait(timeout=0.2))
            pool.submit(j, spec)
        while pool.busy:
            days.update((key, outcome) for key, outcome, _ in pool.wait(timeout=0.2))
        scored = [{"valid_ne": o.metrics.get("ne"), "test_ne": o.test_metrics.get("ne"),
                   "flops": o.metrics.get("flops_per_example")} for _, o in sorted(days.items())]
        out["days"], out["true_form"] = scored[:-1], scored[-1]
        pool.shutdown()

        # Scaling of the shard phase.
        options = DistDnasOptions()
        train = TrainConfig(**TRAIN, seed=0)

        def call(dates: tuple[str, ...], tag: str) -> tuple[Any, dict[str, Any]]:
            return train_dnas, {"data_path": ds.uri, "space": interactions,
                                "train_dates": dates, "train": train, "opts": options, "lam": 0.0, "seed": 0,
                                "out_file": str(work / "scaling" / f"{tag}.json")}

        (work / "scaling").mkdir()
        six = [call((d,), f"six_{w}_{d}") for w in (1, 2) for d in train_dates]
        two = [call((train_dates[0],), f"two_{w}_{k}") for w in (1, 2) for k in range(2)]
        four = [call((d,), f"four_{d}") for d in train_dates[:4]]
        timings = {}
        for workers in (1, 2):
            pool = TrialPool(workers, 1, 0.0, 1)
            _timed_calls(pool, [call((train_dates[0],), f"warm_{workers}_{k}") for k in range(workers)])  # start actors
            timings[f"six_{workers}"] = _timed_calls(pool, six[(workers - 1) * 6: workers * 6])
            timings[f"two_{workers}"] = _timed_calls(pool, two[(workers - 1) * 2: workers * 2])
            if workers == 2:
                timings["four_2"] = _timed_calls(pool, four)
            pool.shutdown()
        out["scaling"] = timings
        print(f"scaling: {timings}", flush=True)

        if not skip_tpe:
            started = time.perf_counter()
            tpe = search(_config(data, {"name": "nasrec", "blocks": 3, "pooling": POOLING}, {"name": "tpe"}, 40), work / "tpe",
                         force=True, progress=False)
            out["tpe"] = {"wall": time.perf_counter() - started, "result": tpe.to_dict()}
            print(f"tpe: {out['tpe']['wall']:.0f}s", flush=True)
        ray.shutdown()
    return out


def _pick(result: dict[str, Any]) -> dict[str, Any]:
    return min((t for t in result["trials"] if t["status"] == "complete"), key=lambda t: t["metrics"]["ne"])


def _planted_types(planted: list[dict[str, Any]], choice: dict[str, Any]) -> str:
    """Which planted interactions a kept module can express (truth.json lists the blocks that
    can), and which candidate modules the choice dropped."""
    kept = {v for k, v in choice.items() if k.endswith(".module") and v != "skip"}
    lines = [f"pick keeps {sorted(kept)}; drops {sorted(set(MODULES) - kept - {'skip'})}"]
    for p in planted:
        hit = sorted(kept & set(p["blocks"]))
        lines.append(f"  planted {p['name']} ({p['kind']}): expressed by {hit or 'none of the kept modules'}")
    return "\n".join(lines)


def _tpe_to_match(tpe: dict[str, Any], pick: dict[str, Any], distdnas_wall: float) -> str:
    """When TPE first had a trial of validation NE at most the DistDNAS pick's: its number and
    the trials' worker seconds up to it over 2 workers (trials carry durations, not clock times)."""
    done = sorted((t for t in tpe["trials"] if t["status"] == "complete"), key=lambda t: t["number"])
    target = pick["metrics"]["ne"]
    spent = 0.0
    for t in done:
        spent += t["seconds"]
        if t["metrics"]["ne"] <= target:
            return (f"tpe's first trial with valid NE <= distdnas's {target:.4f}: #{t['number']} "
                    f"({t['metrics']['ne']:.4f}), about {spent / 2:.0f}s of its 2 workers = "
                    f"{spent / 2 / distdnas_wall:.2f} of distdnas's wall")
    return f"no tpe trial reached distdnas's valid NE {target:.4f}"


def report(out: dict[str, Any]) -> None:
    bayes = out["bayes_test_ne"]
    dist = out["distdnas"]["result"]
    pick = _pick(dist)
    print(f"# synthetic 8 days x 50k rows (seed 0, default difficulty, drift 0.02/day): train days 1-6, "
          f"valid day 7, test day 8; Bayes-optimal test NE {bayes:.4f}")
    rows = []
    for run in dist["planning"]["lambdas"]:
        trial = next(t for t in dist["trials"] if run["lambda"] in t["proposal"]["lambdas"])
        modules = [run["choice"][k] for k in sorted(run["choice"]) if k.endswith(".module")]
        rows.append([f"distdnas lambda={run['lambda']:g}", "/".join(modules), f"{trial['metrics']['ne']:.4f}",
                     f"{trial['test_metrics']['ne']:.4f}", f"{100 * (trial['test_metrics']['ne'] / bayes - 1):+.1f}%",
                     f"{trial['metrics']['flops_per_example']:,}"])
    ref = out["true_form"]
    rows.append(["true form (dlrm_cross)", "-", f"{ref['valid_ne']:.4f}", f"{ref['test_ne']:.4f}",
                 f"{100 * (ref['test_ne'] / bayes - 1):+.1f}%", f"{ref['flops']:,}"])
    if "tpe" in out:
        tpe = _pick(out["tpe"]["result"])
        rows.append(["tpe (nasrec, 40 trials)", "-", f"{tpe['metrics']['ne']:.4f}", f"{tpe['test_metrics']['ne']:.4f}",
                     f"{100 * (tpe['test_metrics']['ne'] / bayes - 1):+.1f}%", f"{tpe['metrics']['flops_per_example']:,}"])
    print_table("Architectures (valid day 7, test day 8)", ["search", "modules", "valid NE", "test NE", "vs Bayes",
                                                           "FLOPs/ex"], rows)
    print(f"full supernet: {dist['supernet_flops']:,} FLOPs/ex; pick #{pick['number']}: "
          f"{pick['metrics']['flops_per_example'] / dist['supernet_flops']:.3f} of it")
    print(_planted_types(out["planted"], next(r for r in dist["planning"]["lambdas"]
                                              if r["lambda"] in pick["proposal"]["lambdas"])["choice"]))
    pick_ne = pick["test_metrics"]["ne"]
    for name, ne in out["ablated"].items():
        if name != "bayes":
            print(f"  without {name} the Bayes predictor scores {ne:.4f} ({100 * (ne / bayes - 1):+.1f}%): the pick "
                  f"({pick_ne:.4f}) {'models it' if pick_ne < ne else 'may miss it'}")
    day_tests = [d["test_ne"] for d in out["days"]]
    agg = next(t for t in dist["trials"] if 0.0 in t["proposal"]["lambdas"])
    print(f"lambda=0: aggregate test NE {agg['test_metrics']['ne']:.4f} vs single-day choices: median "
          f"{statistics.median(day_tests):.4f}, best {min(day_tests):.4f}, worst {max(day_tests):.4f}")
    zero = next(r for r in dist["planning"]["lambdas"] if r["lambda"] == 0.0)
    for shard in zero["shards"]:
        print(f"  day {shard['dates'][0]}: {shard['choice']}")
    t = out["scaling"]
    speedup, ceiling = t["six_1"] / t["six_2"], t["two_1"] / t["two_2"]
    print(f"shard phase (6 shards, lambda=0): 1 worker {t['six_1']:.1f}s, 2 workers {t['six_2']:.1f}s, speed-up "
          f"{speedup:.2f}; ceiling (2 independent trainings) {t['two_1']:.1f}s vs {t['two_2']:.1f}s = "
          f"{ceiling:.2f}; speed-up / ceiling = {speedup / ceiling:.2f}")
    print(f"dates, on 2 workers: 2 shards {t['two_2']:.1f}s, 4 shards {t['four_2']:.1f}s, 6 shards {t['six_2']:.1f}s "
          f"(x{t['four_2'] / t['two_2']:.2f} and x{t['six_2'] / t['two_2']:.2f} of 2 shards)")
    if "tpe" in out:
        print(f"wall: distdnas {out['distdnas']['wall']:.0f}s, tpe {out['tpe']['wall']:.0f}s, "
              f"tpe / distdnas = {out['tpe']['wall'] / out['distdnas']['wall']:.2f}")
        print(_tpe_to_match(out["tpe"]["result"], pick, out["distdnas"]["wall"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-tpe", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rk-distdnas-") as work:
        out = measure(Path(work), args.skip_tpe)
        report(out)


if __name__ == "__main__":
    main()
