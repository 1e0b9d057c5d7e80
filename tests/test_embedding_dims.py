"""Per-column embedding widths (`embedding.dims`): tables of their own width projected to E, costed
as they run, fused and exported like any other tables."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from rankitect.blocks.embedding import EmbeddingModule
from rankitect.blocks.fused_tables import TableOptimizer
from rankitect.cost import cost_of
from rankitect.errors import ArchitectureError
from rankitect.export.program import FusedLookup, QuantLookup, ServingModule, program_inputs
from rankitect.model import build_model
from search_spaces import baseline
from tests.flop_audit import audit_forward
from tests.helpers import random_kjt, toy_schema

E = 16


def _schema():  # noqa: ANN202
    return toy_schema(num_dense=2, num_sparse=3, dim=E)


def _arch(dims: object):  # noqa: ANN202
    schema = _schema()
    arch = baseline("dlrm", schema)
    return dataclasses.replace(arch, embedding={**arch.embedding, "dims": dims}), schema


def _kjt(schema, batch: int) -> KeyedJaggedTensor:  # noqa: ANN001
    kjt = random_kjt(schema, batch, seed=batch, list_len=3)
    lengths = kjt.lengths().clone()
    lengths[::4] = 0  # some rows with no ids
    keep = torch.repeat_interleave(lengths > 0, kjt.lengths())
    return KeyedJaggedTensor(keys=kjt.keys(), values=kjt.values()[keep], lengths=lengths, stride=batch)


DIMS = {"s0": 4, "tags": 8}  # s1, s2 keep E


def test_narrowed_columns_cost_what_they_hold_and_run() -> None:
    arch, schema = _arch(DIMS)
    model, full = build_model(arch, schema), build_model(_arch("auto")[0], schema)
    assert model.embedding.dims == (4, E, E, 8)
    assert [b.weight.shape[1] for b in model.embedding.ebc.embedding_bags.values()] == [4, E, E, 8]
    cost, full_cost = cost_of(arch, schema), cost_of(full.architecture, schema)
    assert cost.params == sum(p.numel() for p in model.parameters())
    assert cost.embedding_params == sum(p.numel() for p in model.embedding.parameters())
    assert full_cost.params - cost.params == sum(r * (E - d) - d * E for r, d in
                                                 zip(model.embedding.rows, model.embedding.dims) if d != E)
    widen = audit_forward(model.embedding.widen, [torch.randn(7, 4 + E + E + 8)], batch=7)
    assert widen.matmul == 2 * 4 * E + 2 * 8 * E  # the projections, by torch's flop counter
    tags_pooling = round(schema.sparse[-1].avg_len - 1.0)
    assert full_cost.by_node["sparse"] - cost.by_node["sparse"] == tags_pooling * (E - 8) - widen.matmul
    kjt = _kjt(schema, 9)
    out = model(torch.randn(9, 2), kjt)
    assert out.shape == (9,) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in model.embedding.widen.weights.values())


@pytest.mark.parametrize("optimizer", ["sgd", "rowwise_adagrad"])
def test_fused_tables_of_several_widths_compute_and_train_as_plain_ones(optimizer: str) -> None:
    schema = _schema()
    dims = (4, E, E, 8)
    torch.manual_seed(0)
    fused = EmbeddingModule(schema, E, "sum", optimizer=TableOptimizer(optimizer, lr=0.1), dims=dims)
    plain = EmbeddingModule(schema, E, "sum", dims=dims)
    plain.load_state_dict(fused.state_dict())
    kjt = _kjt(schema, 12)
    torch.testing.assert_close(fused(kjt), plain(kjt))
    before = {k: v.clone() for k, v in fused.state_dict().items()}
    fused(kjt).square().sum().backward()  # the fused tables step inside the backward
    moved = [k for k, v in fused.state_dict().items() if "embedding_bags" in k and not torch.equal(v, before[k])]
    assert len(moved) == 4
    assert fused.widen.weights["t_s0"].grad is not None


def test_the_exported_lookups_serve_narrowed_columns() -> None:
    from rankitect.export.int8 import quantize

    arch, schema = _arch(DIMS)
    torch.manual_seed(0)
    model = build_model(arch, schema).eval()
    serving = ServingModule(model, schema.sparse_names)
    assert isinstance(serving.lookup, FusedLookup)
    quantized = quantize(model)
    int8 = ServingModule(quantized, schema.sparse_names)
    reference = ServingModule(quantized, schema.sparse_names, fused=False)
    for batch in (1, 23):
        kjt = _kjt(schema, batch)
        dense = torch.randn(batch, 2)
        inputs = program_inputs(dense, kjt)
        with torch.no_grad():
            torch.testing.assert_close(serving(*inputs), model(dense, kjt), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(int8(*inputs), reference(*inputs), rtol=1e-5, atol=1e-6)
            assert (int8(*inputs) - model(dense, kjt)).abs().max() < 0.05  # int8 rounding only
    assert isinstance(int8.lookup, QuantLookup) or int8.lookup is None


@pytest.mark.parametrize("dims, message", [
    ({"s0": 32}, "column 's0': must be \"auto\" or a multiple of 4 up to E=16, got 32"),
    ({"s0": 6}, "column 's0': must be \"auto\" or a multiple of 4 up to E=16, got 6"),
    (12.5, "embedding.dims"),
    ({"nope": 4}, "names no sparse column: 'nope'"),
])
def test_bad_dims_are_refused_naming_the_field(dims: object, message: str) -> None:
    arch, schema = _arch(dims)
    with pytest.raises(ArchitectureError, match="embedding.dims") as info:
        build_model(arch, schema)
    assert message in str(info.value)


# -- table widths as search choices --------------------------------------------------------------
@pytest.mark.parametrize("space_name", ["nasrec", "interactions"])
def test_width_choices_change_parameters_and_flops_as_the_cost_model_says(space_name: str) -> None:
    import random

    from rankitect.space import make_space

    schema = _schema()
    space = make_space(space_name, schema, {"embedding_dims": [4, 8, 16]})
    names = [f"dim.{c.name}" for c in schema.sparse]
    assert set(names) <= {c.name for c in space.choices()}
    rng = random.Random(0)
    checked = 0
    for choices in [space.sample(rng) for _ in range(12)]:
        wide = {**choices, **{n: E for n in names}}
        narrow = {**wide, "dim.s0": 4}
        model = build_model(space.decode(narrow), schema)
        if model.embedding is None:  # a path that reads no sparse column
            continue
        checked += 1
        assert model.embedding.dims[0] == 4 and model.embedding.dims[1:] == (E,) * (len(names) - 1)
        cost, full = cost_of(space.decode(narrow), schema), cost_of(space.decode(wide), schema)
        assert cost.params == sum(p.numel() for p in model.parameters())
        rows = model.embedding.rows[0]
        assert full.params - cost.params == rows * (E - 4) - 4 * E
        assert cost.flops - full.flops == 2 * 4 * E  # s0 has one id a row: no pooling to save
        assert space.decode(wide).embedding.get("dims") is None  # every column at E: as before the option
    assert checked >= 4
    baseline = space.baseline_choices("deepfm")
    if baseline is not None:
        assert all(baseline[n] == E for n in names)


@pytest.mark.parametrize("values, message", [((6, 16), "multiple of 4"), ((8, 32), "space.embedding_dims")])
def test_bad_width_options_are_refused_naming_the_key(values: tuple, message: str) -> None:
    from rankitect.errors import ConfigError
    from rankitect.space import make_space

    with pytest.raises(ConfigError, match="space.embedding_dims") as info:
        make_space("nasrec", _schema(), {"embedding_dims": list(values)})
    assert message in str(info.value)


def test_supernets_refuse_searched_widths() -> None:
    from rankitect.errors import ConfigError
    from rankitect.space import make_space

    space = make_space("nasrec", _schema(), {"embedding_dims": [8, 16]})
    with pytest.raises(ConfigError, match="space.embedding_dims: one-shot and differentiable"):
        space.supernet()


def test_a_search_over_table_widths_trains_its_trials(ray_cluster, tmp_path) -> None:
    import json

    from rankitect.experiment.run import search
    from tests.helpers import tiny_synth
    from tests.test_search import make_config

    data = tiny_synth(tmp_path / "ds", days=3, rows_per_day=800)
    config = make_config(data, "random", trials=3, space={"name": "nasrec", "blocks": 2, "embedding_dims": [4, 8]},
                         baselines=[])
    search(config, tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert [t["status"] for t in saved["trials"]] == ["complete"] * 3
    for trial in saved["trials"]:
        widths = {k: v for k, v in trial["choices"].items() if k.startswith("dim.")}
        narrowed = {k.removeprefix("dim."): v for k, v in widths.items()}  # E = 16: both options narrow
        assert widths and trial["arch"]["embedding"]["dims"] == narrowed
