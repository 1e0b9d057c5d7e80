"""The search strategies, and only them (what Optuna calls samplers, NNI strategies).

- `base`: the Searcher contract (ask / tell over a space, its trials in the Optuna study it is
  given), the options every searcher takes, and the registry of searchers by name;
- sampling searchers: `optuna_samplers` (random, tpe, nsga2), `evolution`;
- planned searchers (`planned`: they decide their trials in a planning phase whose jobs the run
  executes for them): `oneshot` (weight-sharing supernet, searched with the sampling searchers
  above), `dnas` (differentiable, FLOPs-aware), `proxy_search` (zero-cost proxies:
  `proxies`, `proxy_target`), their jobs' shared parts (`supernet_train`);
- helpers the strategies and the run share: `pareto` (non-domination ranks), `screen` (the
  FLOPs screen), `rank_stats`.

A strategy sees the run only through ask/tell and a `PlanningContext`; it imports the core and
nothing above it (rankitect.experiment runs it). Importing this package registers every searcher.
"""

from rankitect.searchers import dnas, evolution, oneshot, optuna_samplers, proxy_search  # noqa: F401  (registers)
from rankitect.searchers.base import Candidate, Searcher, make_searcher, register_searcher, searcher_names

__all__ = ["Candidate", "Searcher", "make_searcher", "register_searcher", "searcher_names"]
