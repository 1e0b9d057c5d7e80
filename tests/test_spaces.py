"""The nasrec and interactions search spaces, and the space registry from a user's side."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any

import optuna
import pytest
import torch

from rankitect.arch.graph import INPUT_DENSE, INPUT_SPARSE, Architecture, Node, prune_unreachable
from rankitect.arch.validate import validate
from rankitect.cost import cost_of
from rankitect.data.dataset import Dataset
from rankitect.errors import ConfigError
from rankitect.model import build_model
from rankitect.schema import Schema
from rankitect.space import (
    Choice,
    SearchSpace,
    get_space,
    make_space,
    register_space,
    space_names,
    unregister_space,
)
from tests.flop_audit import audit_forward
from tests.helpers import random_kjt, tiny_synth, toy_schema

SPACES = ("nasrec", "interactions")
MODULES = {"dot", "dcn", "efc", "fm", "attention", "mlp", "skip"}


@pytest.fixture(scope="module")
def synth_schema(tmp_path_factory: pytest.TempPathFactory) -> Schema:
    path = tiny_synth(tmp_path_factory.mktemp("synth") / "ds", days=1, rows_per_day=200)
    return Dataset.open(str(path)).schema


SCHEMAS = {
    "dense_even_multi": lambda: toy_schema(num_dense=3, num_sparse=4, dim=8, multi=True),
    "no_dense_odd_multi": lambda: toy_schema(num_dense=0, num_sparse=4, dim=7, multi=True),
    "dense_odd_single": lambda: toy_schema(num_dense=2, num_sparse=3, dim=5, multi=False),
    "one_sparse_no_dense": lambda: toy_schema(num_dense=0, num_sparse=1, dim=6, multi=False),
}


def _schema(key: str, request: pytest.FixtureRequest) -> Schema:
    return request.getfixturevalue("synth_schema") if key == "synth" else SCHEMAS[key]()


def _forward(arch: Architecture, schema: Schema, batch: int = 3) -> torch.Tensor:
    model = build_model(arch, schema)
    with torch.no_grad():
        return model(torch.randn(batch, schema.num_dense), random_kjt(schema, batch))


def _differing(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    return [k for k in a if k in b and a[k] != b[k]]


# -- registry ------------------------------------------------------------------------------
def test_spaces_are_listed_through_the_entry_point() -> None:
    """The installed package declares search_spaces as a plugin; space_names() loads it."""
    plugins = {ep.value for ep in entry_points(group="rankitect.plugins")}
    assert "search_spaces" in plugins
    assert set(SPACES) <= set(space_names())
    assert {get_space(n).__module__ for n in SPACES} == {"search_spaces.nasrec", "search_spaces.interactions"}


# -- every sample decodes, validates, builds and runs ---------------------------------------
@pytest.mark.parametrize("schema_key", [*SCHEMAS, "synth"])
@pytest.mark.parametrize("name", SPACES)
def test_samples_validate_build_and_run(name: str, schema_key: str, request: pytest.FixtureRequest) -> None:
    schema = _schema(schema_key, request)
    space = make_space(name, schema)
    rng = random.Random(7)
    flops, params = set(), set()
    for _ in range(200):
        arch = space.decode(space.sample(rng))
        validated = validate(arch, schema)  # rejects unreachable nodes too
        assert len(prune_unreachable(arch).nodes) == len(arch.nodes)
        if not schema.num_dense:
            assert not validated.uses_dense
        out = _forward(arch, schema)
        assert out.shape == (3,) and torch.isfinite(out).all()
        cost = cost_of(validated)
        flops.add(cost.flops)
        params.add(cost.params)
    assert len(flops) >= 20 and len(params) >= 20, "the space spans a range of FLOPs and sizes"
    assert max(flops) > 2 * min(flops)


@pytest.mark.parametrize("name", SPACES)
def test_cost_matches_an_audited_forward_pass(name: str) -> None:
    schema = toy_schema(dim=8)
    space = make_space(name, schema)
    rng = random.Random(3)
    for _ in range(8):
        model = build_model(space.decode(space.sample(rng)), schema)
        cost = cost_of(model.validated)
        dense, kjt = torch.randn(3, schema.num_dense), random_kjt(schema, 3)
        audit = audit_forward(model.interact, [dense, model.embedding(kjt)], 3)
        assert cost.flops - cost.by_node["sparse"] == pytest.approx(audit.total, rel=0.02)
        assert cost.params == sum(p.numel() for p in model.parameters())


# -- mutate, suggest, check_choices, determinism --------------------------------------------
@pytest.mark.parametrize("name", SPACES)
def test_mutate_changes_exactly_one_active_choice(name: str) -> None:
    schema = toy_schema(dim=7)
    space = make_space(name, schema)
    rng = random.Random(11)
    for _ in range(100):
        parent = space.sample(rng)
        child = space.mutate(parent, rng)
        assert len(_differing(parent, child)) == 1
        assert space.check_choices(child) == child  # exactly the active choices
        validate(space.decode(child), schema)


@pytest.mark.parametrize("name", SPACES)
def test_suggest_with_an_optuna_trial_decodes(name: str) -> None:
    schema = toy_schema(num_dense=0, dim=6)
    space = make_space(name, schema)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        choices = space.suggest(trial)
        assert choices == trial.params == space.check_choices(choices)
        validate(space.decode(choices), schema)
        study.tell(trial, 0.5)


@pytest.mark.parametrize("name", SPACES)
def test_check_choices_and_decode_name_a_wrong_or_missing_choice(name: str) -> None:
    space = make_space(name, toy_schema())
    choices = space.sample(random.Random(0))
    key = next(iter(choices))
    bad = {**choices, key: "warp_drive"}
    for call in (space.check_choices, space.decode):
        with pytest.raises(ConfigError, match=re.escape(f"choice {key!r} must be one of")):
            call(bad)
    missing = {k: v for k, v in choices.items() if k != key}
    with pytest.raises(ConfigError, match=re.escape(f"choice {key!r} is missing")):
        space.decode(missing)


@pytest.mark.parametrize("name", SPACES)
def test_same_seed_gives_the_same_samples(name: str) -> None:
    schema = toy_schema()
    first, second = make_space(name, schema), make_space(name, schema)
    a = [first.sample(random.Random(5)) for _ in range(3)]
    b = [second.sample(random.Random(5)) for _ in range(3)]
    assert a == b
    rng_a, rng_b = random.Random(9), random.Random(9)
    seq_a = [first.sample(rng_a) for _ in range(20)]
    assert seq_a == [second.sample(rng_b) for _ in range(20)]
    assert len({str(sorted(s.items())) for s in seq_a}) > 1
    assert first.decode(seq_a[0]).to_dict() == second.decode(seq_a[0]).to_dict()


# -- options --------------------------------------------------------------------------------
def test_options_shape_the_nasrec_space() -> None:
    schema = toy_schema(num_dense=0)
    space = make_space("nasrec", schema, {"blocks": 2, "max_inputs": 1, "dense_widths": [8]})
    names = [c.name for c in space.choices()]
    assert {n.split(".")[0] for n in names} == {"fm", "b0", "b1"}
    assert not any(n.endswith("_in1") for n in names)
    rng = random.Random(0)
    for _ in range(20):
        validated = validate(space.decode(space.sample(rng)), schema)
        assert {n.params["width"] for n in validated.nodes if n.id.endswith("_dense") and n.block == "fc"} <= {8}


def test_options_shape_the_interactions_space() -> None:
    schema = toy_schema()
    space = make_space("interactions", schema, {"layers": 1, "widths": [16], "modules": ["mlp", "skip"]})
    assert space.layer_candidates() == [("mlp", "skip")]  # type: ignore[attr-defined]
    rng = random.Random(0)
    seen = {space.sample(rng)["l0.module"] for _ in range(30)}
    assert seen == {"mlp", "skip"}


BAD_OPTIONS = [
    ("nasrec", {"bogus": 1}, "space.bogus"),
    ("nasrec", {"blocks": "2"}, "space.blocks"),
    ("nasrec", {"blocks": 0}, "space.blocks"),
    ("nasrec", {"blocks": 13}, "space.blocks"),
    ("nasrec", {"max_inputs": 5}, "space.max_inputs"),
    ("nasrec", {"dense_widths": []}, "space.dense_widths"),
    ("nasrec", {"dense_widths": [16, 0]}, "space.dense_widths[1]"),
    ("nasrec", {"efc_rows": [4, 4]}, "space.efc_rows"),
    ("nasrec", {"efc_rows": 4}, "space.efc_rows"),
    ("interactions", {"layers": 0}, "space.layers"),
    ("interactions", {"layers": 2.5}, "space.layers"),
    ("interactions", {"widths": [64, True]}, "space.widths[1]"),
    ("interactions", {"dcn_ranks": [-1]}, "space.dcn_ranks[0]"),
    ("interactions", {"mlp_hidden": []}, "space.mlp_hidden"),
    ("interactions", {"modules": ["dot", "warp"]}, "space.modules[1]"),
    ("interactions", {"nasrec_blocks": 2}, "space.nasrec_blocks"),
    ("interactions", {"pooling": "max"}, "space.pooling"),
    ("nasrec", {"pooling": None}, "space.pooling"),
]


@pytest.mark.parametrize(("name", "options", "key"), BAD_OPTIONS)
def test_bad_options_name_the_key(name: str, options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(key + ":")) as err:
        make_space(name, toy_schema(), options)
    assert str(err.value).startswith(key)


@pytest.mark.parametrize("name", SPACES)
def test_a_schema_without_sparse_columns_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="needs at least one sparse column"):
        make_space(name, toy_schema(num_sparse=0, multi=False))


# -- nasrec specifics -----------------------------------------------------------------------
def test_nasrec_never_offers_the_dense_input_without_dense_columns() -> None:
    space = make_space("nasrec", toy_schema(num_dense=0, dim=7))
    assert all(INPUT_DENSE not in c.options for c in space.choices())
    assert space.choices()[[c.name for c in space.choices()]
                           .index("b0.dense_in0")].options == ("stem",)
    with_dense = make_space("nasrec", toy_schema(num_dense=2))
    assert INPUT_DENSE in next(c for c in with_dense.choices() if c.name == "b0.dense_in0").options


def test_nasrec_choices_are_active_only_where_they_matter() -> None:
    space = make_space("nasrec", toy_schema(dim=7))
    rng = random.Random(1)
    for _ in range(100):
        c = space.sample(rng)
        for i in range(4):
            assert (f"b{i}.merge" in c) == (c[f"b{i}.dense_op"] != "dot")
            assert (f"b{i}.efc_rows" in c) == (c[f"b{i}.sparse_op"] == "efc")
            assert (f"b{i}.heads" in c) == (c[f"b{i}.sparse_op"] == "attention")
            assert c.get(f"b{i}.heads", 1) == 1  # E = 7: one head of width 7


def test_nasrec_wires_inputs_merge_and_fm_as_chosen() -> None:
    schema = toy_schema(dim=8)
    space = make_space("nasrec", schema, {"blocks": 2})
    choices = {"fm": True,
               "b0.dense_op": "fc", "b0.width": 16, "b0.merge": True, "b0.sparse_op": "efc",
               "b0.efc_rows": 4, "b0.dense_in0": "dense", "b0.dense_in1": "none",
               "b0.sparse_in0": "sparse", "b0.sparse_in1": "none",
               "b1.dense_op": "dot", "b1.width": 32, "b1.sparse_op": "attention", "b1.heads": 2,
               "b1.dense_in0": "b0", "b1.dense_in1": "dense", "b1.sparse_in0": "b0",
               "b1.sparse_in1": "sparse"}
    validated = validate(space.decode(choices), schema)
    shapes = {n.id: n.output_shape for n in validated.nodes}
    inputs = {n.id: n.inputs for n in validated.nodes}
    assert inputs["b0_din"] == ("dense", "sparse")  # merge: flattened sparse joins the dense op
    assert shapes["b0_sparse"] == (4, 8)
    assert inputs["b1_sin"] == ("b0_sparse", "sparse") and shapes["b1_sin"] == (4 + 5, 8)
    assert shapes["b1_rows"] == (1 + 9, 8) and shapes["b1_dense"] == (32,)
    assert "b1_sparse" not in shapes  # the last block's sparse output feeds nothing: pruned
    assert inputs["head_in"] == ("b1_dense", "fm") and inputs["logit"] == ("head_in",)


# -- interactions specifics -----------------------------------------------------------------
def test_all_interaction_modules_appear_among_samples() -> None:
    schema = toy_schema()
    space = make_space("interactions", schema)
    rng = random.Random(2)
    modules, blocks = set(), set()
    for _ in range(200):
        choices = space.sample(rng)
        modules |= {v for k, v in choices.items() if k.endswith(".module")}
        blocks |= {n.block for n in space.decode(choices).nodes}
    assert modules == MODULES
    assert {"dot", "dcn", "efc", "fm", "attention", "mlp"} <= blocks


def _uniform(space: SearchSpace, module: str, width: int) -> dict[str, Any]:
    """Every layer set to `module`, its size choices at their last option."""
    decided: dict[str, Any] = {}
    for choice in space.choices():
        if choice.is_active(decided):
            decided[choice.name] = (width if choice.name == "width" else
                                    module if choice.name.endswith(".module") else choice.options[-1])
    return decided


@pytest.mark.parametrize("dim", [7, 8])
def test_every_layer_candidate_keeps_the_state_shapes(dim: int) -> None:
    schema = toy_schema(num_dense=0, dim=dim)
    space = make_space("interactions", schema)
    f = schema.num_sparse
    candidates = space.layer_candidates()  # type: ignore[attr-defined]
    assert candidates == [candidates[0]] * 3 and set(candidates[0]) == MODULES
    for width in (32, 128):
        for module in candidates[0]:
            validated = validate(space.decode(_uniform(space, module, width)), schema)
            head_in = next(n for n in validated.nodes if n.id == "head_in")
            assert head_in.input_shapes == ((width,), (f, dim)), module
            for node in validated.nodes:
                if node.id.startswith("l") and node.id.endswith("_h"):
                    assert node.output_shape == (width,), (module, node.id)
                if node.block in ("efc", "attention"):
                    assert node.output_shape == (f, dim), (module, node.id)


def test_interaction_heads_keep_the_width() -> None:
    even = make_space("interactions", toy_schema(dim=8))
    odd = make_space("interactions", toy_schema(dim=7))
    assert next(c for c in even.choices() if c.name == "l0.heads").options == (1, 2)
    assert next(c for c in odd.choices() if c.name == "l0.heads").options == (1,)


def test_head_options_fit_the_attention_block_for_any_width() -> None:
    from search_spaces.interactions import head_options

    assert head_options(8) == (1, 2) and head_options(7) == (1,)
    assert head_options(600) == (3,)  # 600 / 2 > 256, the largest head_dim
    assert head_options(521) == ()  # a prime above 256: no attention keeps the width
    wide = make_space("interactions", toy_schema(dim=521))
    assert "attention" not in wide.layer_candidates()[0]  # type: ignore[attr-defined]
    nasrec = make_space("nasrec", toy_schema(dim=521))
    assert next(c for c in nasrec.choices() if c.name == "b0.sparse_op").options == ("efc",)


# -- a space defined right here -------------------------------------------------------------
def _tiny_space_class() -> type[SearchSpace]:
    class TinySpace(SearchSpace):
        """fc(width) over every input feature, then a logit."""

        name = "test_tiny_fc"

        def choices(self) -> Sequence[Choice]:
            return (Choice("width", (4, 8)), Choice("deep", (False, True)),
                    Choice("hidden", (16, 32), lambda d: d["deep"]))

        def decode(self, choices: Mapping[str, Any]) -> Architecture:
            c = self.check_choices(choices)
            features = ((INPUT_DENSE,) if self.schema.num_dense else ()) + (INPUT_SPARSE,)
            nodes = [Node("x", "concat", features, {"mode": "flat"})]
            source = "x"
            if c["deep"]:
                nodes.append(Node("hidden", "fc", ("x",), {"width": c["hidden"]}))
                source = "hidden"
            nodes += [Node("h", "fc", (source,), {"width": c["width"]}),
                      Node("logit", "fc", ("h",), {"width": 1, "activation": "none"})]
            return Architecture(tuple(nodes), name=self.name)

    return TinySpace


@pytest.fixture
def tiny_space() -> Any:
    cls = register_space(_tiny_space_class())
    yield cls
    unregister_space(cls.name)


def test_a_space_defined_in_one_file_registers_samples_and_decodes(tiny_space: Any) -> None:
    assert "test_tiny_fc" in space_names()
    schema = toy_schema()
    space = make_space("test_tiny_fc", schema)
    rng = random.Random(0)
    for _ in range(10):
        choices = space.sample(rng)
        assert ("hidden" in choices) == choices["deep"]
        assert _forward(space.decode(choices), schema).shape == (3,)
    with pytest.raises(ConfigError, match=r"space\.depth"):
        make_space("test_tiny_fc", schema, {"depth": 2})


def test_unregistered_space_is_gone() -> None:
    assert "test_tiny_fc" not in space_names()
    with pytest.raises(ConfigError, match="space.name"):
        make_space("test_tiny_fc", toy_schema())


def test_search_spaces_modules_are_small_and_import_no_cycle() -> None:
    """Issue 17: no import cycle inside search_spaces/ (imports anywhere in a module, deferred
    ones included; `if TYPE_CHECKING:` blocks excepted) and no module over 450 lines."""
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "search_spaces"
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        text = path.read_text()
        assert len(text.splitlines()) <= 450, path.name
        tree = ast.parse(text)
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and ast.unparse(block.test) == "TYPE_CHECKING" for n in ast.walk(block)}
        graph[path.stem] = {node.module.split(".")[1] for node in ast.walk(tree)
                            if isinstance(node, ast.ImportFrom) and id(node) not in typing_only
                            and node.module and node.module.startswith("search_spaces.")}
    assert graph["interactions_supernet"] >= {"interactions"} and "interactions_supernet" not in graph["interactions"]

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        return any(n == target or (n not in seen and reaches(n, target, seen | {n})) for n in graph.get(start, ()))

    assert [m for m in graph if reaches(m, m, {m})] == []
