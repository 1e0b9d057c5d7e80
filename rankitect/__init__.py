"""Rankitect: schema, data, blocks + registry, architecture graph, model, cost, training (the
core), `searchers` (the strategies, above the core) and `experiment` (one search run, above
them). README "How the code is laid out" has the layers; `tests/test_layers.py` checks them.

Nothing in this package imports `search_spaces`, `distdnas` or `launcher`, and nothing here
reads argv or YAML; only the entry point `search` (and the CLI above) sets environment
variables (for a local Ray) and Optuna's log level.
"""

__version__ = "0.1.0"


# The callback protocol and the built-in loggers, imported when first used (`rankitect.X`).
_LAZY = {"SearchCallback": ("rankitect.experiment.events", "SearchEvents"),
         "TensorBoardLogger": ("rankitect.experiment.log_tensorboard", "TensorBoardLogger"),
         "MLflowLogger": ("rankitect.experiment.log_mlflow", "MLflowLogger")}
__all__ = ["search", *_LAZY]


def __getattr__(name):  # noqa: ANN001, ANN202
    if name not in _LAZY:
        raise AttributeError(f"module 'rankitect' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    return getattr(importlib.import_module(module), attr)


def search(config, out=None, address=None, force=False, progress=None, dashboard=False,  # noqa: ANN001, ANN201
           callbacks=()):
    """Run or continue a search from a config mapping (or SearchConfig); returns a SearchResult.

    `out` defaults to the config's `out` key, else `runs/search`. A local Ray is started unless
    `address` names a cluster (or Ray is already initialized); `dashboard=True` gives it Ray's
    dashboard. `callbacks`: rankitect.SearchCallback objects that hear of the search as it goes
    (search started, trial started, each trial's epochs and outcome, baselines, best, front,
    search finished; see rankitect/experiment/events.py), beside the loggers that the config's
    `logging` section names (TensorBoardLogger, MLflowLogger). See rankitect.experiment.run.search.
    """
    from pathlib import Path

    from rankitect.experiment.run import search as run_search

    if out is None:
        out = config.get("out", "runs/search") if isinstance(config, dict) else "runs/search"
        config = {k: v for k, v in config.items() if k != "out"} if isinstance(config, dict) else config
    return run_search(config, Path(out), address=address, force=force, progress=progress, dashboard=dashboard,
                      callbacks=callbacks)
