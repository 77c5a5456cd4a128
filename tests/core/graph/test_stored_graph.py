"""Graphs read back from the store's JSON text and decoded on first use."""

from __future__ import annotations

import json
import pickle

import pytest

from alz_core.evolution.candidate import Candidate
from alz_core.graph.loss_graph import GraphError, LossGraph

FORMULAS = ("-y*log(yhat)", "exp((y - sqrt(yhat))^2)", "abs(y - yhat) + 0.5*yhat^2")


@pytest.mark.parametrize("formula", FORMULAS)
def test_a_stored_graph_is_the_graph_it_was(formula: str) -> None:
    graph = LossGraph.parse(formula)
    text = json.dumps(Candidate.of({"seg": graph, "aux": LossGraph.parse("y*yhat")}).to_json())
    lazy = LossGraph.from_stored_text(text, "seg")
    assert "nodes" not in lazy.__dict__  # nothing decoded yet
    assert lazy == graph and hash(lazy) == hash(graph)
    assert lazy.nodes == graph.nodes and lazy.text == graph.text
    assert lazy.expr == graph.expr
    assert LossGraph.from_stored_text(text, "aux") == LossGraph.parse("y*yhat")
    assert pickle.loads(pickle.dumps(LossGraph.from_stored_text(text, "seg"))) == graph


def test_a_candidate_of_stored_graphs_equals_the_candidate() -> None:
    cand = Candidate.of({"cls": LossGraph.parse(FORMULAS[0]), "reg": LossGraph.parse(FORMULAS[2])})
    text = json.dumps(cand.to_json())
    lazy = Candidate(tuple((b, LossGraph.from_stored_text(text, b)) for b in ("cls", "reg")))
    assert lazy == cand and lazy.text == cand.text


def test_broken_text_fails_when_first_used_and_other_names_stay_missing() -> None:
    broken = LossGraph.from_stored_text(json.dumps({"seg": {"nodes": []}}), "seg")
    with pytest.raises(GraphError, match="at least one node"):
        broken.nodes  # noqa: B018 - the access decodes
    graph = LossGraph.from_stored_text(json.dumps(Candidate.of(
        LossGraph.parse(FORMULAS[0])).to_json()), "seg")
    with pytest.raises(AttributeError, match="no attribute 'colour'"):
        graph.colour  # noqa: B018
    assert not hasattr(LossGraph.parse(FORMULAS[0]), "colour")
