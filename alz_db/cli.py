"""The ``alz`` command line.

Every command turns bad input (formula text, task, metric, config value, paths) into a one-line
``error: ...`` on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from alz_core.config import ConfigError, RejectionConfig
from alz_core.formula import FormulaError

err_console = Console(stderr=True)
out_console = Console(highlight=False)


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def _parse_formula(text: str):
    from alz_core.graph import LossGraph

    try:
        return LossGraph.parse(text)
    except FormulaError as exc:
        raise CLIError(f"{exc} in {text!r}") from None


# --- alz check ---------------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace) -> int:
    from alz_core.display import simplified_text
    from alz_core.tasks.registry import TaskError, check_metric, get_task, seg_rejection_problem

    try:
        task = get_task(args.task)
        metric = check_metric(task, args.metric)
        config = RejectionConfig(num_samples=args.samples, iterations=args.iterations,
                                 threshold=args.eta, score_mode=args.score_mode, seed=args.seed)
    except (TaskError, ConfigError) as exc:
        raise CLIError(str(exc)) from None
    graph = _parse_formula(args.formula)
    if args.data_root is not None and not Path(args.data_root).is_dir():
        raise CLIError(f"--data-root {args.data_root}: not a directory")
    from alz_core.rejection import check, check_plain

    with err_console.status("preparing samples", spinner="dots") as status:
        try:
            problem = seg_rejection_problem(metric, config, args.data_root, size=args.size)
        except (FileNotFoundError, ValueError) as exc:
            raise CLIError(str(exc)) from None
        status.update(f"running the loss-rejection protocol ({config.iterations} iterations)")
        result = (check_plain if args.plain else check)(graph, problem)
        status.update("gradient fingerprint")
        fingerprint = problem.fingerprint(graph)
    payload = {
        "formula": graph.text,
        "task": task.name,
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
    out_console.print(f"formula      {graph.text}")
    out_console.print(f"simplified   {simplified_text(graph)}")
    out_console.print(f"task/metric  {task.name} / {metric}")
    reason = f" ({result.reason.value})" if result.reason else ""
    out_console.print(f"verdict      [{colour}]{result.verdict.value}{reason}[/]  score {score}"
                      f" vs eta {config.threshold} ({config.score_mode.value})")
    out_console.print(f"metric       {result.metric_before:.4f} -> {after}")
    out_console.print(f"fingerprint  {fingerprint or '- (gradient not finite)'}")
    out_console.print(f"iterations   {result.iterations} ({result.stop.value}), "
                      f"{result.seconds:.2f} s")
    return 0


# --- alz formula / catalogue -------------------------------------------------------------------
def cmd_formula(args: argparse.Namespace) -> int:
    from alz_core.display import simplified_text, to_latex

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
            out_console.print(f"{k:<16}{info[k]}")
    return 0


def cmd_catalogue(args: argparse.Namespace) -> int:
    from alz_core.catalogue import entries
    from alz_core.mutation import validity_problem

    rows = []
    for e in entries(task=args.task):
        problem = validity_problem(e.graph, e.kind)
        rows.append({"name": e.name, "task": e.task, "metric": e.metric, "branch": e.branch,
                     "formula": e.graph.text, "source": e.source,
                     "valid": problem is None, "note": e.note})
    if args.json:
        print(json.dumps(rows))
        return 0
    from rich.table import Table

    table = Table("name", "task", "metric", "branch", "formula", "source", "valid")
    for r in rows:
        table.add_row(r["name"], r["task"], r["metric"] or "-", r["branch"], r["formula"],
                      r["source"], "yes" if r["valid"] else "[red]no[/]")
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
    from alz_core.display import simplified_text
    from alz_core.equivalence import combine_fingerprints
    from alz_core.evolution import run_evolution
    from alz_core.rejection import check
    from alz_core.tasks.registry import check_metric, get_task, seg_rejection_problem
    from alz_core.tasks.seg import SegProxyTask, ensure_synthetic_voc

    try:
        task_info = get_task("seg")
        metric = check_metric(task_info, args.metric)
        evo = EvolutionConfig(initial_population=min(args.initial, args.budget),
                              population_size=max(args.population, args.initial),
                              budget=args.budget)
        rej = RejectionConfig(seed=args.seed)
    except (ConfigError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    data_root = Path(args.data_dir) / "synthetic_voc"
    with err_console.status("preparing the synthetic VOC dataset"):
        ensure_synthetic_voc(data_root)
    task = SegProxyTask(data_root=data_root, max_iters=args.proxy_iters)
    problem = seg_rejection_problem(metric, rej)
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

    columns = (TextColumn("[bold]search[/]"), BarColumn(), MofNCompleteColumn(),
               TextColumn("evaluations"), TimeElapsedColumn(), TextColumn("{task.fields[info]}"))
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
        out_console.print(f"#{rank}  {metric} {ind.fitness:.4f}  {g.text}   "
                          f"[dim]({simplified_text(g)})[/]")
    if ranked:
        out_console.print(f"best loss: {ranked[0].candidate.text}")
    return 0


# --- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alz", description="AutoLoss-Zero: search loss functions "
                                "from scratch, and track the searches in PostgreSQL.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("check", help="run the loss-rejection protocol and the gradient "
                       "fingerprint on one formula")
    c.add_argument("formula", help="loss formula text, e.g. '-y*log(yhat)'")
    c.add_argument("--task", default="seg", help="task (default: seg)")
    c.add_argument("--metric", default="miou", help="target metric (default: miou)")
    c.add_argument("--data-root", type=Path, default=None,
                   help="VOC-layout dataset to take the samples from (default: the built-in "
                   "synthetic scenes)")
    c.add_argument("--samples", type=int, default=5, help="B, number of samples (default 5)")
    c.add_argument("--size", type=int, default=64, help="sample size in pixels (default 64)")
    c.add_argument("--iterations", type=int, default=500, help="SGD iterations (default 500)")
    c.add_argument("--eta", type=float, default=0.6, help="rejection threshold (default 0.6)")
    c.add_argument("--score-mode", default="absolute", help="absolute | gain")
    c.add_argument("--seed", type=int, default=0, help="seed of the samples and start")
    c.add_argument("--plain", action="store_true",
                   help="use the plain reference loop instead of the engine")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(func=cmd_check)

    f = sub.add_parser("formula", help="parse a formula and show its canonical, simplified "
                       "and LaTeX forms")
    f.add_argument("formula")
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=cmd_formula)

    k = sub.add_parser("catalogue", help="list the built-in losses (seed Table 9 and baselines)")
    k.add_argument("--task", default=None)
    k.add_argument("--json", action="store_true")
    k.set_defaults(func=cmd_catalogue)

    d = sub.add_parser("demo", help="run a small search in this process on the built-in CPU "
                       "segmentation task (no database) and print the best losses")
    d.add_argument("--metric", default="miou")
    d.add_argument("--budget", type=int, default=12, help="proxy evaluations (default 12)")
    d.add_argument("--initial", type=int, default=6, help="initial population K (default 6)")
    d.add_argument("--population", type=int, default=2500, help="population size P")
    d.add_argument("--proxy-iters", type=int, default=None,
                   help="training iterations per proxy run (default: the tiny config's)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--data-dir", default=".alz/data", help="where the synthetic data is written")
    d.set_defaults(func=cmd_demo)
    return p


_FORMULA_CHARS = set("*/()^+ .")


def _protect_formulas(argv: list[str]) -> list[str]:
    """Let a formula that starts with a minus sign ('-y*log(yhat)') be a positional argument.

    argparse would take it for an option; a token that starts with '-' and holds characters no
    option name has is moved behind '--'.
    """
    if "--" in argv:
        return argv
    formulas = [a for a in argv[1:] if a.startswith("-") and not a.startswith("--")
                and _FORMULA_CHARS & set(a)]
    if not formulas:
        return argv
    return [a for a in argv if a not in formulas] + ["--", *formulas]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_protect_formulas(list(sys.argv[1:] if argv is None else argv)))
    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
