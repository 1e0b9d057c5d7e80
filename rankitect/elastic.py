"""Weight sharing over registry blocks: one largest tensor per parameter, sliced for each path.

A space describes its supernet by a `Template`:
- slots, the units a value's layout is made of: a feature slot (part of a 2-D value, up to
  `size` features) or a row slot (up to `size` rows of width E of a 3-D value);
- variants, every node a path may hold with parameters, at its largest: the owner (the key its
  weights are stored under), the block, its params, and per input the slots it may read.

A decoded path is run node by node with each block's own module (`torch.func.functional_call`)
on views of the stored tensors: an axis a block declares as reading an input
(`Block.weight_axes`) takes, for each slot of the path's input layout, that slot's entries; any
other axis (a width, a rank) takes its leading entries. Two paths therefore share a weight
exactly where they read the same slot with the same unit of the same owner. `node_weights` of a
path's node are the standalone model's parameters of that node (the parity the one-shot and
differentiable searchers rely on).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.func import functional_call

from rankitect.arch.graph import INPUT_DENSE, INPUT_SPARSE
from rankitect.arch.validate import NodeInfo, ValidatedArchitecture
from rankitect.blocks import get_block
from rankitect.blocks.spec import Shape


class Entry(NamedTuple):
    """A part of a value: `count` features of a feature slot or rows of a row slot; for a pairs
    slot, the pairs of `rows` (the dot's input layout) in the dot's order."""

    slot: str
    count: int
    rows: tuple[Entry, ...] = ()


Layout = tuple[Entry, ...]
DENSE_SLOT, SPARSE_SLOT, BUCKETS_SLOT = "dense", "sparse", "buckets"
_CACHE = 2048


@dataclass(frozen=True)
class Slot:
    """`size`: the most features (feature slot) or rows (row slot) a value in it has. A pairs
    slot (`pairs_of`: row slots) holds the dot products of every two rows of those slots, so
    a path's pair of rows (a, b) reads the same stored entry whichever other rows it has."""

    size: int
    rows: bool = False
    pairs_of: tuple[str, ...] = ()


@dataclass(frozen=True)
class Variant:
    """A node at its largest; `inputs[k]` lists the slots its input k may be made of."""

    owner: str
    block: str
    params: Mapping[str, Any]
    inputs: tuple[tuple[str, ...], ...]


def _identity(label: str) -> str | None:
    return label


def _node_id(node: NodeInfo) -> str:
    return node.id


@dataclass(frozen=True)
class Template:
    """A space's supernet: `slot_of(label)` names the slot of a node's output (or of the
    graph inputs "dense", "sparse", "buckets"), or None for a node whose output keeps its first
    input's layout (a dcn cross, a gating); `owner_of(node)` the owner of its weights."""

    slots: Mapping[str, Slot]
    variants: tuple[Variant, ...]
    row_width: int  # E
    slot_of: Callable[[str], str | None] = _identity
    owner_of: Callable[[NodeInfo], str] = _node_id
    extra: dict[str, Any] = field(default_factory=dict)


def layouts(validated: ValidatedArchitecture, template: Template) -> dict[str, Layout]:
    """The layout of every value of a path: graph inputs and node outputs. A concat joins its
    inputs' layouts; any other node's output fills one slot."""
    schema, slot_of = validated.schema, template.slot_of
    out: dict[str, Layout] = {INPUT_DENSE: (Entry(slot_of(DENSE_SLOT) or DENSE_SLOT, schema.num_dense),)}
    sparse: Layout = (Entry(slot_of(SPARSE_SLOT) or SPARSE_SLOT, schema.num_sparse),) if schema.num_sparse else ()
    if validated.embedding_params.get("dense_buckets"):
        sparse += (Entry(slot_of(BUCKETS_SLOT) or BUCKETS_SLOT, schema.num_dense),)
    out[INPUT_SPARSE] = sparse
    for node in validated.nodes:
        if node.block == "concat":
            out[node.id] = tuple(entry for i in node.inputs for entry in out[i])
            continue
        slot = slot_of(node.id)
        if slot is None:  # a block whose output keeps its input's layout (dcn, gating)
            out[node.id] = out[node.inputs[0]]
            continue
        known = template.slots.get(slot)
        if known is not None and known.pairs_of:
            out[node.id] = (Entry(slot, node.output_shape[0], out[node.inputs[0]]),)
            continue
        rows = known.rows if known is not None else len(node.output_shape) == 2
        out[node.id] = (Entry(slot, node.output_shape[0] if len(node.output_shape) == 2 or not rows else 1),)
    return out


def input_shape(slots: Sequence[str], template: Template) -> Shape:
    """The per-example shape of a largest input made of `slots`: (rows, E) when all are row slots."""
    if all(template.slots[s].rows for s in slots):
        return (sum(template.slots[s].size for s in slots), template.row_width)
    return (sum(template.slots[s].size * (template.row_width if template.slots[s].rows else 1) for s in slots),)


@dataclass
class _Owner:
    block: str
    inputs: list[list[str]]  # per input, the slots it may read, in storage order


class ElasticWeights(nn.Module):
    """The largest tensors of every owner's parameters, and the views a path's nodes take.

    Stored as `weights["<owner>:<block>/<param>"]` ("." written as "__"). Not thread-safe.
    """

    def __init__(self, template: Template) -> None:
        super().__init__()
        self.template = template
        self.owners: dict[str, _Owner] = {}
        for v in template.variants:
            owner = self.owners.setdefault(f"{v.owner}:{v.block}", _Owner(v.block, []))
            for k, slots in enumerate(v.inputs):
                if k == len(owner.inputs):
                    owner.inputs.append([])
                owner.inputs[k] += [s for s in slots if s not in owner.inputs[k]]
        shapes: dict[str, list[int]] = {}
        bounds: dict[str, float] = {}
        for v in template.variants:
            self._largest(v, shapes, bounds)
        self.weights = nn.ParameterDict()
        for key, shape in shapes.items():
            self.weights[key] = nn.Parameter(torch.empty(shape).uniform_(-bounds[key], bounds[key]))
        self._skeletons: OrderedDict[Any, nn.Module] = OrderedDict()
        self._indices: OrderedDict[Any, list[torch.Tensor | int]] = OrderedDict()

    @staticmethod
    def key(owner: str, param: str) -> str:
        return f"{owner}/{param}".replace(".", "__")

    def _largest(self, v: Variant, shapes: dict[str, list[int]], bounds: dict[str, float]) -> None:
        """Grow the stored shapes to hold variant `v`; init bounds from the block's own init."""
        owner_key = f"{v.owner}:{v.block}"
        owner = self.owners[owner_key]
        block = get_block(v.block)
        params, problems = block.spec.resolve(dict(v.params))
        if problems:
            raise ValueError(f"supernet template: {owner_key}: {problems}")
        in_shapes = [input_shape(s, self.template) for s in v.inputs]
        full_shapes = [input_shape(s, self.template) for s in owner.inputs]
        axes = block.weight_axes(in_shapes, params)
        for name, p in block.build(in_shapes, params).named_parameters():
            key = self.key(owner_key, name)
            shape = list(p.shape)
            for axis, (k, unit) in axes.get(name, {}).items():
                shape[axis] = full_shapes[k][0] * (1 if unit == "rows" or len(full_shapes[k]) == 1
                                                   else full_shapes[k][1])
            old = shapes.get(key, shape)
            shapes[key] = [max(a, b) for a, b in zip(old, shape)]
            bounds[key] = max(bounds.get(key, 0.0), float(p.detach().abs().max()) if p.numel() else 0.0)

    # -- a path's nodes ----------------------------------------------------------------------
    def owner_key(self, node: NodeInfo) -> str:
        return f"{self.template.owner_of(node)}:{node.block}"

    def _device(self) -> torch.device:
        return next(iter(self.weights.values())).device

    def skeleton(self, node: NodeInfo) -> nn.Module:
        """The block's module for `node` on the weights' device (cached; its own parameters are
        never used, its buffers are)."""
        device = self._device()
        key = (node.block, repr(sorted(node.params.items())), node.input_shapes, device)
        module = self._skeletons.get(key)
        if module is None:
            module = get_block(node.block).build(list(node.input_shapes), node.params).to(device)
            for sub in module.modules():
                for name, p in list(sub.named_parameters(recurse=False)):
                    setattr(sub, name, nn.Parameter(torch.empty(p.shape, device="meta"), p.requires_grad))
            self._skeletons[key] = module
            if len(self._skeletons) > _CACHE:
                self._skeletons.popitem(last=False)
        return module

    def node_weights(self, node: NodeInfo, values: Mapping[str, Layout],
                     scale: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The standalone parameters of `node` (views of the stored tensors); `values` holds the
        layouts of the path's values. ValueError when the template cannot hold the node."""
        params = list(self.skeleton(node).named_parameters())
        if not params:
            return {}
        owner_key = self.owner_key(node)
        if owner_key not in self.owners:
            raise ValueError(f"supernet template has no owner {owner_key!r} (node {node.id!r})")
        in_layouts = tuple(values[i] for i in node.inputs)
        out = {}
        for name, p in params:
            stored = self.weights[self.key(owner_key, name)]
            for axis, index in enumerate(self._index(owner_key, node, name, tuple(p.shape), in_layouts)):
                stored = stored.narrow(axis, 0, index) if isinstance(index, int) else stored.index_select(axis, index)
            out[name] = stored
        return out

    def _index(self, owner_key: str, node: NodeInfo, name: str, shape: tuple[int, ...],
               in_layouts: tuple[Layout, ...]) -> list[torch.Tensor | int]:
        """Per axis of parameter `name` of `node`: a leading count, or the stored entries to gather."""
        cache_key = (owner_key, name, shape, in_layouts, self._device())
        cached = self._indices.get(cache_key)
        if cached is not None:
            return cached
        axes = get_block(node.block).weight_axes(list(node.input_shapes), node.params).get(name, {})
        stored_shape = self.weights[self.key(owner_key, name)].shape
        out: list[torch.Tensor | int] = []
        for axis, n in enumerate(shape):
            if axis not in axes:
                if n > stored_shape[axis]:
                    raise ValueError(f"supernet template: {owner_key} {name} axis {axis} holds "
                                     f"{stored_shape[axis]}, a path needs {n}")
                out.append(n)
                continue
            k, unit = axes[axis]
            index = self._gather(owner_key, k, unit, in_layouts[k])
            if len(index) != n:
                raise ValueError(f"supernet: {owner_key} {name} axis {axis}: layout gives {len(index)}, "
                                 f"the block needs {n}")
            leading = bool(torch.equal(index, torch.arange(n)))
            out.append(n if leading else index.to(self._device()))
        self._indices[cache_key] = out
        if len(self._indices) > _CACHE:
            self._indices.popitem(last=False)
        return out

    def _gather(self, owner_key: str, k: int, unit: str, layout: Layout) -> torch.Tensor:
        """Stored entries of input k's axis for `layout` ("features" or "rows")."""
        slots, e = self.template.slots, self.template.row_width

        def width(slot: str) -> int:  # entries of one slot's unit along this axis
            return 1 if unit == "rows" or not slots[slot].rows else e

        allowed = self.owners[owner_key].inputs[k]
        offsets, offset = {}, 0
        for slot in allowed:
            offsets[slot] = offset
            offset += slots[slot].size * width(slot)
        parts = []
        for entry in layout:
            slot, count = entry.slot, entry.count
            if slot not in offsets:
                raise ValueError(f"supernet template: {owner_key} input {k} may read {allowed}, a path "
                                 f"gives it slot {slot!r}")
            if count > slots[slot].size:
                raise ValueError(f"supernet template: slot {slot!r} holds {slots[slot].size}, a path gives {count}")
            if slots[slot].pairs_of:
                parts.append(offsets[slot] + self._pair_index(slots[slot], entry.rows))
            else:
                parts.append(torch.arange(offsets[slot], offsets[slot] + count * width(slot)))
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)

    def _pair_index(self, pairs: Slot, rows: Layout) -> torch.Tensor:
        """Stored positions of the pairs i < j of `rows` (the dot's order): each row's place in
        the universe of `pairs.pairs_of`, and the pair's place in that universe's upper triangle."""
        start, offset = {}, 0
        for slot in pairs.pairs_of:
            start[slot] = offset
            offset += self.template.slots[slot].size
        place = torch.tensor([start[e.slot] + r for e in rows for r in range(e.count)], dtype=torch.int64)
        i, j = torch.triu_indices(len(place), len(place), offset=1)
        a, b = torch.minimum(place[i], place[j]), torch.maximum(place[i], place[j])
        return a * offset - a * (a + 1) // 2 + (b - a - 1)

    def run_node(self, node: NodeInfo, values: Mapping[str, Layout], inputs: Sequence[torch.Tensor],
                 weights: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The node's block on `inputs` with its shared weights (or `weights` given)."""
        params = self.node_weights(node, values) if weights is None else weights
        return functional_call(self.skeleton(node), dict(params), tuple(inputs))

    def run(self, validated: ValidatedArchitecture, lay: Mapping[str, Layout],
            values: dict[str, torch.Tensor]) -> torch.Tensor:
        """Every node of the path in order (`lay`: its `layouts`); `values` holds the graph
        inputs. Returns (B,) logits."""
        for node in validated.nodes:
            values[node.id] = self.run_node(node, lay, [values[i] for i in node.inputs])
        return values[validated.output].squeeze(1)

    def state_of(self, validated: ValidatedArchitecture,
                 lay: Mapping[str, Layout]) -> Iterator[tuple[str, torch.Tensor]]:
        """("blocks.<node>.<param>", view) of every parameter of the path (`lay`: its `layouts`)."""
        for node in validated.nodes:
            for name, t in self.node_weights(node, lay).items():
                yield f"blocks.{node.id}.{name}", t
