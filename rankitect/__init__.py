"""Rankitect core: schema, data, blocks + registry, architecture graph, model, cost, training.

Nothing in this package imports `search_spaces`, `distdnas` or `launcher`, and nothing here
reads argv, environment variables or YAML.
"""

__version__ = "0.1.0"


def search(config, out=None, address=None, force=False, progress=None):  # noqa: ANN001, ANN201
    """Run or continue a search from a config mapping (or SearchConfig); returns a SearchResult.

    `out` defaults to the config's `out` key, else `runs/search`. A local Ray is started unless
    `address` names a cluster (or Ray is already initialized). See rankitect.searchers.run.search.
    """
    from pathlib import Path

    from rankitect.searchers.run import search as run_search

    if out is None:
        out = config.get("out", "runs/search") if isinstance(config, dict) else "runs/search"
        config = {k: v for k, v in config.items() if k != "out"} if isinstance(config, dict) else config
    return run_search(config, Path(out), address=address, force=force, progress=progress)
