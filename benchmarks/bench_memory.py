"""Peak resident memory of streaming a whole dataset through the loader, at two dataset sizes.

Both datasets have days of the same size (500k rows); the large one has 10x more days. Each
runs in a fresh process that reads every batch (shuffled) once; its peak RSS (VmHWM; not
ru_maxrss, which keeps the high-water mark of the forked parent across exec) is
compared, and within the large run the peak RSS of the first and the last fifth of the rows.
Flat means the loader's memory does not grow with the dataset.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import print_table
from rankitect.data.synth import SynthConfig, generate

ROWS_PER_DAY = 500_000
_CHILD = """
import json, sys
from rankitect.data.dataset import Dataset
from rankitect.data.loader import BatchLoader
ds = Dataset.open(sys.argv[1])
def status_mib(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key)) / 1024
def rss_mib():
    return status_mib("VmRSS:")
before = status_mib("VmHWM:")
total = sum(ds.schema.dates[d].rows for d in ds.dates)
rows, first, last = 0, 0.0, 0.0
for b in BatchLoader(ds, ds.dates, 2048, shuffle=True, seed=0):
    rows += len(b)
    if rows <= total / 5:
        first = max(first, rss_mib())
    elif rows >= total * 4 / 5:
        last = max(last, rss_mib())
print(json.dumps({"rows": rows, "peak_mib": status_mib("VmHWM:"), "import_mib": before,
                  "first_fifth_mib": first, "last_fifth_mib": last}))
"""


def _stream(path: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(small_rows: int = 500_000, large_rows: int = 5_000_000,
            workdir: Path | None = None) -> list[dict[str, float]]:
    work = Path(workdir or tempfile.mkdtemp(prefix="rk-bench-"))
    results = []
    for rows in (small_rows, large_rows):
        cfg = SynthConfig(days=max(rows // ROWS_PER_DAY, 1), rows_per_day=min(rows, ROWS_PER_DAY),
                          num_sparse=26, num_dense=13, cardinality=19_999)
        path = work / f"mem_{rows}"
        generate(path, cfg, force=True)
        results.append(_stream(path))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--large-rows", type=int, default=5_000_000)
    args = parser.parse_args()
    small, large = measure(large_rows=args.large_rows)
    print_table("Peak RSS streaming a dataset once (26 sparse + 1 list + 13 dense, batch 2048, shuffle buffer 200k)",
                ["rows", "peak RSS MiB", "after imports MiB", "first 1/5 MiB", "last 1/5 MiB"],
                [[r["rows"], r["peak_mib"], r["import_mib"], r["first_fifth_mib"], r["last_fifth_mib"]]
                 for r in (small, large)])
    print(f"peak RSS {large['rows']:,} rows / {small['rows']:,} rows = {large['peak_mib'] / small['peak_mib']:.3f} "
          f"(target: flat, ~1.0); last / first fifth of the large run = "
          f"{large['last_fifth_mib'] / large['first_fifth_mib']:.3f}")


if __name__ == "__main__":
    main()
