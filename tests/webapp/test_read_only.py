"""The app cannot write: its role has only SELECT, and its engine opens read-only
transactions even for a role that could write."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from alz_db import (
    PermissionDenied,
    create_search,
    drop_role,
    get_search,
    make_engine,
    make_session_factory,
    session_scope,
)
from alz_db.cli.ui import prepare_read_only_url
from tests.fixtures.world import World
from webapp.common import connect


def _writes_fail(sessions, world: World) -> None:
    with session_scope(sessions) as s:  # reading works
        assert get_search(s, world.search_id).name == world.search_name
    with pytest.raises(PermissionDenied), session_scope(sessions) as s:
        create_search(s, f"{world.search_name}-written", "seg", "miou")
    with pytest.raises(PermissionDenied), session_scope(sessions) as s:
        s.execute(text("DELETE FROM candidate WHERE search_id = :s"), {"s": world.search_id})
    with pytest.raises(PermissionDenied), session_scope(sessions) as s:
        s.execute(text("UPDATE search SET best_fitness = 1 WHERE id = :s"),
                  {"s": world.search_id})


def test_a_write_through_the_apps_connection_fails(world: World) -> None:
    sessions = connect(world.url)  # what webapp.common.sessions() builds for the app
    try:
        _writes_fail(sessions, world)
    finally:
        sessions.kw["bind"].dispose()


def test_the_apps_engine_is_read_only_even_as_the_owner(world: World) -> None:
    sessions = connect(world.owner_url)
    try:
        _writes_fail(sessions, world)
    finally:
        sessions.kw["bind"].dispose()
    # nothing was written
    engine = make_engine(world.owner_url)
    try:
        with session_scope(make_session_factory(engine)) as s:
            assert get_search(s, world.search_id).best_fitness == pytest.approx(0.71)
    finally:
        engine.dispose()


def test_alz_ui_prepares_a_read_only_role(world: World) -> None:
    role = f"alz_ui_test_{uuid.uuid4().hex[:8]}"
    url = prepare_read_only_url(world.owner_url, role)
    assert make_url(url).username == role
    try:
        assert prepare_read_only_url(world.owner_url, role) == url  # idempotent
        engine = make_engine(url)  # a plain engine: only the role's privileges stop writes
        try:
            _writes_fail(make_session_factory(engine), world)
        finally:
            engine.dispose()
    finally:
        engine = make_engine(world.owner_url)
        try:
            with session_scope(make_session_factory(engine)) as s:
                drop_role(s, role)
        finally:
            engine.dispose()


def test_the_read_only_role_reads_optuna_trials_present_and_future(world: World) -> None:
    """SELECT on schema ``optuna``: the trials of today's studies, and tables the owner
    creates there later (Optuna creates its tables on the first study)."""
    from alz_db.queries import tuning_view

    sessions = connect(world.url)
    try:
        with session_scope(sessions) as s:
            view = tuning_view(s, world.ids["D"])
        assert [t.state for t in view.trials] == ["COMPLETE", "PRUNED", "COMPLETE", "FAIL"]
        assert view.studies[0].best_trial == 0
        table = f"later_{uuid.uuid4().hex[:8]}"
        engine = make_engine(world.owner_url)
        try:
            with session_scope(make_session_factory(engine)) as s:
                s.execute(text(f"CREATE TABLE optuna.{table} (x int)"))
                s.execute(text(f"INSERT INTO optuna.{table} VALUES (7)"))
            with session_scope(sessions) as s:
                assert s.execute(text(f"SELECT x FROM optuna.{table}")).scalar_one() == 7
            with pytest.raises(PermissionDenied), session_scope(sessions) as s:
                s.execute(text(f"DELETE FROM optuna.{table}"))
        finally:
            with session_scope(make_session_factory(engine)) as s:
                s.execute(text(f"DROP TABLE optuna.{table}"))
            engine.dispose()
    finally:
        sessions.kw["bind"].dispose()
