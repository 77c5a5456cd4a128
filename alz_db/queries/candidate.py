"""One candidate as the web app's candidate page shows it: its details (formula, rejection
results, evaluations, parent, equivalents), proxy metrics, lineage graph (ancestors and
descendants) and tuning studies; and :func:`mm_snippet`, the mmseg config snippet of a loss
(also ``alz export --format mm``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    and_,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.orm import Session, aliased

from alz_core.evolution.mutation import MutationKind
from alz_core.rejection.result import RejectReason, StopReason, Verdict

from ..enums import CandidateStatus, EvalKind, EvalStatus, FitnessKind
from ..errors import InvalidInput, NotFound
from ..records import (
    CandidateRecord,
    EvaluationRecord,
    LineageEntry,
    SearchInfo,
    StudyInfo,
    TrialRecord,
)
from ..repo.candidates import get_candidate
from ..repo.lineage import lineage
from ..repo.queue import evaluations_of
from ..repo.searches import get_search
from ..repo.studies import studies_of, trials_for_candidate
from ..store.fitness import from_stored
from ..store.models import Candidate as CandidateRow
from ..store.models import (
    EvaluationStep,
    Rejection,
)


@dataclass(frozen=True)
class RejectionRecord:
    """One run of the loss-rejection protocol on a branch graph."""

    id: int
    branch: str
    formula: str
    verdict: Verdict
    reason: RejectReason | None
    metric_before: float | None
    metric_after: float | None
    score: float | None
    iterations: int
    stop: StopReason
    seconds: float


@dataclass(frozen=True)
class CandidateDetail:
    """Everything the candidate page shows."""

    candidate: CandidateRecord
    search: SearchInfo
    rejections: list[RejectionRecord]
    #: the other candidates of its fingerprint class (same gradient fingerprint): its
    #: representative first, then the equivalents, oldest first (at most ``limit``)
    same_fingerprint: list[LineageEntry]
    same_fingerprint_count: int
    evaluations: list[EvaluationRecord]
    loss_curve: list[tuple[int, float | None]]  # (step, loss) of its proxy evaluation
    parent: CandidateRecord | None
    children: int  # how many candidates are mutations of it


def _entries(session: Session, where: Any, limit: int) -> list[LineageEntry]:
    c = CandidateRow
    rows = session.execute(
        select(c.id, c.parent_id, c.generation, c.mutation, c.status, c.fitness,
               c.fitness_kind, c.formula).where(where).order_by(c.id).limit(limit)).all()
    return [LineageEntry(r.id, r.parent_id, r.generation, MutationKind(r.mutation),
                         CandidateStatus(r.status), from_stored(r.fitness, r.fitness_kind),
                         None if r.fitness_kind is None else FitnessKind(r.fitness_kind),
                         r.formula) for r in rows]


def candidate_detail(session: Session, candidate_id: int, *,
                     same_fingerprint_limit: int = 50) -> CandidateDetail:
    """A candidate with its rejection runs, fingerprint class, evaluations, loss curve and
    parent. :class:`NotFound` if it does not exist."""
    cand = get_candidate(session, candidate_id)
    search = get_search(session, cand.search_id)
    rejections = [
        RejectionRecord(r.id, r.branch, r.formula, Verdict(r.verdict),
                        None if r.reason is None else RejectReason(r.reason), r.metric_before,
                        r.metric_after, r.score, r.iterations, StopReason(r.stop), r.seconds)
        for r in session.execute(select(Rejection).where(Rejection.candidate_id == cand.id)
                                 .order_by(Rejection.id)).scalars()]
    c = CandidateRow
    rep = cand.equivalent_to if cand.equivalent_to is not None else cand.id
    # the class = its representative and the representative's equivalents
    # (ix_candidate_equivalent_to_id); candidates without a fingerprint form no class
    if cand.fingerprint is None:
        same, n_same = [], 0
    else:
        in_class = and_(or_(c.id == rep, c.equivalent_to_id == rep), c.id != cand.id)
        same = _entries(session, in_class, same_fingerprint_limit)
        n_same = int(session.execute(select(func.count()).select_from(c)
                                     .where(in_class)).scalar_one())
    evaluations = evaluations_of(session, candidate_id=cand.id)
    proxy = [e for e in evaluations if e.kind is EvalKind.PROXY]
    curve: list[tuple[int, float | None]] = []
    if proxy:
        curve = [(r.step, r.loss) for r in session.execute(
            select(EvaluationStep.step, EvaluationStep.loss)
            .where(EvaluationStep.evaluation_id == proxy[0].id)
            .order_by(EvaluationStep.step)).all()]
    parent = get_candidate(session, cand.parent_id) if cand.parent_id is not None else None
    n_children = int(session.execute(
        select(func.count()).select_from(c)
        .where(c.search_id == cand.search_id, c.parent_id == cand.id)).scalar_one())
    return CandidateDetail(cand, search, rejections, same, n_same, evaluations, curve, parent,
                           n_children)


def proxy_metrics(detail: CandidateDetail) -> dict[str, Any]:
    """The metrics of the candidate's finished proxy evaluation (its representative's for an
    equivalent, which was not trained itself); empty if there is none yet."""
    for e in detail.evaluations:
        if e.kind is EvalKind.PROXY and e.status is EvalStatus.DONE:
            return dict(e.metrics or {})
    return {}


# --- lineage -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LineageGraph:
    """The ancestry of a candidate (back to the initial population) and its descendants."""

    focus: int
    ancestors: list[LineageEntry]  # the initial ancestor first, the focus last
    descendants: list[LineageEntry]  # breadth first (generation by generation)
    truncated: bool  # descendants were cut at ``max_depth`` or ``limit``

    @property
    def nodes(self) -> list[LineageEntry]:
        """Ancestors (root first, the focus last), then descendants."""
        return self.ancestors + self.descendants

    @property
    def edges(self) -> list[tuple[int, int]]:
        """``(parent, child)`` pairs among the nodes."""
        ids = {n.candidate_id for n in self.nodes}
        return [(n.parent_id, n.candidate_id) for n in self.nodes
                if n.parent_id is not None and n.parent_id in ids]


def descendants(session: Session, candidate_id: int, *, max_depth: int = 4,
                limit: int = 200) -> tuple[list[LineageEntry], bool]:
    """The descendants of a candidate down to ``max_depth`` generations, at most ``limit``,
    breadth first; and whether more exist. One recursive query over
    ``ix_candidate_search_id_parent_id``."""
    if max_depth < 1 or limit < 1:
        raise InvalidInput(f"max_depth={max_depth}, limit={limit} is invalid: expected "
                           f"integers >= 1")
    c = CandidateRow
    search_id = session.execute(select(c.search_id).where(c.id == candidate_id)) \
        .scalar_one_or_none()
    if search_id is None:
        raise NotFound(f"candidate {candidate_id} does not exist")
    cols = (c.id, c.parent_id, c.generation, c.mutation, c.status, c.fitness, c.fitness_kind,
            c.formula)
    down = select(*cols, literal(1).label("depth")) \
        .where(c.search_id == search_id, c.parent_id == candidate_id) \
        .cte("descendants", recursive=True)
    kid = aliased(CandidateRow)
    down = down.union_all(
        select(kid.id, kid.parent_id, kid.generation, kid.mutation, kid.status, kid.fitness,
               kid.fitness_kind, kid.formula, (down.c.depth + 1).label("depth"))
        .where(kid.search_id == search_id, kid.parent_id == down.c.id,
               down.c.depth < max_depth + 1))
    rows = session.execute(select(down).order_by(down.c.depth, down.c.id)
                           .limit(limit + 1)).all()
    # depth max_depth + 1 rows exist only to tell whether the tree goes on
    truncated = len(rows) > limit or any(r.depth > max_depth for r in rows)
    kept = [r for r in rows[:limit] if r.depth <= max_depth]
    return [LineageEntry(r.id, r.parent_id, r.generation, MutationKind(r.mutation),
                         CandidateStatus(r.status), from_stored(r.fitness, r.fitness_kind),
                         None if r.fitness_kind is None else FitnessKind(r.fitness_kind),
                         r.formula) for r in kept], truncated


def lineage_graph(session: Session, candidate_id: int, *, max_depth: int = 4,
                  limit: int = 200) -> LineageGraph:
    """:func:`alz_db.lineage` (ancestry) plus :func:`descendants` of a candidate."""
    up = lineage(session, candidate_id)
    down, truncated = descendants(session, candidate_id, max_depth=max_depth, limit=limit)
    return LineageGraph(candidate_id, up, down, truncated)


@dataclass(frozen=True)
class TuningView:
    """A candidate's Optuna studies (``alz tune``) and every trial of them."""

    studies: list[StudyInfo]
    trials: list[TrialRecord]

    def trials_of(self, study_name: str) -> list[TrialRecord]:
        return [t for t in self.trials if t.study_name == study_name]


def tuning_view(session: Session, candidate_id: int) -> TuningView:
    """The candidate's studies and their trials (``NotFound`` for an unknown candidate; empty
    lists when it was never tuned). Reads schema ``optuna``: the read-only role has SELECT
    there (:func:`alz_db.create_read_only_role`)."""
    trials = trials_for_candidate(session, candidate_id)
    return TuningView(studies_of(session, candidate_id), trials)


def mm_snippet(formula: str, *, metric: str, comment: str = "") -> str:
    """An mmseg config snippet that trains with ``formula`` through ``alz_core.mm``."""
    from alz_core.tasks.seg_config import BOUNDARY_METRICS

    # BIoU/BF1 losses were searched on the labels' class boundaries (the paper, A.1): keep that
    target = ", target='boundary'" if metric in BOUNDARY_METRICS else ""
    head = f"# {comment}\n" if comment else ""
    return (f"{head}custom_imports = dict(imports=['alz_core.mm'], allow_failed_imports=False)\n"
            f"model = dict(\n"
            f"    decode_head=dict(\n"
            f"        loss_decode=dict(\n"
            f"            type='ALZLoss',\n"
            f"            formula={formula!r},\n"
            f"            loss_weight=1.0{target})))\n")
