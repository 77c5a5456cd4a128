"""A self-contained HTML report of a search (``alz report SEARCH``).

One HTML file with every figure embedded as a base64 PNG (no network, no scripts), plus the
same PNG files beside it:

* **progress**: the proxy fitness of every evaluation in the order they finished and the best
  so far (``progress.png``);
* **top losses**: the leaderboard's best candidates as LaTeX (rendered with matplotlib's
  mathtext, the source shown beside it), canonical formula, simplified form, fitness, and any
  re-trainings and tuned settings;
* **lineage**: the ancestry of the best candidate, root first (``lineage.png``: fitness along
  the generations);
* **rejection statistics**: checks, verdicts and reasons, time per check (``rejection.png``);
* **search efficiency**: the newest ablation study of the search's task and metric stored in
  the database (``alz ablation``), or one given as a JSON file (``ablation.png``);
* **baselines**: the newest ``alz baselines`` comparison of the search.

The data comes from :func:`alz_db.queries.report_data.collect_report`; matplotlib is imported
lazily, with the Agg backend.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from ..queries.report_data import ReportData, collect_report

#: the section ids every report has, in order (the tests and the web app link to them)
SECTIONS = ("summary", "progress", "top-losses", "lineage", "rejection", "efficiency",
            "baselines")


# --- figures --------------------------------------------------------------------------------------
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any, path: Path | None, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    _plt().close(fig)
    data = buf.getvalue()
    if path is not None:
        path.write_bytes(data)
    return data


def progress_figure(data: ReportData, path: Path | None = None) -> bytes:
    """Fitness of each proxy evaluation (dots; diverged at the bottom as crosses) and the best
    so far (line), against proxy evaluations done."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    xs = list(range(1, len(data.progress) + 1))
    finite = [(x, f) for x, (_, f) in zip(xs, data.progress) if f is not None]
    diverged = [x for x, (_, f) in zip(xs, data.progress) if f is None]
    best, curve = None, []
    for _, f in data.progress:
        if f is not None and (best is None or f > best):
            best = f
        curve.append(best)
    if finite:
        ax.scatter([x for x, _ in finite], [f for _, f in finite], s=12, alpha=0.6,
                   label="proxy evaluation")
    if diverged:
        ax.scatter(diverged, [0.0] * len(diverged), marker="x", s=14, color="#d62728",
                   label="diverged")
    pts = [(x, c) for x, c in zip(xs, curve) if c is not None]
    if pts:
        ax.step([x for x, _ in pts], [c for _, c in pts], where="post", lw=2, color="#2ca02c",
                label="best so far")
    floor = data.noise
    if floor is not None and floor.band() is not None:
        low, high = floor.band()
        ax.axhspan(low, high, color="#7f7f7f", alpha=0.18,
                   label=f"noise floor: {floor.loss} ± 1 std ({len(floor.seeds)} seeds)")
        ax.axhline(floor.mean, color="#7f7f7f", lw=1, ls="--")
    ax.set_xlabel("proxy evaluations (in the order they finished)")
    ax.set_ylabel(f"proxy {data.search.metric}")
    ax.set_title(f"search {data.search.id} {data.search.name}: {data.search.task} / "
                 f"{data.search.metric}")
    ax.grid(alpha=0.3)
    if finite or diverged or floor is not None:
        ax.legend(fontsize=8, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no proxy evaluation finished yet", ha="center", va="center",
                transform=ax.transAxes)
    return _png(fig, path)


def rejection_figure(data: ReportData, path: Path | None = None) -> bytes:
    """Rejection-protocol outcomes by verdict and reason (horizontal bars)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 2.8))
    rows = data.rejection["by_reason"]
    labels = [r["reason"] or "accepted" for r in rows]
    counts = [r["count"] for r in rows]
    colours = ["#2ca02c" if r["verdict"] == "accept" else "#d62728" for r in rows]
    if rows:
        ax.barh(range(len(rows)), counts, color=colours)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(labels)
        ax.invert_yaxis()
        for i, c in enumerate(counts):
            ax.text(c, i, f" {c}", va="center", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no rejection check recorded", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel("loss-rejection checks")
    ax.grid(alpha=0.3, axis="x")
    return _png(fig, path)


def lineage_figure(data: ReportData, path: Path | None = None) -> bytes:
    """Fitness along the best candidate's ancestry, labelled by mutation."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.0))
    chain = data.lineage
    if chain:
        xs = list(range(len(chain)))
        ys = [c["fitness"] if c["fitness"] is not None else float("nan") for c in chain]
        ax.plot(xs, ys, marker="o", color="#1f77b4")
        for x, c in zip(xs, chain):
            ax.annotate(c["mutation"], (x, ys[x] if not math.isnan(ys[x]) else 0),
                        textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
        ax.set_xticks(xs)
        ax.set_xticklabels([str(c["candidate_id"]) for c in chain], rotation=45, fontsize=7)
        ax.set_xlabel("ancestors of the best candidate (candidate id, root first)")
    else:
        ax.text(0.5, 0.5, "no evaluated candidate yet", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_ylabel(f"proxy {data.search.metric}")
    ax.grid(alpha=0.3)
    return _png(fig, path)


def latex_png(latex: str, *, fontsize: int = 15) -> bytes | None:
    """``latex`` rendered by matplotlib's mathtext (``None`` where mathtext cannot parse it:
    the report then shows the source only)."""
    plt = _plt()
    fig = plt.figure(figsize=(0.01, 0.01))
    try:
        fig.text(0, 0, f"${latex}$", fontsize=fontsize)
        return _png(fig, None, dpi=130)
    except Exception:  # noqa: BLE001 - mathtext covers most, not all, of LaTeX
        plt.close(fig)
        return None


# --- HTML -----------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
code{background:#f6f6f6;padding:0 .2em;word-break:break-all}
img{max-width:100%}.muted{color:#777}.loss{margin:.4em 0}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _f(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return ""
    return (f'<img alt="{_e(alt)}" src="data:image/png;base64,'
            f'{base64.b64encode(png).decode()}">')


def _table(head: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(
            f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(r)) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _efficiency_section(ablation: Mapping[str, Any], out: Path) -> str:
    """The ablation study's figure (``out/ablation.png``) and table; every field comes from a
    file or a row anyone may have written, so each is escaped."""
    from alz_core.evolution.ablation import AblationResult
    from alz_core.evolution.ablation_report import plot_ablation

    chunks: list[str] = []
    result = AblationResult.from_json(ablation)
    plot_ablation(result, out / "ablation.png")
    chunks.append(_img((out / "ablation.png").read_bytes(), "ablation"))
    cfg = result.config
    exp = ablation.get("_experiment")
    where = f" (stored study {_e(exp['id'])} {_e(exp['name'])})" if exp else ""
    budget = (f"equal compute: {_e(cfg.compute_budget)} s charged to each (at most "
              f"{_e(cfg.budget)} proxy evaluations)" if cfg.compute_budget else
              f"budget {_e(cfg.budget)} proxy evaluations each (full-proxy equivalents "
              f"for the arm with rungs)")
    chunks.append(f"<p>{len(result.arms)} arms x {len(cfg.seeds)} seeds, {budget}; "
                  f"best fitness against proxy evaluations and against the compute "
                  f"charged (proxy runs, rejection checks, fingerprints), "
                  f"K={_e(cfg.initial_population)}, "
                  f"T={_e(cfg.tournament_fraction)}{where}; settings "
                  f"{_e(result.settings)}.</p>")

    def wins(w: Any) -> str:
        return "-" if w is None else _e(f"{w['wins']} / {w['ties']} / {w['losses']}")

    chunks.append(_table(
        ["arm", "best (mean ± std)", "min – max", "wins / ties / losses vs the arm before",
         "compute charged (mean s)", "full-proxy runs", "best at half budget",
         "diverged", "rejected", "reused", "losses explored / h"],
        [[_e(x["label"]), f"{_f(x['best_mean'])} ± {_f(x['best_std'])}",
          f"{_f(x['best_min'])} – {_f(x['best_max'])}", wins(x.get("wins_over_previous")),
          _f(x.get("charged_seconds_mean"), 0), _e(x.get("full_proxy_evaluations", "-")),
          _f(x["best_at_half_mean"]),
          "-" if x["diverged_fraction"] is None else f"{x['diverged_fraction']:.0%}",
          "-" if x["rejection_rate"] is None else f"{x['rejection_rate']:.0%}",
          _e(x["reused"]),
          "-" if x["explored_per_hour"] is None else f"{x['explored_per_hour']:.0f}"]
         for x in result.summary()], numeric={1, 2, 4, 5, 6, 7, 8, 9, 10}))
    return "\n".join(chunks)


def render_report(data: ReportData, out_dir: str | Path) -> Path:
    """Write ``report.html`` (self-contained) and the PNG figures into ``out_dir``; return the
    HTML path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = data.search
    parts: list[str] = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>AutoLoss-Zero report: {_e(s.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>AutoLoss-Zero search {s.id} <code>{_e(s.name)}</code></h1>",
    ]
    # summary
    evo = s.config.get("evolution", {})
    parts.append('<h2 id="summary">Summary</h2>')
    parts.append(_table(["", ""], [
        ["task / metric", f"{_e(s.task)} / {_e(s.metric)}"],
        ["status", _e(s.status.value) + (f": {_e(s.error)}" if s.error else "")],
        ["proxy evaluations", f"{s.evaluations_done} of {s.budget}"],
        ["candidates", str(s.candidates)],
        ["rejection checks", f"{s.rejection_checks} ({_f(s.rejection_rate, 3)} rejected)"],
        ["best proxy fitness", _f(s.best_fitness)],
        ["noise floor", "not measured (alz noise)" if data.noise is None
         else _e(data.noise.line())],
        ["evolution", _e(", ".join(f"{k}={v}" for k, v in evo.items()
                                   if not isinstance(v, dict)))],
        ["seed", str(s.seed)],
        ["created / started / finished", " / ".join(
            "-" if t is None else t.strftime("%Y-%m-%d %H:%M") for t in
            (s.created_at, s.started_at, s.finished_at))],
        ["report generated", data.generated_at.strftime("%Y-%m-%d %H:%M UTC")],
    ]))
    # progress
    parts.append('<h2 id="progress">Search progress</h2>')
    parts.append(_img(progress_figure(data, out / "progress.png"), "search progress"))
    finite = [f for _, f in data.progress if f is not None]
    parts.append(f"<p>{len(data.progress)} proxy evaluations finished, "
                 f"{len(data.progress) - len(finite)} diverged.</p>")
    # top losses
    parts.append('<h2 id="top-losses">Top losses</h2>')
    if not data.top:
        parts.append("<p class='muted'>No evaluated candidate yet.</p>")
    for row in data.top:
        parts.append(f"<h3>#{row['rank']} candidate {row['candidate_id']}: "
                     f"{_e(s.metric)} {_f(row['fitness'])}</h3>")
        for b in row["branches"]:
            prefix = f"<b>{_e(b['branch'])}</b>: " if len(row["branches"]) > 1 else ""
            png = latex_png(b["latex"]) if b["latex"] else None
            parts.append(f"<div class='loss'>{prefix}{_img(png, b['latex'] or b['formula'])}"
                         "</div>")
            parts.append(_table(["form", "text"], [
                ["LaTeX", f"<code>{_e(b['latex'] or '-')}</code>"],
                ["canonical", f"<code>{_e(b['formula'])}</code>"],
                ["simplified", f"<code>{_e(b['simplified'])}</code>"]]))
        parent = "initial population" if row["parent_id"] is None else \
            f"child of {row['parent_id']}"
        parts.append(f"<p>generation {row['generation']}, {_e(row['mutation'])}, {parent}."
                     "</p>")
        if row["tuned"]:
            t = row["tuned"]
            parts.append("<p>tuned re-training settings: " + _e(", ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                for k, v in t.items())) + "</p>")
        if row["retrains"]:
            parts.append(_table(["retrain evaluation", "status", s.metric, "config",
                                 "iterations", "seed"],
                                [[str(r["id"]), _e(r["status"]), _f(r["fitness"]),
                                  _e(Path(str(r["params"].get("config") or "-")).name),
                                  _e(r["params"].get("max_iters") or "config"),
                                  _e(r["params"].get("seed"))] for r in row["retrains"]],
                                numeric={2}))
    # lineage
    parts.append('<h2 id="lineage">Lineage of the best loss</h2>')
    parts.append(_img(lineage_figure(data, out / "lineage.png"), "lineage"))
    if data.lineage:
        parts.append(_table(["candidate", "generation", "mutation", "status", s.metric,
                             "formula"],
                            [[str(c["candidate_id"]), str(c["generation"]),
                              _e(c["mutation"]), _e(c["status"]), _f(c["fitness"]),
                              f"<code>{_e(c['formula'])}</code>"] for c in data.lineage],
                            numeric={4}))
    # rejection
    r = data.rejection
    parts.append('<h2 id="rejection">Loss-rejection statistics</h2>')
    rate = "-" if r["rate"] is None else f"{r['rate']:.1%}"
    parts.append(f"<p>{r['checks']} checks: {r['accepted']} accepted, {r['rejected']} "
                 f"rejected ({rate}); {r['candidates']} candidates stored.</p>")
    parts.append(_img(rejection_figure(data, out / "rejection.png"), "rejection statistics"))
    if r["by_reason"]:
        parts.append(_table(["verdict", "reason", "checks", "mean seconds"],
                            [[_e(d["verdict"]), _e(d["reason"] or "-"), str(d["count"]),
                              _f(d["mean_seconds"], 3)] for d in r["by_reason"]],
                            numeric={2, 3}))
    # efficiency
    parts.append('<h2 id="efficiency">Search efficiency (ablation)</h2>')
    if data.ablation is None:
        parts.append(f"<p class='muted'>No ablation study of {_e(s.task)} / {_e(s.metric)} "
                     f"yet: run <code>alz ablation --task {_e(s.task)} --metric "
                     f"{_e(s.metric)}</code>.</p>")
    else:
        parts.append(_efficiency_section(data.ablation, out))
    # baselines
    parts.append('<h2 id="baselines">Baselines</h2>')
    b = data.baselines
    if b is None:
        parts.append(f"<p class='muted'>No baseline comparison yet: run <code>alz baselines "
                     f"{_e(s.name)}</code>.</p>")
    else:
        parts.append(f"<p>Same config ({_e(Path(str(b.get('config') or '-')).name)}), "
                     f"schedule ({_e(b.get('max_iters') or 'the config’s')} iterations) and "
                     f"seeds {_e(b.get('seeds'))} for every loss.</p>")
        parts.append(_table(["loss", "formula", f"{s.metric} mean ± std", "min – max",
                             "runs", "diverged"],
                            [[_e(x["name"]), f"<code>{_e(x['formula'])}</code>",
                              f"{_f(x['mean'])} ± {_f(x['std'])}",
                              f"{_f(x['min'])} – {_f(x['max'])}", str(len(x["runs"])),
                              str(x["diverged"])] for x in b["rows"]], numeric={2, 3, 4, 5}))
        for note in b.get("notes", []):
            parts.append(f"<p class='muted'>{_e(note)}</p>")
    parts.append("</body></html>")
    path = out / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def write_report(session: Session, search_ref: int | str, out_dir: str | Path, *,
                 top: int = 5, ablation: Mapping[str, Any] | None = None) -> Path:
    """:func:`collect_report` then :func:`render_report`; the HTML path."""
    return render_report(collect_report(session, search_ref, top=top, ablation=ablation),
                         out_dir)


__all__ = ["SECTIONS", "latex_png", "lineage_figure", "progress_figure", "rejection_figure",
           "render_report", "write_report"]
