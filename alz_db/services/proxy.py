"""A search worker's proxy evaluations: the settings of a search's task that the worker reads
(:data:`EXTRA_KEYS`), whether this node can serve a search (:func:`config_on_this_node`), the
per-search state (:class:`SearchContext`), one proxy evaluation (:func:`run_proxy`, seeds and
rungs included) and its result in one unit of work (:func:`record_result`).

The loop that claims and runs them: :mod:`alz_db.services.worker`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from alz_core.evolution.candidate import Candidate

from ..enums import FinishOutcome
from ..records import Lease, SearchInfo
from ..repo.queue import finish_evaluation, record_steps

#: keys of ``search.config["extra"]`` the worker reads (all optional)
EXTRA_KEYS: dict[str, str] = {
    "data_root": "dataset of the proxy runs and the rejection samples, read by the config's "
                 "dataset class (default: the task's synthetic dataset under data_dir, created "
                 "on first use)",
    "split": "the search split of data_root: {directory, id, kind, seed, counts}",
    "config": "mmengine config file of the proxy model (default: the tiny CPU config)",
    "config_name": "the built-in config's name (tiny, proxy, retrain), resolved on each node",
    "config_sha256": "digest of the config at creation; a node whose copy differs skips the "
                     "search",
    "max_iters": "training iterations per proxy run (default: the config's)",
    "proxy_seeds": "training seeds per proxy evaluation, the fitness their mean (default 1)",
    "cfg_options": "mapping merged into the mmengine config first (mmengine's --cfg-options)",
    "torch_threads": "torch intra-op threads per worker (default: the worker's setting)",
    "rejection_size": "side in pixels of the rejection samples (default 64)",
}


class Abandon(RuntimeError):
    """Raised inside a proxy run (by the worker's abort check, see :func:`abort_hook`) or a
    rejection loop to stop it now."""


# --- stopping a proxy run from outside ----------------------------------------------------------
def abort_hook(token: str) -> dict[str, Any]:
    """A ``custom_hooks`` entry that calls ``alz_core.mm.hooks.RUN_CHECKS[token]()`` after any
    training iteration and before each validation: the worker registers a check there that
    raises :class:`Abandon` once it is stopping or lost its lease."""
    return {"type": "ALZWorkerAbortHook", "token": token}


# --- per-search state ---------------------------------------------------------------------------
@dataclass
class SearchContext:
    """What a worker keeps per search: the built task, its rejection problems, the random
    stream and the population cache."""

    info: SearchInfo
    task: Any  # a ProxyTask
    problems: dict[str, Any]  # branch -> rejection problem
    rng: np.random.Generator
    rank: int
    #: the graphs of chosen parents by candidate id (pruned to the population at every step)
    population_cache: dict[int, Candidate] = field(default_factory=dict)


class NodeProblem(RuntimeError):
    """This node cannot serve a search (its config or data is missing or differs here); the
    worker skips the search, the search itself goes on elsewhere."""


#: a node's policy: with ALZ_CONFIG_DIRS=dir1:dir2 its workers load user configs from there only
#: (a config file is Python that mmengine runs: a row of the database names the file)
CONFIG_DIRS_ENV = "ALZ_CONFIG_DIRS"


def config_on_this_node(info: SearchInfo) -> tuple[str | None, bool | None]:
    """The search's config file on this node and whether it is a built-in one: a built-in
    config by name is resolved here (the project may live elsewhere on this node), a user's
    file by its absolute path; its digest must be the one stored at creation. Raises
    :class:`NodeProblem`."""
    from alz_core.errors import InvalidValue
    from alz_core.tasks.registry import resolve_task_config

    extra = info.extra
    name, path = extra.get("config_name"), extra.get("config")
    if name:
        try:
            here, builtin = str(resolve_task_config(info.task, name).path), True
        except InvalidValue as exc:
            raise NodeProblem(f"built-in config {name!r} is not available here: {exc}") from None
    elif path:
        if not Path(path).is_file():
            raise NodeProblem(f"config {path} is missing on this node")
        allowed = [Path(d).resolve() for d in
                   os.environ.get(CONFIG_DIRS_ENV, "").split(os.pathsep) if d.strip()]
        if allowed and not any(Path(path).resolve().is_relative_to(d) for d in allowed):
            raise NodeProblem(f"config {path} is outside this node's {CONFIG_DIRS_ENV} "
                              f"({os.environ[CONFIG_DIRS_ENV]}): refused")
        here, builtin = str(path), False
    else:
        return None, None
    digest = extra.get("config_sha256")
    if digest:
        from alz_core.tasks.configs import config_digest

        try:
            mine = config_digest(here)
        except InvalidValue as exc:
            raise NodeProblem(f"config {here} does not load on this node: {exc}") from None
        if mine != digest:
            raise NodeProblem(f"config {here} differs on this node (sha256 {mine[:12]}..., the "
                              f"search's {str(digest)[:12]}...)")
    return here, builtin


def proxy_seeds(info: SearchInfo) -> list[int]:
    """The training seeds of each proxy evaluation: ``search.seed`` and, with ``--proxy-seeds
    N``, the next N - 1 integers."""
    n = int(info.extra.get("proxy_seeds") or 1)
    return [info.seed + k for k in range(n)]


def run_proxy(ctx: SearchContext, lease: Lease, work_dir: Path) -> Any:
    """The candidate's proxy result: one training per seed of :func:`proxy_seeds`, combined
    (:func:`alz_core.tasks.base.combine_seeds`) when there are several; with rungs, the
    training of the lease's rung (its own, shorter schedule; :mod:`alz_core.evolution.rungs`)."""
    import copy

    from alz_core.tasks.base import combine_seeds

    task = ctx.task
    rungs = ctx.info.rungs
    if rungs.count > 1 and rungs.iterations is not None:
        task = copy.copy(task)  # the same built task, trained for the rung's iterations
        task.max_iters = rungs.iterations[lease.rung]
    seeds = proxy_seeds(ctx.info)
    if len(seeds) == 1:
        return task.run(lease.candidate.graphs, ctx.info.metric, work_dir, seed=seeds[0])
    runs = []
    for seed in seeds:
        runs.append((seed, task.run(lease.candidate.graphs, ctx.info.metric,
                                    work_dir / f"seed{seed}", seed=seed)))
    return combine_seeds(runs, ctx.info.metric)


def record_result(session: Session, lease: Lease, steps: list[tuple[int, float | None]],
                   fitness: float | None, metrics: dict[str, Any],
                   seconds: float) -> FinishOutcome:
    """Loss curve and result in one unit; after a retry whose first commit went through,
    ``record_steps`` finds the evaluation done and ``finish_evaluation`` says
    ``ALREADY_RECORDED``."""
    record_steps(session, lease, steps)
    return finish_evaluation(session, lease, fitness=fitness, metrics=metrics, seconds=seconds)


__all__ = ["CONFIG_DIRS_ENV", "EXTRA_KEYS", "Abandon", "NodeProblem", "SearchContext",
           "abort_hook", "config_on_this_node", "proxy_seeds", "record_result", "run_proxy"]
