"""The batched engine (the protocol's CUDA engine, run here on CPU tensors) gives every
verdict and reason of the reference loop, on candidates of the search's own generator."""

from __future__ import annotations

import pytest
import torch

from alz_core.config import RejectionConfig
from alz_core.evolution.mutation import sample_candidates
from alz_core.graph.loss_graph import LossGraph
from alz_core.rejection.batched import check_batch
from alz_core.rejection.problem import check_plain
from alz_core.rejection.result import StopReason, Verdict
from alz_core.tasks.registry import seg_rejection_problem


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("metric", ["miou", "bf1"])
def test_every_verdict_and_reason_of_the_reference_loop(metric: str) -> None:
    problem = seg_rejection_problem(metric, RejectionConfig(num_samples=2, iterations=100),
                                    size=16)
    graphs = sample_candidates(120 if metric == "miou" else 40, seed=7)
    graphs += [LossGraph.parse(t) for t in ("-y*log(yhat)", "exp(exp(exp(y/yhat)))",
                                            "y*log(yhat)", "-y*log(yhat)")]  # a duplicate too
    batched = check_batch(graphs, problem, sync_every=10)
    assert len(batched) == len(graphs)
    outcomes = set()
    for graph, fast in zip(graphs, batched):
        plain = check_plain(graph, problem)
        assert (fast.verdict, fast.reason) == (plain.verdict, plain.reason), graph.text
        if fast.metric_after is not None and plain.metric_after is not None:
            assert fast.metric_after == pytest.approx(plain.metric_after, abs=0.02), graph.text
        outcomes.add((fast.verdict, fast.reason))
    # the sample covers accepted, low-score and non-finite candidates
    assert (Verdict.ACCEPT, None) in outcomes and len(outcomes) >= 3


def test_exits_are_exact_and_stacks_shrink() -> None:
    problem = seg_rejection_problem("miou", RejectionConfig(num_samples=2, iterations=60),
                                    size=8)
    graphs = [LossGraph.parse(t) for t in ("exp(exp(exp(y/yhat)))", "-y*log(yhat)",
                                           "y*mean_nhw(y)*yhat - y*mean_nhw(y)*yhat + y*yhat")]
    blow, ce, other = check_batch(graphs, problem, sync_every=5)
    assert blow.verdict is Verdict.REJECT and blow.stop is StopReason.NON_FINITE
    assert blow.iterations == 1  # flagged at the iteration it first was non-finite
    assert ce.accepted and ce.stop is StopReason.COMPLETED and ce.iterations == 60
    plain = check_plain(graphs[2], problem)
    assert (other.verdict, other.reason) == (plain.verdict, plain.reason)
    # invalid graphs are judged without a run, in the order given
    bad = check_batch([LossGraph.parse("yhat^2"), LossGraph.parse("-y*log(yhat)")], problem)
    assert bad[0].stop is StopReason.NOT_RUN and bad[1].accepted
