"""The interactions space's supernets: weight sharing (one-shot) and mixed ops (DistDNAS)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import pytest
import torch

from rankitect.cost import cost_of
from rankitect.errors import ConfigError
from rankitect.model import build_model
from rankitect.schema import Schema
from rankitect.space import SearchSpace, make_space
from search_spaces.interactions_mixed import InteractionsMixedOp
from search_spaces.interactions_supernet import InteractionsSupernet
from tests.helpers import prefer, random_batch, toy_schema

SCHEMAS = {
    "dense_multi": lambda: toy_schema(num_dense=3, num_sparse=4, dim=8, multi=True),
    "no_dense_multi": lambda: toy_schema(num_dense=0, num_sparse=3, dim=6, multi=True),
}
# Unsorted widths, no skip, full rank listed last: nothing may rely on option order.
ODD_OPTIONS = {"widths": (48, 16), "dcn_ranks": (4, 0), "mlp_hidden": (24,), "layers": 2,
               "modules": ("dcn", "mlp", "attention", "fm")}
BATCH = 5


def _setup(key: str, options: Mapping[str, Any] | None = None) -> tuple[Schema, SearchSpace]:
    torch.manual_seed(0)
    schema = SCHEMAS[key]()
    return schema, make_space("interactions", schema, options)


def _batch(schema: Schema, seed: int = 1) -> tuple[torch.Tensor, Any]:
    return random_batch(schema, BATCH, seed)


def _stored(net: Any, owner: str, param: str) -> torch.nn.Parameter:
    """The largest tensor of `param` of `owner` ("<node>:<block>") in a supernet's shared weights."""
    return net.blocks.weights[net.blocks.key(owner, param)]


def _flops(space: SearchSpace, choices: Mapping[str, Any]) -> int:
    return cost_of(space.decode(choices), space.schema).flops


# -- weight sharing ---------------------------------------------------------------------------
@pytest.mark.parametrize("key,options", [("dense_multi", None), ("no_dense_multi", None),
                                         ("dense_multi", ODD_OPTIONS), ("dense_multi", {"pooling": "mean"})])
def test_inherited_standalone_model_computes_the_supernet_path(key: str, options: Any) -> None:
    schema, space = _setup(key, options)
    supernet = space.supernet()
    assert isinstance(supernet, InteractionsSupernet) and type(space).has_supernets()
    dense, kjt = _batch(schema)
    rng = random.Random(5)
    paths = [space.sample(rng) for _ in range(30)] + [space.largest(), space.smallest()]
    for choices in paths:
        standalone = build_model(space.decode(choices), schema)
        standalone.load_state_dict(supernet.inherit(choices), strict=True)
        with torch.no_grad():
            expected = standalone(dense, kjt)
            got = supernet(dense, kjt, choices)
            via_interact = supernet.interact(dense, supernet.embed(kjt), choices)
        assert got.shape == (BATCH,)
        assert torch.allclose(expected, got, atol=1e-5), choices
        assert torch.equal(got, via_interact)


def test_inherit_copies_so_the_standalone_model_trains_alone() -> None:
    schema, space = _setup("dense_multi")
    supernet = space.supernet()
    choices = space.largest()
    state = supernet.inherit(choices)
    state["blocks.h0.layers.0.weight"].add_(1.0)
    assert not torch.equal(state["blocks.h0.layers.0.weight"],
                           _stored(supernet, "h0:fc", "layers.0.weight")[:choices["width"]].detach())


def _grad_norm2(params: Any) -> float:
    return sum(float((p.grad.double() ** 2).sum()) for p in params if p.grad is not None)


def test_a_single_path_backward_reaches_only_that_path() -> None:
    schema, space = _setup("dense_multi")
    supernet = space.supernet()
    choices = {"width": 32, "l0.module": "dcn", "l0.dcn_rank": 4, "l1.module": "attention",
               "l1.heads": 2, "l2.module": "skip"}
    dense, kjt = _batch(schema)
    supernet(dense, kjt, choices).sum().backward()
    standalone = build_model(space.decode(choices), schema)
    standalone.load_state_dict(supernet.inherit(choices), strict=True)
    standalone(dense, kjt).sum().backward()
    # The path's slices get exactly the standalone gradients, so nothing else gets any.
    assert _grad_norm2(supernet.parameters()) == pytest.approx(_grad_norm2(standalone.parameters()), rel=1e-5)
    def grad(owner: str, param: str) -> torch.Tensor | None:
        return _stored(supernet, owner, param).grad

    assert grad("l0_dcn:dcn", "mix.0.weight") is None and grad("l0_mlp:mlp", "layers.0.weight") is None
    assert grad("l0_dcn:dcn", "mix.0.0.weight")[4:].abs().sum() == 0  # ranks beyond 4
    assert grad("l0_dcn:dcn", "mix.0.0.weight")[:4].abs().sum() > 0
    h0 = grad("h0:fc", "layers.0.weight")
    assert h0[32:].abs().sum() == 0 and h0[:32].abs().sum() > 0
    assert grad("l1_attention:attention", "query.weight").abs().sum() > 0
    assert grad("l1_efc:efc", "linear.weight") is None
    assert all(p.grad is None for k, p in supernet.blocks.weights.items() if k.startswith("l2_"))


def test_bad_choices_are_refused_with_the_choice_named() -> None:
    schema, space = _setup("dense_multi")
    supernet = space.supernet()
    dense, kjt = _batch(schema)
    bad = {**space.smallest(), "width": 33}
    with pytest.raises(ConfigError, match="'width'"):
        supernet(dense, kjt, bad)
    with pytest.raises(ConfigError, match="l1.module"):
        supernet.inherit({"width": 32, "l0.module": "skip"})


@pytest.mark.parametrize("key,options", [("dense_multi", None), ("dense_multi", ODD_OPTIONS)])
def test_largest_and_smallest_bound_the_flops_of_the_space(key: str, options: Any) -> None:
    _, space = _setup(key, options)
    rng = random.Random(9)
    flops = [_flops(space, space.sample(rng)) for _ in range(300)]
    assert _flops(space, space.largest()) >= max(flops)
    assert _flops(space, space.smallest()) <= min(flops)
    if options is None:
        assert space.smallest() == {"width": 32, "l0.module": "skip", "l1.module": "skip", "l2.module": "skip"}
        assert space.largest()["width"] == 128


# -- mixed ops --------------------------------------------------------------------------------
@pytest.mark.parametrize("key", list(SCHEMAS))
def test_mixed_forward_shape_and_gradients(key: str) -> None:
    schema, space = _setup(key)
    mixed = space.mixed_supernet()
    assert isinstance(mixed, InteractionsMixedOp)
    dense, kjt = _batch(schema)
    out = mixed(dense, kjt, temperature=0.7)
    assert out.shape == (BATCH,) and torch.isfinite(out).all()
    (out.sum() + 1e-6 * mixed.expected_flops()).backward()
    arch = list(mixed.arch_parameters())
    names = set(mixed.choice_options())
    assert len(arch) == len(names) and {"width", "l0.module", "l0.dcn_rank", "l2.heads"} <= names
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in arch)
    weights = list(mixed.weight_parameters())
    assert len(weights) + len(arch) == len(list(mixed.parameters()))
    assert all(p.grad is not None for p in weights)  # every candidate takes part


@pytest.mark.parametrize("key,options", [("dense_multi", None), ("no_dense_multi", None),
                                         ("dense_multi", ODD_OPTIONS)])
def test_near_one_hot_expected_flops_equal_the_registry_cost(key: str, options: Any) -> None:
    _, space = _setup(key, options)
    mixed = space.mixed_supernet()
    rng = random.Random(4)
    for choices in [space.sample(rng) for _ in range(20)] + [space.largest(), space.smallest()]:
        prefer(mixed, choices)
        assert mixed.expected_flops().item() == pytest.approx(_flops(space, choices), rel=1e-3)


@pytest.mark.parametrize("key,options", [("dense_multi", None), ("no_dense_multi", ODD_OPTIONS),
                                         ("dense_multi", {"pooling": "mean"})])
def test_near_one_hot_mixed_forward_equals_the_single_path(key: str, options: Any) -> None:
    """Both supernets lay their weights out alike, so one-hot mixing is the path itself."""
    schema, space = _setup(key, options)
    mixed, supernet = space.mixed_supernet(), space.supernet()
    supernet.load_state_dict({k: v for k, v in mixed.state_dict().items() if not k.startswith("alphas.")})
    dense, kjt = _batch(schema)
    rng = random.Random(8)
    for choices in [space.sample(rng) for _ in range(10)] + [space.largest()]:
        prefer(mixed, choices)
        with torch.no_grad():
            assert torch.allclose(mixed(dense, kjt), supernet(dense, kjt, choices), atol=1e-5), choices


@pytest.mark.parametrize("module", ["dot", "dcn", "fm", "mlp"])
def test_normalized_mixing_does_not_see_a_dense_candidates_scale(module: str) -> None:
    """Scaling the last Linear of one candidate (before its ReLU) scales its output; with
    normalize the mixed logits stay the same, without it they move."""
    schema, space = _setup("dense_multi")
    dense, kjt = _batch(schema)
    owner, last = {"dot": ("l0_h.dot:fc", "layers.0"), "dcn": ("l0_h.dcn:fc", "layers.0"),
                   "fm": ("l0_h.fm:fc", "layers.0"), "mlp": ("l0_mlp:mlp", "layers.2")}[module]
    for normalize in (True, False):
        torch.manual_seed(0)
        mixed = space.mixed_supernet(normalize)
        with torch.no_grad():
            before = mixed(dense, kjt)
            _stored(mixed, owner, f"{last}.weight").mul_(100.0)
            _stored(mixed, owner, f"{last}.bias").mul_(100.0)
            after = mixed(dense, kjt)
        moved = (after - before).abs().max().item()
        assert moved < 1e-5 if normalize else moved > 1e-2, (normalize, moved)


def test_pooling_mean_averages_a_list_columns_rows() -> None:
    schema, space = _setup("dense_multi", {"pooling": "mean"})
    assert space.decode(space.smallest()).embedding == {"pooling": "mean"}
    assert make_space("interactions", schema).decode(space.smallest()).embedding == {}  # as before the option
    _, kjt = _batch(schema)
    summed = make_space("interactions", schema).supernet()
    mean = space.supernet()
    mean.load_state_dict(summed.state_dict())
    lengths = kjt.lengths().view(schema.num_sparse, BATCH).T  # (B, F)
    with torch.no_grad():
        expected = summed.embed(kjt) / lengths.clamp(min=1).unsqueeze(-1)
        assert torch.allclose(mean.embed(kjt), expected, atol=1e-6)
        assert (lengths > 1).any()  # the batch has a list longer than one


def test_uniform_expected_flops_lie_between_the_extremes() -> None:
    _, space = _setup("dense_multi")
    mixed = space.mixed_supernet()
    expected = mixed.expected_flops()
    assert _flops(space, space.smallest()) < expected.item() < _flops(space, space.largest())
    expected.backward()
    assert mixed.logits("width").grad[-1] > 0 > mixed.logits("width").grad[0]  # wider costs more


def test_derive_returns_the_preferred_options_and_drops_weak_layers() -> None:
    _, space = _setup("dense_multi")
    mixed = space.mixed_supernet()
    wanted = {"width": 64, "l0.module": "dcn", "l0.dcn_rank": 16, "l1.module": "attention",
              "l1.heads": 2, "l2.module": "mlp", "l2.mlp_hidden": 64}
    prefer(mixed, wanted, strength=3.0)
    assert mixed.derive() == wanted
    probs = mixed.probabilities()
    assert probs["l0.module"]["dcn"] == max(probs["l0.module"].values())
    assert sum(probs["width"].values()) == pytest.approx(1.0)
    with torch.no_grad():
        mixed.logits("l1.module").zero_()
        mixed.logits("l1.module")[list(mixed.choice_options()["l1.module"]).index("efc")] = 0.5
    derived = mixed.derive(threshold=0.3)  # l1's best module has p ~ 0.23
    assert derived == space.check_choices({**wanted, "l1.module": "skip"})
    assert mixed.derive()["l1.module"] == "efc"


def test_gumbel_sampling_follows_the_torch_seed() -> None:
    schema, space = _setup("dense_multi")
    mixed = space.mixed_supernet()
    dense, kjt = _batch(schema)
    with torch.no_grad():
        torch.manual_seed(3)
        first = mixed(dense, kjt, gumbel=True)
        torch.manual_seed(3)
        again = mixed(dense, kjt, gumbel=True)
        other = mixed(dense, kjt, gumbel=True)
        plain = mixed(dense, kjt)
    assert torch.equal(first, again)
    assert not torch.equal(first, other) and not torch.equal(first, plain)


def test_supernets_train_on_fused_tables_and_an_architecture_step_leaves_them_alone() -> None:
    """The weights optimizer of a DNAS supernet fuses its tables; a step with the lookup frozen
    (an alternating DNAS step that trains the architecture logits only) moves the logits and not
    a table row, while an unfrozen one moves the rows it looked up."""
    from rankitect.blocks.fused_tables import FusedTables
    from rankitect.train import TrainConfig
    from rankitect.train.optimizers import model_optimizer, tables_frozen

    schema, space = _setup("dense_multi")
    mixed = space.mixed_supernet()
    weights = model_optimizer(mixed, TrainConfig(), torch.device("cpu"), exclude=list(mixed.arch_parameters()))
    assert isinstance(mixed.embedding.ebc, FusedTables) and "tables" in weights.parts
    assert not {id(p) for p in mixed.arch_parameters()} & {id(p) for g in weights.param_groups for p in g["params"]}
    arch = torch.optim.Adam(list(mixed.arch_parameters()), lr=0.1)
    dense, kjt = _batch(schema)

    def tables() -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in mixed.state_dict().items() if "embedding_bags" in k}

    before, logits = tables(), [p.detach().clone() for p in mixed.arch_parameters()]
    with tables_frozen(mixed):
        loss = mixed(dense, kjt).sum() + 1e-6 * mixed.expected_flops()
    weights.zero_grad()
    arch.zero_grad()
    loss.backward()
    arch.step()
    assert all(torch.equal(v, before[k]) for k, v in tables().items())
    assert any(not torch.equal(p, q) for p, q in zip(mixed.arch_parameters(), logits))
    weights.zero_grad()
    mixed(dense, kjt).sum().backward()
    assert any(not torch.equal(v, before[k]) for k, v in tables().items())
