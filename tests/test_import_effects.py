"""Importing the code changes nothing global: no environment variable, no log level, no
matplotlib backend. Those are set only at the entry points (the CLI, `rankitect.search`, the
job driver). Checked in a fresh interpreter, where nothing else has run first."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

PROBE = """
import importlib, json, logging, os, pkgutil, sys
import torch._inductor.config  # torch's own import sets TORCHINDUCTOR_CACHE_DIR: not ours to count
before = dict(os.environ)
import optuna
level = optuna.logging.get_verbosity()
import matplotlib
backend = matplotlib.rcParams._get_backend_or_none()
names = []
for package in ("rankitect", "distdnas", "search_spaces", "launcher"):
    module = importlib.import_module(package)
    names += [m.name for m in pkgutil.walk_packages(module.__path__, package + ".") if ".gen." not in m.name]
for name in names:
    importlib.import_module(name)
print(json.dumps({"modules": len(names), "env": sorted(set(os.environ.items()) ^ set(before.items())),
                  "optuna": [level, optuna.logging.get_verbosity()],
                  "backend": [backend, matplotlib.rcParams._get_backend_or_none()]}))
"""


def test_importing_every_module_changes_no_global_state() -> None:
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("RAY_")}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["modules"] > 80
    assert seen["env"] == []
    assert seen["optuna"][0] == seen["optuna"][1]
    assert seen["backend"][0] == seen["backend"][1]
