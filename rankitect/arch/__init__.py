"""Architectures: DAGs of block instances from the dense and sparse inputs to one logit."""

from rankitect.arch.graph import INPUT_DENSE, INPUT_SPARSE, Architecture, Node
from rankitect.arch.validate import NodeInfo, ValidatedArchitecture, validate

__all__ = ["INPUT_DENSE", "INPUT_SPARSE", "Architecture", "Node", "NodeInfo",
           "ValidatedArchitecture", "validate"]
