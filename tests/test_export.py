"""`rankitect export`: the artifact of a trained run serves in a fresh process that cannot import
the project, matches the sample outputs and the in-process model on raw rows; every registry
block exports; every mistake exits 2 and leaves nothing half-written."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from launcher.cli import main
from rankitect.arch import Architecture, Node
from rankitect.blocks import Block, BlockSpec, Shape, block_names, get_block, register_block, unregister_block
from rankitect.blocks.embedding import EMBEDDING
from rankitect.data.criteo import import_criteo
from rankitect.data.dataset import Dataset
from rankitect.data.loader import BatchLoader
from rankitect.export.program import ServingModule, export_program, program_inputs
from rankitect.export.run_folder import REQUIRED_FILES, load_model, open_run
from rankitect.model import build_model
from rankitect.train import TrainConfig
from rankitect.train.run import train_run
from search_spaces import baseline
from tests.conftest import SHARED_DATA
from tests.helpers import random_kjt, tiny_synth, toy_schema

CONFIG = TrainConfig(epochs=1, batch_size=128, lr=3e-3, shuffle_buffer=1000)
RAW_ROWS = 40

# Runs with the project's packages unimportable (the venv has them installed editable).
CHILD = r'''
import importlib.abc, json, sys
BLOCKED = {"rankitect", "search_spaces", "distdnas", "launcher", "tests", "benchmarks"}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this process")
sys.meta_path.insert(0, Blocker())
try:
    import rankitect
    raise SystemExit("rankitect was importable")
except ImportError:
    pass
out = []
for job in json.loads(sys.argv[1]):
    sys.path.insert(0, job["dir"])
    import rankitect_serving
    model = rankitect_serving.load(job["dir"], int8=job["int8"])  # checks SHA-256 and samples
    diff = model.check_samples(job["int8"])
    rows = [json.loads(line) for line in open(job["rows"])]
    out.append({"sample_diff": diff, "scores": model.score_rows(rows),
                "loaded": sorted({m.split(".")[0] for m in sys.modules} & BLOCKED)})
print(json.dumps(out))
'''


def cli(*args: Any) -> int:
    return main(["export", *map(str, args)])


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("synth")
    ds = Dataset.open(str(tiny_synth(work / "ds", days=2, rows_per_day=800)))
    train_run(ds, baseline("dlrm", ds.schema), ds.dates[:1], ds.dates[1:], CONFIG, work / "run",
              progress=False)
    return work / "run"


@pytest.fixture(scope="module")
def artifact(synth_run: Path) -> Path:
    out = synth_run.parent / "export" / "dlrm"
    assert cli("--run", synth_run, "--out", out, "--int8") == 0
    return out


@pytest.fixture(scope="module")
def criteo_run(shared_data: Path, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("criteo")
    import_criteo(shared_data / "criteo_sample.txt", work / "ds", hash_size=500, days=2, embedding_dim=8)
    ds = Dataset.open(str(work / "ds"))
    # as `rankitect train --embedding-dim 4`: export reads the dim off the checkpoint
    ds = dataclasses.replace(ds, schema=dataclasses.replace(ds.schema, embedding_dim=4))
    train_run(ds, baseline("deepfm", ds.schema), ds.dates[:1], ds.dates[1:], CONFIG, work / "run",
              progress=False)
    return work / "run"


def in_process_scores(run: Path, dates: list[str], rows: int, int8: bool = False) -> list[float]:
    """The run's model, built by Rankitect, on the first `rows` rows of `dates` as the loader reads them."""
    folder = open_run(run)
    dataset = Dataset.open(folder.data_path)
    model, schema = load_model(folder, dataset.schema)
    if int8:
        from rankitect.export.int8 import quantize

        model = quantize(model)
    batch = next(iter(BatchLoader(dataset, dates, rows, shuffle=False, prefetch=0)))
    with torch.no_grad():
        return torch.sigmoid(model(batch.dense, batch.sparse)).tolist()


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_child(jobs: list[dict[str, Any]], cwd: Path) -> list[dict[str, Any]]:
    proc = subprocess.run([sys.executable, "-I", "-c", CHILD, json.dumps(jobs)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


# -- the artifact --------------------------------------------------------------------------------
def test_artifact_holds_program_preprocessing_metrics_and_versions(artifact: Path, synth_run: Path) -> None:
    names = {p.name for p in artifact.iterdir()}
    assert {"model.pt2", "model_int8.pt2", "rankitect_serving.py", "preprocessing.json", "arch.json",
            "schema.json", "metrics.json", "samples.pt", "manifest.json"} <= names
    assert leftovers(artifact.parent) == []
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert set(manifest["versions"]) >= {"torch", "torchrec", "fbgemm_gpu"}
    assert manifest["program"]["export"].startswith("torch.export")
    metrics = json.loads((artifact / "metrics.json").read_text())
    run_metrics = json.loads((synth_run / "metrics.json").read_text())
    for key in ("eval_dates", "train_dates", "flops_per_example", "ne", "by_date"):
        assert metrics[key] == run_metrics[key], key
    assert metrics["params"] == run_metrics["params"] > 0
    q = metrics["int8"]
    assert q["eval_dates"] == run_metrics["eval_dates"]
    assert q["ne_fp32"] == pytest.approx(run_metrics["ne"], rel=1e-6)  # the program scores like the model
    assert abs(q["ne_change_relative"]) < 0.01
    assert q["embedding_bytes_int8"] < q["embedding_bytes_fp32"]
    spec = json.loads((artifact / "preprocessing.json").read_text())
    assert [c["name"] for c in spec["sparse"]] == manifest["sparse_keys"]


def test_fresh_process_without_the_project_serves_samples_and_raw_rows(
        artifact: Path, synth_run: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """fp32 and int8 on synthetic rows, fp32 on raw Criteo rows (hashing, log1p, missing values),
    all in one child process: sample outputs within 1e-5, raw-row scores as the in-process model."""
    date = open_run(synth_run).eval_dates
    dataset = Dataset.open(open_run(synth_run).data_path)
    table = pq.read_table(dataset.files[date[0]][0])
    synth_rows = write_rows(tmp_path / "synth.jsonl", table.slice(0, RAW_ROWS).to_pylist())
    jobs = [{"dir": str(artifact), "int8": False, "rows": str(synth_rows)},
            {"dir": str(artifact), "int8": True, "rows": str(synth_rows)}]
    expected = [in_process_scores(synth_run, date, RAW_ROWS),
                in_process_scores(synth_run, date, RAW_ROWS, int8=True)]
    shared = SHARED_DATA / "criteo_sample.txt"
    if shared.is_file():  # else the criteo part is left out (the criteo_run fixture would skip)
        criteo = request.getfixturevalue("criteo_run")
        out = tmp_path / "criteo_export"
        assert cli("--run", criteo, "--out", out) == 0
        with open(shared, newline="") as handle:
            records = list(csv.DictReader(handle))
        eval_date = open_run(criteo).eval_dates
        first = len(records) // 2  # the file's second half is the second pseudo-day, the eval date
        jobs.append({"dir": str(out), "int8": False, "rows": str(write_rows(tmp_path / "criteo.jsonl",
                                                                          records[first:first + RAW_ROWS]))})
        expected.append(in_process_scores(criteo, eval_date, RAW_ROWS))
    results = run_child(jobs, cwd=tmp_path)
    for job, result, want in zip(jobs, results, expected):
        assert result["loaded"] == []
        assert result["sample_diff"] < 1e-5, job
        assert len(result["scores"]) == RAW_ROWS
        assert max(abs(a - b) for a, b in zip(result["scores"], want)) < 1e-5, job


def test_search_run_exports_its_best_and_force_replaces(synth_run: Path, tmp_path: Path, capsys) -> None:
    search = tmp_path / "search"
    shutil.copytree(synth_run, search / "best")
    (search / "result.json").write_text("{}\n")
    out = tmp_path / "art"
    assert cli("--run", search, "--out", out) == 0
    assert json.loads((out / "manifest.json").read_text())["run"]["kind"] == "search"
    (out / "stale.txt").write_text("from the earlier export\n")
    assert cli("--run", search, "--out", out, "--force") == 0
    assert not (out / "stale.txt").exists() and leftovers(tmp_path) == []
    assert "model.pt2" in capsys.readouterr().out


# -- mistakes: exit 2, a clear message, nothing written -------------------------------------------
@pytest.mark.parametrize("missing", REQUIRED_FILES)
def test_incomplete_run_names_the_missing_file(synth_run: Path, tmp_path: Path, capsys, missing: str) -> None:
    run = tmp_path / "run"
    shutil.copytree(synth_run, run)
    (run / missing).unlink()
    assert cli("--run", run, "--out", tmp_path / "art") == 2
    assert f"incomplete: {missing} is missing" in capsys.readouterr().err
    assert not (tmp_path / "art").exists() and leftovers(tmp_path) == []


def test_other_mistakes_exit_2(synth_run: Path, artifact: Path, tmp_path: Path, capsys) -> None:
    def fails(message: str, *args: Any) -> None:
        assert cli(*args) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err

    fails("does not exist", "--run", tmp_path / "nope", "--out", tmp_path / "a")
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "result.json").write_text("{}")
    fails("search run without best/", "--run", tmp_path / "search", "--out", tmp_path / "a")
    fails("already exists; pass --force", "--run", synth_run, "--out", artifact)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    fails("is not a Rankitect export", "--run", synth_run, "--out", tmp_path / "mine", "--force")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    fails("cannot be opened", "--run", synth_run, "--out", tmp_path / "a", "--data", tmp_path / "gone")
    dense_only = Architecture(nodes=(Node("top", "fc", ("dense",), {"width": 1, "activation": "none"}),))
    run = fake_run(tmp_path / "dense_only", dense_only, Dataset.open(open_run(synth_run).data_path))
    fails("--int8: architecture '' has no embedding tables", "--run", run, "--out", tmp_path / "a", "--int8")
    assert not (tmp_path / "a").exists() and leftovers(tmp_path) == []


class _Branchy(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.sum() > 0 else -x  # data-dependent control flow: torch.export cannot trace it


class Branchy(Block):
    spec = BlockSpec(name="test_branchy", doc="x or -x, by the sign of the batch's sum.", input_ranks=(1,))

    def output_shape(self, inputs: list[Shape], p: dict[str, Any]) -> Shape:
        return inputs[0]

    def flops(self, inputs: list[Shape], p: dict[str, Any]) -> int:
        return 0

    def num_params(self, inputs: list[Shape], p: dict[str, Any]) -> int:
        return 0

    def build(self, inputs: list[Shape], p: dict[str, Any]) -> nn.Module:
        return _Branchy()


@pytest.fixture
def branchy():
    register_block(Branchy)
    yield
    unregister_block("test_branchy")


def fake_run(run: Path, arch: Architecture, dataset: Dataset) -> Path:
    """A run folder holding an untrained model: enough for export."""
    run.mkdir(parents=True)
    dates = dataset.dates[-1:]
    arch.save(run / "arch.json")
    (run / "config.json").write_text(json.dumps({"data": dataset.uri, "eval_dates": dates}))
    (run / "metrics.json").write_text(json.dumps({"eval_dates": dates, "ne": 1.0}))
    torch.save({"model": build_model(arch, dataset.schema).state_dict(), "arch": arch.to_dict()},
               run / "checkpoint.pt")
    return run


@pytest.mark.parametrize("with_tables", [False, True])  # True: the program looks ids up (FusedLookup)
def test_block_that_cannot_be_exported_is_named(synth_run: Path, artifact: Path, tmp_path: Path, capsys,
                                                branchy, with_tables: bool) -> None:
    dataset = Dataset.open(open_run(synth_run).data_path)
    sparse = (Node("rows", "concat", ("sparse",), {"mode": "flat"}),) if with_tables else ()
    top_in = (Node("both", "concat", ("gate", "rows"), {"mode": "flat"}),) if with_tables else ()
    arch = Architecture(nodes=(Node("gate", "test_branchy", ("dense",)), *sparse, *top_in,
                               Node("top", "fc", ("both" if with_tables else "gate",),
                                    {"width": 1, "activation": "none"})),
                        name="branchy")
    run = fake_run(tmp_path / "run", arch, dataset)
    before = sorted(p.name for p in artifact.iterdir())
    assert cli("--run", run, "--out", artifact, "--force") == 2
    err = capsys.readouterr().err
    assert "node 'gate' (block 'test_branchy') cannot be exported" in err, err
    assert sorted(p.name for p in artifact.iterdir()) == before and leftovers(artifact.parent) == []


# -- every block of the registry -----------------------------------------------------------------
def block_arch(name: str) -> Architecture:
    """The block with its default parameters on the input it takes, flattened into a logit."""
    spec = get_block(name).spec
    source = "dense" if 1 in spec.input_ranks else "sparse"
    return Architecture(nodes=(Node("x", name, (source,) * max(spec.min_inputs, 1)),
                               Node("flat", "concat", ("x",), {"mode": "flat"}),
                               Node("out", "fc", ("flat",), {"width": 1, "activation": "none"})), name=name)


@pytest.mark.parametrize("name", [n for n in block_names() if n != EMBEDDING and not n.startswith("test_")])
def test_every_block_exports(name: str) -> None:
    schema = toy_schema(num_dense=3, num_sparse=2, dim=4)
    torch.manual_seed(0)
    module = ServingModule(build_model(block_arch(name), schema).eval(), schema.sparse_names)
    inputs = []
    for batch in (5, 1):
        kjt = random_kjt(schema, batch, seed=batch)
        inputs.append((torch.randn(batch, schema.num_dense), kjt.values(),
                       kjt.lengths().long().reshape(schema.num_sparse, batch)))
    program = export_program(module, inputs[0]).program.module()
    with torch.no_grad():
        for args in inputs:
            assert torch.allclose(program(*args), module(*args), atol=1e-6), name


def counted(schema):
    """`schema` with distinct counts that give its tables fewer rows than its hash sizes: ids
    are remapped into the tables (rankitect.blocks.embedding.IdRemap)."""
    return dataclasses.replace(schema, sparse=tuple(dataclasses.replace(c, hash_size=5000, distinct=2)
                                                    for c in schema.sparse))


@pytest.mark.parametrize("remapped", [False, True])
@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_fused_lookup_is_the_tables_lookup(pooling: str, remapped: bool) -> None:
    """The program's one-table lookup gives what the EmbeddingBagCollection gives: list features,
    rows with no ids, both poolings, batch sizes 1 and 37, ids remapped into smaller tables."""
    from rankitect.blocks.embedding import EmbeddingModule
    from rankitect.export.program import FusedLookup

    schema = counted(toy_schema()) if remapped else toy_schema()
    torch.manual_seed(0)
    embedding = EmbeddingModule(schema, 8, pooling).eval()
    assert embedding.remap.active == remapped
    fused = FusedLookup(embedding)
    for batch in (1, 37):
        kjt = random_kjt(schema, batch, seed=batch, list_len=3)
        lengths = kjt.lengths().clone()
        lengths[::4] = 0  # some rows with no ids (their values dropped below)
        keep = torch.repeat_interleave(lengths > 0, kjt.lengths())
        kjt = KeyedJaggedTensor(keys=kjt.keys(), values=kjt.values()[keep], lengths=lengths, stride=batch)
        dense = torch.zeros(batch, schema.num_dense)
        _, values, per_row = program_inputs(dense, kjt)
        with torch.no_grad():
            torch.testing.assert_close(fused(values, per_row), embedding(kjt), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("remapped", [False, True])
def test_quant_lookup_is_the_quantized_tables_lookup(remapped: bool) -> None:
    """int8 tables: fbgemm's table-batched kernel called directly gives what torchrec's
    quantized collection gives from the KeyedJaggedTensor (list features, empty rows, ids
    remapped into smaller tables)."""
    from rankitect.export.int8 import quantize
    from rankitect.export.program import QuantLookup

    schema = counted(toy_schema()) if remapped else toy_schema()
    torch.manual_seed(0)
    quantized = quantize(build_model(baseline("dlrm", schema), schema).eval())
    module = ServingModule(quantized, schema.sparse_names)
    assert isinstance(module.lookup, QuantLookup)
    reference = ServingModule(quantized, schema.sparse_names, fused=False)
    for batch in (1, 29):
        kjt = random_kjt(schema, batch, seed=batch, list_len=3)
        lengths = kjt.lengths().clone()
        lengths[::3] = 0
        keep = torch.repeat_interleave(lengths > 0, kjt.lengths())
        kjt = KeyedJaggedTensor(keys=kjt.keys(), values=kjt.values()[keep], lengths=lengths, stride=batch)
        inputs = program_inputs(torch.randn(batch, schema.num_dense), kjt)
        with torch.no_grad():
            torch.testing.assert_close(module(*inputs), reference(*inputs), rtol=1e-6, atol=1e-6)
