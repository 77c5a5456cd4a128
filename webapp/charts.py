"""Charts (Altair) and the tables behind them, built from :mod:`alz_db.queries` records."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import altair as alt
import pandas as pd

from alz_db.queries import FitnessPoint
from alz_db.records import TrialRecord

#: the x axes of the fitness charts: column and title
X_AXES: dict[str, tuple[str, str]] = {
    "proxy evaluations": ("evaluation", "proxy evaluations"),
    "full-proxy equivalents": ("proxies", "compute used: full-proxy equivalents"),
    "compute": ("compute_min", "compute charged: proxy runs + rejection checks (minutes)"),
    "time": ("elapsed_min", "minutes since the search started"),
}


def history_frame(points: Sequence[FitnessPoint], search: str = "") -> pd.DataFrame:
    """One row per finished proxy evaluation: its fitness and the best so far."""
    return pd.DataFrame({
        "search": [search] * len(points),
        "evaluation": [p.evaluation for p in points],
        "elapsed_min": [round(p.elapsed_s / 60.0, 3) for p in points],
        "compute_min": [round(p.compute_s / 60.0, 3) for p in points],
        "proxies": [round(p.proxies, 4) for p in points],
        "rung": [p.rung for p in points],
        "candidate": [p.candidate_id for p in points],
        "fitness": [p.fitness for p in points],
        "best": [p.best_so_far for p in points],
    })


def fitness_chart(frame: pd.DataFrame, metric: str, x: str = "proxy evaluations",
                  noise: tuple[float, float, float] | None = None) -> alt.LayerChart:
    """Per-evaluation fitness (points; diverged runs are left out) and the best so far (a
    step line) against proxy evaluations or time; ``noise`` ``(mean, low, high)`` draws the
    noise floor: a grey band from low to high (mean ± one std over seeds) and its mean."""
    col, title = X_AXES[x]
    base = alt.Chart(frame).encode(x=alt.X(f"{col}:Q", title=title))
    points = base.mark_circle(size=70, opacity=0.7, color="#1f77b4").encode(
        y=alt.Y("fitness:Q", title=metric),
        tooltip=["evaluation", "candidate", "fitness", "best", "elapsed_min"])
    best = base.mark_line(interpolate="step-after", color="#d62728").encode(
        y=alt.Y("best:Q", title=metric))
    layers = [points.transform_filter("isValid(datum.fitness)"), best]
    if noise is not None:
        mean, low, high = noise
        band = pd.DataFrame({"low": [low], "high": [high], "mean": [mean]})
        layers.insert(0, alt.Chart(band).mark_rect(opacity=0.18, color="#7f7f7f").encode(
            y="low:Q", y2="high:Q", tooltip=["mean", "low", "high"]))
        layers.insert(1, alt.Chart(band).mark_rule(color="#7f7f7f", strokeDash=[4, 3])
                      .encode(y="mean:Q"))
    return alt.layer(*layers)


def compare_chart(frames: Mapping[str, pd.DataFrame], metric: str,
                  x: str = "proxy evaluations") -> alt.Chart:
    """The best fitness so far of several searches on one chart, one colour per search."""
    col, title = X_AXES[x]
    data = pd.concat(list(frames.values()), ignore_index=True) if frames else \
        history_frame([])
    return alt.Chart(data).mark_line(interpolate="step-after").encode(
        x=alt.X(f"{col}:Q", title=title), y=alt.Y("best:Q", title=f"best {metric}"),
        color=alt.Color("search:N", title="search"),
        tooltip=["search", "evaluation", "best", "candidate"])


def loss_curve_chart(curve: Sequence[tuple[int, float | None]]) -> alt.Chart:
    """The training loss of a proxy run against its iterations (non-finite steps are gaps)."""
    frame = pd.DataFrame({"step": [s for s, _ in curve], "loss": [v for _, v in curve]})
    return alt.Chart(frame).mark_line().encode(
        x=alt.X("step:Q", title="iteration"), y=alt.Y("loss:Q", title="training loss"),
        tooltip=["step", "loss"])


#: a trial's state and its colour on the chart
TRIAL_COLOURS = {"COMPLETE": "#2ca02c", "PRUNED": "#ff7f0e", "FAIL": "#d62728",
                 "RUNNING": "#7f7f7f", "WAITING": "#bcbd22"}


def trials_frame(trials: Sequence[TrialRecord]) -> pd.DataFrame:
    """One row per (trial, validation): the intermediate metric Optuna's pruner saw."""
    rows = [{"trial": t.number, "state": t.state, "iteration": step, "metric": value}
            for t in trials for step, value in t.intermediate]
    return pd.DataFrame(rows, columns=["trial", "state", "iteration", "metric"])


def trials_chart(trials: Sequence[TrialRecord], metric: str) -> alt.Chart:
    """The intermediate metric of every trial against training iterations, one line per
    trial, coloured by its state (pruned trials stop early)."""
    frame = trials_frame(trials)
    return alt.Chart(frame).mark_line(point=True).encode(
        x=alt.X("iteration:Q", title="training iteration"),
        y=alt.Y("metric:Q", title=metric),
        color=alt.Color("state:N", title="state", scale=alt.Scale(
            domain=list(TRIAL_COLOURS), range=list(TRIAL_COLOURS.values()))),
        detail="trial:N",
        tooltip=["trial", "state", "iteration", "metric"])
