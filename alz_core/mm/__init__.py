"""OpenMMLab plug-ins. Importing this package registers them in mmsegmentation's registries.

* ``ALZLoss`` (``mmseg.registry.MODELS``): a loss graph given by formula text as a decode-head
  loss, e.g. ``loss_decode=dict(type='ALZLoss', formula='-y*log(yhat)')``.
* ``ALZSegMetric`` (``mmseg.registry.METRICS``): the six segmentation metrics in [0, 1].
* ``ALZWorkerAbortHook`` and ``ALZTrainingReportHook`` (mmengine's ``HOOKS``): a run's abort
  check and progress callback, found by a token (:mod:`alz_core.mm.hooks`).

Configs load it with ``custom_imports=dict(imports=['alz_core.mm'],
allow_failed_imports=False)``. This is the only part of ``alz_core`` that imports OpenMMLab.
"""

from __future__ import annotations

import importlib.util

from mmseg.registry import METRICS, MODELS

from .hooks import (
    RUN_CALLBACKS,
    RUN_CHECKS,
    ALZTrainingReportHook,
    ALZWorkerAbortHook,
    ProxyDiverged,
    ProxyRecorderHook,
)
from .loss import ALZLoss, TargetKind, one_hot_labels
from .metric import ALZSegMetric
from .runner import ProxyRunner

# force=True: re-importing (e.g. a reloaded module in a notebook) must not fail on the name
MODELS.register_module(name="ALZLoss", module=ALZLoss, force=True)
METRICS.register_module(name="ALZSegMetric", module=ALZSegMetric, force=True)

# mmdetection's ALZClsLoss/ALZBoxLoss/ALZMaskLoss/ALZLoss (alz_core.mm.det), only when mmdet is
# installed: mmseg-only use is unaffected
if importlib.util.find_spec("mmdet") is not None:
    from . import det as _det

    _det.register()

# mmpose is optional: its plug-in (ALZLoss for heatmap heads, alz_core.mm.pose) registers only
# where mmpose is installed, so an mmseg-only environment keeps working
if importlib.util.find_spec("mmpose") is not None:
    from . import pose  # noqa: F401

__all__ = ["RUN_CALLBACKS", "RUN_CHECKS", "ALZLoss", "ALZSegMetric", "ALZTrainingReportHook",
           "ALZWorkerAbortHook", "ProxyDiverged", "ProxyRecorderHook", "ProxyRunner",
           "TargetKind", "one_hot_labels"]
