"""Candidate: one loss in full — formula (LaTeX and canonical text), its graph, the rejection
runs, the gradient fingerprint and its class, proxy metrics and loss curve, the parent and
what the mutation changed, its Optuna tuning studies and trials, and an mm config snippet to use
it."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from alz_core.graph.display import simplified_text, to_latex
from alz_core.graph.loss_graph import LossGraph
from alz_db import FitnessKind
from alz_db.queries import (
    CandidateDetail,
    candidate_detail,
    mm_snippet,
    proxy_metrics,
    tuning_view,
)
from webapp.charts import loss_curve_chart, trials_chart
from webapp.common import (
    candidate_from_request,
    fmt,
    fmt_fitness,
    open_candidate,
    read,
    set_param,
)
from webapp.graphs import graph_changes, loss_graph_dot


@st.cache_data(show_spinner=False, max_entries=2048)
def _forms(text: str) -> tuple[str, str]:
    """(LaTeX, simplified text) of a canonical formula (sympy is slow: cached)."""
    graph = LossGraph.parse(text)
    return to_latex(graph), simplified_text(graph)


def _formula(d: CandidateDetail) -> None:
    for name, graph in d.candidate.candidate.branches:
        if len(d.candidate.candidate.branches) > 1:
            st.subheader(f"branch {name}")
        latex, simple = _forms(graph.text)
        left, right = st.columns([3, 2])
        with left:
            st.latex(latex)
            st.caption("canonical text")
            st.code(graph.text, language=None)
            st.caption(f"simplified: {simple} · {graph.size} operators, depth {graph.depth}")
        with right:
            st.graphviz_chart(loss_graph_dot(graph))


def _rejections(d: CandidateDetail) -> None:
    st.subheader("Loss rejection")
    if not d.rejections:
        st.caption("no rejection run is recorded for this candidate")
        return
    st.dataframe(pd.DataFrame([{
        "branch": r.branch, "verdict": r.verdict.value,
        "reason": None if r.reason is None else r.reason.value,
        f"{d.search.metric} before": r.metric_before, f"{d.search.metric} after": r.metric_after,
        "score": r.score, "iterations": r.iterations, "stop": r.stop.value,
        "seconds": round(r.seconds, 2)} for r in d.rejections]), hide_index=True)


def _fingerprint(d: CandidateDetail) -> None:
    st.subheader("Gradient fingerprint")
    c = d.candidate
    if c.fingerprint is None:
        st.caption("none (the gradient at the start was not finite)")
        return
    st.code(c.fingerprint, language=None)
    if c.equivalent_to is not None:
        st.markdown(f"Equivalent to candidate **{c.equivalent_to}**: same gradients, so its "
                    f"fitness is reused and it was not trained.")
    if not d.same_fingerprint:
        st.caption("no other candidate shares it")
        return
    st.markdown(f"**{d.same_fingerprint_count}** other candidate(s) share it:")
    st.dataframe(pd.DataFrame([{
        "candidate": e.candidate_id, "status": e.status.value,
        "fitness": fmt_fitness(e.fitness, e.fitness_kind), "mutation": e.mutation.value,
        "generation": e.generation, "formula": e.formula} for e in d.same_fingerprint]),
        hide_index=True)


def _evaluations(d: CandidateDetail) -> None:
    st.subheader("Proxy evaluation")
    metrics = proxy_metrics(d)
    if metrics:
        cols = st.columns(min(6, len(metrics)))
        for i, (k, v) in enumerate(sorted(metrics.items())):
            cols[i % len(cols)].metric(k, fmt(v) if isinstance(v, (int, float)) else str(v))
    elif d.candidate.equivalent_to is not None:
        st.caption(f"not trained: see candidate {d.candidate.equivalent_to}")
    rungs = sorted({e.rung for e in d.evaluations if e.kind.value == "proxy"})
    if len(rungs) > 1 or any(r > 0 for r in rungs) or d.candidate.rung > 0:
        st.caption(f"multi-fidelity search: this candidate reached rung {d.candidate.rung}; "
                   f"its fitness is the metric there (each rung below is a shorter training)")
    if d.evaluations:
        st.dataframe(pd.DataFrame([{
            "evaluation": e.id, "kind": e.kind.value, "rung": e.rung,
            "iterations": (e.metrics or {}).get("iterations"), "status": e.status.value,
            "attempts": e.attempts, "worker": e.worker_id,
            "fitness": fmt_fitness(e.fitness, e.fitness_kind), "seconds": e.seconds,
            "error": e.error} for e in d.evaluations]), hide_index=True)
    if d.loss_curve:
        st.caption("training loss of the proxy run")
        st.altair_chart(loss_curve_chart(d.loss_curve), width="stretch")


def _parent(d: CandidateDetail) -> None:
    st.subheader("Parent")
    c, p = d.candidate, d.parent
    if p is None:
        st.markdown("Member of the **initial population** (no parent).")
        return
    st.markdown(f"Candidate **{p.id}** ({fmt_fitness(p.fitness, p.fitness_kind)}), "
                f"mutation **{c.mutation.value}**, generation {p.generation} → "
                f"{c.generation}")
    parents = p.candidate.graphs
    for name, graph in c.candidate.branches:
        before = parents.get(name)
        prefix = f"[{name}] " if len(c.candidate.branches) > 1 else ""
        if before is None:
            st.markdown(f"{prefix}new branch `{graph.text}`")
            continue
        changes = graph_changes(before, graph)
        st.markdown(f"{prefix}parent `{before.text}`  \n{prefix}child `{graph.text}`")
        for change in changes:
            st.markdown(f"- {prefix}{change.describe()}")
        if not changes:
            st.markdown(f"- {prefix}unchanged")
    if st.button(f"Open parent {p.id}"):
        open_candidate(p.id)


def _tuning(d: CandidateDetail) -> None:
    st.subheader("Re-training tuning (Optuna)")
    view = read(tuning_view, d.candidate.id)
    if not view.studies:
        st.caption(f"not tuned: `alz tune {d.candidate.id}` runs an Optuna study of its "
                   f"re-training settings")
        return
    for study in view.studies:
        trials = view.trials_of(study.study_name)
        counts = {state: sum(t.state == state for t in trials)
                  for state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
        st.markdown(f"Study **{study.study_name}** ({study.metric}, pruner "
                    f"{study.config.pruner}): {len(trials)} of {study.config.trials} trials · "
                    + " · ".join(f"{n} {state.lower()}" for state, n in counts.items() if n))
        if study.best_trial is not None:
            best = ", ".join(f"{k} {fmt(v) if isinstance(v, float) else v}"
                             for k, v in sorted((study.best_params or {}).items()))
            st.markdown(f"Best: trial **{study.best_trial}**, {study.metric} "
                        f"{fmt(study.best_value)} ({best}); `alz retrain` uses it.")
        if not trials:
            continue
        names = sorted({k for t in trials for k in t.params})
        st.dataframe(pd.DataFrame([{
            "trial": t.number, "state": t.state, study.metric: t.value,
            **{k: t.params.get(k) for k in names},
            "validations": len(t.intermediate),
            "seconds": None if t.seconds is None else round(t.seconds, 1)} for t in trials]),
            hide_index=True)
        if any(t.intermediate for t in trials):
            st.caption(f"{study.metric} at each validation (what the pruner saw)")
            st.altair_chart(trials_chart(trials, study.metric), width="stretch")


def _snippet(d: CandidateDetail) -> None:
    st.subheader("Use it in OpenMMLab")
    c, s = d.candidate, d.search
    if s.task == "seg" and len(c.candidate.branches) == 1:
        fitness = "diverged" if c.fitness_kind is FitnessKind.DIVERGED else \
            f"{s.metric} {fmt(c.fitness)}"
        comment = (f"AutoLoss-Zero candidate {c.id} of search {s.name!r} ({s.task}, proxy "
                   f"{fitness})")
        st.code(mm_snippet(c.candidate.branches[0][1].text, metric=s.metric, comment=comment),
                language="python")
        st.caption(f"the same as `alz export {c.id} --format mm`")
    else:
        st.caption("the mm snippet is made for the segmentation task; the branch formulas:")
        st.code("\n".join(f"{n}: {g.text}" for n, g in c.candidate.branches), language=None)


def main() -> None:
    st.title("Candidate")
    entered = st.number_input("candidate id", min_value=1, value=candidate_from_request(),
                              step=1, placeholder="a candidate id")
    if entered is None:
        st.info("Pick a candidate on the Population, Lineage or Formulas page, or enter its "
                "id.")
        return
    set_param("candidate", int(entered))
    d = read(candidate_detail, int(entered))
    c = d.candidate
    st.markdown(f"### #{c.id} · search {d.search.id} {d.search.name!r} "
                f"({d.search.task}/{d.search.metric})")
    cols = st.columns(5)
    cols[0].metric(d.search.metric, fmt_fitness(c.fitness, c.fitness_kind))
    cols[1].metric("status", c.status.value)
    cols[2].metric("mutation", c.mutation.value)
    cols[3].metric("generation", c.generation)
    cols[4].metric("children", d.children)
    if c.branch_mutations and len(c.branch_mutations) > 1:
        st.caption("mutation per branch: " + ", ".join(
            f"{b} {k.value}" for b, k in c.branch_mutations.items()))
    if st.button("Show its lineage"):
        open_candidate(c.id, "lineage")
    _formula(d)
    _rejections(d)
    _fingerprint(d)
    _evaluations(d)
    _parent(d)
    _tuning(d)
    _snippet(d)


main()
