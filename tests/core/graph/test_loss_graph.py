"""LossGraph: canonical form, text / JSON / pickle round trips, structural hash, validation."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import pytest
from hypothesis import assume, given

from alz_core.graph.expr import BranchKind, Expr
from alz_core.graph.loss_graph import GraphError, LossGraph, Node, parse_formula

from ..strategies import PROPERTY, exprs, graphs


# --- properties over random graphs ------------------------------------------------------------
@given(graphs)
@PROPERTY
def test_parse_of_print_is_the_same_graph(g: LossGraph) -> None:
    parsed = LossGraph.parse(g.text)
    assert parsed == g
    assert parsed.nodes == g.nodes
    assert hash(parsed) == hash(g)


@given(graphs)
@PROPERTY
def test_print_is_idempotent(g: LossGraph) -> None:
    text = g.text
    assert parse_formula(text).text == text
    assert str(g) == text


@given(exprs)
@PROPERTY
def test_the_graph_keeps_the_tree(e: Expr) -> None:
    g = LossGraph.from_expr(e)
    assert g.expr == e
    assert g.depth == e.depth()
    assert g.expr.size() == e.size()
    assert g.size <= e.size()  # shared sub-trees are stored once
    assert all(len(g.nodes) - 1 not in n.args for n in g.nodes)  # the output is last
    assert all(a < i for i, n in enumerate(g.nodes) for a in n.args)
    assert len(set(g.nodes)) == len(g.nodes)  # no duplicate node: maximal sharing


@given(graphs)
@PROPERTY
def test_json_round_trip(g: LossGraph) -> None:
    data = g.to_json()
    assert LossGraph.from_json(data) == g
    text = json.dumps(data)
    back = LossGraph.from_json(text)
    assert back == g
    assert back.structural_hash == g.structural_hash
    assert back.text == g.text


@given(graphs)
@PROPERTY
def test_pickle_round_trip(g: LossGraph) -> None:
    _ = g.text, g.structural_hash  # populate the cached properties first
    back = pickle.loads(pickle.dumps(g))
    assert back == g
    assert back.expr == g.expr
    assert back.text == g.text
    assert back.structural_hash == g.structural_hash
    assert back.depth == g.depth


@given(graphs)
@PROPERTY
def test_structural_hash_is_stable_across_constructions(g: LossGraph) -> None:
    h = g.structural_hash
    assert len(h) == 32 and int(h, 16) >= 0
    assert LossGraph.from_expr(g.expr).structural_hash == h
    assert LossGraph(g.nodes).structural_hash == h
    assert parse_formula(g.text).structural_hash == h


@given(graphs, graphs)
@PROPERTY
def test_different_graphs_have_different_hashes_and_texts(a: LossGraph, b: LossGraph) -> None:
    assume(a != b)
    assert a.structural_hash != b.structural_hash
    assert a.text != b.text


# --- fixed values ------------------------------------------------------------------------------
# Stored in the database as the unique canonical hash: it must not change between processes,
# machines or releases without a migration.
PINNED = {
    "-y*log(yhat)": "ac229547422e135d9f3dc5f91627bff8",
    "e/(i + u)": "c154c9708bf813def513df8c3d4a21fb",
}


@pytest.mark.parametrize(("text", "digest"), PINNED.items())
def test_structural_hash_is_pinned(text: str, digest: str) -> None:
    assert parse_formula(text).structural_hash == digest


def test_structural_hash_is_the_same_in_a_fresh_interpreter() -> None:
    code = ("from alz_core.graph.loss_graph import parse_formula as p; "
            "print(p('-y*log(yhat)').structural_hash)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONHASHSEED": "123", "PATH": ""},
                         cwd=str(__import__("pathlib").Path(__file__).parents[3]))
    assert out.stdout.strip() == PINNED["-y*log(yhat)"]


def test_canonical_json_of_cross_entropy() -> None:
    assert parse_formula("-y*log(yhat)").to_json() == {"nodes": [
        {"op": "input", "name": "y"},
        {"op": "neg", "args": [0]},
        {"op": "input", "name": "yhat"},
        {"op": "log", "args": [2]},
        {"op": "mul", "args": [1, 3]},
    ]}


def test_equal_trees_in_another_node_order_are_equal() -> None:
    shuffled = LossGraph((
        Node("input", (), "yhat"),
        Node("input", (), "y"),
        Node("log", (0,)),
        Node("neg", (1,)),
        Node("mul", (3, 2)),
    ))
    assert shuffled == parse_formula("-y*log(yhat)")
    assert shuffled.structural_hash == parse_formula("-y*log(yhat)").structural_hash


def test_unused_nodes_are_dropped() -> None:
    g = LossGraph((Node("input", (), "i"), Node("input", (), "y"), Node("input", (), "yhat"),
                   Node("mul", (1, 2))))
    assert g == parse_formula("y*yhat")
    assert g.inputs == {"y", "yhat"}


def test_shared_subtrees_are_stored_once() -> None:
    g = parse_formula("log(yhat)*log(yhat)")
    assert g.size == 2
    assert len(g.nodes) == 3
    assert g.expr.size() == 3
    assert g.ops == ("log", "mul")


def test_inputs_ops_size_depth() -> None:
    g = parse_formula("-y*log(yhat) + 1")
    assert g.inputs == {"y", "yhat"}
    assert sorted(g.ops) == ["add", "log", "mul", "neg"]
    assert g.size == 4
    assert g.depth == 3
    assert parse_formula("y").depth == 0 and parse_formula("y").size == 0


def test_integer_and_float_constants_are_the_same_node() -> None:
    a = LossGraph((Node("const", (), 2), Node("input", (), "y"), Node("mul", (0, 1))))
    b = parse_formula("2*y")
    assert a == b
    assert a.structural_hash == b.structural_hash


def test_negative_zero_constant_equals_zero_and_hashes_the_same() -> None:
    a = LossGraph.from_expr(Expr.apply("mul", Expr.const(-0.0), Expr.input("y")))
    b = LossGraph.from_expr(Expr.apply("mul", Expr.const(0.0), Expr.input("y")))
    raw = LossGraph.from_expr(Expr.apply("mul", Expr("const", (), -0.0), Expr.input("y")))
    assert a == b == raw
    assert a.structural_hash == b.structural_hash == raw.structural_hash
    assert a.to_json() == b.to_json() == raw.to_json()


@pytest.mark.parametrize(("nodes", "fragment"), [
    ((), "at least one node"),
    ((Node("input", (), "x"),), "unknown input 'x'"),
    ((Node("input", (), "y"), Node("pow", (0,))), "unknown operator 'pow'"),
    ((Node("input", (), "y"), Node("add", (0,))), "add takes 2 argument(s), got 1"),
    ((Node("input", (), "y"), Node("log", (0, 0))), "log takes 1 argument(s), got 2"),
    ((Node("log", (1,)), Node("input", (), "y")), "must refer to an earlier node"),
    ((Node("input", (), "y"), Node("log", (1,))), "must refer to an earlier node"),
    ((Node("const", (), float("nan")),), "finite number"),
    ((Node("const", (), float("inf")),), "finite number"),
    ((Node("const", (), "1"),), "finite number"),
    ((Node("input", (0,), "y"),), "takes no arguments"),
])
def test_malformed_graphs_raise_graph_error(nodes: tuple[Node, ...], fragment: str) -> None:
    with pytest.raises(GraphError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        LossGraph(nodes)


@pytest.mark.parametrize("data", [
    {},
    {"nodes": [{"op": "input"}]},
    {"nodes": [{"op": "log"}]},
    {"nodes": "abc"},
    '{"nodes": [{"op": "const", "value": null}]}',
])
def test_bad_json_raises_graph_error(data) -> None:
    with pytest.raises(GraphError):
        LossGraph.from_json(data)


def test_a_graph_is_frozen() -> None:
    g = parse_formula("y*yhat")
    with pytest.raises(AttributeError):
        g.nodes = ()  # type: ignore[misc]


def test_branch_kind_inputs() -> None:
    assert BranchKind.DENSE.inputs == ("yhat", "y")
    assert BranchKind.HEATMAP.inputs == ("yhat", "y")
    assert BranchKind.BOX.inputs == ("i", "u", "e")
    assert BranchKind.DENSE.prediction_inputs == ("yhat",)
    assert BranchKind.DENSE.target_inputs == ("y",)
    assert set(BranchKind.BOX.prediction_inputs) == set(BranchKind.BOX.target_inputs) == {
        "i", "u", "e"}
    assert BranchKind("box") is BranchKind.BOX


def test_graphs_read_back_from_the_store_equal_the_ones_written() -> None:
    """from_canonical_json (the store's fast path) gives the graph from_json does: same nodes,
    text, hash, size, and the tree on first use."""
    from alz_core.evolution.mutation import sample_candidates

    for g in sample_candidates(200, 3):
        data = json.loads(json.dumps(g.to_json()))
        fast, slow = LossGraph.from_canonical_json(data), LossGraph.from_json(data)
        assert fast == slow == g and hash(fast) == hash(g)
        assert fast.text == g.text and fast.size == g.size and fast.expr == g.expr
    with pytest.raises(GraphError):
        LossGraph.from_canonical_json({"nodes": [{"op": "nope", "args": []}]})
    with pytest.raises(GraphError):
        LossGraph.from_canonical_json({"nodes": []})
