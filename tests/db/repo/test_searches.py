"""Creating searches: validation before any write, clear errors, status changes."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from alz_core.config import EvolutionConfig, RejectionConfig, ScoreMode
from alz_db import (
    AlreadyExists,
    InvalidInput,
    NotFound,
    SearchStatus,
    create_search,
    get_search,
    list_searches,
    session_scope,
    start_search,
    stop_search,
)
from alz_db.store.models import Search


def _count(sessions) -> int:
    with session_scope(sessions) as s:
        return s.execute(select(func.count()).select_from(Search)).scalar_one()


def test_create_and_read_back_a_search(sessions, unique_name) -> None:
    evo = EvolutionConfig(budget=7, population_size=50, initial_population=4)
    with session_scope(sessions) as s:
        created = create_search(s, unique_name, "seg", "mIoU", seed=3, evolution=evo,
                                rejection={"iterations": 100, "score_mode": "gain"},
                                extra={"proxy": "tiny"})
    assert created.status is SearchStatus.CREATED and created.metric == "miou"
    with session_scope(sessions) as s:
        by_id, by_name = get_search(s, created.id), get_search(s, unique_name)
        by_digits = get_search(s, str(created.id))
    assert by_id == by_name == by_digits
    assert by_id.budget == 7 and by_id.seed == 3 and by_id.evolution == evo
    assert by_id.rejection == RejectionConfig(iterations=100, score_mode=ScoreMode.GAIN)
    assert by_id.extra == {"proxy": "tiny"}
    assert (by_id.evaluations_reserved, by_id.evaluations_done, by_id.candidates) == (0, 0, 0)
    assert by_id.created_at.tzinfo is not None  # timestamptz from the database clock


@pytest.mark.parametrize("kwargs, message", [
    ({"task": "nope"}, "unknown task 'nope'"),
    ({"metric": "accuracy"}, "unknown metric 'accuracy' for task 'seg'"),
    ({"evolution": {"budget": 0}}, "evolution config: budget=0 is invalid"),
    ({"evolution": {"budgte": 5}}, "evolution config: unknown key(s) budgte"),
    ({"rejection": {"score_mode": "best"}}, "rejection config: score_mode='best' is invalid"),
    ({"space": {"ops": ["log", "exp"]}}, "space config: ops="),
    ({"seed": -1}, "seed=-1 is invalid"),
    ({"name": "  "}, "search name '  ' is invalid"),
    ({"name": "123"}, "search name '123' is invalid: expected a name that is not a number"),
])
def test_bad_input_is_one_clear_error_and_writes_nothing(sessions, unique_name, kwargs,
                                                         message) -> None:
    before = _count(sessions)
    args = {"name": unique_name, "task": "seg", "metric": "miou", **kwargs}
    with pytest.raises(InvalidInput) as info, session_scope(sessions) as s:
        create_search(s, args.pop("name"), args.pop("task"), args.pop("metric"), **args)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert _count(sessions) == before


def test_a_taken_name_is_refused_without_aborting_the_transaction(sessions,
                                                                  unique_name) -> None:
    with session_scope(sessions) as s:
        create_search(s, unique_name, "seg", "miou")
    with session_scope(sessions) as s:
        with pytest.raises(AlreadyExists, match=f"search name '{unique_name}' is already taken"):
            create_search(s, unique_name, "seg", "miou")
        create_search(s, unique_name + "-2", "seg", "miou")  # the transaction still works
    with session_scope(sessions) as s:
        assert get_search(s, unique_name + "-2").name == unique_name + "-2"


def test_a_search_that_does_not_exist(sessions) -> None:
    with session_scope(sessions) as s:
        with pytest.raises(NotFound, match="^search 987654321 does not exist$"):
            get_search(s, 987654321)
        with pytest.raises(NotFound, match="^search 'no-such-search' does not exist$"):
            get_search(s, "no-such-search")


def test_status_changes(sessions, unique_name) -> None:
    with session_scope(sessions) as s:
        sid = create_search(s, unique_name, "seg", "miou").id
        running = start_search(s, sid)
        assert running.status is SearchStatus.RUNNING and running.started_at is not None
        assert start_search(s, sid).started_at == running.started_at  # idempotent
        assert stop_search(s, sid).status is SearchStatus.STOPPED
        assert sid in [x.id for x in list_searches(s, SearchStatus.STOPPED)]
        again = start_search(s, sid)
        assert again.started_at == running.started_at
    with session_scope(sessions) as s:
        s.execute(Search.__table__.update().where(Search.id == sid).values(status="finished"))
        with pytest.raises(InvalidInput, match=f"search {sid} is finished: it cannot become "
                                               f"running"):
            start_search(s, sid)
