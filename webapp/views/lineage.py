"""Lineage: the ancestry of a candidate back to the initial population and its descendants,
drawn as a tree with the fitness on every node; pick a node to open it."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from alz_db import get_candidate
from alz_db.queries import lineage_graph, search_overview
from webapp.common import (
    candidate_from_request,
    choose_search,
    fmt_fitness,
    open_candidate,
    read,
    set_param,
)
from webapp.graphs import lineage_dot


def main() -> None:
    st.title("Lineage")
    requested = candidate_from_request()
    if requested is None:
        chosen = choose_search()
        if chosen is None:
            return
        requested = chosen.info.best_candidate_id
        if requested is None:
            st.info("This search has no evaluated candidate yet: enter a candidate id.")
    entered = st.number_input("candidate id", min_value=1, value=requested, step=1,
                              placeholder="a candidate id",
                              help="default: the best candidate of the search")
    if entered is None:
        return
    cid = int(entered)
    set_param("candidate", cid)
    depth = st.slider("descendant generations", 1, 8, 3)
    graph = read(lineage_graph, cid, max_depth=depth, limit=200)
    search = read(search_overview, read(get_candidate, cid).search_id).info
    root = graph.ancestors[0]
    st.markdown(
        f"Lineage of candidate **{cid}** (search {search.id} {search.name!r}): "
        f"**{len(graph.ancestors) - 1}** ancestors back to initial candidate "
        f"**{root.candidate_id}**, **{len(graph.descendants)}** descendants shown"
        + (" (more exist: cut at the depth or 200 nodes)" if graph.truncated else ""))
    st.graphviz_chart(lineage_dot(graph.nodes, cid, metric=search.metric))
    rows = [{"role": "ancestor" if n.candidate_id != cid else "this candidate",
             "candidate": n.candidate_id, "parent": n.parent_id, "generation": n.generation,
             "mutation": n.mutation.value, "status": n.status.value,
             search.metric: fmt_fitness(n.fitness, n.fitness_kind), "formula": n.formula}
            for n in graph.ancestors]
    rows += [{"role": "descendant", "candidate": n.candidate_id, "parent": n.parent_id,
              "generation": n.generation, "mutation": n.mutation.value,
              "status": n.status.value, search.metric: fmt_fitness(n.fitness, n.fitness_kind),
              "formula": n.formula} for n in graph.descendants]
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    options = [n.candidate_id for n in graph.nodes]
    labels = {n.candidate_id: f"#{n.candidate_id} · gen {n.generation} · "
              f"{fmt_fitness(n.fitness, n.fitness_kind)} · {n.formula[:60]}"
              for n in graph.nodes}
    left, mid, right = st.columns([3, 1, 1])
    pick = left.selectbox("node", options, index=options.index(cid),
                          format_func=labels.__getitem__)
    if mid.button("Open candidate"):
        open_candidate(pick)
    if right.button("Lineage of this node"):
        open_candidate(pick, "lineage")


main()
