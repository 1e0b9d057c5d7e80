"""examples/quickstart.ipynb runs top to bottom in a real Jupyter kernel (nbclient, ipykernel),
small: synth, a search through the Python API with a callback, the front, export, scoring."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient", reason="nbclient is in requirements.lock; this venv lacks it")
nbformat = pytest.importorskip("nbformat", reason="nbformat is in requirements.lock; this venv lacks it")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"
CELL_TIMEOUT_S = 600


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def _kernel_of_this_python(folder: Path) -> str:
    """A kernelspec that runs this interpreter (not a `python3` kernel installed elsewhere)."""
    spec = folder / "kernels" / "rankitect-test"
    spec.mkdir(parents=True)
    spec.joinpath("kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "rankitect test", "language": "python"}))
    return spec.name


def test_the_quickstart_notebook_runs(ray_cluster, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("QUICKSTART_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("QUICKSTART_ROWS_PER_DAY", "1500")
    monkeypatch.setenv("QUICKSTART_TRIALS", "2")
    monkeypatch.setenv("QUICKSTART_RAY_ADDRESS", ray_cluster)  # the session's Ray, not a second one
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    kernel = _kernel_of_this_python(tmp_path / "jupyter")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(c.get("outputs") for c in notebook.cells if c.cell_type == "code")  # committed clean
    nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name=kernel,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [c for c in notebook.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.outputs if o.get("output_type") == "error"]
    assert not errors, errors
    result = json.loads((tmp_path / "work" / "search" / "result.json").read_text())
    search_output = next(_text(c) for c in code if "rankitect.search(" in c.source)
    for trial in result["trials"]:  # the callback printed each trial as it was told
        assert f"trial {trial['number']:>2} [" in search_output
    assert "baseline lr: valid NE" in search_output
    front = next(c for c in code if "result.pareto" in c.source)
    assert f"pick: trial {result['best']['number']}" in _text(front)
    assert any("image/png" in o.get("data", {}) for o in front.outputs)  # the front plot
    scores = [line for line in _text(code[-1]).splitlines() if "click probability" in line]
    assert len(scores) == 5 and all(0.0 < float(line.split()[-1]) < 1.0 for line in scores)
    assert (tmp_path / "work" / "export" / "model_int8.pt2").is_file()
