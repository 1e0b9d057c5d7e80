"""Embedding tables quantized to 8 bits for serving: torchrec's QuantEmbeddingBagCollection.

`torchrec.inference.modules.quantize_inference_model` swaps the EmbeddingBagCollection for a
QuantEmbeddingBagCollection (int8 rows with a per-row scale and bias, looked up by fbgemm's
IntNBitTableBatchedEmbeddingBagsCodegen); the dense layers stay float32. Its program exports
non-strict once torchrec's fake classes for fbgemm's AtomicCounter / TensorQueue are registered
(strict export refuses their aliased state); loading it needs `import fbgemm_gpu` first.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator

import torch
from torch import nn
from torch._library.fake_class_registry import deregister_fake_class, has_fake_class
from torchrec.inference.modules import quantize_inference_model
from torchrec.quant.embedding_modules import EmbeddingBagCollection as QuantEmbeddingBagCollection

from rankitect.model import RankingModel

_FBGEMM_CLASSES = ("fbgemm::AtomicCounter", "fbgemm::TensorQueue")
_TBE_WEIGHTS = ("weights_host", "weights_dev", "weights_uvm")  # fbgemm TBE storage, not buffers


def quantize(model: RankingModel) -> nn.Module:
    """A copy of `model` with int8 embedding tables."""
    with warnings.catch_warnings():  # torchrec converts through torch.ao.quantization, deprecated
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.ao")
        quantized = quantize_inference_model(copy.deepcopy(model)).eval()
    for module in quantized.modules():
        if isinstance(module, QuantEmbeddingBagCollection):
            _drop_state_dict_views(module)
    return quantized


def _drop_state_dict_views(qebc: QuantEmbeddingBagCollection) -> None:
    """Remove the per-table `weight` buffers: views of the TBE's storage kept for state_dict
    compatibility only (the lookup reads the TBE's own tensors). An exported program would
    otherwise store the int8 tables twice, once as these buffers and once as the TBE's constant."""
    for bag in qebc.embedding_bags.values():
        for name in ("weight", "weight_qscale", "weight_qbias"):
            bag._buffers.pop(name, None)


@contextlib.contextmanager
def fbgemm_fake_classes() -> Iterator[None]:
    """torchrec's fake fbgemm classes registered for the duration (left as found)."""
    from torchrec.pt2.utils import register_fake_classes

    registered = [name for name in _FBGEMM_CLASSES if has_fake_class(_qualname(name))]
    if not registered:
        register_fake_classes()
    elif len(registered) != len(_FBGEMM_CLASSES):
        raise RuntimeError(f"only some of {_FBGEMM_CLASSES} have fake classes registered: {registered}")
    try:
        yield
    finally:
        if not registered:
            for name in _FBGEMM_CLASSES:
                deregister_fake_class(name)


def _qualname(name: str) -> str:
    namespace, cls = name.split("::")
    return f"__torch__.torch.classes.{namespace}.{cls}"


def embedding_bytes(model: nn.Module) -> int:
    """Bytes held by the embedding tables of `model` (float32 or int8 with scale and bias)."""
    embedding = getattr(model, "embedding", None)
    if embedding is None:
        return 0
    storages: dict[int, int] = {}
    for module in embedding.modules():
        tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        tensors += [t for name in _TBE_WEIGHTS if isinstance(t := getattr(module, name, None), torch.Tensor)]
        for t in tensors:
            if t.numel():
                storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(storages.values())
