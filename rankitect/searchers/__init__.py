"""Searchers over a search space. Importing this package registers the sampling searchers."""

from rankitect.searchers import evolution, optuna_samplers  # noqa: F401  (imported to register)
from rankitect.searchers.base import Candidate, Searcher, make_searcher, register_searcher, searcher_names

__all__ = ["Candidate", "Searcher", "make_searcher", "register_searcher", "searcher_names"]
