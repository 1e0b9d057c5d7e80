"""An independent FLOP count of a real forward pass, to check the registry's declarations.

Matrix products are counted by torch.utils.flop_counter. Everything else is counted here
from the aten ops actually dispatched: 1 FLOP per output element of a pointwise op, n-1 per
reduced group of a sum, 3 per element of a softmax (exp, sum, divide), ceil(log2(K + 1)) per
element of a binary search over K boundaries, and the bias add that addmm fuses into the product. An op this audit does not know fails the count, so a new op in
a block cannot slip through uncounted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

_POINTWISE = {"add.Tensor", "sub.Tensor", "mul.Tensor", "div.Tensor", "relu.default",
              "sigmoid.default", "tanh.default", "gelu.default", "silu.default", "exp.default",
              "rsub.Scalar", "neg.default", "clamp.Tensor", "log1p.default"}
_FREE = {"_unsafe_view.default", "view.default", "cat.default", "clone.default", "detach.default",
         "expand.default", "index.Tensor", "t.default", "transpose.int", "unsqueeze.default",
         "squeeze.dim", "reshape.default", "permute.default", "slice.Tensor", "select.int",
         "_to_copy.default", "alias.default", "lift_fresh.default", "mm.default", "bmm.default",
         "flatten.using_ints", "zeros.default", "empty.memory_format", "copy_.default",
         "split_with_sizes.default", "_reshape_alias.default", "contiguous.default", "unbind.int",
         "index_select.default", "embedding.default", "stack.default"}


class _ElementwiseCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.flops = 0
        self.unknown: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        out = func(*args, **(kwargs or {}))
        name = func.__name__ if "." in func.__name__ else str(func).removeprefix("aten.")
        if name in _POINTWISE:
            self.flops += out.numel()
        elif name == "sum.dim_IntList":
            self.flops += args[0].numel() - out.numel()
        elif name == "_softmax.default":
            self.flops += 3 * out.numel()
        elif name == "searchsorted.Tensor":  # a binary search: ceil(log2(K + 1)) comparisons
            self.flops += out.numel() * math.ceil(math.log2(args[0].shape[-1] + 1))
        elif name == "addmm.default":
            self.flops += out.numel()  # the fused bias add
        elif name not in _FREE:
            self.unknown.add(name)
        return out


@dataclass(frozen=True)
class Audit:
    matmul: float  # per example
    elementwise: float  # per example

    @property
    def total(self) -> float:
        return self.matmul + self.elementwise


def audit_forward(module: torch.nn.Module, inputs: list, batch: int) -> Audit:
    """Per-example FLOPs of `module(*inputs)`; AssertionError if an op is not understood."""
    counter = _ElementwiseCounter()
    with FlopCounterMode(display=False) as fc:
        with counter:
            module(*inputs)
    if counter.unknown:
        raise AssertionError(f"flop audit does not know these aten ops: {sorted(counter.unknown)}")
    return Audit(fc.get_total_flops() / batch, counter.flops / batch)
