"""Frozen records the repositories return (never ORM rows): plain values, safe to keep after
the transaction that read them has ended."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from alz_core.config import EvolutionConfig, RejectionConfig, SearchSpaceConfig
from alz_core.evolution.candidate import Candidate, Individual
from alz_core.evolution.mutation import MutationKind
from alz_core.evolution.rungs import Rungs

from .enums import (
    AttemptOutcome,
    CandidateStatus,
    EvalKind,
    EvalStatus,
    FitnessKind,
    SearchStatus,
    SubmitOutcome,
    WorkerStatus,
)
from .errors import InvalidInput

#: What a search created before a setting existed did: a stored config without the key gets the
#: old behaviour, so an old search resumes (and reads) as it ran. New searches store every key.
LEGACY_EVOLUTION: dict[str, Any] = {"tournament_min_size": 1}
LEGACY_REJECTION: dict[str, Any] = {"fingerprint_scheme": "global_cut",
                                    "boundary_targets": False}


@dataclass(frozen=True)
class SearchInfo:
    """A search and its progress counters."""

    id: int
    name: str
    task: str
    metric: str
    config: dict[str, Any]  # {"evolution": ..., "rejection": ..., "space": ..., "extra": ...}
    seed: int
    budget: int
    status: SearchStatus
    evaluations_reserved: int
    evaluations_done: int
    candidates: int
    rejection_checks: int
    rejections: int
    best_fitness: float | None
    best_candidate_id: int | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    #: revision 0011: budget units of a full proxy run and of a first rung (1 without rungs)
    units_per_proxy: int = 1
    first_rung_units: int = 1

    @property
    def rungs(self) -> Rungs:
        """The rung schedule (one rung, the full proxy, without ``--rungs``)."""
        return Rungs.from_json(self.config.get("extra", {}).get("rungs"))

    @property
    def budget_proxies(self) -> float:
        """The budget in full-proxy equivalents."""
        return self.budget / self.units_per_proxy

    @property
    def done_proxies(self) -> float:
        """Compute used so far, in full-proxy equivalents."""
        return self.evaluations_done / self.units_per_proxy

    @property
    def budget_left(self) -> bool:
        """Whether a new candidate's first run still fits the budget."""
        return self.budget - self.evaluations_reserved >= self.first_rung_units

    @property
    def evolution(self) -> EvolutionConfig:
        return EvolutionConfig(**{**LEGACY_EVOLUTION, **self.config["evolution"]})

    @property
    def rejection(self) -> RejectionConfig:
        return RejectionConfig(**{**LEGACY_REJECTION, **self.config["rejection"]})

    @property
    def space(self) -> SearchSpaceConfig:
        return SearchSpaceConfig(**self.config["space"])

    @property
    def extra(self) -> dict[str, Any]:
        """Options of the proxy task etc., stored as given."""
        return dict(self.config.get("extra", {}))

    @property
    def rejection_rate(self) -> float | None:
        return self.rejections / self.rejection_checks if self.rejection_checks else None


@dataclass(frozen=True)
class CandidateRecord:
    """A stored candidate; :attr:`individual` is its ``alz_core`` view."""

    id: int
    search_id: int
    candidate: Candidate
    formula: str
    structural_hash: str
    fingerprint: str | None
    parent_id: int | None
    mutation: MutationKind
    generation: int
    status: CandidateStatus
    fitness: float | None  # None: diverged, or not known yet (see fitness_kind)
    fitness_kind: FitnessKind | None
    equivalent_to: int | None
    created_at: datetime
    evaluated_at: datetime | None
    worker_id: int | None
    #: the mutation kind of each branch (revision 0006; ``None`` for older candidates)
    #: revision 0011: the highest rung completed
    rung: int = 0
    branch_mutations: dict[str, MutationKind] | None = None

    @property
    def individual(self) -> Individual:
        return Individual(self.id, self.candidate, self.fitness, self.parent_id, self.mutation,
                          self.generation, self.fingerprint, self.equivalent_to, self.rung)


@dataclass(frozen=True)
class PopulationEntry:
    """A member of a search's population as tournament selection sees it, without its graphs
    (:func:`alz_db.population_entries`): a worker reads the graphs of the parent it picks."""

    id: int
    fitness: float | None  # None: diverged
    rung: int = 0
    generation: int = 0


@dataclass(frozen=True)
class Representative:
    """The candidate that stands for a fingerprint class of a search."""

    candidate_id: int
    status: CandidateStatus
    fitness: float | None
    fitness_kind: FitnessKind | None

    @property
    def has_fitness(self) -> bool:
        return self.fitness_kind is not None


@dataclass(frozen=True)
class Submission:
    """What happened to a child handed to :func:`alz_db.submit_candidate`."""

    outcome: SubmitOutcome
    candidate_id: int | None  # None when the budget was exhausted (nothing stored)
    evaluation_id: int | None = None  # the queued proxy evaluation (QUEUED)
    equivalent_to: int | None = None  # the representative (EQUIVALENT)
    fitness: float | None = None  # the reused fitness, when already known (EQUIVALENT)
    fitness_kind: FitnessKind | None = None


@dataclass(frozen=True)
class Lease:
    """A claimed evaluation: the worker owns it until ``lease_expires_at`` (database clock)
    unless it renews it with :func:`alz_db.heartbeat`. ``attempt`` identifies this claim."""

    evaluation_id: int
    candidate_id: int
    search_id: int
    kind: EvalKind
    worker_id: int
    attempt: int
    max_attempts: int
    lease_expires_at: datetime
    candidate: Candidate
    params: dict[str, Any] = field(default_factory=dict)
    rung: int = 0  # revision 0011: the rung of a proxy evaluation (0 without rungs)


@dataclass(frozen=True)
class ReapedEvaluation:
    """An evaluation whose lease expired, as handled by :func:`alz_db.reap_expired_leases`."""

    evaluation_id: int
    candidate_id: int
    search_id: int
    attempt: int
    worker_id: int | None
    status: EvalStatus  # STALE (claimable again) or FAILED (out of attempts)


@dataclass(frozen=True)
class EvaluationRecord:
    id: int
    candidate_id: int
    search_id: int
    kind: EvalKind
    status: EvalStatus
    worker_id: int | None
    attempts: int
    max_attempts: int
    lease_expires_at: datetime | None
    heartbeat_at: datetime | None
    error: str | None
    metrics: dict[str, Any] | None
    fitness: float | None
    fitness_kind: FitnessKind | None
    seconds: float | None
    params: dict[str, Any]
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    rung: int = 0  # revision 0011


@dataclass(frozen=True)
class AttemptRecord:
    evaluation_id: int
    attempt: int
    worker_id: int | None
    started_at: datetime
    ended_at: datetime | None
    outcome: AttemptOutcome | None  # None: still running
    error: str | None


@dataclass(frozen=True)
class WorkerRecord:
    id: int
    host: str
    pid: int
    device: str
    search_id: int | None
    status: WorkerStatus
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    device_name: str | None = None
    device_memory_mb: int | None = None


@dataclass(frozen=True)
class WorkerProblemRecord:
    """A search one worker cannot serve on its node (``worker_problem``)."""

    search_id: int
    worker_id: int
    host: str
    problem: str
    count: int
    first_at: datetime
    last_at: datetime
    resolved_at: datetime | None
    worker_status: WorkerStatus | None = None


@dataclass(frozen=True)
class LeaderboardEntry:
    rank: int  # 1 = best; ties broken by the older candidate
    candidate_id: int
    formula: str
    fitness: float | None  # None: diverged
    fitness_kind: FitnessKind
    generation: int
    mutation: MutationKind
    parent_id: int | None
    fingerprint: str | None
    evaluated_at: datetime | None
    rung: int = 0  # revision 0011: the rung its fitness comes from


@dataclass(frozen=True)
class LineageEntry:
    candidate_id: int
    parent_id: int | None
    generation: int
    mutation: MutationKind
    status: CandidateStatus
    fitness: float | None
    fitness_kind: FitnessKind | None
    formula: str


# --- tuning studies (alz_db.repo.studies, alz_db.services.tuning) ------------------------------
#: the pruners a study may use
PRUNERS = ("median", "threshold", "none")


@dataclass(frozen=True)
class TuneConfig:
    """What one study tunes and how.

    ``trials``: trials of the whole study (all workers, all nodes). ``proxy_iters``: training
    iterations per trial (default: the search's proxy schedule); ``config``: the proxy config
    (default: the search's, with its overrides), ``cfg_options`` more overrides (mmengine's
    ``--cfg-options``). ``report_every``: validation (intermediate value) period in
    iterations. ``pruner``: ``median`` (prune below the median of earlier trials at the same
    step, after ``prune_startup`` finished trials and from the second report on), ``threshold``
    (prune when the metric is below ``prune_below``), ``none``. The ranges are
    ``(low, high)``; lr and loss weight are sampled on a log scale.
    """

    trials: int = 20
    proxy_iters: int | None = None
    config: str | None = None
    cfg_options: Mapping[str, Any] = field(default_factory=dict)
    report_every: int = 25
    pruner: str = "median"
    prune_startup: int = 3
    prune_below: float | None = None
    lr_scale: tuple[float, float] = (0.1, 10.0)
    loss_weight: tuple[float, float] = (0.25, 4.0)
    warmup_ratio: tuple[float, float] = (0.0, 0.2)
    seed: int = 0

    def __post_init__(self) -> None:
        def positive_int(name: str, v: Any, low: int = 1) -> None:
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise InvalidInput(f"{name}={v!r} is invalid: expected an integer >= {low}")

        positive_int("trials", self.trials)
        if self.proxy_iters is not None:
            positive_int("proxy_iters", self.proxy_iters)
        positive_int("report_every", self.report_every)
        positive_int("prune_startup", self.prune_startup, 0)
        if self.pruner not in PRUNERS:
            raise InvalidInput(f"pruner={self.pruner!r} is invalid: expected one of "
                               f"{', '.join(PRUNERS)}")
        if self.pruner == "threshold" and (self.prune_below is None
                                           or not math.isfinite(self.prune_below)):
            raise InvalidInput(f"prune_below={self.prune_below!r} is invalid: the threshold "
                               f"pruner needs a finite number")
        for name, positive in (("lr_scale", True), ("loss_weight", True),
                               ("warmup_ratio", False)):
            lo, hi = getattr(self, name)
            ok = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (lo, hi)) \
                and lo <= hi and (lo > 0 if positive else 0 <= lo) \
                and (hi < 1 if name == "warmup_ratio" else True)
            if not ok:
                expected = "0 < low <= high" if positive else "0 <= low <= high < 1"
                raise InvalidInput(f"{name}=({lo!r}, {hi!r}) is invalid: expected {expected}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("lr_scale", "loss_weight", "warmup_ratio"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TuneConfig:
        d = dict(data)
        for k in ("lr_scale", "loss_weight", "warmup_ratio"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


@dataclass(frozen=True)
class StudyInfo:
    """A candidate's study as recorded in ``tuning_study``."""

    id: int
    candidate_id: int
    search_id: int
    study_name: str
    metric: str
    config: TuneConfig
    trials_finished: int
    best_trial: int | None
    best_value: float | None
    best_params: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class TrialRecord:
    """One Optuna trial of a candidate's study, read from the ``optuna`` schema."""

    study_name: str
    number: int
    state: str  # RUNNING, COMPLETE, PRUNED, FAIL, WAITING
    value: float | None
    params: dict[str, float]
    intermediate: tuple[tuple[int, float | None], ...]  # (iteration, metric)
    user_attrs: dict[str, Any]
    started_at: datetime | None
    completed_at: datetime | None

    @property
    def seconds(self) -> float | None:
        if self.started_at is None or self.completed_at is None:
            return None
        return (self.completed_at - self.started_at).total_seconds()


# --- noise floors (alz_db.repo.experiments, alz_db.services.noise) -----------------------------
@dataclass(frozen=True)
class NoiseFloor:
    """The spread of one loss's proxy fitness over training seeds (JSON: :meth:`to_json`)."""

    loss: str
    formula: str
    metric: str
    seeds: list[int]
    values: list[float | None]  # None: that seed's training diverged
    seconds: list[float]
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    background: float | None = None  # the all-background prediction's metric (seg)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def diverged(self) -> int:
        return sum(v is None for v in self.values)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "diverged": self.diverged}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NoiseFloor:
        keys = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in keys})

    def band(self) -> tuple[float, float] | None:
        """mean - std .. mean + std, the band the web app draws."""
        if self.mean is None or self.std is None:
            return None
        return self.mean - self.std, self.mean + self.std

    def line(self) -> str:
        """``cross-entropy miou 0.512 ± 0.012 (5 seeds, 0.49 - 0.53)``."""
        if self.mean is None:
            return f"{self.loss}: every seed diverged"
        text = (f"{self.loss} {self.metric} {self.mean:.4f} ± {self.std:.4f} "
                f"({len(self.seeds)} seeds, {self.min:.4f} - {self.max:.4f}")
        if self.diverged:
            text += f", {self.diverged} diverged"
        text += ")"
        if self.background is not None:
            text += f"; all-background {self.background:.4f}"
        return text
