"""The read-only role of the web app can read the views and cannot write."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from alz_db import (
    PermissionDenied,
    create_read_only_role,
    create_search,
    drop_role,
    leaderboard,
    make_engine,
    make_session_factory,
    session_scope,
)


def test_a_write_through_the_read_only_role_fails(sessions, db_url, unique_name) -> None:
    role = f"alz_ro_{uuid.uuid4().hex[:8]}"
    with session_scope(sessions) as s:
        sid = create_search(s, unique_name, "seg", "miou").id
        create_read_only_role(s, role)
    ro_engine = make_engine(make_url(db_url).set(username=role, password=None))
    ro = make_session_factory(ro_engine)
    try:
        with session_scope(ro) as s:
            assert leaderboard(s, sid) == []
            assert s.execute(text("SELECT name FROM v_search_progress WHERE search_id = :s"),
                             {"s": sid}).scalar_one() == unique_name
        with pytest.raises(PermissionDenied, match="permission denied|read-only"), \
                session_scope(ro) as s:
            create_search(s, unique_name + "-ro", "seg", "miou")
        with pytest.raises(PermissionDenied), session_scope(ro) as s:
            s.execute(text("DELETE FROM search WHERE id = :s"), {"s": sid})
    finally:
        ro_engine.dispose()
        with session_scope(sessions) as s:
            drop_role(s, role)
