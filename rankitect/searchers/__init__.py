"""Searchers over a search space. Importing this package registers every searcher."""

from rankitect.searchers import dnas, evolution, oneshot, optuna_samplers, proxy_search  # noqa: F401  (registers)
from rankitect.searchers.base import Candidate, Searcher, make_searcher, register_searcher, searcher_names

__all__ = ["Candidate", "Searcher", "make_searcher", "register_searcher", "searcher_names"]
