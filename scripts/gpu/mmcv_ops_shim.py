"""``mmcv.ops`` for an mmcv built without its compiled operators (``MMCV_WITH_OPS=0``).

Put in place of ``mmcv/ops/__init__.py`` by ``scripts/gpu_check.sh`` on a machine where
building mmcv's CUDA/C++ operators is not worth its minutes. mmsegmentation imports
``point_sample`` (pure PyTorch: ``grid_sample``) and ``sigmoid_focal_loss`` at import time;
the segmentation models the check trains (DeepLabV3+) need no compiled operator. Any other
name raises ``ModuleNotFoundError``, the error mmseg's optional imports expect, and the focal
loss says what is missing if it is ever called.
"""

from .point_sample import point_sample  # noqa: F401 - pure PyTorch


def sigmoid_focal_loss(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201
    raise ModuleNotFoundError("mmcv.ops.sigmoid_focal_loss needs mmcv's compiled operators "
                              "(this mmcv was built with MMCV_WITH_OPS=0)")


def __getattr__(name: str):  # noqa: ANN202
    raise ModuleNotFoundError(f"mmcv.ops.{name} needs mmcv's compiled operators (this mmcv was "
                              f"built with MMCV_WITH_OPS=0)")
