"""The verdict of the loss-rejection protocol and why."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Verdict(str, Enum):
    ACCEPT = "accept"
    REJECT = "reject"


class RejectReason(str, Enum):
    LOW_SCORE = "low_score"
    NON_FINITE = "non_finite"
    INVALID_GRAPH = "invalid_graph"
    NO_TARGET_DEPENDENCE = "no_target_dependence"
    NO_PREDICTION_DEPENDENCE = "no_prediction_dependence"


class StopReason(str, Enum):
    """Why the optimisation loop ended (diagnostic; never changes the verdict)."""

    COMPLETED = "completed"
    NON_FINITE = "non_finite"
    ZERO_GRADIENT = "zero_gradient"
    FROZEN = "frozen"
    NOT_RUN = "not_run"


@dataclass(frozen=True)
class RejectionResult:
    verdict: Verdict
    reason: RejectReason | None
    metric_before: float
    metric_after: float | None
    score: float | None
    iterations: int
    seconds: float
    stop: StopReason = StopReason.COMPLETED

    @property
    def accepted(self) -> bool:
        return self.verdict is Verdict.ACCEPT

    def to_json(self) -> dict:
        return {
            "verdict": self.verdict.value,
            "reason": self.reason.value if self.reason else None,
            "metric_before": self.metric_before,
            "metric_after": self.metric_after,
            "score": self.score,
            "iterations": self.iterations,
            "seconds": round(self.seconds, 4),
            "stop": self.stop.value,
        }
