"""The search-efficiency study's figure and table (:mod:`alz_core.evolution.ablation`).

matplotlib is imported only by :func:`plot_ablation`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .ablation import AblationResult, get_arm

# --- the figure ----------------------------------------------------------------------------------
_COLOURS = {"random": "#7f7f7f", "evolution": "#1f77b4", "evolution+rejection": "#ff7f0e",
            "evolution+rejection+equivalence": "#2ca02c",
            "evolution+rejection+equivalence+rungs": "#d62728"}


def plot_ablation(result: AblationResult, path: str | Path, *, dpi: int = 120) -> Path:
    """Write the study's figure (PNG): best fitness against proxy evaluations (mean over seeds,
    a band of one standard deviation, each seed as a thin line) and losses explored per hour
    (log scale). Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, (ax, cx, bx) = plt.subplots(1, 3, figsize=(16, 4.2),
                                     gridspec_kw={"width_ratios": [1.5, 1.5, 1]})
    summary = {r["arm"]: r for r in result.summary()}
    for arm in result.arms:
        colour = _COLOURS.get(arm)
        for t in result.traces_of(arm):
            c = t.best_curve
            xs = [i + 1 for i, v in enumerate(c) if v is not None]
            ax.plot(xs, [v for v in c if v is not None], color=colour, alpha=0.25, lw=0.8)
        cur = result.curve(arm)
        xs = [i + 1 for i, v in enumerate(cur["mean"]) if v is not None]
        mean = np.asarray([v for v in cur["mean"] if v is not None], dtype=float)
        std = np.asarray([s for s, v in zip(cur["std"], cur["mean"]) if v is not None],
                         dtype=float)
        ax.plot(xs, mean, color=colour, lw=2, label=get_arm(arm).label)
        if len(xs):
            ax.fill_between(xs, mean - std, mean + std, color=colour, alpha=0.15, lw=0)
    ax.set_xlabel("proxy evaluations")
    ax.set_ylabel(f"best {result.metric} so far")
    seeds = len(result.config.seeds)
    ax.set_title(f"{result.task} / {result.metric}: mean over {seeds} seed"
                 f"{'s' if seeds != 1 else ''} (band: ±1 std)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    for arm in result.arms:  # the same against the compute charged to each arm
        cur = result.compute_curve(arm)
        pts = [(x / 60.0, m, s or 0.0) for x, m, s in zip(cur["seconds"], cur["mean"],
                                                          cur["std"]) if m is not None]
        if not pts:
            continue
        xs_c, mean_c, std_c = (np.asarray(v, dtype=float) for v in zip(*pts))
        cx.plot(xs_c, mean_c, color=_COLOURS.get(arm), lw=2)
        cx.fill_between(xs_c, mean_c - std_c, mean_c + std_c, color=_COLOURS.get(arm),
                        alpha=0.15, lw=0)
    cx.set_xlabel("compute charged (minutes)")
    cx.set_ylabel(f"best {result.metric} so far")
    cx.set_title("at equal compute" if result.config.compute_budget else "against compute")
    cx.grid(alpha=0.3)
    names = [a for a in result.arms if summary[a]["explored_per_hour"]]
    vals = [summary[a]["explored_per_hour"] for a in names]
    bx.barh(range(len(names)), vals, color=[_COLOURS.get(a) for a in names])
    bx.set_yticks(range(len(names)))
    bx.set_yticklabels([get_arm(a).label.split(" ", 1)[0] for a in names])
    bx.invert_yaxis()
    if vals and max(vals) / max(min(vals), 1e-9) > 20:
        bx.set_xscale("log")
    bx.set_xlabel("losses explored per hour (charged compute)")
    bx.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=dpi)
    plt.close(fig)
    return p


def summary_markdown(result: AblationResult) -> str:
    """The summary as a Markdown table (for the README and the report)."""

    def f(v: float | None, digits: int = 4) -> str:
        return "-" if v is None else f"{v:.{digits}f}"

    at = (f"at {result.config.compute_budget:g} s charged" if result.config.compute_budget
          else "at the budget")
    lines = [f"| arm | seeds | best {result.metric} {at} (mean ± std) | min – max | wins / ties "
             f"/ losses vs the arm before | best at half budget | full-proxy runs | diverged | "
             f"rejected | reused | losses explored / h |",
             "| --- | ---: | ---: | ---: | :---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.0%}"

    for r in result.summary():
        per_hour = "-" if r["explored_per_hour"] is None else f"{r['explored_per_hour']:.0f}"
        w = r["wins_over_previous"]
        wins = "-" if w is None else f"{w['wins']} / {w['ties']} / {w['losses']}"
        lines.append(
            f"| {r['label']} | {r['seeds']} | {f(r['best_mean'])} ± {f(r['best_std'])} | "
            f"{f(r['best_min'])} – {f(r['best_max'])} | {wins} | "
            f"{f(r['best_at_half_mean'])} | {r['full_proxy_evaluations']} | "
            f"{pct(r['diverged_fraction'])} | {pct(r['rejection_rate'])} | {r['reused']} | "
            f"{per_hour} |")
    return "\n".join(lines)
