"""The commands about one loss: ``alz check``, ``alz formula``, ``alz catalogue``, ``alz demo``
(no database) and ``alz show``, ``alz leaderboard``, ``alz export`` (a stored candidate)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from alz_core.config import ConfigError, RejectionConfig
from alz_core.errors import one_line
from alz_core.graph.parser import FormulaError

from ..enums import FitnessKind
from ..queries.candidate import mm_snippet
from . import args as A
from .common import (
    CLIError,
    add_row,
    candidate_ref,
    db_options,
    err_console,
    fmt,
    literal,
    new_table,
    out_console,
    plain,
    say,
    unit_of_work,
)


def _parse_formula(text: str):
    from alz_core.graph.loss_graph import LossGraph

    try:
        return LossGraph.parse(text)
    except FormulaError as exc:
        shown = text if len(text) <= 200 else f"{text[:160]}... ({len(text):,} characters)"
        raise CLIError(f"{exc} in {shown!r}") from None


# --- alz check ---------------------------------------------------------------------------------
#: ``alz check``'s ranges: the side of the samples in pixels (``--size 100000`` would need
#: terabytes), B, and the SGD iterations
CHECK_SIZES = (8, 512)
CHECK_SAMPLES = (1, 16)
CHECK_ITERATIONS = (1, 100_000)


def cmd_check(args: argparse.Namespace) -> int:
    from alz_core.graph.display import simplified_text
    from alz_core.tasks.registry import TaskError, check_metric, get_task, rejection_problems

    try:
        task = get_task(args.task)
        metric = check_metric(task, args.metric or task.metrics[0])
        branch = args.branch or next(iter(task.branches))
        if branch not in task.branches:
            raise TaskError(f"unknown branch {branch!r} for task {task.name!r}; expected one "
                            f"of {', '.join(task.branches)}")
        config = RejectionConfig(num_samples=args.samples, iterations=args.iterations,
                                 threshold=args.eta, score_mode=args.score_mode, seed=args.seed)
    except (TaskError, ConfigError) as exc:
        raise CLIError(str(exc)) from None
    graph = _parse_formula(args.formula)
    kind = task.branches[branch]
    unknown = sorted(set(graph.inputs) - set(kind.inputs))
    if unknown:
        raise CLIError(f"formula {graph.text!r} uses {', '.join(unknown)}: branch {branch!r} "
                       f"of task {task.name!r} ({kind.value}) has the inputs "
                       f"{', '.join(kind.inputs)}")
    if args.data_root is not None and not Path(args.data_root).is_dir():
        raise CLIError(f"--data-root {args.data_root}: not a directory")
    from alz_core.rejection.problem import check, check_plain

    with err_console.status("preparing samples", spinner="dots") as status:
        try:
            problem = rejection_problems(task.name, metric, config, args.data_root,
                                         size=args.size)[branch]
        except (OSError, ValueError) as exc:  # a missing, unreadable or corrupt file
            raise CLIError(one_line(exc)) from None
        status.update(f"running the loss-rejection protocol ({config.iterations} iterations)")
        result = (check_plain if args.plain else check)(graph, problem)
        status.update("gradient fingerprint")
        fingerprint = problem.fingerprint(graph)
    payload = {
        "formula": graph.text,
        "task": task.name,
        "branch": branch,
        "metric": metric,
        "threshold": config.threshold,
        "score_mode": config.score_mode.value,
        **result.to_json(),
        "fingerprint": fingerprint,
    }
    if args.json:
        print(json.dumps(payload))
        return 0
    score = "-" if result.score is None else f"{result.score:.4f}"
    after = "-" if result.metric_after is None else f"{result.metric_after:.4f}"
    colour = "green" if result.accepted else "red"
    _print(f"formula      {graph.text}")
    _print(f"simplified   {simplified_text(graph)}")
    where = task.name if len(task.branches) == 1 else f"{task.name} (branch {branch})"
    _print(f"task/metric  {where} / {metric}")
    reason = f" ({result.reason.value})" if result.reason else ""
    from rich.text import Text

    out_console.print(Text.assemble("verdict      ", (f"{result.verdict.value}{reason}", colour),
                                    f"  score {score} vs eta {config.threshold} "
                                    f"({config.score_mode.value})"))
    _print(f"metric       {result.metric_before:.4f} -> {after}")
    _print(f"fingerprint  {fingerprint or '- (gradient not finite)'}")
    _print(f"iterations   {result.iterations} ({result.stop.value}), {result.seconds:.2f} s")
    return 0


def _print(text: str) -> None:
    """Human output that may wrap on a terminal, printed literally (never as markup)."""
    out_console.print(text, markup=False, highlight=False)


# --- alz formula / catalogue -------------------------------------------------------------------
def cmd_formula(args: argparse.Namespace) -> int:
    from alz_core.graph.display import simplified_text, to_latex

    graph = _parse_formula(args.formula)
    info = {"canonical": graph.text, "simplified": simplified_text(graph),
            "latex": to_latex(graph), "size": graph.size, "depth": graph.depth,
            "inputs": sorted(graph.inputs), "structural_hash": graph.structural_hash,
            "graph": graph.to_json()}
    if args.json:
        print(json.dumps(info))
    else:
        for k in ("canonical", "simplified", "latex", "size", "depth", "inputs",
                  "structural_hash"):
            _print(f"{k:<16}{info[k]}")
    return 0


def cmd_catalogue(args: argparse.Namespace) -> int:
    from alz_core.graph.catalogue import entries
    from alz_core.graph.validity import validity_problem

    rows = []
    for e in entries(task=args.task):
        problem = validity_problem(e.graph, e.kind)
        rows.append({"name": e.name, "task": e.task, "metric": e.metric, "branch": e.branch,
                     "formula": e.graph.text, "source": e.source,
                     "valid": problem is None, "note": e.note})
    if args.json:
        print(json.dumps(rows))
        return 0
    table = new_table("name", "task", "metric", "branch", "formula", "source", "valid")
    for r in rows:
        add_row(table, r["name"], r["task"], r["metric"] or "-", r["branch"], r["formula"],
                r["source"], "yes" if r["valid"] else literal("no", "red"))
    out_console.print(table)
    return 0


# --- alz demo ----------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    """A whole search in this process on the tiny CPU segmentation task (no database)."""
    import tempfile

    import numpy as np
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from alz_core.config import EvolutionConfig
    from alz_core.evolution.regularized import run_evolution
    from alz_core.graph.display import simplified_text
    from alz_core.rejection.equivalence import combine_fingerprints
    from alz_core.rejection.problem import check
    from alz_core.tasks.registry import TaskSettings, build_task, check_metric, get_task

    try:
        task_info = get_task("seg")
        metric = check_metric(task_info, args.metric)
        evo = EvolutionConfig(initial_population=min(args.initial, args.budget),
                              population_size=max(args.population, args.initial),
                              budget=args.budget)
        rej = RejectionConfig(seed=args.seed)
    except (ConfigError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    # the task and rejection samples a search's workers build (tiny config, synthetic scenes)
    with err_console.status("preparing the synthetic VOC dataset"):
        task, problems = build_task("seg", metric, rej, TaskSettings(
            data_dir=Path(args.data_dir), max_iters=args.proxy_iters))
    problem = problems["seg"]
    stats = {"checked": 0, "rejected": 0, "best": None, "best_text": "-"}

    def reject(branch, graph):
        r = check(graph, problem)
        stats["checked"] += 1
        stats["rejected"] += not r.accepted
        return r

    def fingerprint(cand):
        return combine_fingerprints({n: problem.fingerprint(g) for n, g in cand.branches})

    work = Path(tempfile.mkdtemp(prefix="alz-demo-"))

    def evaluate(cand):
        return task.run(cand.graphs, metric, work / "proxy", seed=args.seed).fitness

    columns = (TextColumn("search", style="bold"), BarColumn(), MofNCompleteColumn(),
               TextColumn("evaluations"), TimeElapsedColumn(),
               TextColumn("{task.fields[info]}", markup=False))
    history = []
    with Progress(*columns, console=err_console) as progress:
        bar = progress.add_task("search", total=evo.budget, info="")

        def on_event(ev):
            f = ev.individual.fitness
            if f is not None and (stats["best"] is None or f > stats["best"]):
                stats["best"], stats["best_text"] = f, ev.individual.candidate.text
            rate = stats["rejected"] / max(stats["checked"], 1)
            best = "-" if stats["best"] is None else f"{stats['best']:.3f}"
            progress.update(bar, completed=ev.evaluations,
                            info=f"rejected {rate:.0%} of {stats['checked']} | best {metric} "
                            f"{best}")

        history = run_evolution(task_info.branches, np.random.default_rng(args.seed), reject,
                                fingerprint, evaluate, evo, on_event=on_event)
    ranked = sorted((i for i in history if i.fitness is not None and i.equivalent_to is None),
                    key=lambda i: -i.fitness)
    out_console.print(f"{len(history)} individuals, {evo.budget} proxy evaluations, "
                      f"{stats['checked']} rejection checks ({stats['rejected']} rejected)")
    for rank, ind in enumerate(ranked[:5], 1):
        g = ind.candidate.branches[0][1]
        from rich.text import Text

        out_console.print(Text.assemble(f"#{rank}  {metric} {ind.fitness:.4f}  {g.text}   ",
                                        (f"({simplified_text(g)})", "dim")))
    if ranked:
        out_console.print(f"best loss: {ranked[0].candidate.text}")
    return 0


# --- alz show / leaderboard / export -----------------------------------------------------------
def candidate_details(s, cid: int) -> dict:  # noqa: ANN001 - Session
    """``alz show``'s data: the web app's candidate page (:func:`alz_db.queries.
    candidate_detail`, one read model) as plain values; ``equivalents`` is the candidate's
    fingerprint class without itself (its representative first for an equivalent), as the
    candidate page lists it."""
    from alz_core.graph.display import simplified_text, to_latex

    from ..queries import candidate_detail

    d = candidate_detail(s, cid)
    cand, search = d.candidate, d.search
    branches = [{"branch": name, "formula": g.text, "simplified": simplified_text(g),
                 "latex": to_latex(g)} for name, g in cand.candidate.branches]
    rejections = [
        {"branch": r.branch, "formula": r.formula, "verdict": r.verdict.value,
         "reason": None if r.reason is None else r.reason.value,
         "metric_before": r.metric_before, "metric_after": r.metric_after, "score": r.score,
         "iterations": r.iterations, "stop": r.stop.value, "seconds": r.seconds}
        for r in d.rejections]
    evaluations = [
        {"id": e.id, "kind": e.kind.value, "status": e.status.value, "attempts": e.attempts,
         "worker_id": e.worker_id, "fitness": e.fitness,
         "fitness_kind": None if e.fitness_kind is None else e.fitness_kind.value,
         "metrics": e.metrics, "seconds": e.seconds, "error": e.error}
        for e in d.evaluations]
    return {
        "id": cand.id, "search_id": search.id, "search_name": search.name, "task": search.task,
        "metric": search.metric, "formula": cand.formula, "branches": branches,
        "status": cand.status.value, "fitness": cand.fitness,
        "fitness_kind": None if cand.fitness_kind is None else cand.fitness_kind.value,
        "generation": cand.generation, "mutation": cand.mutation.value,
        "branch_mutations": None if cand.branch_mutations is None else
        {b: k.value for b, k in cand.branch_mutations.items()},
        "parent_id": cand.parent_id,
        "parent_formula": None if d.parent is None else d.parent.formula,
        "fingerprint": cand.fingerprint, "structural_hash": cand.structural_hash,
        "equivalent_to": cand.equivalent_to,
        "equivalents": [e.candidate_id for e in d.same_fingerprint],
        "equivalents_count": d.same_fingerprint_count, "rejections": rejections,
        "evaluations": evaluations, "created_at": plain(cand.created_at),
        "evaluated_at": plain(cand.evaluated_at), "worker_id": cand.worker_id,
    }


def cmd_show(args: argparse.Namespace) -> int:
    cid = candidate_ref(args.candidate)
    with unit_of_work(args) as s:
        d = candidate_details(s, cid)
    if args.json:
        print(json.dumps(d))
        return 0
    p = say
    fitness = ("diverged" if d["fitness_kind"] == "diverged" else fmt(d["fitness"]))
    p(f"candidate     {d['id']} of search {d['search_id']} {d['search_name']!r} "
      f"({d['task']} / {d['metric']})")
    p(f"status        {d['status']}, {d['metric']} {fitness}")
    for b in d["branches"]:
        prefix = f"[{b['branch']}] " if len(d["branches"]) > 1 else ""
        p(f"formula       {prefix}{b['formula']}")
        p(f"simplified    {prefix}{b['simplified']}")
        p(f"latex         {prefix}{b['latex']}")
    parent = "- (initial population)" if d["parent_id"] is None else \
        f"{d['parent_id']}: {d['parent_formula']}"
    p(f"parent        {parent}")
    per_branch = d["branch_mutations"] or {}
    p(f"mutation      {d['mutation']}, generation {d['generation']}"
      + (" (" + ", ".join(f"{b} {k}" for b, k in per_branch.items()) + ")"
         if len(per_branch) > 1 else ""))
    p(f"fingerprint   {d['fingerprint'] or '-'}")
    if d["equivalent_to"] is not None:
        p(f"equivalent to {d['equivalent_to']} (same gradient fingerprint; its fitness is "
          f"reused)")
    if d["equivalents_count"]:
        more = "" if d["equivalents_count"] <= len(d["equivalents"]) else ", ..."
        p(f"equivalents   {d['equivalents_count']}: "
          f"{', '.join(map(str, d['equivalents']))}{more}")
    if d["rejections"]:
        t = new_table("branch", "verdict", "reason", "before", "after", "score", "iters", "stop",
                  "s", title="loss rejection")
        for r in d["rejections"]:
            add_row(t, r["branch"], r["verdict"], r["reason"] or "-", fmt(r["metric_before"]),
                     fmt(r["metric_after"]), fmt(r["score"]), str(r["iterations"]),
                     r["stop"], f"{r['seconds']:.2f}")
        out_console.print(t)
    if d["evaluations"]:
        t = new_table("id", "kind", "status", "attempts", "worker", "fitness", "seconds", "metrics",
                      title="evaluations")
        for e in d["evaluations"]:
            shown = {k: v for k, v in (e["metrics"] or {}).items() if k != "seeds"}
            metrics = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                for k, v in shown.items())
            seeds = (e["metrics"] or {}).get("seeds")
            if seeds:
                metrics += "; per seed " + ", ".join(
                    f"{x['seed']} " + ("diverged" if x["diverged"] else f"{x['fitness']:.4f}")
                    for x in seeds)
            status = e["status"] + (f" ({e['error']})" if e["error"] else "")
            add_row(t, str(e["id"]), e["kind"], status, str(e["attempts"]),
                     str(e["worker_id"] or "-"),
                     "diverged" if e["fitness_kind"] == "diverged" else fmt(e["fitness"]),
                     fmt(e["seconds"], 1), metrics or "-")
        out_console.print(t)
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from .. import get_search, leaderboard

    if args.limit < 1:
        raise CLIError(f"--limit={args.limit} is invalid: expected an integer >= 1")
    with unit_of_work(args) as s:
        info = get_search(s, args.search)
        rows = leaderboard(s, info.id, limit=args.limit)
    if args.json:
        print(json.dumps({"search_id": info.id, "search_name": info.name,
                          "metric": info.metric, "entries": plain(rows)}))
        return 0
    if not rows:
        say(f"search {info.id} {info.name!r} has no evaluated candidate yet")
        return 0
    table = new_table("rank", "candidate", info.metric, "generation", "mutation", "parent",
                      "formula", title=f"search {info.id} {info.name}")
    for e in rows:
        add_row(table, str(e.rank), str(e.candidate_id),
                     "diverged" if e.fitness is None else f"{e.fitness:.4f}",
                     str(e.generation), e.mutation.value, str(e.parent_id or "-"), e.formula)
    out_console.print(table)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from alz_core.graph.display import to_latex

    from .. import get_candidate, get_search

    cid = candidate_ref(args.candidate)
    with unit_of_work(args) as s:
        cand = get_candidate(s, cid)
        search = get_search(s, cand.search_id)
    branches = cand.candidate.branches
    if args.format == "text":
        for name, g in branches:
            print(g.text if len(branches) == 1 else f"{name}: {g.text}")
    elif args.format == "latex":
        for name, g in branches:
            print(to_latex(g) if len(branches) == 1 else f"{name}: {to_latex(g)}")
    else:
        if search.task != "seg" or len(branches) != 1:
            raise CLIError(f"--format mm is invalid for task {search.task!r}: the mm snippet is "
                           f"made for the segmentation task (one decode-head loss)")
        fitness = "diverged" if cand.fitness_kind is FitnessKind.DIVERGED else \
            f"{search.metric} {fmt(cand.fitness)}"
        comment = (f"AutoLoss-Zero candidate {cand.id} of search {search.name!r} "
                   f"({search.task}, proxy {fitness})")
        print(mm_snippet(branches[0][1].text, metric=search.metric, comment=comment), end="")
    return 0


# --- parsers -----------------------------------------------------------------------------------
def register_formula_commands(sub) -> None:  # noqa: ANN001 - argparse's subparsers action
    """Add ``alz check``, ``formula``, ``catalogue`` and ``demo``."""
    c = sub.add_parser("check", help="run the loss-rejection protocol and the gradient "
                       "fingerprint on one formula")
    c.add_argument("formula", help="loss formula text, e.g. '-y*log(yhat)'")
    c.add_argument("--task", default="seg", help="task (default: seg)")
    c.add_argument("--metric", default="miou", help="target metric (default: miou)")
    c.add_argument("--data-root", type=Path, default=None,
                   help="VOC-layout dataset to take the samples from (default: the built-in "
                   "synthetic scenes)")
    c.add_argument("--samples", type=A.Integer(*CHECK_SAMPLES), default=5,
                   help="B, number of samples (default 5)")
    c.add_argument("--branch", default=None,
                   help="branch of a multi-branch task (default: the task's first branch)")
    c.add_argument("--size", type=A.Integer(*CHECK_SIZES), default=None,
                   help="sample size in pixels (default: the task's, 64 for seg)")
    c.add_argument("--iterations", type=A.Integer(*CHECK_ITERATIONS), default=500,
                   help="SGD iterations (default 500)")
    c.add_argument("--eta", type=A.real, default=0.6, help="rejection threshold (default 0.6)")
    c.add_argument("--score-mode", default="absolute", help="absolute | gain")
    c.add_argument("--seed", type=A.seed, default=0, help="seed of the samples and start")
    c.add_argument("--plain", action="store_true",
                   help="use the plain reference loop instead of the engine")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(func=cmd_check)

    f = sub.add_parser("formula", help="parse a formula and show its canonical, simplified "
                       "and LaTeX forms")
    f.add_argument("formula")
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=cmd_formula)

    k = sub.add_parser("catalogue", help="list the built-in losses (paper Table 9 and baselines)")
    k.add_argument("--task", default=None)
    k.add_argument("--json", action="store_true")
    k.set_defaults(func=cmd_catalogue)

    d = sub.add_parser("demo", help="run a small search in this process on the built-in CPU "
                       "segmentation task (no database) and print the best losses")
    d.add_argument("--metric", default="miou")
    d.add_argument("--budget", type=A.count, default=12, help="proxy evaluations (default 12)")
    d.add_argument("--initial", type=A.count, default=6, help="initial population K (default 6)")
    d.add_argument("--population", type=A.count, default=2500, help="population size P")
    d.add_argument("--proxy-iters", type=A.count, default=None,
                   help="training iterations per proxy run (default: the tiny config's)")
    d.add_argument("--seed", type=A.seed, default=0)
    d.add_argument("--data-dir", default=".alz/data", help="where the synthetic data is written")
    d.set_defaults(func=cmd_demo)


def register_candidate_commands(sub) -> None:  # noqa: ANN001 - argparse's subparsers action
    """Add ``alz show``, ``leaderboard`` and ``export``."""
    sh = sub.add_parser("show", help="one candidate: formula, simplified, LaTeX, rejection "
                        "results, fingerprint and equivalents, evaluations, parent")
    sh.add_argument("candidate", help="candidate id")
    db_options(sh)
    sh.set_defaults(func=cmd_show)

    lb = sub.add_parser("leaderboard", help="the best evaluated candidates of a search")
    lb.add_argument("search", help="search id or name")
    lb.add_argument("--limit", type=A.count, default=20, help="rows (default 20)")
    db_options(lb)
    lb.set_defaults(func=cmd_leaderboard)

    ex = sub.add_parser("export", help="a candidate's loss as text, LaTeX or an mmseg config "
                        "snippet")
    ex.add_argument("candidate", help="candidate id")
    ex.add_argument("--format", choices=("text", "latex", "mm"), default="text",
                    help="text (canonical formula, default), latex, or mm (config snippet)")
    db_options(ex, json_flag=False)
    ex.set_defaults(func=cmd_export)

