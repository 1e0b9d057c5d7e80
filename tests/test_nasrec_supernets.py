"""The nasrec space's supernets, built from the registry blocks: weight sharing (one-shot) and
sampled paths with straight-through weights (DNAS, DistDNAS)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
import torch

from rankitect.cost import cost_of
from rankitect.errors import ConfigError
from rankitect.model import build_model
from rankitect.schema import Schema
from rankitect.space import SearchSpace, make_space
from tests.helpers import prefer, random_batch, toy_schema

BATCH = 5


def _bucketed(schema: Schema) -> Schema:
    """`schema` with quantile buckets on every dense column (as an import writes them)."""
    dense = tuple(replace(c, buckets=(-1.0, 0.5, 2.0), clip_min=-4.0, clip_max=6.0) for c in schema.dense)
    return replace(schema, dense=dense)


SCHEMAS = {
    "dense": lambda: toy_schema(num_dense=3, num_sparse=3, dim=8),
    "no_dense": lambda: toy_schema(num_dense=0, num_sparse=3, dim=6),
    "buckets": lambda: _bucketed(toy_schema(num_dense=2, num_sparse=3, dim=8)),
}
OPTIONS = {"blocks": 3, "dense_widths": (24, 8), "efc_rows": (3, 5), "max_inputs": 2}


def _setup(key: str, options: Mapping[str, Any] | None = None) -> tuple[Schema, SearchSpace]:
    torch.manual_seed(0)
    schema = SCHEMAS[key]()
    return schema, make_space("nasrec", schema, dict(OPTIONS) | dict(options or {}))


def _batch(schema: Schema, seed: int = 1) -> tuple[torch.Tensor, Any]:
    return random_batch(schema, BATCH, seed)


@pytest.mark.parametrize("key,options", [("dense", None), ("no_dense", None), ("buckets", None),
                                         ("dense", {"blocks": 4, "max_inputs": 3, "pooling": "mean"})])
def test_inherited_standalone_model_computes_the_supernet_path(key: str, options: Any) -> None:
    schema, space = _setup(key, options)
    supernet = space.supernet()
    dense, kjt = _batch(schema)
    rng = random.Random(5)
    paths = [space.sample(rng) for _ in range(40)] + [space.largest(), space.smallest()]
    if key == "buckets":
        assert {p["dense_buckets"] for p in paths} == {False, True}
    for choices in paths:
        standalone = build_model(space.decode(choices), schema)
        standalone.load_state_dict(supernet.inherit(choices), strict=True)
        with torch.no_grad():
            expected = standalone(dense, kjt)
            got = supernet(dense, kjt, choices)
        assert got.shape == (BATCH,)
        assert torch.allclose(expected, got, atol=1e-5), choices


def test_a_single_path_backward_reaches_only_that_path() -> None:
    schema, space = _setup("dense")
    supernet = space.supernet()
    choices = space.sample(random.Random(2))
    dense, kjt = _batch(schema)
    supernet(dense, kjt, choices).sum().backward()
    standalone = build_model(space.decode(choices), schema)
    standalone.load_state_dict(supernet.inherit(choices), strict=True)
    standalone(dense, kjt).sum().backward()
    norm2 = lambda params: sum(float((p.grad.double() ** 2).sum()) for p in params if p.grad is not None)  # noqa: E731
    assert norm2(supernet.parameters()) == pytest.approx(norm2(standalone.parameters()), rel=1e-5)


def test_paths_share_a_sources_columns_whatever_else_they_read() -> None:
    """Block 1's fc reads the dense input alone, or the dense input and block 0: the columns of
    the dense input are the same stored weights in both paths, block 0's are further along."""
    schema, space = _setup("dense")
    supernet = space.supernet()
    base = {**space.sample(random.Random(7)), "b1.dense_op": "fc", "b1.merge": False, "b1.width": 24,
            "b1.dense_in0": "dense", "b1.dense_in1": "none", "b2.dense_in0": "b1"}
    alone, joined = space.check_choices(base), space.check_choices({**base, "b1.dense_in1": "b0"})
    w_alone = supernet.inherit(alone)["blocks.b1_dense.layers.0.weight"]  # (24, D)
    w_joined = supernet.inherit(joined)["blocks.b1_dense.layers.0.weight"]  # (24, D + W0)
    d = schema.num_dense
    assert w_alone.shape[1] == d and w_joined.shape[1] > d
    assert torch.equal(w_alone, w_joined[:, :d])


def test_a_supernet_needs_one_table_size_per_column() -> None:
    _, space = _setup("dense", {"row_scales": (0.5, 1.0)})
    with pytest.raises(ConfigError, match=r"space.row_scales: .*one row scale, got \[0.5, 1.0\]"):
        space.supernet()
    with pytest.raises(ConfigError, match="space.row_scales"):
        space.mixed_supernet()


def test_bad_choices_are_refused_with_the_choice_named() -> None:
    schema, space = _setup("dense")
    supernet = space.supernet()
    dense, kjt = _batch(schema)
    with pytest.raises(ConfigError, match="b0.width"):
        supernet(dense, kjt, {**space.smallest(), "b0.width": 33})


# -- sampled paths (DNAS) ---------------------------------------------------------------------
@pytest.mark.parametrize("key", list(SCHEMAS))
def test_near_one_hot_logits_run_that_path_and_cost_what_the_registry_says(key: str) -> None:
    schema, space = _setup(key)
    mixed, supernet = space.mixed_supernet(), space.supernet()
    supernet.load_state_dict({k: v for k, v in mixed.state_dict().items() if not k.startswith("alphas.")})
    dense, kjt = _batch(schema)
    rng = random.Random(4)
    for choices in [space.sample(rng) for _ in range(12)] + [space.largest()]:
        prefer(mixed, choices)
        assert mixed.expected_flops().item() == cost_of(space.decode(choices), schema).flops
        assert mixed.derive() == space.check_choices(choices)
        with torch.no_grad():
            assert torch.allclose(mixed(dense, kjt, gumbel=True), supernet(dense, kjt, choices), atol=1e-5)


def test_a_step_reaches_the_logits_of_the_choices_it_sampled() -> None:
    schema, space = _setup("buckets")
    mixed = space.mixed_supernet()
    dense, kjt = _batch(schema)
    torch.manual_seed(3)
    out = mixed(dense, kjt, temperature=0.7, gumbel=True)
    assert out.shape == (BATCH,) and torch.isfinite(out).all()
    torch.manual_seed(3)
    sampled, _ = mixed.sample(0.7, True)
    out.sum().backward()
    in_path = {n.id.split("_")[0] for n in mixed.path(sampled).nodes}  # "b0", "b1", ...
    for name, options in mixed.choice_options().items():
        grad = mixed.logits(name).grad
        reached = grad is not None and bool(grad.abs().sum() > 0)
        if len(options) == 1:  # a softmax over one option has no gradient
            assert not reached, name
        elif name in ("fm", "dense_buckets"):
            assert reached == (sampled[name] is True), name
        else:
            assert reached == (name in sampled and name.split(".")[0] in in_path), name


def test_expected_flops_follow_the_probabilities() -> None:
    """Uniform logits: between the cheapest and the dearest path; the gradient makes the widest
    option of a used block's width dearer than the narrowest (score function over many samples)."""
    schema, space = _setup("dense")
    mixed = space.mixed_supernet()
    mixed.flops_samples = 2000
    torch.manual_seed(0)
    rng = random.Random(1)
    costs = [cost_of(space.decode(space.sample(rng)), schema).flops for _ in range(300)]
    expected = mixed.expected_flops()
    assert min(costs) < expected.item() < max(costs) <= mixed.full_flops()
    expected.backward()
    last = f"b{OPTIONS['blocks'] - 1}.width"  # the last block always feeds the head
    widths = list(mixed.choice_options()[last])
    grad = mixed.logits(last).grad
    assert grad[widths.index(24)] > 0 > grad[widths.index(8)]


def test_gumbel_sampling_follows_the_torch_seed() -> None:
    schema, space = _setup("dense")
    mixed = space.mixed_supernet()
    dense, kjt = _batch(schema)
    with torch.no_grad():
        torch.manual_seed(3)
        first = mixed(dense, kjt, gumbel=True)
        torch.manual_seed(3)
        again = mixed(dense, kjt, gumbel=True)
    assert torch.equal(first, again)
    paths = set()
    for seed in range(8):
        torch.manual_seed(seed)
        paths.add(repr(sorted(mixed.sample(1.0, True)[0].items())))
    assert len(paths) > 1


def test_a_dot_reads_one_stored_weight_per_pair_of_source_rows() -> None:
    """Block 1's dot over [its projection, the sparse input] or over [its projection, block 0's
    efc rows, the sparse input]: the fc after it weighs the dot of two sparse rows with the same
    stored weight in both paths, wherever that pair sits in the dot's output."""
    schema, space = _setup("dense")
    supernet = space.supernet()
    base = {**space.sample(random.Random(11)), "b0.sparse_op": "efc", "b0.efc_rows": 3, "b1.dense_op": "dot",
            "b1.width": 24, "b1.sparse_in0": "sparse", "b1.sparse_in1": "none", "b2.dense_in0": "b1"}
    alone = space.check_choices(base)
    joined = space.check_choices({**base, "b1.sparse_in0": "b0", "b1.sparse_in1": "sparse"})
    w_alone = supernet.inherit(alone)["blocks.b1_dense.layers.0.weight"]
    w_joined = supernet.inherit(joined)["blocks.b1_dense.layers.0.weight"]
    f = schema.num_sparse

    def column(rows: int, a: int, b: int) -> int:  # the dot's output position of rows a < b of `rows`
        return a * rows - a * (a + 1) // 2 + (b - a - 1)

    for p, q in [(0, 1), (1, f - 1), (0, f - 1)]:
        assert torch.equal(w_alone[:, column(1 + f, 1 + p, 1 + q)], w_joined[:, column(1 + 3 + f, 4 + p, 4 + q)])
    assert not torch.equal(w_alone[:, column(1 + f, 0, 1)], w_joined[:, column(1 + 3 + f, 0, 1)])  # row x b0 row
