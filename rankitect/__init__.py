"""Rankitect core: schema, data, blocks + registry, architecture graph, model, cost, training.

Nothing in this package imports `search_spaces`, `distdnas` or `launcher`, and nothing here
reads argv, environment variables or YAML.
"""

__version__ = "0.1.0"
