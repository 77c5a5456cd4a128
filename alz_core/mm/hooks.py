"""A runner hook that records what a proxy run needs and stops diverged runs early."""

from __future__ import annotations

import math
import time

import torch
from mmengine.hooks import Hook


class ProxyDiverged(RuntimeError):
    """Training produced a non-finite loss or non-finite weights; the run is abandoned."""

    def __init__(self, iteration: int, what: str) -> None:
        self.iteration = iteration
        super().__init__(f"non-finite {what} at iteration {iteration}")


class ProxyRecorderHook(Hook):
    """Records the total training loss of every iteration and the last validation metrics.

    Raises :class:`ProxyDiverged` right after the first iteration whose loss is not finite,
    and before validation if a weight became non-finite (a finite loss can still step the
    weights into NaN on the last iteration). Register it with ``runner.register_hook``.
    """

    priority = "VERY_HIGH"  # before the logger hook, so a NaN is never logged as progress

    def __init__(self) -> None:
        self.losses: list[float | None] = []
        self.metrics: dict[str, float] | None = None
        self.train_seconds = 0.0
        self._t0: float | None = None

    def before_train(self, runner: object) -> None:
        self._t0 = time.perf_counter()

    def after_train_iter(self, runner: object, batch_idx: int, data_batch: object = None,
                         outputs: dict | None = None) -> None:
        value = (outputs or {}).get("loss")
        loss = math.nan if value is None else float(torch.as_tensor(value).detach())
        finite = math.isfinite(loss)
        self.losses.append(loss if finite else None)
        if self._t0 is not None:
            self.train_seconds = time.perf_counter() - self._t0
        if not finite:
            raise ProxyDiverged(len(self.losses), "training loss")

    def before_val(self, runner: object) -> None:
        model = runner.model  # type: ignore[attr-defined]
        with torch.no_grad():
            if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
                raise ProxyDiverged(len(self.losses), "model weights")

    def after_val_epoch(self, runner: object, metrics: dict | None = None) -> None:
        self.metrics = {k: float(v) for k, v in (metrics or {}).items()}
