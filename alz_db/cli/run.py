"""``alz search run``: start a search and local workers, show its progress until it ends,
and what it found (the best losses against the noise floor)."""

from __future__ import annotations

import argparse
import json

from ..enums import SearchStatus
from ..errors import DatabaseUnavailable, TransientStoreError
from .common import CLIError, Database, err_console, fmt, open_database, rate, say
from .search import search_json, search_progress, unservable

#: how often `alz search run` reads the search's progress
POLL_SECONDS = 1.0


def _stop_processes(procs: list, grace_s: float = 30.0) -> None:
    """Ask the local worker processes to stop (SIGTERM: each finishes or hands back its
    evaluation), then kill the ones still running after ``grace_s``."""
    import time

    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)


def _rediscoveries(info, formulas: list[str]) -> list[str | None]:  # noqa: ANN001
    """For each formula of a single-branch search: the catalogue loss it is a positive multiple
    of in gradient (``cross_entropy``, ...), else ``None``."""
    from alz_core.graph.loss_graph import LossGraph
    from alz_core.rejection.equivalence import rediscovered
    from alz_core.tasks.registry import get_task, rejection_problems

    if len(get_task(info.task).branches) != 1:
        return [None] * len(formulas)
    try:
        (branch, problem), = rejection_problems(info.task, info.metric, info.rejection).items()
    except Exception:  # noqa: BLE001 - labels are a courtesy; never fail the command for them
        return [None] * len(formulas)
    out = []
    for f in formulas:
        e = rediscovered(LossGraph.parse(f), info.task, problem, branch)
        out.append(None if e is None else e.name)
    return out


def _print_result(db: Database, search_id: int, limit: int = 5) -> None:
    from alz_core.graph.display import simplified_text

    from .. import get_candidate, get_search, leaderboard
    from ..repo.experiments import noise_floor_of

    with db.session() as s:
        info = get_search(s, search_id)
        top = leaderboard(s, info.id, limit=limit)
        best = get_candidate(s, top[0].candidate_id) if top else None
        floor = noise_floor_of(s, info.id)
    say(f"search {info.id} {info.name!r} {info.status.value}: "
                     f"{info.evaluations_done} of {info.budget} proxy evaluations, "
                     f"{info.candidates} candidates, {info.rejection_checks} rejection checks "
                     f"({rate(info.rejection_rate)} rejected)")
    labels = _rediscoveries(info, [e.formula for e in top])
    for e, same in zip(top, labels):
        say(f"#{e.rank}  {info.metric} {fmt(e.fitness)}  candidate "
            f"{e.candidate_id}  {e.formula}"
            + (f"   [rediscovers {same.replace('_', '-')} up to scale]" if same else ""))
    if best is not None:
        graph = best.candidate.branches[0][1]
        if len(best.candidate.branches) == 1:
            say(f"simplified: {simplified_text(graph)}")
        say(f"best loss: {best.formula}")
    else:
        say("best loss: - (no proxy evaluation finished yet)")
    if floor is None:
        say(f"noise floor: not measured (alz noise {info.name})")
        return
    say(f"noise floor: {floor.line()}")
    if info.seed in floor.seeds and floor.values[floor.seeds.index(info.seed)] is not None:
        say(f"{floor.loss} with this search's training seed {info.seed}: "
            f"{fmt(floor.values[floor.seeds.index(info.seed)])}")
    band = floor.band()
    for e, same in zip(top, labels):
        if e.fitness is None or band is None:
            continue
        where = "above" if e.fitness > band[1] else "inside" if e.fitness >= band[0] else \
            "below"
        note = f", {same.replace('_', '-')} rescaled" if same else ""
        say(f"  #{e.rank} {fmt(e.fitness)} is {where} {floor.loss}'s band "
            f"{band[0]:.4f} - {band[1]:.4f}{note}")
    if band is not None:
        say(_verdict(top, labels, band, floor.loss))


def _verdict(top, labels, band: tuple[float, float], loss: str) -> str:  # noqa: ANN001
    """One line: did the search find, from scratch, a loss that trains as well as the
    reference (inside or above its noise band), and is it more than the reference rescaled?"""
    good = [(e, same) for e, same in zip(top, labels)
            if e.fitness is not None and e.fitness >= band[0]]
    new = [e for e, same in good if not same]
    if not good:
        return (f"verdict: no loss of the top {len(top)} reached {loss}'s band yet "
                f"(more budget, or --proxy-seeds for a noisier task)")
    if not new:
        return (f"verdict: the search rediscovered {loss} (up to scale) from scratch; "
                f"nothing else of its top {len(top)} reached the band yet")
    return (f"verdict: the search found {len(new)} loss(es) from scratch that train as well "
            f"as {loss} (inside or above its band) and are not {loss} rescaled; the best: "
            f"{new[0].formula}")


def cmd_search_run(args: argparse.Namespace) -> int:
    import time

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from .. import get_search, start_search

    if args.procs < 0:
        raise CLIError(f"--procs={args.procs} is invalid: expected an integer >= 0")
    db = open_database(args)
    with db.session() as s:
        info = get_search(s, args.search)
    if info.status is SearchStatus.FAILED:
        db.close()
        raise CLIError(f"search {info.id} {info.name!r} failed: {info.error} (once the cause "
                       f"is fixed: alz search resume {info.name})")
    if info.status is not SearchStatus.FINISHED:
        with db.session() as s:
            info = start_search(s, info.id)
    procs: list = []
    if info.status is SearchStatus.RUNNING and args.procs:
        try:
            from ..services.processes import spawn_workers
        except ImportError as exc:
            db.close()
            raise CLIError(f"cannot start local workers: {exc}") from None
        # no pooled connection may be inherited by a forked worker
        db.engine.dispose()
        # idle_exit: the workers return once the search is no longer running; WARNING: their
        # log lines would break the progress bar
        try:
            procs = list(spawn_workers(db.url, args.procs, search_id=info.id, idle_exit=True,
                                       log_level="WARNING"))
        except (ValueError, OSError) as exc:  # a bad option, or no process could start
            db.close()
            raise CLIError(f"cannot start local workers: {exc}") from None
        for p in procs:
            if p.pid is None:
                p.start()

    columns = (TextColumn("{task.description}", style="bold", markup=False), BarColumn(),
               MofNCompleteColumn(), TextColumn("evaluations"), TimeElapsedColumn(),
               TextColumn("{task.fields[info]}", markup=False))
    outcome = "finished"
    try:
        with Progress(*columns, console=err_console) as progress:
            bar = progress.add_task(info.name, total=info.budget,
                                    completed=info.evaluations_done, info="")
            unreachable_since: float | None = None
            while True:
                try:
                    with db.session() as s:
                        info = get_search(s, info.id)
                        state = search_progress(s, info)
                        blocked = unservable(s, info.id) if procs else None
                    unreachable_since = None
                except (TransientStoreError, DatabaseUnavailable) as exc:
                    # the server restarting: the workers retry too; give up after a minute
                    now = time.monotonic()
                    unreachable_since = unreachable_since or now
                    if now - unreachable_since > 60:
                        raise CLIError(f"lost the database for a minute: {exc}") from None
                    progress.update(bar, info="database unreachable, retrying")
                    time.sleep(POLL_SECONDS)
                    continue
                ev = state["evaluations"]
                local = sum(p.is_alive() for p in procs)
                progress.update(
                    bar, completed=info.evaluations_done,
                    info=f"best {info.metric} {fmt(info.best_fitness, 3)} | rejected "
                         f"{rate(info.rejection_rate)} of {info.rejection_checks} | "
                         f"workers {state['workers_alive']}"
                         + (f" ({local} local)" if procs else "")
                         + f" | running {ev['running']} queued {ev['queued'] + ev['stale']}"
                         + (f" failed {ev['failed']}" if ev["failed"] else ""))
                if info.status is not SearchStatus.RUNNING:
                    outcome = info.status.value
                    break
                if procs and local == 0:
                    outcome = "workers_exited"
                    break
                if blocked:
                    outcome = "unservable"
                    break
                time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        err_console.print("interrupted: stopping the local workers (the search stays "
                          f"running; `alz search run {info.name}` resumes it)", markup=False,
                          highlight=False, soft_wrap=True)
        try:
            _stop_processes(procs)
        except KeyboardInterrupt:
            for p in procs:
                if p.is_alive():
                    p.kill()
        db.close()
        return 130
    _stop_processes(procs, grace_s=15.0)
    try:
        if outcome == "unservable":
            raise CLIError(f"no worker can serve search {info.id} {info.name!r}: {blocked}; "
                           f"fix it, then `alz search run {info.name}` (the search stays "
                           f"running, nothing was lost)")
        if outcome == "workers_exited":
            with db.session() as s:
                info = get_search(s, info.id)
            if info.status is SearchStatus.RUNNING:
                codes = ", ".join(str(p.exitcode) for p in procs)
                raise CLIError(f"all {len(procs)} local workers exited (exit codes {codes}) "
                               f"before search {info.id} finished; see `alz search status "
                               f"{info.name}`")
        if info.status is SearchStatus.FAILED:
            raise CLIError(f"search {info.id} {info.name!r} failed: {info.error}")
        if args.json:
            with db.session() as s:
                data = search_json(info, search_progress(s, info))
            print(json.dumps(data))
        else:
            _print_result(db, info.id)
    finally:
        db.close()
    return 0

