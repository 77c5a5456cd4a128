"""The noise floor of a search's proxy task: one loss trained over several training seeds.

A proxy fitness is one sample of a noisy training: the same loss, trained again with another
seed (initial weights, data order), scores differently. :func:`measure_noise` trains one loss
(default: cross-entropy) on exactly the search's proxy task (its config, overrides, data, search
split and schedule) once per seed, and returns the spread: per-seed values, mean, standard
deviation (n - 1), min and max. For segmentation it also gives the all-background prediction's
metric on the same evaluation images, the level of a network that learned nothing. It is stored
as an ``experiment`` of kind ``noise`` linked to the search
(:func:`alz_db.repo.experiments.save_noise_floor`); ``alz
search status``, the web app's search page and ``alz report`` show the newest one beside the
search's fitnesses.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from ..records import NoiseFloor, SearchInfo

#: the losses ``alz noise --loss NAME`` knows by name (else a formula, for a single-branch task)
NAMED_LOSSES = {"cross-entropy": "-y*log(yhat)"}
#: ``--loss default``: each branch kind's standard loss (cross-entropy; the IoU loss for box
#: regression; squared error for heatmaps, which is K times mmpose's KeypointMSELoss)
DEFAULT_BY_KIND = {"dense": "-y*log(yhat)", "box": "-log(i/u)", "heatmap": "(yhat - y)^2"}


def spread(values: Sequence[float | None]) -> dict[str, float | None]:
    """mean, std (n - 1; 0 for one value), min and max of the finite values."""
    xs = [v for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return {"mean": None, "std": None, "min": None, "max": None}
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return {"mean": mean, "std": std, "min": min(xs), "max": max(xs)}


def _formulas(loss: str, task: str) -> tuple[str, dict[str, str]]:
    """(name, {branch: formula}) of ``loss`` on ``task``'s branches."""
    from alz_core.errors import InvalidValue
    from alz_core.graph.loss_graph import LossGraph
    from alz_core.tasks.registry import get_task

    branches = get_task(task).branches
    if loss == "default":
        kinds = {k.value for k in branches.values()}
        name = {frozenset({"dense"}): "cross-entropy", frozenset({"heatmap"}): "squared error",
                frozenset({"dense", "box"}): "cross-entropy + IoU loss"}[frozenset(kinds)]
        return name, {b: DEFAULT_BY_KIND[k.value] for b, k in branches.items()}
    if len(branches) != 1 and loss not in NAMED_LOSSES:
        raise InvalidInput(f"--loss {loss!r} is invalid for task {task!r}: it has several "
                           f"branches; use --loss default (each branch's standard loss)")
    if loss in NAMED_LOSSES and any(k.value != "dense" for k in branches.values()):
        raise InvalidInput(f"--loss {loss!r} is invalid for task {task!r}: it has non-dense "
                           f"branches; use --loss default or a formula")
    formula = NAMED_LOSSES.get(loss, loss)
    try:
        text = LossGraph.parse(formula).text
    except InvalidValue as exc:
        raise InvalidInput(f"--loss {loss!r} is invalid: {exc}") from None
    return (loss if loss in NAMED_LOSSES else text), {b: text for b in branches}


def _one_seed(info: SearchInfo, formulas: dict[str, str], seed: int, max_iters: int | None,
              data_dir: str, torch_threads: int | None) -> dict[str, Any]:
    """One training of the branches' ``formulas`` on the search's proxy task (in this or a
    spawned process)."""
    from alz_core.graph.loss_graph import LossGraph

    from .children import child_setup
    from .training import build_training_task

    child_setup()
    if torch_threads is not None:
        import torch

        torch.set_num_threads(int(torch_threads))
    task, _ = build_training_task(info, config=None, max_iters=max_iters,
                                  data_dir=Path(data_dir), torch_threads=torch_threads,
                                  default="search")
    work = Path(tempfile.mkdtemp(prefix="alz-noise-"))
    try:
        result = task.run({b: LossGraph.parse(f) for b, f in formulas.items()}, info.metric,
                          work, seed=seed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"seed": seed, "fitness": result.fitness, "seconds": round(result.seconds, 2),
            "metrics": {k: v for k, v in result.metrics.items() if isinstance(v, float)}}


def _background(info: SearchInfo, max_iters: int | None, data_dir: str) -> float | None:
    """The all-background prediction's metric on the search's evaluation images (seg)."""
    if info.task != "seg":
        return None
    from alz_core.graph.loss_graph import LossGraph

    from .training import build_training_task

    task, _ = build_training_task(info, config=None, max_iters=max_iters,
                                  data_dir=Path(data_dir), default="search")
    from alz_core.tasks.seg_data import constant_prediction_metrics

    cfg = task.build_config(LossGraph.parse("-y*log(yhat)"), info.metric,
                            Path(tempfile.mkdtemp(prefix="alz-noise-")))
    return float(constant_prediction_metrics(cfg)[info.metric])


def measure_noise(info: SearchInfo, *, loss: str = "default",
                  seeds: Sequence[int] = (0, 1, 2, 3, 4), max_iters: int | None = None,
                  data_dir: Path | str = ".alz/data", procs: int = 1,
                  on_run: Callable[[dict[str, Any]], None] | None = None) -> NoiseFloor:
    """Train ``loss`` on the search's proxy task once per seed (in ``procs`` processes, one
    torch thread each when more than one) and return the spread. ``loss``: ``default`` (each
    branch's standard loss, :data:`DEFAULT_BY_KIND`), a name of :data:`NAMED_LOSSES`, or a
    formula (single-branch tasks). Raises :class:`InvalidInput` for a bad loss or seed list,
    or a task that cannot be built here."""
    name, formulas = _formulas(loss, info.task)
    formula = "; ".join(f"{b}: {f}" for b, f in formulas.items()) if len(formulas) > 1 else \
        next(iter(formulas.values()))
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise InvalidInput(f"seeds={seeds!r} is invalid: expected distinct integers >= 0")
    if procs < 1:
        raise InvalidInput(f"procs={procs} is invalid: expected an integer >= 1")
    iters = max_iters if max_iters is not None else info.extra.get("max_iters")
    data_dir = str(Path(data_dir).resolve())
    t0 = time.perf_counter()
    runs: list[dict[str, Any]] = []
    threads = 1 if procs > 1 else None
    if procs == 1:
        for seed in seeds:
            runs.append(_one_seed(info, formulas, seed, iters, data_dir, threads))
            if on_run is not None:
                on_run(runs[-1])
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(procs, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_one_seed, info, formulas, seed, iters, data_dir, threads)
                       for seed in seeds]
            for fut in as_completed(futures):
                runs.append(fut.result())
                if on_run is not None:
                    on_run(runs[-1])
        runs.sort(key=lambda r: seeds.index(r["seed"]))
    values = [r["fitness"] for r in runs]
    return NoiseFloor(
        loss=name, formula=formula, metric=info.metric, seeds=seeds, values=values,
        seconds=[r["seconds"] for r in runs], **spread(values),
        background=_background(info, iters, data_dir),
        settings={"proxy_iters": iters, "procs": procs,
                  "config": info.extra.get("config_name") or info.extra.get("config"),
                  "wall_seconds": round(time.perf_counter() - t0, 1),
                  "runs": runs})


__all__ = ["DEFAULT_BY_KIND", "NAMED_LOSSES", "measure_noise", "spread"]
