"""The model as a `torch.export` program over plain tensors.

Signature: (dense float32 [B, D], values int64 [N], lengths int64 [F, B]) -> logits float32 [B],
with B and N dynamic. The KeyedJaggedTensor is rebuilt inside the program (feature-major, as a
KJT holds it), so the program's inputs are tensors any caller can make and its graph holds only
aten (and, int8, fbgemm) operators. Non-strict export is tried first, then strict; when both
fail, each node's block is exported alone to name the one that cannot be traced.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.export import Dim, ExportedProgram
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from rankitect.errors import ExportError
from rankitect.model import RankingModel

INPUT_NAMES = ("dense", "values", "lengths")
ProgramInputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class ServingModule(nn.Module):
    """A RankingModel (or its int8 form) over tensors: (dense, values, lengths [F, B]) -> logits."""

    def __init__(self, model: nn.Module, keys: list[str]) -> None:
        super().__init__()
        self.model = model
        self.keys = list(keys)
        self.uses_sparse = getattr(model, "embedding", None) is not None

    def forward(self, dense: torch.Tensor, values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        sparse = (KeyedJaggedTensor(keys=self.keys, values=values, lengths=lengths.reshape(-1),
                                    stride=lengths.size(1)) if self.uses_sparse else None)
        return self.model(dense, sparse)


def program_inputs(dense: torch.Tensor, kjt: KeyedJaggedTensor) -> ProgramInputs:
    """The program's inputs of the model's inputs (a loader batch's dense and sparse)."""
    return (dense.to(torch.float32), kjt.values().to(torch.int64),
            kjt.lengths().to(torch.int64).reshape(len(kjt.keys()), dense.shape[0]))


class ProgramAsModel(nn.Module):
    """forward(dense, kjt) -> logits through a program, as `rankitect.train.evaluate` calls a model.

    The program is held outside the module tree: exported modules refuse `train()` / `eval()`.
    """

    def __init__(self, program: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self._program = [program]

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        return self._program[0](*program_inputs(dense, sparse))


def _dynamic_shapes() -> dict[str, dict[int, Dim]]:
    batch = Dim("batch", min=1)
    return {"dense": {0: batch}, "values": {0: Dim("ids", min=0)}, "lengths": {1: batch}}


class _DropKjtNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "torch.export KJT to_dict" not in record.getMessage()


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """Silence the notes torch and torchrec emit on every export, save and load: torchrec's KJT
    note (root logger), fx's tracing note, the serializer's unused symbols, and its warning
    about buffers that are views of one storage (e.g. triu indices; checked on the samples)."""
    note = _DropKjtNote()
    loggers = [logging.getLogger(n) for n in ("torch.fx._symbolic_trace", "torch._export.serde.serialize")]
    levels = [lg.level for lg in loggers]
    logging.getLogger().addFilter(note)
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No complete tensor found in the group")
            yield
    finally:
        logging.getLogger().removeFilter(note)
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@dataclass(frozen=True)
class Exported:
    program: ExportedProgram
    mode: str  # "non-strict" or "strict"


def export_program(module: ServingModule, example: ProgramInputs) -> Exported:
    """`module` exported with dynamic batch and ids; ExportError (with the node to blame when
    one can be found) when neither non-strict nor strict export works."""
    if example[0].shape[0] < 2:
        raise ValueError(f"the example batch needs >= 2 rows (1 would fix the batch size), "
                         f"got {example[0].shape[0]}")
    failures: list[str] = []
    with quiet_export(), torch.no_grad():
        module(*example)  # modules that cache state on their first call (torchrec's quantized EBC
        # caches its feature order) are traced in their steady state
        for strict in (False, True):
            try:
                program = torch.export.export(module, example, dynamic_shapes=_dynamic_shapes(),
                                              strict=strict)
                return Exported(program, "strict" if strict else "non-strict")
            except Exception as exc:  # torch.export raises many types; each is reported below
                failures.append(_first_line(exc))
        if isinstance(module.model, RankingModel):
            blame = failing_node(module.model, example, module.keys)
            if blame is not None:
                raise ExportError(blame)
    raise ExportError(f"the model cannot be exported with torch.export (non-strict: {failures[0]}; "
                      f"strict: {failures[1]})")


def failing_node(model: RankingModel, example: ProgramInputs, keys: list[str]) -> str | None:
    """A message naming the first node whose block alone fails torch.export, or None."""
    captured: dict[str, tuple[torch.Tensor, ...]] = {}
    hooks = [model.blocks[node_id].register_forward_pre_hook(
        lambda _m, args, node_id=node_id: captured.setdefault(node_id, args)) for node_id, _ in model.plan]
    try:
        ServingModule(model, keys)(*example)
    finally:
        for hook in hooks:
            hook.remove()
    nodes = {n.id: n for n in model.validated.nodes}
    for node_id, _ in model.plan:
        args = list(captured[node_id])
        batch = Dim("batch", min=1)
        try:
            torch.export.export(_Block(model.blocks[node_id]), (args,),
                                dynamic_shapes=([{0: batch} for _ in args],), strict=False)
        except Exception as exc:  # the first line of torch's reason goes into the message
            return (f"node {node_id!r} (block {nodes[node_id].block!r}) cannot be exported with "
                    f"torch.export: {_first_line(exc)}")
    return None


class _Block(nn.Module):
    """One block over a list of inputs (blocks may take *inputs)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return self.block(*inputs)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:500]
