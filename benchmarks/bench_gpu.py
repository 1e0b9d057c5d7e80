"""The training path measured on a GPU, every measurement in one call; a table printed last.

    python -m benchmarks.bench_gpu --out DIR                        # on the GPU (gpu_device_run.sh)
    python -m benchmarks.bench_gpu --device cpu --quick --out DIR   # smoke test on a CPU

Sections (benchmarks/gpu_sections.py): a. registry DLRM against torchrec's DLRM; b. the DNAS
supernet against its modules alone, and the derived architecture against it; c. TFLOP/s of
the MLP part against the matmul ceiling measured in the same run, bf16 autocast against fp32
(examples/s and NE); d. loader rows/s against the GPU training rate, pinned and overlapped
copies; e. the registry DLRM on fused tables against torchrec's DLRM under
DistributedModelParallel, and the Trainer end to end against steps on resident batches. Sizes are fixed (benchmarks/gpu_timing.py FULL; --quick: QUICK) and printed. Each
section catches its own failure; DIR/bench_gpu.json is rewritten after every section, so a
run cut short keeps what it did; DIR/bench_gpu.txt holds the printed tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import print_table
from benchmarks.gpu_sections import SECTIONS, Context, host_to_device
from benchmarks.gpu_timing import FULL, QUICK, first_batches, free, make_dataset, make_quality_dataset


def environment(device: torch.device) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    def dist(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "?"

    info: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "torchrec": dist("torchrec"), "fbgemm_gpu": dist("fbgemm-gpu") if dist("fbgemm-gpu") != "?"
        else dist("fbgemm-gpu-cpu") + " (cpu build)", "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "device": str(device),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2 ** 30, 1),
                 "sm_count": props.multi_processor_count}
    return info


def _n(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}g}"
    return str(value)


def summary(report: dict[str, Any]) -> list[list[str]]:
    """The closing table: section, measurement, value, what it is set against, ratio."""
    rows: list[list[str]] = []
    sections = report["sections"]
    for name, r in sections.items():
        if r.get("status") != "ok":
            rows.append([name, r.get("status", "?").upper(), r.get("error", r.get("reason", ""))[:90], "", ""])
            continue
        rows += _ROWS[name](r)
    return rows


def _rows_dlrm(r: dict[str, Any]) -> list[list[str]]:
    out = []
    for name in ("baseline MLPs", "MLPerf MLPs"):
        c = r[name]
        out.append(["a dlrm", f"registry DLRM, {name} (E={c['E']}, top {c['top']}), ex/s",
                    _n(c["rankitect_examples_per_s"]), f"torchrec DLRM {_n(c['torchrec_examples_per_s'])}",
                    f"{c['ratio']:.3f} (>= 0.95)"])
        out.append(["a dlrm", "same, fused tables (SGD in the backward), ex/s", _n(c["rankitect_fused_examples_per_s"]),
                    f"dense table gradients {_n(c['rankitect_examples_per_s'])}", f"{c['fused_over_dense']:.3f}"])
    return out


def _rows_supernet(r: dict[str, Any]) -> list[list[str]]:
    sn = r["supernet_ms_per_step"]
    return [
        ["b supernet", "supernet step, all candidates, ms", _n(sn), f"sum of modules alone {_n(r['sum_alone_ms'])} ms",
         f"{r['ratio_supernet_over_sum_alone']:.3f}"],
        ["b supernet", "supernet step, ms", _n(sn), f"shared + modules' increments {_n(r['shared_plus_increments_ms'])} ms",
         f"{r['ratio_supernet_over_shared_plus_increments']:.3f}"],
        ["b supernet", "derived architecture step, ms", _n(r["derived_ms_per_step"]), f"supernet {_n(sn)} ms",
         f"{r['ratio_derived_over_supernet']:.3f}"],
    ]


def _rows_flops(r: dict[str, Any]) -> list[list[str]]:
    ceiling = r["ceiling_tflops"]
    out = [["c flops", f"matmul ceiling {k}, TFLOP/s", _n(v), "", ""] for k, v in ceiling.items()]
    for precision, rows in r["mlp_part"].items():
        for row in rows:
            out.append(["c flops", f"MLP part fwd+bwd {precision}, batch {row['batch']:,}, TFLOP/s",
                        _n(row["tflops"]), f"{precision} ceiling {_n(ceiling[precision])}",
                        f"{row['fraction_of_ceiling']:.3f}"])
    step = r["dlrm_mlperf_step_examples_per_s"]
    out.append(["c flops", "MLPerf-size DLRM step, bf16 autocast, ex/s", _n(step["bf16"]), f"fp32 {_n(step['fp32'])}",
                f"{step['bf16'] / step['fp32']:.3f}"])
    ne = {p: [x for x in r["ne"]["runs"] if x["precision"] == p] for p in ("fp32", "bf16", "fp32 dense tables")}
    mean = {p: sum(x["ne"] for x in v) / len(v) for p, v in ne.items()}
    spread = max(x["ne"] for x in ne["fp32"]) - min(x["ne"] for x in ne["fp32"])
    for label in ("bf16", "fp32 dense tables"):
        out.append(["c flops", f"NE {label} (Trainer, mean of {len(ne[label])} seeds)", f"{mean[label]:.5f}",
                    f"fp32 {mean['fp32']:.5f} (seed spread {spread:.5f}; Bayes {_n(r['ne']['bayes_ne_eval_day'], 4)})",
                    f"{mean[label] - mean['fp32']:+.5f}"])
    return out


def _rows_loader(r: dict[str, Any]) -> list[list[str]]:
    t = r["training_examples_per_s"]
    resident = t["batches already on the device"]
    fastest = max(t.values())
    out = []
    for kind, rate in r["loader_rows_per_s"].items():
        out.append(["d loader", f"loader ({kind} batches), rows/s", _n(rate),
                    f"fastest training, batches on the device {_n(fastest)} ex/s", f"{rate / fastest:.2f}"])
    resident_by = {"dense tables": resident, "fused rowwise adagrad": t["batches on the device, fused rowwise adagrad"]}
    for label, rate in r["trainer_end_to_end_examples_per_s"].items():
        for part in ("whole run", "second epoch"):
            out.append(["d loader", f"Trainer end to end ({label}, {part}; loader included), ex/s", _n(rate[part]),
                        f"batches on the device {_n(resident_by[label])}",
                        f"{rate[part] / resident_by[label]:.3f}" if rate[part] else "-"])
    copies = r["copies"]
    if "skipped" in copies:
        out.append(["d loader", "pinned / overlapped copies", "skipped", copies["skipped"], ""])
        return out
    pin, page = copies["pinned non_blocking"], copies["pageable"]
    out.append(["d loader", f"H2D copy of a batch ({copies['bytes_per_batch'] / 1e6:.1f} MB), pinned, ms",
                _n(pin["ms_per_batch"]), f"pageable {_n(page['ms_per_batch'])} ms",
                f"{pin['ms_per_batch'] / page['ms_per_batch']:.3f}"])
    for label, rate in t.items():
        if label.startswith("batches on the device, "):
            out.append(["d loader", f"training, {label.removeprefix('batches on the device, ')} (on the device), "
                        f"ex/s", _n(rate), f"dense Adam tables {_n(resident)}", f"{rate / resident:.3f}"])
        elif label != "batches already on the device":
            out.append(["d loader", f"training, {label}, ex/s", _n(rate), f"batches on the device {_n(resident)}",
                        f"{rate / resident:.3f}"])
    return out


def _rows_trainer(r: dict[str, Any]) -> list[list[str]]:
    out = []
    t = r["trainer"]
    for label, v in t.items():
        if isinstance(v, dict):
            ratios = [x for x in v["ratio_last_epoch"] if x]
            out.append(["e fused", f"Trainer end to end, {label}, last of {t['epochs']} epochs of "
                        f"{v['rows_per_epoch']:,} rows, ex/s (per round)", " / ".join(_n(x) for x in v["last_epoch"]),
                        "batches on the device around it " + " / ".join(_n(x) for x in v["resident"]),
                        (" / ".join(f"{x:.3f}" for x in ratios) + f", median {statistics.median(ratios):.3f} (>= 0.9)")
                        if ratios else "-"])
    return out


def _rows_fused(r: dict[str, Any]) -> list[list[str]]:
    out = [["e fused", f"check on the device: {k}, max abs difference", f"{v:.2g}", "0 (float rounding)", ""]
           for k, v in r["checks"].items()]
    for name in ("DMP reference MLPs", "baseline MLPs"):
        c = r[name]
        out.append(["e fused", f"registry DLRM fused, {name} (E={c['E']}, bottom {c['bottom']}, top {c['top']}), ex/s",
                    _n(c["rankitect fused ex/s"]), f"torchrec DLRM under DMP {_n(c['torchrec DMP ex/s'])}",
                    f"{c['ratio']:.3f} (>= 0.95)"])
        out.append(["e fused", "same, tables as dense parameters of Adam, ex/s", _n(c["rankitect dense Adam tables ex/s"]),
                    f"fused {_n(c['rankitect fused ex/s'])}", f"{c['fused_over_dense']:.2f}x"])
    return out + _rows_trainer(r)


_ROWS = {"dlrm": _rows_dlrm, "supernet": _rows_supernet, "flops": _rows_flops, "loader": _rows_loader,
         "fused": _rows_fused, "trainer": _rows_trainer}


def details(report: dict[str, Any]) -> list[list[str]]:
    """Rows behind the summary: each module alone, the derived choices, per-seed NE."""
    rows = []
    b = report["sections"].get("supernet", {})
    if b.get("status") == "ok":
        for label, ms in b["alone_ms_per_step"].items():
            rows.append(["b supernet", f"alone: {label}, ms/step", _n(ms)])
        rows.append(["b supernet", "derived choices", json.dumps(b["derived_choices"])])
        rows.append(["b supernet", "FLOPs/example derived / supernet",
                     f"{b['derived_flops_per_example']:,} / {b['supernet_flops_per_example']:,}"])
    c = report["sections"].get("flops", {})
    if c.get("status") == "ok":
        for run in c["ne"]["runs"]:
            rows.append(["c flops", f"NE seed {run['seed']} {run['precision']}",
                         f"{run['ne']:.5f} (AUC {run['auc']:.4f}, {_n(run['train_examples_per_s'])} ex/s)"])
    for name, r in report["sections"].items():
        rows.append([name, "seconds", _n(r.get("seconds"))])
    return rows


def _write(out: Path, report: dict[str, Any]) -> None:
    tmp = out / "bench_gpu.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    os.replace(tmp, out / "bench_gpu.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_out/gpu"), help="folder for bench_gpu.json/.txt")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {list(SECTIONS)}")
    parser.add_argument("--budget-s", type=float, default=480.0,
                        help="a section that would start after this many seconds is skipped")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    names = [n.strip() for n in args.sections.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        print(f"--sections: unknown {unknown}; sections: {list(SECTIONS)}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"--device {args.device}: CUDA is not available here (use --device cpu --quick)", file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report: dict[str, Any] = {"meta": environment(device), "sizes": dataclasses.asdict(sizes),
                              "sizes_text": sizes.describe(), "sections": {}}
    print(f"environment: {json.dumps(report['meta'])}\nsizes: {report['sizes_text']}", flush=True)
    try:
        work = Path(tempfile.mkdtemp(prefix="rk-gpu-"))
        dataset = make_dataset(work, sizes)
        host = first_batches(dataset, sizes)
        ctx = Context(device, sizes, dataset, make_quality_dataset(work, sizes), host,
                      host_to_device(host, device), {})
        report["data_seconds"] = time.perf_counter() - started
    except Exception as exc:  # noqa: BLE001 - recorded: every section needs the data
        traceback.print_exc()
        report["sections"] = {n: {"status": "failed", "error": f"data: {type(exc).__name__}: {exc}"} for n in names}
        _write(args.out, report)
        return 1
    for name in names:
        elapsed = time.perf_counter() - started
        if elapsed > args.budget_s:
            result = {"status": "skipped", "reason": f"time budget: {elapsed:.0f} s > --budget-s {args.budget_s:.0f}"}
        else:
            t0 = time.perf_counter()
            try:
                result = {**SECTIONS[name](ctx), "status": "ok"}
            except Exception as exc:  # noqa: BLE001 - one failing section must not lose the others
                traceback.print_exc()
                result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                          "traceback": traceback.format_exc()}
            result["seconds"] = time.perf_counter() - t0
            free(device)
        ctx.results[name] = report["sections"][name] = result
        _write(args.out, report)
        print(f"[{time.perf_counter() - started:.0f} s] section {name}: {result['status']}", flush=True)
    report["seconds"] = time.perf_counter() - started
    _write(args.out, report)
    text = _tables(report)
    (args.out / "bench_gpu.txt").write_text(text)
    print(text, flush=True)
    return 0 if all(r["status"] == "ok" for r in report["sections"].values()) else 1


def _tables(report: dict[str, Any]) -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        m = report["meta"]
        print(f"\n{m.get('gpu', m['device'])}: torch {m['torch']} (CUDA {m['cuda']}), torchrec {m['torchrec']}, "
              f"fbgemm_gpu {m['fbgemm_gpu']}, python {m['python']}, {m['cpus']} CPUs; "
              f"{report.get('seconds', 0):.0f} s in all")
        print(f"sizes: {report['sizes_text']}")
        print_table("Details", ["section", "measurement", "value"], details(report))
        print_table("GPU training path (all measured in this run)",
                    ["section", "measurement", "value", "against", "ratio"], summary(report))
    return buf.getvalue()


if __name__ == "__main__":
    sys.exit(main())
