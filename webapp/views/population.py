"""Population: a search's candidates (and, on request, the graphs the rejection protocol
turned away) with filters, sorting, pages, chosen columns and CSV download. Everything is
done in SQL (:func:`alz_db.queries.population_page`), so it stays fast on a million rows."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import streamlit as st

from alz_core.evolution.mutation import MutationKind
from alz_core.rejection.result import RejectReason, Verdict
from alz_db import CandidateStatus, InvalidInput
from alz_db.queries import MAX_PAGE_SIZE, PopulationPage, PopulationQuery, SortKey, population_page
from webapp.common import choose_search, open_candidate, read

#: every column the table can show, and those shown at first
COLUMNS = ("candidate", "status", "verdict", "fitness", "fitness kind", "mutation",
           "generation", "parent", "equivalent to", "fingerprint", "branch", "reason",
           "rejection score", "formula", "created", "evaluated")
DEFAULT_COLUMNS = ("candidate", "status", "fitness", "mutation", "generation", "parent",
                   "formula")
#: at most this many rows go into the CSV of all matching rows
CSV_ROW_LIMIT = 100_000


def page_frame(page: PopulationPage) -> pd.DataFrame:
    """The rows of a page as a table, with every column of :data:`COLUMNS`."""
    return pd.DataFrame([{
        "candidate": r.candidate_id, "status": r.status, "verdict": r.verdict.value,
        "fitness": r.fitness,
        "fitness kind": None if r.fitness_kind is None else r.fitness_kind.value,
        "mutation": None if r.mutation is None else r.mutation.value,
        "generation": r.generation, "parent": r.parent_id, "equivalent to": r.equivalent_to,
        "fingerprint": r.fingerprint, "branch": r.branch,
        "reason": None if r.reason is None else r.reason.value, "rejection score": r.score,
        "formula": r.formula, "created": r.created_at, "evaluated": r.evaluated_at,
    } for r in page.rows], columns=list(COLUMNS))


def _number(text: str, name: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        st.error(f"{name} {text!r} is not a number: leave it empty or write e.g. 0.25")
        st.stop()
        raise


def _query(search_id: int) -> PopulationQuery:
    with st.sidebar:
        st.header("Filters")
        best_only = st.toggle("best only", help="each fingerprint class once: evaluated "
                              "representatives with a finite fitness, best first")
        verdicts = st.multiselect("verdict", [v.value for v in Verdict], default=["accept"],
                                  help="accept: candidates; reject: graphs that failed the "
                                  "loss-rejection protocol")
        statuses = st.multiselect("status", [s.value for s in CandidateStatus])
        mutations = st.multiselect("mutation kind", [m.value for m in MutationKind])
        reasons = st.multiselect("rejection reason", [r.value for r in RejectReason])
        lo_col, hi_col = st.columns(2)
        lo = _number(lo_col.text_input("fitness ≥", key="fit-min"), "fitness ≥")
        hi = _number(hi_col.text_input("fitness ≤", key="fit-max"), "fitness ≤")
        contains = st.text_input("formula contains", help="plain text, case-insensitive")
        st.header("Order")
        sort = st.selectbox("sort by", [k.value for k in SortKey],
                            index=1 if best_only else 0)
        descending = st.toggle("descending", value=True)
        size = st.selectbox("rows per page", [25, 50, 100, 250, MAX_PAGE_SIZE], index=1)
    try:
        return PopulationQuery(
            search_id, verdicts=frozenset(Verdict(v) for v in verdicts) or
            frozenset({Verdict.ACCEPT}), statuses=frozenset(CandidateStatus(s) for s in statuses),
            mutations=frozenset(MutationKind(m) for m in mutations),
            reasons=frozenset(RejectReason(r) for r in reasons), fitness_min=lo, fitness_max=hi,
            formula_contains=contains.strip(), best_only=best_only, sort=SortKey(sort),
            descending=descending, limit=int(size))
    except InvalidInput as exc:
        st.error(str(exc))
        st.stop()
        raise


def _csv_of_all(query: PopulationQuery, total: int) -> bytes:
    frames = []
    q = replace(query, limit=MAX_PAGE_SIZE, offset=0)
    for number in range(-(-min(total, CSV_ROW_LIMIT) // MAX_PAGE_SIZE)):
        frames.append(page_frame(read(population_page, q.page(number))))
    return pd.concat(frames, ignore_index=True).head(CSV_ROW_LIMIT).to_csv(index=False) \
        .encode()


st.title("Population")
chosen = choose_search()
if chosen is not None:
    query = _query(chosen.info.id)
    first = read(population_page, query)
    pages = first.pages
    nav = st.columns([1, 3])
    # a new key for every other query: its page numbers start again at 1
    number = nav[0].number_input(f"page (of {pages:,})", min_value=1, max_value=pages,
                                 value=1, step=1, key=f"page-{hash(query)}")
    page = first if number == 1 else read(population_page, query.page(int(number) - 1))
    nav[1].markdown(f"**{page.total:,}** rows match · showing "
                    f"{query.limit * (int(number) - 1) + min(1, len(page.rows)):,}–"
                    f"{query.limit * (int(number) - 1) + len(page.rows):,}")
    shown = st.multiselect("columns", COLUMNS, default=list(DEFAULT_COLUMNS))
    frame = page_frame(page)
    event = st.dataframe(
        frame[shown or list(DEFAULT_COLUMNS)], hide_index=True,
        on_select="rerun", selection_mode="single-row", key="population-table",
        column_config={"fitness": st.column_config.NumberColumn(format="%.4f"),
                       "rejection score": st.column_config.NumberColumn(format="%.4f"),
                       "candidate": st.column_config.NumberColumn(format="%d"),
                       "parent": st.column_config.NumberColumn(format="%d")})
    selected = [frame.iloc[i]["candidate"] for i in event.selection.rows] \
        if event is not None and hasattr(event, "selection") else []
    picked = next((int(c) for c in selected if pd.notna(c)), None)
    actions = st.columns(4)
    if picked is not None and actions[0].button(f"Open candidate {picked}"):
        open_candidate(picked)
    if picked is not None and actions[1].button(f"Lineage of {picked}"):
        open_candidate(picked, "lineage")
    actions[2].download_button("CSV of this page", frame.to_csv(index=False).encode(),
                               file_name=f"population-{chosen.info.id}-p{number}.csv",
                               mime="text/csv")
    if actions[3].button(f"Prepare CSV of all {min(page.total, CSV_ROW_LIMIT):,} rows",
                         disabled=page.total == 0):
        st.download_button("Download the CSV", _csv_of_all(query, page.total),
                           file_name=f"population-{chosen.info.id}.csv", mime="text/csv",
                           key="csv-all")
