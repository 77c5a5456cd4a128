"""Engines, timeouts, error translation and the bounded retry helper."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from alz_db import (
    DatabaseUnavailable,
    InvalidInput,
    RetryPolicy,
    StatementTimeout,
    TransientStoreError,
    check_database,
    make_engine,
    make_session_factory,
    normalize_url,
    resolve_database_url,
    run_in_transaction,
    session_scope,
)


def test_a_url_that_does_not_answer_is_one_clear_line() -> None:
    t0 = time.monotonic()
    with pytest.raises(DatabaseUnavailable) as info:
        check_database("postgresql://postgres:secret@127.0.0.1:1/alz", timeout_s=3)
    assert time.monotonic() - t0 < 6
    message = str(info.value)
    assert "127.0.0.1:1/alz" in message and "did not answer within 3 s" in message
    assert "secret" not in message and "\n" not in message


def test_urls_are_normalised_to_psycopg3(monkeypatch: pytest.MonkeyPatch) -> None:
    assert normalize_url("postgresql://u@h/d").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/d").drivername == "postgresql+psycopg"
    with pytest.raises(InvalidInput, match="expected a postgresql:// URL"):
        normalize_url("mysql://u@h/d")
    monkeypatch.setenv("ALZ_DATABASE_URL", "postgresql://u@somewhere:5433/alz")
    assert resolve_database_url() == "postgresql+psycopg://u@somewhere:5433/alz"


def test_timeouts_are_set_in_every_transaction(db_url: str) -> None:
    engine = make_engine(db_url, statement_timeout_ms=200, pool_size=1, max_overflow=0)
    sessions = make_session_factory(engine)
    try:
        for _ in range(2):  # the same pooled connection, a new transaction each time
            with session_scope(sessions) as s:
                assert s.execute(text("SHOW statement_timeout")).scalar_one() == "200ms"
                assert s.execute(text("SHOW lock_timeout")).scalar_one() == "10s"
        with pytest.raises(StatementTimeout), session_scope(sessions) as s:
            s.execute(text("SELECT pg_sleep(2)"))
    finally:
        engine.dispose()


def test_retry_survives_a_dropped_connection(sessions) -> None:
    calls: list[int] = []

    def unit(s) -> int:
        calls.append(1)
        if len(calls) == 1:  # the server ends this connection in the middle of the transaction
            s.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return s.execute(text("SELECT 42")).scalar_one()

    assert run_in_transaction(sessions, unit, sleep=lambda _: None) == 42
    assert len(calls) == 2


def test_a_lock_timeout_on_a_hot_row_is_retried(db_url: str) -> None:
    """55P03 (lock_timeout) while another transaction holds the row: the unit runs again once
    the holder is done, like any other transient error."""
    holder = make_engine(db_url, pool_size=1, max_overflow=0)
    engine = make_engine(db_url, lock_timeout_ms=100, pool_size=1, max_overflow=0)
    sessions = make_session_factory(engine)
    try:
        with holder.connect() as conn:
            conn.execute(text("CREATE TABLE IF NOT EXISTS lock_probe (id int PRIMARY KEY, n int)"))
            conn.execute(text("INSERT INTO lock_probe VALUES (1, 0) ON CONFLICT DO NOTHING"))
            conn.commit()
            conn.execute(text("SELECT * FROM lock_probe WHERE id = 1 FOR UPDATE"))
            calls: list[int] = []

            def bump(s) -> int:
                calls.append(1)
                return s.execute(text("UPDATE lock_probe SET n = n + 1 WHERE id = 1 "
                                      "RETURNING n")).scalar_one()

            def pause(_: float) -> None:
                conn.rollback()  # the holder lets go after the first timeout

            n = run_in_transaction(sessions, bump, sleep=pause)
        assert len(calls) == 2 and n >= 1
    finally:
        with holder.connect() as conn:
            conn.execute(text("DROP TABLE IF EXISTS lock_probe"))
            conn.commit()
        engine.dispose()
        holder.dispose()


def test_retry_is_bounded_and_jittered(sessions) -> None:
    policy = RetryPolicy(attempts=4, base_delay_s=0.1, max_delay_s=0.25)
    pauses: list[float] = []
    calls: list[int] = []

    def always_transient(s) -> None:
        calls.append(1)
        raise TransientStoreError("deadlock detected (simulated)")

    with pytest.raises(TransientStoreError):
        run_in_transaction(sessions, always_transient, policy=policy, sleep=pauses.append)
    assert len(calls) == 4 and len(pauses) == 3
    assert all(0 <= p <= cap for p, cap in zip(pauses, (0.1, 0.2, 0.25)))


def test_other_errors_are_not_retried(sessions) -> None:
    calls: list[int] = []

    def bad_input(s) -> None:
        calls.append(1)
        raise InvalidInput("nope")

    with pytest.raises(InvalidInput):
        run_in_transaction(sessions, bad_input, sleep=lambda _: None)
    assert calls == [1]
