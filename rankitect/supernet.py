"""Supernets a search space can build for the one-shot and differentiable searchers.

- `WeightSharingSupernet`: every sub-architecture of the space is a path through one set of
  weights (elastic widths slice the largest weights; optional paths are masked). A path is
  given by a choices mapping, the same mapping `SearchSpace.decode` takes.
- `MixedOpSupernet`: every choice carries architecture weights (logits); the forward pass
  mixes the candidates by softmax or Gumbel-softmax probabilities, and `expected_flops` is
  the differentiable expectation of the per-example FLOPs under those probabilities, with
  each candidate's FLOPs taken from the registry's declarations.

Both take the raw batch: dense `[B, D]` (unnormalized, as stored), sparse KeyedJaggedTensor,
and return logits `[B]`. Not thread-safe (they are nn.Modules).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


class WeightSharingSupernet(nn.Module, abc.ABC):
    @abc.abstractmethod
    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor,
                choices: Mapping[str, Any]) -> torch.Tensor:
        """Logits (B,) of the sub-architecture `choices` with the shared weights."""

    @abc.abstractmethod
    def inherit(self, choices: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """A state_dict for `build_model(space.decode(choices), schema)`: the standalone model
        with these weights computes the same function as `forward(..., choices)`."""


class MixedOpSupernet(nn.Module, abc.ABC):
    @abc.abstractmethod
    def arch_parameters(self) -> Iterator[nn.Parameter]:
        """The architecture logits (one vector per choice)."""

    @abc.abstractmethod
    def weight_parameters(self) -> Iterator[nn.Parameter]:
        """Every other parameter (embeddings included)."""

    @abc.abstractmethod
    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor, temperature: float = 1.0,
                gumbel: bool = False) -> torch.Tensor:
        """Logits (B,) with every candidate mixed by its (Gumbel-)softmax probability."""

    @abc.abstractmethod
    def expected_flops(self, temperature: float = 1.0) -> torch.Tensor:
        """Differentiable E[FLOPs per example] under the softmax(logits / temperature) probabilities."""

    @abc.abstractmethod
    def full_flops(self) -> int:
        """FLOPs per example of the whole supernet: every candidate module at its largest size."""

    @abc.abstractmethod
    def probabilities(self) -> dict[str, dict[Any, float]]:
        """For each choice, its options' softmax probabilities (temperature 1)."""

    @abc.abstractmethod
    def derive(self, threshold: float = 0.0) -> dict[str, Any]:
        """Choices by argmax of each choice's probabilities; a module whose probability is under
        `threshold` is dropped (replaced by the space's no-op option, e.g. skip)."""


class ChoiceLogits:
    """Architecture logits of a mixed-op supernet (mixed into an nn.Module subclass): one vector
    per choice of `init_logits`, zeros (uniform), kept in `self.alphas` under the choice name
    with "." written as "__"."""

    _choices: dict[str, tuple[Any, ...]]
    _keys: dict[str, str]
    alphas: nn.ParameterDict

    def init_logits(self, choices: Mapping[str, tuple[Any, ...]]) -> None:
        self._choices = dict(choices)
        self._keys = {name: name.replace(".", "__") for name in self._choices}
        self.alphas = nn.ParameterDict({self._keys[n]: nn.Parameter(torch.zeros(len(o)))
                                        for n, o in self._choices.items()})

    def arch_parameters(self) -> Iterator[nn.Parameter]:
        return iter(self.alphas.values())

    def weight_parameters(self) -> Iterator[nn.Parameter]:
        arch = {id(p) for p in self.alphas.values()}
        return (p for p in self.parameters() if id(p) not in arch)  # type: ignore[attr-defined]

    def logits(self, name: str) -> nn.Parameter:
        """The architecture logits of choice `name` (one per option, in the choice's order)."""
        return self.alphas[self._keys[name]]

    def choice_options(self) -> dict[str, tuple[Any, ...]]:
        """The choices that carry logits, with their options."""
        return dict(self._choices)
