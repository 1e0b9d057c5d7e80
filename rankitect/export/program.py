"""The model as a `torch.export` program over plain tensors.

Signature: (dense float32 [B, D], values int64 [N], lengths int64 [F, B]) -> logits float32 [B],
with B and N dynamic (ids feature-major, as a KeyedJaggedTensor holds them), so the program's
inputs are tensors any caller can make and its graph holds only aten (and, int8, fbgemm)
operators. The ids are looked up without the KeyedJaggedTensor's per-feature split (its sizes
depend on the data, which the program would check and read back per feature): a float
model's tables as one (FusedLookup), int8 tables by fbgemm's table-batched kernel directly
(QuantLookup). Non-strict export is tried first, then strict; when both
fail, each node's block is exported alone to name the one that cannot be traced.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim, ExportedProgram
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.quant.embedding_modules import EmbeddingBagCollection as QuantEmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from rankitect.blocks.embedding import EmbeddingModule
from rankitect.errors import ExportError
from rankitect.model import RankingModel

INPUT_NAMES = ("dense", "values", "lengths")
ProgramInputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class FusedLookup(nn.Module):
    """The tables of an EmbeddingModule as one table: (values [N], lengths [F, B]) -> (B, F, E).

    Table f's rows sit at row_offsets[f] of `weight` (the tables stacked in schema order, each
    padded with zeros to the widest, then its own width kept and projected as the model does), so
    one embedding_bag over shifted ids pools every feature of every row. It computes what the
    EmbeddingBagCollection computes, without splitting the ids per feature: that split has
    data-dependent sizes, which a torch.export program checks and reads back per feature.
    """

    def __init__(self, embedding: EmbeddingModule) -> None:
        super().__init__()
        bags = list(embedding.ebc.embedding_bags.values())  # in schema order, as the KJT keys
        self.remap, self.widen = embedding.remap, embedding.widen
        self.width = max(embedding.dims)  # tables narrower than this are padded with zeros
        self.register_buffer("weight", torch.cat([F.pad(bag.weight.detach(), (0, self.width - bag.weight.shape[1]))
                                                  for bag in bags]))
        sizes = torch.tensor([0] + [bag.weight.shape[0] for bag in bags[:-1]], dtype=torch.int64)
        self.register_buffer("row_offsets", torch.cumsum(sizes, dim=0))
        kept = [torch.arange(f * self.width, f * self.width + d) for f, d in enumerate(embedding.dims)]
        self.register_buffer("kept", torch.cat(kept) if self.widen.active else None)
        self.mode = bags[0].mode
        self.num_features = embedding.num_features

    def forward(self, values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        per_feature = lengths.sum(dim=1)  # (F,)
        ids = self.remap(values, lengths) + torch.repeat_interleave(self.row_offsets, per_feature,
                                                                    output_size=values.shape[0])
        offsets = torch.cat([lengths.new_zeros(1), torch.cumsum(lengths.reshape(-1), dim=0)])
        pooled = F.embedding_bag(ids, self.weight, offsets, mode=self.mode, include_last_offset=True)
        pooled = pooled.view(self.num_features, -1, self.width).transpose(0, 1)  # (B, F, width)
        if self.kept is None:
            return pooled  # every table at E
        return self.widen(pooled.reshape(pooled.shape[0], -1).index_select(1, self.kept))  # (B, F, E)


class QuantLookup(nn.Module):
    """int8 tables (torchrec's quantized EmbeddingBagCollection, whose tables one fbgemm
    table-batched kernel holds) over (values [N], lengths [F, B]) -> (B, F, E): that kernel
    called with the ids and offsets as they come, without the KeyedJaggedTensor's permute and
    split. `supports(qebc, keys)` says whether a collection is of that one-kernel form."""

    def __init__(self, embedding: EmbeddingModule) -> None:
        super().__init__()
        self.tbe = embedding.ebc._emb_modules[0]
        self.remap, self.widen = embedding.remap, embedding.widen

    @staticmethod
    def supports(qebc: nn.Module, keys: list[str]) -> bool:
        modules = getattr(qebc, "_emb_modules", None)
        return (isinstance(qebc, QuantEmbeddingBagCollection) and modules is not None and len(modules) == 1
                and list(qebc._feature_names) == list(keys) and not qebc._is_weighted)

    def forward(self, values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        values = self.remap(values, lengths)
        offsets = torch.cat([lengths.new_zeros(1), torch.cumsum(lengths.reshape(-1), dim=0)])
        if values.device.type != "cpu":  # fbgemm's CUDA kernels take int32 ids and offsets
            values, offsets = values.int(), offsets.int()
        pooled = self.tbe(indices=values, offsets=offsets.to(values.dtype))  # (B, sum of the tables' widths)
        return self.widen(pooled)  # (B, F, E)


class ServingModule(nn.Module):
    """A RankingModel (or its int8 form) over tensors: (dense, values, lengths [F, B]) -> logits.

    With `fused` (the default) a float RankingModel looks its ids up through a FusedLookup of its
    tables and an int8 one through a QuantLookup; otherwise (or for a lookup of another form)
    the KeyedJaggedTensor is rebuilt and the model's own lookup runs.
    """

    def __init__(self, model: nn.Module, keys: list[str], fused: bool = True) -> None:
        super().__init__()
        self.keys = list(keys)
        embedding = getattr(model, "embedding", None)
        self.uses_sparse = embedding is not None
        self.lookup: nn.Module | None = None
        if fused and isinstance(embedding, EmbeddingModule):
            if isinstance(embedding.ebc, EmbeddingBagCollection):
                self.lookup = FusedLookup(embedding)
            elif QuantLookup.supports(embedding.ebc, self.keys):
                self.lookup = QuantLookup(embedding)
        self.model = _without_tables(model) if self.lookup is not None else model

    def forward(self, dense: torch.Tensor, values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.lookup is not None:
            return self.model.interact(dense, self.lookup(values, lengths))
        sparse = (KeyedJaggedTensor(keys=self.keys, values=values, lengths=lengths.reshape(-1),
                                    stride=lengths.size(1)) if self.uses_sparse else None)
        return self.model(dense, sparse)


def _without_tables(model: nn.Module) -> nn.Module:
    """A shallow copy of `model` without its embedding module (the FusedLookup holds the tables:
    the program would otherwise store them twice). It shares every other module and buffer;
    only its `interact` is called."""
    copy = nn.Module.__new__(type(model))
    copy.__dict__.update(model.__dict__)
    copy._modules = {name: child for name, child in model._modules.items() if name != "embedding"}
    return copy


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
            blame = failing_node(module, example)
            if blame is not None:
                raise ExportError(blame)
    raise ExportError(f"the model cannot be exported with torch.export (non-strict: {failures[0]}; "
                      f"strict: {failures[1]})")


def failing_node(module: ServingModule, example: ProgramInputs) -> str | None:
    """A message naming the first node of `module`'s RankingModel whose block alone fails
    torch.export, or None. The blocks' inputs are those of `module` run on `example`."""
    model = module.model
    captured: dict[str, tuple[torch.Tensor, ...]] = {}
    hooks = [model.blocks[node_id].register_forward_pre_hook(
        lambda _m, args, node_id=node_id: captured.setdefault(node_id, args)) for node_id, _ in model.plan]
    try:
        module(*example)
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
