"""Small builders of core objects for the database tests."""

from __future__ import annotations

from alz_core.evolution.candidate import Candidate
from alz_core.graph.loss_graph import LossGraph
from alz_core.rejection.result import RejectionResult, RejectReason, StopReason, Verdict

FORMULAS = ("-y*log(yhat)", "exp((y-sqrt(yhat))^2)", "-y*log(yhat+1)", "abs(y-yhat)",
            "square(y-yhat)", "-y*tanh(yhat)")


def cand(formula: str = "-y*log(yhat)") -> Candidate:
    return Candidate.of(LossGraph.parse(formula))


def accepted(score: float = 0.9) -> RejectionResult:
    return RejectionResult(Verdict.ACCEPT, None, 0.05, score, score, 120, 0.5,
                           StopReason.FROZEN)


def rejected(reason: RejectReason = RejectReason.LOW_SCORE) -> RejectionResult:
    after = 0.1 if reason is RejectReason.LOW_SCORE else None
    return RejectionResult(Verdict.REJECT, reason, 0.05, after, after, 500, 1.5,
                           StopReason.COMPLETED)
