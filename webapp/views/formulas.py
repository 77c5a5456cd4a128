"""Formulas: the best losses a search discovered beside the built-in catalogue of its task
(the paper's Table 9 and the usual baselines), as one table like the paper's Table 9."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from alz_core.graph.catalogue import entries
from alz_core.graph.display import simplified_text, to_latex
from alz_core.graph.loss_graph import LossGraph
from alz_core.graph.validity import validity_problem
from alz_db import leaderboard
from webapp.common import choose_search, fmt_fitness, open_candidate, read


@st.cache_data(show_spinner=False, max_entries=2048)
def _forms(text: str) -> tuple[str, str]:
    graph = LossGraph.parse(text)
    return to_latex(graph), simplified_text(graph)


def _branch_forms(formula: str) -> list[tuple[str, str, str]]:
    """(branch, LaTeX, simplified) per branch of a stored formula (``name: text; ...``)."""
    parts = [p.split(": ", 1) if ": " in p else ["", p] for p in formula.split("; ")]
    return [(name, *_forms(text)) for name, text in parts]


def main() -> None:
    st.title("Formulas")
    chosen = choose_search()
    if chosen is None:
        return
    info = chosen.info
    top = st.slider("top N discovered losses", 1, 50, 10)
    board = read(leaderboard, info.id, limit=top)
    catalogue = entries(task=info.task)
    rows = []
    for e in board:
        for branch, latex, simple in _branch_forms(e.formula):
            rows.append({"source": f"search {info.name}", "name": f"#{e.rank} (candidate "
                         f"{e.candidate_id})", "metric": info.metric, "branch": branch or "-",
                         "formula": simple, "canonical": e.formula,
                         "proxy fitness": fmt_fitness(e.fitness, e.fitness_kind),
                         "latex": latex})
    for c in catalogue:
        latex, simple = _forms(c.formula)
        problem = validity_problem(c.graph, c.kind)
        rows.append({"source": c.source, "name": c.name, "metric": c.metric or "-",
                     "branch": c.branch, "formula": simple, "canonical": c.formula,
                     "proxy fitness": "-" if problem is None else f"invalid: {problem.value}",
                     "latex": latex})
    st.caption(f"{len(board)} discovered losses of search {info.id} and {len(catalogue)} "
               f"built-in losses for task {info.task}")
    st.dataframe(pd.DataFrame(rows).drop(columns=["latex"]), hide_index=True)
    left, right = st.columns(2)
    with left:
        st.subheader(f"Discovered ({info.metric})")
        if not board:
            st.info("No evaluated candidate yet.")
        for e in board:
            st.markdown(f"**#{e.rank}** · candidate {e.candidate_id} · {info.metric} "
                        f"{fmt_fitness(e.fitness, e.fitness_kind)}")
            for branch, latex, _ in _branch_forms(e.formula):
                st.latex((rf"\text{{{branch}}}:\ " if branch else "") + latex)
            if st.button(f"Open candidate {e.candidate_id}", key=f"open-{e.candidate_id}"):
                open_candidate(e.candidate_id)
    with right:
        st.subheader(f"Built-in catalogue ({info.task})")
        for c in catalogue:
            metric = f" · {c.metric}" if c.metric else ""
            st.markdown(f"**{c.name}** · {c.source}{metric} · branch {c.branch}")
            st.latex(_forms(c.formula)[0])
            if c.note:
                st.caption(c.note)


main()
