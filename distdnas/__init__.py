"""DistDNAS: distributed differentiable search over data-date shards on Ray actors.

Importing the package registers the `distdnas` searcher (the `rankitect.plugins` entry point
does so for the CLI and `rankitect.search`)."""

from distdnas import searcher  # noqa: F401  (registers)
