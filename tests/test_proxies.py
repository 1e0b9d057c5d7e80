"""Zero-cost proxies on real models: finite, deterministic, side-effect free, discriminative."""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch import nn

from rankitect.arch.graph import INPUT_DENSE, INPUT_SPARSE, Architecture, Node
from rankitect.data.batch import Batch
from rankitect.data.dataset import Dataset
from rankitect.data.loader import BatchLoader
from rankitect.model import RankingModel, build_model
from rankitect.schema import Schema
from rankitect.searchers.proxies import (
    PROXIES,
    ProxyTarget,
    SiGeoWeights,
    grad_norm,
    jacob_cov,
    score,
    sigeo,
    synflow,
    warm_up,
)
from rankitect.space import make_space
from search_spaces import baseline
from tests.helpers import random_kjt, tiny_synth, toy_schema

NAMES = sorted(PROXIES)
INPUT_PROXIES = ("grad_norm", "jacob_cov", "synflow")


def _batch(schema: Schema, seed: int, size: int = 48) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    dense = torch.randn(size, schema.num_dense, generator=gen) * 2.0 + 1.0
    labels = (torch.rand(size, generator=gen) < 0.3).float()
    return Batch(dense=dense, sparse=random_kjt(schema, size, seed=seed), labels=labels)


def _batches(schema: Schema, n: int = 3) -> list[Batch]:
    return [_batch(schema, seed) for seed in range(n)]


def _nasrec(schema: Schema, seed: int) -> Architecture:
    space = make_space("nasrec", schema, {"blocks": 3})
    return space.decode(space.sample(random.Random(seed)))


def _model(arch: Architecture, schema: Schema, seed: int = 0) -> RankingModel:
    torch.manual_seed(seed)
    return build_model(arch, schema)


@pytest.fixture(scope="module")
def schema() -> Schema:
    return toy_schema()  # 3 dense, 4 single-id columns and a list column "tags"


@pytest.fixture(scope="module")
def batches(schema: Schema) -> list[Batch]:
    return _batches(schema)


@pytest.fixture(scope="module")
def archs(schema: Schema) -> dict[str, Architecture]:
    named = {f"nasrec{i}": _nasrec(schema, i) for i in range(3)}
    named.update({name: baseline(name, schema) for name in ("lr", "dlrm", "dcnv2", "deepfm", "autoint")})
    return named


@pytest.mark.parametrize("name", NAMES)
def test_every_proxy_is_a_finite_float_on_every_architecture(name, schema, batches, archs):
    for arch_name, arch in archs.items():
        value = score(name, ProxyTarget.from_model(_model(arch, schema)), batches, seed=0)
        assert isinstance(value, float), (arch_name, value)
        assert math.isfinite(value), (arch_name, value)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_value_and_nothing_changed(name, schema, batches, archs):
    model = _model(archs["nasrec0"], schema)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_before = torch.get_rng_state()
    target = ProxyTarget.from_model(model)
    first = score(name, target, batches, seed=3)
    second = score(name, target, batches, seed=3)
    assert first == second
    after = model.state_dict()
    for key, value in before.items():
        assert after[key].dtype == value.dtype, key
        assert torch.equal(after[key], value), key
    assert all(p.grad is None for p in model.parameters())
    assert not any(m.training for m in model.modules())  # eval mode restored
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's RNG is untouched


def test_train_mode_is_restored_too(schema, batches, archs):
    model = _model(archs["dlrm"], schema)
    model.train()
    for name in NAMES:
        score(name, ProxyTarget.from_model(model), batches)
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("name", NAMES)
def test_different_architectures_get_different_scores(name, schema, batches, archs):
    values = [score(name, ProxyTarget.from_model(_model(archs[f"nasrec{i}"], schema)), batches)
              for i in range(3)]
    assert len(set(values)) == 3, values


def _sparse_only(schema: Schema) -> Architecture:
    """An MLP over the flattened embeddings: the dense columns are ignored."""
    return Architecture((Node("mlp", "mlp", (INPUT_SPARSE,), {"widths": [16, 1], "last_activation": False}),),
                        name="sparse_only")


def _dense_only() -> Architecture:
    """An MLP over the dense columns: no embedding lookup at all (model.embedding is None)."""
    return Architecture((Node("mlp", "mlp", (INPUT_DENSE,), {"widths": [16, 1], "last_activation": False}),),
                        name="dense_only")


@pytest.mark.parametrize("name", INPUT_PROXIES)
def test_input_proxies_without_a_dense_path_and_with_a_list_column(name):
    no_dense = toy_schema(num_dense=0, multi=True)
    with_dense = toy_schema(num_dense=3, multi=True)
    cases = [(no_dense, _nasrec(no_dense, 0)), (no_dense, baseline("dlrm", no_dense)),
             (no_dense, baseline("autoint", no_dense)), (with_dense, _sparse_only(with_dense))]
    for schema, arch in cases:
        value = score(name, ProxyTarget.from_model(_model(arch, schema)), _batches(schema, 2))
        assert math.isfinite(value), (arch.name, value)


@pytest.mark.parametrize("name", NAMES)
def test_proxies_on_a_model_without_embeddings(name, schema, batches):
    model = _model(_dense_only(), schema)
    assert model.embedding is None
    assert math.isfinite(score(name, ProxyTarget.from_model(model), batches))


def test_a_dead_layer_scores_lower(schema, batches, archs):
    normal = _model(archs["dlrm"], schema)
    dead = _model(archs["dlrm"], schema)
    first_top = dead.blocks["top"].layers[0]
    with torch.no_grad():
        first_top.weight.zero_()
        first_top.bias.zero_()
    for proxy in (synflow, grad_norm, jacob_cov):
        good = proxy(ProxyTarget.from_model(normal), batches[0], 0)
        bad = proxy(ProxyTarget.from_model(dead), batches[0], 0)
        assert bad < good, (proxy.__name__, bad, good)


def test_unknown_proxy_and_too_few_batches(schema, batches, archs):
    target = ProxyTarget.from_model(_model(archs["dlrm"], schema))
    with pytest.raises(ValueError, match="unknown proxy 'naswot'.*grad_norm.*synflow.*zico"):
        score("naswot", target, batches)
    with pytest.raises(ValueError, match="'zico' needs >= 2 batches, got 1"):
        score("zico", target, batches[0])
    with pytest.raises(ValueError, match="sigeo needs >= 2 batches"):
        sigeo(target, batches[:1])


def test_embedding_tables_are_an_option(schema, batches, archs):
    model = _model(archs["dlrm"], schema)
    default, with_tables = ProxyTarget.from_model(model), ProxyTarget.from_model(model, include_embeddings=True)
    tables = {id(p) for p in model.embedding.parameters()}
    assert not tables & {id(p) for p in default.parameters}
    assert tables <= {id(p) for p in with_tables.parameters}
    assert score("grad_norm", with_tables, batches) > score("grad_norm", default, batches)


def test_sigeo_weights_combine_its_terms(schema, batches, archs):
    target = ProxyTarget.from_model(_model(archs["nasrec1"], schema))
    zico_only = sigeo(target, batches, 0, SiGeoWeights(zico=1.0, fisher_rao=0.0, loss=0.0))
    assert zico_only == pytest.approx(score("zico", target, batches))
    loss_only = sigeo(target, batches, 0, SiGeoWeights(zico=0.0, fisher_rao=0.0, loss=1.0))
    assert 0.3 < -loss_only < 1.5  # minus a log-loss near log(2) at initialization


class _PathSupernet(nn.Module):
    """A stand-in for a weight-sharing supernet: embed(sparse), interact(dense, embedded, choices)."""

    def __init__(self, model: RankingModel) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("dense_mean", model.dense_mean.clone())
        self.register_buffer("dense_inv_std", model.dense_inv_std.clone())
        self.dense_prep = model.dense_prep

    def embed(self, sparse):
        return self.model.embedding(sparse)

    def interact(self, dense, embedded, choices):
        return self.model.interact(dense, embedded)


@pytest.mark.parametrize("name", NAMES)
def test_a_supernet_path_scores_like_the_standalone_model(name, schema, batches, archs):
    model = _model(archs["nasrec2"], schema)
    via_model = score(name, ProxyTarget.from_model(model), batches)
    via_path = score(name, ProxyTarget.from_supernet(_PathSupernet(model), {"any": "choice"}), batches)
    assert via_path == pytest.approx(via_model, rel=1e-9)


def test_warm_up_changes_the_weights_and_lowers_the_loss(tmp_path):
    ds = Dataset.open(str(tiny_synth(tmp_path / "ds", days=2, rows_per_day=1500)))
    train = list(BatchLoader(ds, ds.dates[:1], batch_size=128, shuffle=True, seed=0))
    held = next(iter(BatchLoader(ds, ds.dates[1:], batch_size=512)))
    model = _model(baseline("dlrm", ds.schema), ds.schema)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def loss() -> float:
        with torch.no_grad():
            logits = model(held.dense, held.sparse)
            return float(nn.functional.binary_cross_entropy_with_logits(logits, held.labels))

    start = loss()
    warm_up(model, train, steps=len(train), lr=1e-2, seed=0)
    assert loss() < start - 0.02
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not model.training and all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="steps must be >= 0"):
        warm_up(model, train, steps=-1, lr=1e-2, seed=0)
