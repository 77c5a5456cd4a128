"""Searches: creation with validation, look-up, status changes.

Every function takes a :class:`~sqlalchemy.orm.Session` inside a unit of work and never
commits; see :func:`alz_db.store.engine.session_scope`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

from sqlalchemy import BigInteger, Row, bindparam, delete, exists, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from alz_core.config import (
    ConfigError,
    EvolutionConfig,
    RejectionConfig,
    SearchSpaceConfig,
    config_to_dict,
)
from alz_core.evolution.rungs import Rungs

from ..enums import EvalKind, EvalStatus, SearchStatus
from ..errors import AlreadyExists, InvalidInput, NotFound
from ..records import SearchInfo
from ..store.models import Evaluation, Search, sql_value

C = TypeVar("C", EvolutionConfig, RejectionConfig, SearchSpaceConfig)

MAX_NAME_LENGTH = 200


def _build(cls: type[C], section: str, value: C | Mapping[str, Any] | None) -> C:
    """A validated config from a dataclass, a mapping or ``None`` (the paper's defaults)."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{section} config {value!r} is invalid: expected a mapping")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise InvalidInput(f"{section} config: unknown key(s) {', '.join(unknown)}; expected "
                           f"some of {', '.join(sorted(known))}")
    try:
        return cls(**value)
    except (ConfigError, TypeError, ValueError) as exc:
        raise InvalidInput(f"{section} config: {exc}") from None


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@:-]*")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput(f"search name {name!r} is invalid: expected a non-empty string")
    name = name.strip()
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(f"search name {name[:40]!r}... is invalid: expected at most "
                           f"{MAX_NAME_LENGTH} characters")
    if name.isdigit():
        # get_search("42") means the search with id 42
        raise InvalidInput(f"search name {name!r} is invalid: expected a name that is not a "
                           f"number")
    if not _NAME.fullmatch(name):
        # names end up in terminals (Rich markup), file names (report folders) and URLs
        raise InvalidInput(f"search name {name!r} is invalid: expected ASCII letters, digits "
                           f"and . _ - + = @ : (starting with a letter or digit)")
    return name


def search_info(row: Search | Row[Any]) -> SearchInfo:
    """The record of a ``search`` row (or of a row with its columns)."""
    return SearchInfo(
        id=row.id, name=row.name, task=row.task, metric=row.metric, config=dict(row.config),
        seed=row.seed, budget=row.budget, status=SearchStatus(row.status),
        evaluations_reserved=row.evaluations_reserved, evaluations_done=row.evaluations_done,
        candidates=row.candidates, rejection_checks=row.rejection_checks,
        rejections=row.rejections, best_fitness=row.best_fitness,
        best_candidate_id=row.best_candidate_id, error=row.error, created_at=row.created_at,
        started_at=row.started_at, finished_at=row.finished_at,
        units_per_proxy=row.units_per_proxy, first_rung_units=row.first_rung_units)


def validate_search(task: str, metric: str, *, seed: int = 0,
                    evolution: EvolutionConfig | Mapping[str, Any] | None = None,
                    rejection: RejectionConfig | Mapping[str, Any] | None = None,
                    space: SearchSpaceConfig | Mapping[str, Any] | None = None,
                    ) -> tuple[str, str, dict[str, Any]]:
    """``(task, metric, config)`` normalised and validated, or :class:`InvalidInput`."""
    from alz_core.tasks.registry import TaskError, check_metric, get_task

    try:
        info = get_task(task)
        metric = check_metric(info, metric)
    except TaskError as exc:
        raise InvalidInput(str(exc)) from None
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidInput(f"seed={seed!r} is invalid: expected an integer >= 0")
    evo = _build(EvolutionConfig, "evolution", evolution)
    rej = _build(RejectionConfig, "rejection", rejection)
    spc = _build(SearchSpaceConfig, "space", space)
    config = {"evolution": config_to_dict(evo), "rejection": config_to_dict(rej),
              "space": config_to_dict(spc)}
    return info.name, metric, config


def _rungs(data: Any) -> Rungs:
    """The ``extra.rungs`` of a search, checked (one-line :class:`InvalidInput`)."""
    if data is None:
        return Rungs()
    try:
        rungs = Rungs.from_json(data)
    except (ConfigError, KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"extra.rungs={data!r} is invalid: {exc}") from None
    if rungs.count > 1 and rungs.iterations is None:
        raise InvalidInput("extra.rungs needs the iterations of each rung (an "
                           "iteration-based proxy schedule)")
    return rungs


def create_search(session: Session, name: str, task: str, metric: str, *, seed: int = 0,
                  evolution: EvolutionConfig | Mapping[str, Any] | None = None,
                  rejection: RejectionConfig | Mapping[str, Any] | None = None,
                  space: SearchSpaceConfig | Mapping[str, Any] | None = None,
                  extra: Mapping[str, Any] | None = None, start: bool = False) -> SearchInfo:
    """Validate everything, then insert a search (status ``created``, or ``running`` if
    ``start``). The proxy budget is ``evolution.budget``.

    Raises :class:`InvalidInput` (unknown task or metric, invalid config value or key, bad name
    or seed) before writing anything, and :class:`AlreadyExists` if the name is taken.
    """
    name = _check_name(name)
    task, metric, config = validate_search(task, metric, seed=seed, evolution=evolution,
                                           rejection=rejection, space=space)
    config["extra"] = dict(extra or {})
    rungs = _rungs(config["extra"].get("rungs"))
    units = rungs.units_per_proxy
    status = SearchStatus.RUNNING if start else SearchStatus.CREATED
    # ON CONFLICT DO NOTHING: a taken name does not abort the caller's transaction
    stmt = (insert(Search)
            .values(name=name, task=task, metric=metric, config=config, seed=seed,
                    budget=config["evolution"]["budget"] * units, units_per_proxy=units,
                    first_rung_units=rungs.units[0], status=status,
                    started_at=func.now() if start else None)
            .on_conflict_do_nothing(index_elements=[Search.name])
            .returning(Search.id))
    new_id = session.execute(stmt).scalar_one_or_none()
    if new_id is None:
        raise AlreadyExists(f"search name {name!r} is already taken")
    return get_search(session, new_id)


def _where(ref: int | str):  # noqa: ANN202 - a SQL expression
    if isinstance(ref, bool):
        raise InvalidInput(f"search {ref!r} is invalid: expected an id or a name")
    if isinstance(ref, int):
        return Search.id == ref
    if isinstance(ref, str) and ref.strip().isdigit():
        t = ref.strip()
        # '²' and '٣' are digits to str.isdigit, but no id; an id is a BIGINT
        if not t.isascii() or int(t) > 2 ** 63 - 1:
            raise InvalidInput(f"search {ref!r} is invalid: expected an id (ASCII digits, at "
                               f"most 2**63 - 1) or a name")
        return Search.id == int(t)
    if isinstance(ref, str):
        return Search.name == ref.strip()
    raise InvalidInput(f"search {ref!r} is invalid: expected an id or a name")


def _describe(ref: int | str) -> str:
    return (f"search {ref}" if isinstance(ref, int) or (str(ref).isascii() and str(ref).isdigit())
            else f"search {ref!r}")


def get_search(session: Session, ref: int | str) -> SearchInfo:
    """The search with id ``ref`` (an int or digits) or name ``ref``; :class:`NotFound`."""
    row = session.execute(select(Search).where(_where(ref))).scalar_one_or_none()
    if row is None:
        raise NotFound(f"{_describe(ref)} does not exist")
    return search_info(row)


def list_searches(session: Session, status: SearchStatus | None = None) -> list[SearchInfo]:
    """All searches (or those with ``status``), oldest first."""
    stmt = select(Search).order_by(Search.id)
    if status is not None:
        stmt = stmt.where(Search.status == status)
    return [search_info(r) for r in session.execute(stmt).scalars()]


def _transition(session: Session, ref: int | str, to: SearchStatus,
                allowed_from: tuple[SearchStatus, ...], **values: Any) -> SearchInfo:
    current = get_search(session, ref)
    if current.status is to:
        return current  # idempotent
    if current.status not in allowed_from:
        raise InvalidInput(f"search {current.id} is {current.status.value}: it cannot become "
                           f"{to.value} (only from {', '.join(s.value for s in allowed_from)})")
    row = session.execute(
        update(Search).where(Search.id == current.id, Search.status.in_(allowed_from))
        .values(status=to, **values).returning(Search)).scalar_one_or_none()
    if row is None:  # changed under us since the read: report the new state
        return _transition(session, ref, to, allowed_from, **values)
    return search_info(row)


def start_search(session: Session, ref: int | str) -> SearchInfo:
    """``created``/``stopped`` -> ``running`` (workers claim and reserve only then)."""
    return _transition(session, ref, SearchStatus.RUNNING,
                       (SearchStatus.CREATED, SearchStatus.STOPPED),
                       started_at=func.coalesce(Search.started_at, func.now()))


def stop_search(session: Session, ref: int | str) -> SearchInfo:
    """``running``/``created`` -> ``stopped``. Running evaluations finish; nothing new starts."""
    return _transition(session, ref, SearchStatus.STOPPED,
                       (SearchStatus.RUNNING, SearchStatus.CREATED))


def fail_search(session: Session, ref: int | str, error: str) -> SearchInfo:
    """Mark a search failed (e.g. its task cannot be built) with a one-line reason."""
    return _transition(session, ref, SearchStatus.FAILED,
                       (SearchStatus.CREATED, SearchStatus.RUNNING, SearchStatus.STOPPED),
                       error=" ".join(error.split()), finished_at=func.now())


def resume_search(session: Session, ref: int | str) -> SearchInfo:
    """``failed``/``stopped`` -> ``running`` after its cause was fixed: the error is cleared and
    the failures-in-a-row rule starts counting again from now; what the search did so far is
    kept (evaluations that failed for good gave their budget slots back)."""
    return _transition(session, ref, SearchStatus.RUNNING,
                       (SearchStatus.FAILED, SearchStatus.STOPPED), error=None,
                       finished_at=None, resumed_at=func.now(),
                       started_at=func.coalesce(Search.started_at, func.now()))


def rename_search(session: Session, ref: int | str, new_name: str) -> SearchInfo:
    """Give a search a new name (the same rules as at creation; ``AlreadyExists`` if taken)."""
    current = get_search(session, ref)
    name = _check_name(new_name)
    if name == current.name:
        return current
    if session.execute(select(Search.id).where(Search.name == name)).scalar_one_or_none():
        raise AlreadyExists(f"search name {name!r} is already taken")
    try:
        with session.begin_nested():
            row = session.execute(update(Search).where(Search.id == current.id)
                                  .values(name=name).returning(Search)).scalar_one()
    except IntegrityError:
        raise AlreadyExists(f"search name {name!r} is already taken") from None
    return search_info(row)


def delete_search(session: Session, ref: int | str) -> SearchInfo:
    """Delete a search that is not running, with everything it holds (candidates,
    rejections, evaluations, their attempts and curves, tuning studies, worker problems;
    experiments keep their results with no search). Returns what was deleted."""
    current = get_search(session, ref)
    status = session.execute(select(Search.status).where(Search.id == current.id)
                             .with_for_update()).scalar_one()  # no start in between
    if SearchStatus(status) is SearchStatus.RUNNING:
        raise InvalidInput(f"search {current.id} {current.name!r} is running: stop it first "
                           f"(alz search stop {current.name})")
    session.execute(delete(Search).where(Search.id == current.id)
                    .execution_options(synchronize_session=False))
    return current


@functools.cache
def finish_if_complete_statement():  # noqa: ANN202 - an Update
    """:func:`finish_search_if_complete`'s update (bind parameter ``p_search_id``), built
    once: it runs after every proxy result (with the result's second statement there)."""
    search_id = bindparam("p_search_id", type_=BigInteger)
    # literal kind and statuses: the partial index ix_evaluation_open_proxy serves a cached
    # generic plan only when its predicate is visible in the query
    open_proxy = exists().where(
        Evaluation.search_id == search_id, Evaluation.kind == sql_value(EvalKind.PROXY),
        Evaluation.status.in_([sql_value(x) for x in (EvalStatus.QUEUED, EvalStatus.RUNNING,
                                                      EvalStatus.STALE)]))
    return (update(Search)
            .where(Search.id == search_id, Search.status == SearchStatus.RUNNING,
                   # no new first run fits what is left (without rungs: done = budget)
                   Search.evaluations_done > Search.budget - Search.first_rung_units,
                   ~open_proxy)
            .values(status=SearchStatus.FINISHED, finished_at=func.now())
            .returning(Search.id))


def finish_search_if_complete(session: Session, search_id: int) -> bool:
    """``running`` -> ``finished`` once every proxy slot of the budget has a result.

    Called after each finished or failed proxy evaluation. ``evaluations_done`` only grows
    and never passes ``evaluations_reserved <= budget``, so ``done = budget`` means no proxy
    evaluation is still open.
    """
    done = session.connection().execute(finish_if_complete_statement(),
                                        {"p_search_id": search_id}).scalar_one_or_none()
    return done is not None
