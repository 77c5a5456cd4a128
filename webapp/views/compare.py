"""Compare: two or more searches on one chart (best fitness so far) and one table."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from alz_db.queries import fitness_history, search_overviews
from webapp.charts import X_AXES, compare_chart, history_frame
from webapp.common import fmt, fmt_rate, param_int, read, search_label


def main() -> None:
    st.title("Compare searches")
    overviews = read(search_overviews)
    if len(overviews) < 2:
        st.info("Comparing needs at least two searches.")
        return
    by_id = {o.info.id: o for o in overviews}
    wanted = [int(x) for x in str(st.query_params.get("searches", "")).split(",")
              if x.strip().isascii() and x.strip().isdigit() and int(x) in by_id]
    default = wanted or ([param_int("search")] if param_int("search") in by_id else []) or \
        [o.info.id for o in overviews[-2:]]
    picked = st.multiselect("searches", list(by_id), default=default,
                            format_func=lambda i: search_label(by_id[i]))
    st.query_params["searches"] = ",".join(map(str, picked))
    if len(picked) < 2:
        st.info("Pick two or more searches.")
        return
    chosen = [by_id[i] for i in picked]
    metrics = sorted({o.info.metric for o in chosen})
    if len(metrics) > 1:
        st.warning(f"these searches optimise different metrics ({', '.join(metrics)}): their "
                   f"fitness values are not comparable")
    st.dataframe(pd.DataFrame([{
        "id": o.info.id, "name": o.info.name, "task": o.info.task, "metric": o.info.metric,
        "status": o.info.status.value, "seed": o.info.seed,
        "budget used": f"{o.info.evaluations_done}/{o.info.budget}",
        "candidates": o.info.candidates, "rejection rate": fmt_rate(o.info.rejection_rate),
        "best fitness": fmt(o.info.best_fitness), "best formula": o.best_formula,
    } for o in chosen]), hide_index=True)
    frames = {o.info.name: history_frame(read(fitness_history, o.info.id), o.info.name)
              for o in chosen}
    x = st.radio("x axis", list(X_AXES), horizontal=True, key="compare-x")
    st.altair_chart(compare_chart(frames, " / ".join(metrics), x), width="stretch")


main()
