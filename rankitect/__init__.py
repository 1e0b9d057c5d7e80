"""Rankitect: schema, data, blocks + registry, architecture graph, model, cost, training (the
core), `searchers` (the strategies, above the core) and `experiment` (one search run, above
them). README "How the code is laid out" has the layers; `tests/test_layers.py` checks them.

Nothing in this package imports `search_spaces`, `distdnas` or `launcher`, and nothing here
reads argv or YAML; only the entry point `search` (and the CLI above) sets environment
variables (for a local Ray) and Optuna's log level.
"""

__version__ = "0.1.0"


def search(config, out=None, address=None, force=False, progress=None, dashboard=False):  # noqa: ANN001, ANN201
    """Run or continue a search from a config mapping (or SearchConfig); returns a SearchResult.

    `out` defaults to the config's `out` key, else `runs/search`. A local Ray is started unless
    `address` names a cluster (or Ray is already initialized); `dashboard=True` gives it Ray's
    dashboard. See rankitect.experiment.run.search.
    """
    from pathlib import Path

    from rankitect.experiment.run import search as run_search

    if out is None:
        out = config.get("out", "runs/search") if isinstance(config, dict) else "runs/search"
        config = {k: v for k, v in config.items() if k != "out"} if isinstance(config, dict) else config
    return run_search(config, Path(out), address=address, force=force, progress=progress, dashboard=dashboard)
