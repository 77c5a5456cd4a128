"""Runner hooks: one that records what a proxy run needs and stops diverged runs early, and the
two that a run's config names by a token (mmengine builds custom hooks from config dicts, so a
hook finds its function through the token):

* ``dict(type="ALZWorkerAbortHook", token=t)``: calls ``RUN_CHECKS[t]()`` after every training
  iteration and before each validation; the check raises to stop the run (the search worker:
  a stop was requested or its lease was lost);
* ``dict(type="ALZTrainingReportHook", token=t)``: calls ``RUN_CALLBACKS[t](event, step,
  total, payload)`` after every training iteration (``"iter"``, the loss) and after every
  validation (``"val"``, the metrics); the callback may raise to stop the run (e.g.
  ``optuna.TrialPruned``).

Both are registered in mmengine's root ``HOOKS`` registry when :mod:`alz_core.mm` is imported
(as every proxy run does before its runner is built).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

#: token -> the abort check of the runs whose config carries ``ALZWorkerAbortHook(token)``
RUN_CHECKS: dict[str, Callable[[], None]] = {}
#: token -> the callback of the runs whose config carries ``ALZTrainingReportHook(token)``
RUN_CALLBACKS: dict[str, Callable[[str, int, int, Any], None]] = {}


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


class ALZWorkerAbortHook(Hook):
    """Calls the token's check (:data:`RUN_CHECKS`) after every training iteration and before
    each validation; the check raises to stop the run."""

    priority = "VERY_HIGH"

    def __init__(self, token: str) -> None:
        self.token = token

    def _check(self) -> None:
        fn = RUN_CHECKS.get(self.token)
        if fn is not None:
            fn()

    def after_train_iter(self, runner: object, batch_idx: int, data_batch: object = None,
                         outputs: object = None) -> None:
        self._check()

    def before_val(self, runner: object) -> None:
        self._check()


class ALZTrainingReportHook(Hook):
    """Calls the token's callback (:data:`RUN_CALLBACKS`) after every training iteration
    (``"iter"``, loss) and after every validation (``"val"``, the metrics); the callback may
    raise to stop the run (e.g. ``optuna.TrialPruned``)."""

    priority = "LOW"  # after the recorder: a diverged run raises there first

    def __init__(self, token: str) -> None:
        self.token = token

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        fn = RUN_CALLBACKS.get(self.token)
        if fn is not None:
            loss = (outputs or {}).get("loss")
            if loss is not None and hasattr(loss, "detach"):
                loss = loss.detach()
            fn("iter", runner.iter + 1, runner.max_iters, None if loss is None else float(loss))

    def after_val_epoch(self, runner: Any, metrics: Any = None) -> None:
        fn = RUN_CALLBACKS.get(self.token)
        if fn is not None:
            fn("val", runner.iter, runner.max_iters,
               {k: float(v) for k, v in (metrics or {}).items()})


# force=True: re-importing (e.g. a reloaded module in a notebook) must not fail on the name
HOOKS.register_module(name="ALZWorkerAbortHook", module=ALZWorkerAbortHook, force=True)
HOOKS.register_module(name="ALZTrainingReportHook", module=ALZTrainingReportHook, force=True)
