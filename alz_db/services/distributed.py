"""Re-training under torch.distributed: one process per GPU (NCCL), or N CPU processes (gloo).

The paper re-trains at its schedules on 4 to 8 GPUs (seg: 4 images per GPU, 16 in all, SyncBN;
det: 2 per GPU, 16; pose: 64 per GPU, 512), so ``alz retrain`` and ``alz baselines`` take
``--gpus 0,1,2,3`` or ``--nproc N``. :func:`train_distributed` starts one process per rank with
the environment mmengine's ``pytorch`` launcher reads (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``). Each rank builds the same task, sets ``launcher='pytorch'``
and trains its share. The dataloaders' samplers split the data by rank, the per-process batch
is the config's ``train_dataloader.batch_size`` (the total batch is world size x that), and the
validation metrics are gathered on rank 0.

The calling process owns the database side. It holds the evaluation's lease while the ranks
train, and records the result only after every rank has ended: the curve and metrics come
from rank 0. A rank that dies (an exception, a signal, an exit) stops the others at once, and
the evaluation fails with that rank's error. Nothing half-written remains, because the ranks
never touch the database.

On CPU (gloo) a model's SyncBN layers become plain BN (SyncBN needs CUDA) and the model is
wrapped by ``MMDistributedDataParallel`` without device ids (``alz_core.mm.runner``).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
import socket
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from ..records import SearchInfo

#: a test-only fault switch: ``R@N`` makes rank R exit abruptly (os._exit) after iteration N
FAULT_ENV = "ALZ_FAULT_KILL_RANK"


@dataclass(frozen=True)
class Launch:
    """How many processes, on which devices: ``gpus`` (one process per index, NCCL) or
    ``nproc`` CPU processes (gloo)."""

    gpus: tuple[int, ...] = ()
    nproc: int = 1

    @property
    def world_size(self) -> int:
        return len(self.gpus) if self.gpus else self.nproc

    @property
    def backend(self) -> str:
        return "nccl" if self.gpus else "gloo"

    def describe(self) -> str:
        if self.gpus:
            return f"{len(self.gpus)} GPU processes ({','.join(map(str, self.gpus))}, NCCL)"
        return f"{self.nproc} CPU processes (gloo)"

    def to_json(self) -> dict[str, Any]:
        return {"gpus": list(self.gpus), "nproc": self.world_size, "backend": self.backend}


def parse_launch(gpus: str | None, nproc: int | None) -> Launch | None:
    """``--gpus`` / ``--nproc`` as a :class:`Launch` (``None``: one process, as before).
    Raises :class:`InvalidInput` for bad values or GPUs torch does not see."""
    from alz_core.devices import DeviceError, check_gpus

    from .processes import UsageError, parse_gpus

    if gpus is not None and nproc is not None:
        raise InvalidInput("--gpus and --nproc are exclusive: one process per GPU, or N CPU "
                           "processes")
    if gpus is not None:
        try:
            indices = parse_gpus(gpus)
            if not indices:
                raise UsageError(f"--gpus {gpus!r} is invalid: expected GPU indices such as 0,1")
            check_gpus(indices, gpus)
        except (UsageError, DeviceError) as exc:
            raise InvalidInput(str(exc)) from None
        return Launch(gpus=tuple(indices))
    if nproc is not None:
        if not 1 <= nproc <= 64:
            raise InvalidInput(f"--nproc={nproc} is invalid: expected an integer in [1, 64]")
        return Launch(nproc=nproc)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_main(rank: int, launch: Launch, port: int, spec: dict[str, Any], events: Any) -> None:
    """One rank: join the process group, build the task, train, report (rank 0: the result)."""
    from .children import child_setup

    child_setup()
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(launch.world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        import torch
        import torch.distributed as dist

        if launch.gpus:
            torch.cuda.set_device(rank)
        else:
            torch.set_num_threads(int(spec.get("torch_threads") or 1))
        dist.init_process_group(launch.backend, rank=rank, world_size=launch.world_size)
        from alz_core.evolution.candidate import Candidate

        from .training import TrainingSettings, build_training_task, train_once

        info = spec["info"]
        task, _ = build_training_task(info, config=spec["config"], max_iters=spec["max_iters"],
                                      data_root=spec["data_root"], data_dir=spec["data_dir"],
                                      cfg_options=spec["cfg_options"], default="retrain")
        fault = os.environ.get(FAULT_ENV, "")
        kill_at = int(fault.split("@")[1]) if fault.split("@")[0] == str(rank) else None

        def on_iter(step: int, total: int) -> None:
            if kill_at is not None and step >= kill_at:
                os._exit(9)  # the fault switch: die without a word, as a killed process does
            if rank == 0:
                events.put(("iter", step, total))

        def on_val(step: int, metrics: dict[str, float]) -> None:
            if rank == 0:
                events.put(("val", step, metrics))

        run = train_once(task, Candidate.from_json(spec["candidate"]), info.metric,
                         seed=spec["seed"], settings=TrainingSettings.from_json(
                             spec["settings"]), val_interval=spec["val_interval"],
                         on_iter=on_iter, on_val=on_val, launcher="pytorch",
                         backend=launch.backend)
        events.put(("done", rank, run.to_json()))
        dist.destroy_process_group()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the run
        events.put(("error", rank, f"{type(exc).__name__}: {' '.join(str(exc).split())}"
                                   f"\n{traceback.format_exc(limit=3)}"))
        raise SystemExit(1) from None


def train_distributed(info: SearchInfo, candidate: Any, *, launch: Launch, seed: int,
                      settings: Any, val_interval: int | None, config: str | None,
                      max_iters: int | None, data_root: str | None, data_dir: Path | None,
                      cfg_options: Mapping[str, Any] | None, torch_threads: int | None = None,
                      on_iter: Callable[[int, int], None] | None = None,
                      on_val: Callable[[int, dict[str, float]], None] | None = None,
                      timeout_s: float | None = None) -> Any:
    """Train ``candidate`` once with ``launch``'s processes; rank 0's
    :class:`alz_db.services.training.TrainingRun`. Raises ``RuntimeError`` naming the rank and its
    error if any rank fails (the others are stopped)."""
    from .training import TrainingRun

    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    port = _free_port()
    spec = {"info": info, "candidate": candidate.to_json(), "seed": seed,
            "settings": settings.to_json(), "val_interval": val_interval, "config": config,
            "max_iters": max_iters, "data_root": data_root,
            "data_dir": None if data_dir is None else str(data_dir),
            "cfg_options": dict(cfg_options or {}), "torch_threads": torch_threads}
    env_before = os.environ.get("CUDA_VISIBLE_DEVICES")
    if launch.gpus:  # rank r trains on the r-th listed GPU
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, launch.gpus))
    procs = []
    try:
        for rank in range(launch.world_size):
            p = ctx.Process(target=_rank_main, args=(rank, launch, port, spec, events),
                            name=f"alz-rank-{rank}")
            p.start()
            procs.append(p)
    finally:
        if launch.gpus:
            if env_before is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = env_before
    result: dict[str, Any] | None = None
    done: set[int] = set()
    error: str | None = None
    t0 = time.monotonic()
    try:
        while len(done) < launch.world_size and error is None:
            try:
                event = events.get(timeout=0.5)
            except queue_mod.Empty:
                dead = [(r, p.exitcode) for r, p in enumerate(procs)
                        if p.exitcode not in (None, 0) and r not in done]
                if dead:
                    # a rank that died without a word (killed): give a report a moment
                    time.sleep(1.0)
                    while not events.empty():
                        event = events.get()
                        if event[0] == "error":
                            error = f"rank {event[1]} failed: {event[2]}"
                    error = error or (f"rank {dead[0][0]} died (exit code {dead[0][1]}) during "
                                      f"the distributed training")
                if timeout_s is not None and time.monotonic() - t0 > timeout_s:
                    error = f"the distributed training ran past {timeout_s:.0f} s"
                continue
            kind = event[0]
            if kind == "iter" and on_iter is not None:
                on_iter(event[1], event[2])
            elif kind == "val" and on_val is not None:
                on_val(event[1], event[2])
            elif kind == "done":
                done.add(event[1])
                if event[1] == 0:
                    result = event[2]
                elif event[2].get("diverged") and result is None:
                    # a rank's loss went non-finite: the synchronised gradients take the others
                    # there too, but they would wait for it forever; the run diverged
                    result = event[2]
                    break
            elif kind == "error":
                error = f"rank {event[1]} failed: {event[2]}"
                # a rank that died without a word is the cause; the others then fail to talk
                time.sleep(1.0)
                silent = [(r, p.exitcode) for r, p in enumerate(procs)
                          if r != event[1] and p.exitcode not in (None, 0, 1)]
                if silent:
                    error = (f"rank {silent[0][0]} died (exit code {silent[0][1]}); then "
                             f"{error}")
    finally:
        if error is not None or len(done) < launch.world_size:  # stop what is left
            for p in procs:
                if p.is_alive():
                    p.kill()
        for p in procs:
            p.join(30)
    if error is not None:
        raise RuntimeError(error.splitlines()[0] if "\n" in error else error)
    assert result is not None
    return TrainingRun.from_json(result)


__all__ = ["FAULT_ENV", "Launch", "parse_launch", "train_distributed"]
