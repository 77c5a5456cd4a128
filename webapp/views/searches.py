"""Searches: every search with its progress, and the fitness history of one of them.
Refreshes itself while a search runs."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from alz_db import SearchStatus
from alz_db.queries import (
    SearchOverview,
    fitness_history,
    rung_counts,
    search_noise_floor,
    search_overviews,
    search_workers,
)
from webapp.charts import X_AXES, fitness_chart, history_frame
from webapp.common import choose_search, fmt, fmt_rate, open_candidate, read

#: seconds between refreshes while a search runs
REFRESH_SECONDS = 5


def searches_frame(overviews: list[SearchOverview]) -> pd.DataFrame:
    """The table of searches: one row each."""
    return pd.DataFrame([{
        "id": o.info.id, "name": o.info.name, "task": o.info.task, "metric": o.info.metric,
        "status": o.info.status.value,
        "budget used": f"{o.info.evaluations_done}/{o.info.budget}",
        "rejection rate": fmt_rate(o.info.rejection_rate),
        "best fitness": fmt(o.info.best_fitness),
        "workers alive": o.workers_alive,
        "candidates": o.info.candidates,
        "running": o.evaluations["running"], "queued": o.evaluations["queued"] +
        o.evaluations["stale"], "failed": o.evaluations["failed"],
        "created": o.info.created_at.strftime("%Y-%m-%d %H:%M"),
    } for o in overviews])


def _body() -> None:
    overviews = read(search_overviews)
    st.dataframe(searches_frame(overviews), hide_index=True)
    chosen = choose_search(overviews)
    if chosen is None:
        return
    info = chosen.info
    cols = st.columns(5)
    cols[0].metric("budget used", f"{info.evaluations_done} / {info.budget}",
                   help=f"{chosen.budget_used:.0%} of the proxy evaluations are done; "
                        f"{info.evaluations_reserved} reserved")
    cols[1].metric(f"best {info.metric}", fmt(info.best_fitness))
    cols[2].metric("rejection rate", fmt_rate(info.rejection_rate),
                   help=f"{info.rejections} of {info.rejection_checks} rejection checks")
    cols[3].metric("workers alive", chosen.workers_alive)
    cols[4].metric("candidates", info.candidates)
    if info.status is SearchStatus.FAILED and info.error:
        st.error(f"search failed: {info.error}")
    workers = read(search_workers, info.id)
    if workers:
        st.dataframe(pd.DataFrame([{
            "worker": w.id, "host": w.host, "pid": w.pid, "device": w.device,
            "device name": w.device_name or "-",
            "memory (GiB)": None if w.device_memory_mb is None
            else round(w.device_memory_mb / 1024, 1),
            "heartbeat": w.heartbeat_at.strftime("%H:%M:%S")} for w in workers]),
            hide_index=True)
    if chosen.best_formula is not None:
        st.markdown(f"**best loss** (candidate {info.best_candidate_id}): "
                    f"`{chosen.best_formula}`")
        if st.button("Open the best candidate", key="open-best"):
            open_candidate(int(info.best_candidate_id))
    if info.units_per_proxy > 1:
        counts = read(rung_counts, info.id)
        st.markdown(f"**rungs** ({info.rungs.text} of the proxy schedule, the best "
                    f"{info.rungs.promote} of each continues): {info.done_proxies:g} of "
                    f"{info.budget_proxies:g} full-proxy equivalents used")
        st.dataframe(pd.DataFrame([{
            "rung": c["rung"], "fraction": c["fraction"], "iterations": c["iterations"],
            "done": c["done"], "open": c["open"], "candidates stopped here": c["stopped"],
            "best": fmt(c["best"])} for c in counts]), hide_index=True)
    points = read(fitness_history, info.id)
    if not points:
        st.info("No proxy evaluation has finished yet.")
        return
    frame = history_frame(points, info.name)
    x = st.radio("x axis", list(X_AXES), horizontal=True, key="searches-x")
    floor = read(search_noise_floor, info.id)
    band = None if floor is None or floor.band() is None else (floor.mean, *floor.band())
    st.altair_chart(fitness_chart(frame, info.metric, x, band), width="stretch")
    diverged = sum(p.fitness is None for p in points)
    st.caption(f"{len(points)} proxy evaluations finished"
               + (f", {diverged} diverged (not drawn)" if diverged else "")
               + "; the red line is the best fitness so far"
               + (f"; the grey band is the noise floor, {floor.line()} (alz noise)"
                  if band is not None else "; no noise floor measured yet (alz noise)")
               + ".")


st.title("Searches")
_running = any(o.info.status is SearchStatus.RUNNING for o in read(search_overviews))
if _running and st.toggle("auto-refresh", value=True,
                          help=f"re-read the database every {REFRESH_SECONDS} s"):
    st.fragment(run_every=REFRESH_SECONDS)(_body)()
else:
    _body()
