"""What every page shares: the database connection, reading through ``alz_db``, the search
and candidate being looked at (kept in the URL so links can be shared), and formatting."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from alz_db import (
    DATABASE_URL_ENV,
    DatabaseUnavailable,
    FitnessKind,
    InvalidInput,
    NotFound,
    StatementTimeout,
    StoreError,
    TransientStoreError,
    make_session_factory,
    resolve_database_url,
    session_scope,
)
from alz_db.queries import SearchOverview, make_read_only_engine, search_overviews

#: the URL `alz ui` hands the app (the read-only role); else ALZ_DATABASE_URL, else embedded
UI_DATABASE_URL_ENV = "ALZ_UI_DATABASE_URL"

T = TypeVar("T")
_log = logging.getLogger("alz.webapp")


def database_url() -> str:
    """The database the app reads: ``ALZ_UI_DATABASE_URL``, ``ALZ_DATABASE_URL``, else the
    embedded server (started or joined)."""
    for name in (UI_DATABASE_URL_ENV, DATABASE_URL_ENV):
        url = os.environ.get(name, "").strip()
        if url:
            return url
    return resolve_database_url()


def connect(url: str) -> sessionmaker[Session]:
    """Sessions on ``url`` whose transactions are all read-only (uncached)."""
    return make_session_factory(make_read_only_engine(url))


@st.cache_resource(show_spinner=False)
def _sessions(url: str) -> sessionmaker[Session]:
    return connect(url)


def sessions() -> sessionmaker[Session]:
    """The app's session factory (one engine per database URL and app process)."""
    return _sessions(database_url())


def public_error(exc: StoreError) -> str:
    """What a visitor is told about a storage error: the message itself for what they asked
    (no such search or candidate, a bad value), else only what happened. Messages of the
    other errors name the database (host, socket, user) and the driver's words: they go to
    the server's log (:func:`read`), never to the page."""
    if isinstance(exc, (NotFound, InvalidInput)):
        return str(exc)
    if isinstance(exc, StatementTimeout):
        return "The database took too long to answer: narrow the filters, or reload the page."
    if isinstance(exc, (DatabaseUnavailable, TransientStoreError)):
        return "The database is not reachable right now: reload the page in a moment."
    return "The database refused this request (the server's log says why)."


def read(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(session, *args, **kwargs)`` in one read-only transaction. A storage error (no
    such search, database down, statement timeout) is shown on the page as
    :func:`public_error` words it (its details go to the server's log), and the page stops."""
    try:
        with session_scope(sessions()) as s:
            return fn(s, *args, **kwargs)
    except StoreError as exc:
        if not isinstance(exc, (NotFound, InvalidInput)):
            _log.warning("database error on a page: %s", exc)  # passwords hidden already
        st.error(public_error(exc))
        st.stop()
        raise  # st.stop() raises; this line is for type checkers


# --- what is being looked at (query parameters) ------------------------------------------------
def param_int(name: str) -> int | None:
    """A positive integer query parameter (``?candidate=12``), else ``None``."""
    raw = st.query_params.get(name)
    t = "" if raw is None else str(raw).strip()
    if not (t.isascii() and t.isdigit()) or not 1 <= int(t) <= 2 ** 63 - 1:
        return None
    return int(t)


def set_param(name: str, value: int | None) -> None:
    """Keep ``value`` in the URL (so reloading or sharing the page shows the same thing)."""
    if value is None:
        st.query_params.pop(name, None)
    elif st.query_params.get(name) != str(value):
        st.query_params[name] = str(value)


def search_label(o: SearchOverview) -> str:
    """How a search is named in select boxes."""
    i = o.info
    return f"{i.id} · {i.name} ({i.task}/{i.metric}, {i.status.value})"


def choose_search(overviews: list[SearchOverview] | None = None, *, key: str = "search",
                  where: Any = None) -> SearchOverview | None:
    """A search picked in a select box (default: ``?search=``, else the newest); ``None``
    with a message when there is none yet."""
    overviews = read(search_overviews) if overviews is None else overviews
    if not overviews:
        st.info("No search yet: create one with `alz search create NAME` and run it with "
                "`alz search run NAME`.")
        return None
    wanted = param_int("search")
    ids = [o.info.id for o in overviews]
    index = ids.index(wanted) if wanted in ids else len(ids) - 1
    by_id = {o.info.id: o for o in overviews}
    box = where or st
    chosen = box.selectbox("Search", ids, index=index,
                           format_func=lambda i: search_label(by_id[i]), key=key)
    set_param("search", chosen)
    return by_id[chosen]


def open_candidate(candidate_id: int, page: str = "candidate") -> None:
    """Go to the candidate (or lineage) page of ``candidate_id``."""
    st.switch_page(PAGES[page], query_params={"candidate": str(int(candidate_id))})


def candidate_from_request(default: int | None = None) -> int | None:
    """The candidate asked for in the URL (``?candidate=``), else ``default``."""
    return param_int("candidate") or default


# --- formatting ----------------------------------------------------------------------------------
def fmt(value: float | None, digits: int = 4) -> str:
    """A number with ``digits`` decimals, ``-`` for none."""
    return "-" if value is None else f"{value:.{digits}f}"


def fmt_fitness(value: float | None, kind: FitnessKind | None, digits: int = 4) -> str:
    """A fitness as shown everywhere: the number, ``diverged``, or ``-`` (not known yet)."""
    if kind is FitnessKind.DIVERGED:
        return "diverged"
    return fmt(value, digits)


def fmt_rate(value: float | None) -> str:
    """A fraction as a percentage, ``-`` for none."""
    return "-" if value is None else f"{value:.1%}"


def where_connected() -> str:
    """Which database the app reads, as visitors see it: its name and the role it reads as,
    never a connection string (host, port, socket path, password) nor an error's details."""
    try:
        url = make_url(database_url())
    except Exception:  # noqa: BLE001 - an unparsable URL or no database: nothing to tell
        return "its database"
    name = f"database {url.database}" if url.database else "its database"
    return f"{name} as role {url.username}" if url.username else name


#: page files, relative to webapp/app.py (the keys name them in code)
PAGES: dict[str, str] = {
    "searches": "views/searches.py",
    "population": "views/population.py",
    "candidate": "views/candidate.py",
    "lineage": "views/lineage.py",
    "formulas": "views/formulas.py",
    "compare": "views/compare.py",
}
