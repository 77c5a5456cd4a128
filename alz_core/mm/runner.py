"""``ProxyRunner``: mmengine's Runner without per-run work a short proxy run does not need."""

from __future__ import annotations

import os.path as osp

from mmengine.runner import Runner
from torch import nn


class ProxyRunner(Runner):
    """An mmengine ``Runner`` that is cheaper to start, for runs of a few hundred iterations.

    Overrides two methods of mmengine 0.10 (pinned in pyproject.toml): the environment report
    (``collect_env`` plus the whole config formatted by yapf, about 2.5 s per run) becomes one
    line, and the config is dumped as JSON instead of yapf-formatted Python (another 0.5-2 s).
    Training and evaluation are untouched.
    """

    def _log_env(self, env_cfg: dict) -> None:
        self.logger.info(f"proxy run {self.experiment_name}: seed {self.seed}, "
                         f"launcher {self.launcher}, work_dir {self.work_dir}")

    def dump_config(self) -> None:
        self.cfg.dump(osp.join(self.work_dir, "config.json"))

    def wrap_model(self, model_wrapper_cfg: dict | None, model: nn.Module) -> nn.Module:
        """mmengine's wrapping, except a distributed run on CPU (gloo): SyncBN layers become
        BN (SyncBN needs CUDA) and the model is wrapped by ``MMDistributedDataParallel``
        without device ids (mmengine passes ``LOCAL_RANK`` as a CUDA device id)."""
        import torch

        if not self.distributed or torch.cuda.is_available():
            return super().wrap_model(model_wrapper_cfg, model)
        from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm

        model = revert_sync_batchnorm(model.to("cpu"))
        return MMDistributedDataParallel(module=model, device_ids=None,
                                         broadcast_buffers=False,
                                         find_unused_parameters=self.cfg.get(
                                             "find_unused_parameters", False))
