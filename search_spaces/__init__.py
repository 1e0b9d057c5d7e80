"""Search spaces built from registered blocks, and the fixed baseline architectures."""

from search_spaces.baselines import BASELINES, baseline, resolve_architecture

__all__ = ["BASELINES", "baseline", "resolve_architecture"]
