"""What ``alz report SEARCH`` shows, read in one transaction (:func:`collect_report`): the
search, its proxy results in finishing order, the leaderboard's best candidates with their
re-trainings and tuned settings, the lineage of the best one, the rejection statistics (pruned
rows included), the newest ablation of its task and metric, its newest baselines and noise
floor. The HTML and the figures: :mod:`alz_db.services.report`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..enums import EvalKind, EvalStatus
from ..records import NoiseFloor, SearchInfo
from ..repo.candidates import get_candidate, tuned_settings_of
from ..repo.experiments import latest_experiment, noise_floor_of
from ..repo.lineage import leaderboard, lineage
from ..repo.queue import evaluations_of
from ..repo.searches import get_search
from ..store.models import Evaluation, RejectionCount


@dataclass
class ReportData:
    """Everything the report shows, read in one transaction."""

    search: SearchInfo
    progress: list[tuple[int, float | None]]  # (evaluation id, fitness) in finishing order
    top: list[dict[str, Any]]
    lineage: list[dict[str, Any]]
    rejection: dict[str, Any]
    ablation: dict[str, Any] | None = None
    baselines: dict[str, Any] | None = None
    noise: NoiseFloor | None = None  # the newest noise floor of the search, if any
    generated_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


def collect_report(session: Session, search_ref: int | str, *, top: int = 5,
                   ablation: Mapping[str, Any] | None = None) -> ReportData:
    """Read what :func:`render_report` needs. ``ablation``: a study result (JSON) to show
    instead of the newest stored one. ``NotFound`` for an unknown search."""
    from alz_core.graph.display import simplified_text, to_latex

    info = get_search(session, search_ref)
    proxy = [e for e in evaluations_of(session, search_id=info.id, status=EvalStatus.DONE)
             if e.kind is EvalKind.PROXY]
    proxy.sort(key=lambda e: (e.finished_at or e.queued_at, e.id))
    progress = [(e.id, e.fitness) for e in proxy]
    entries = leaderboard(session, info.id, limit=max(1, top))
    rows = []
    for e in entries:
        cand = get_candidate(session, e.candidate_id)
        branches = []
        for name, g in cand.candidate.branches:
            try:
                latex = to_latex(g)
            except Exception:  # noqa: BLE001 - display only; the canonical text is shown
                latex = None
            branches.append({"branch": name, "formula": g.text, "latex": latex,
                             "simplified": simplified_text(g)})
        retrains = [{"id": ev.id, "status": ev.status.value, "fitness": ev.fitness,
                     "params": ev.params}
                    for ev in evaluations_of(session, candidate_id=e.candidate_id)
                    if ev.kind is EvalKind.RETRAIN]
        rows.append({"rank": e.rank, "candidate_id": e.candidate_id, "fitness": e.fitness,
                     "generation": e.generation, "mutation": e.mutation.value,
                     "parent_id": e.parent_id, "branches": branches, "retrains": retrains,
                     "tuned": tuned_settings_of(session, e.candidate_id)})
    chain = []
    if entries:
        chain = [{"candidate_id": x.candidate_id, "parent_id": x.parent_id,
                  "generation": x.generation, "mutation": x.mutation.value,
                  "status": x.status.value, "fitness": x.fitness, "formula": x.formula}
                 for x in lineage(session, entries[0].candidate_id)]
    # every check recorded, pruned rows included (revision 0013: kept by the insert trigger)
    by_reason = session.execute(
        select(RejectionCount.verdict, RejectionCount.reason, RejectionCount.checks,
               RejectionCount.seconds)
        .where(RejectionCount.search_id == info.id, RejectionCount.checks > 0)).all()
    reasons = sorted(({"verdict": v.value if hasattr(v, "value") else str(v),
                       "reason": None if r is None else (r.value if hasattr(r, "value")
                                                         else str(r)),
                       "count": int(n), "mean_seconds": float(s) / n}
                      for v, r, n, s in by_reason), key=lambda d: -d["count"])
    checks = sum(d["count"] for d in reasons)
    accepted = sum(d["count"] for d in reasons if d["verdict"] == "accept")
    running = session.execute(select(func.count()).select_from(Evaluation).where(
        Evaluation.search_id == info.id, Evaluation.kind == EvalKind.PROXY,
        Evaluation.status.in_([EvalStatus.QUEUED, EvalStatus.RUNNING, EvalStatus.STALE]))
    ).scalar_one()
    rejection = {"checks": checks, "accepted": accepted, "rejected": checks - accepted,
                 "rate": (checks - accepted) / checks if checks else None,
                 "by_reason": reasons, "candidates": info.candidates,
                 "evaluations_pending": int(running)}
    if ablation is None:
        stored = latest_experiment(session, "ablation", task=info.task, metric=info.metric)
        if stored is not None:
            ablation = {**stored.result, "_experiment": {"id": stored.id, "name": stored.name,
                                                         "created_at": stored.created_at
                                                         .isoformat()}}
    stored_b = latest_experiment(session, "baselines", search_id=info.id)
    baselines = None if stored_b is None else {**stored_b.result,
                                               "_experiment": {"id": stored_b.id,
                                                               "name": stored_b.name}}
    return ReportData(info, progress, rows, chain, rejection,
                      None if ablation is None else dict(ablation), baselines,
                      noise_floor_of(session, info.id))


__all__ = ["ReportData", "collect_report"]
