"""The instance-segmentation task ``ins`` (Mask R-CNN, five branches, mask mAP).

The task registry imports one module per task; ``ins`` shares everything with ``det``
(:mod:`alz_core.tasks.det`) and differs only in its model config, its mask branch and its metric.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .det import DetProxyTask, build_for, check_ann, rejection_problems_for, setup_for

TINY_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "ins" / \
    "tiny_mask_rcnn_synthetic.py"
PROXY_CONFIG = TINY_CONFIG.parent / "mask_rcnn_r50_fpn_coco_proxy.py"
RETRAIN_CONFIG = TINY_CONFIG.parent / "mask_rcnn_r50_fpn_coco_retrain.py"


def rejection_problems(metric: str, config: Any, data_root: Path | None,
                       size: int | None) -> dict[str, Any]:
    """Registry entry point of ``ins``: its five branches' rejection problems."""
    return rejection_problems_for("ins", metric, config, check_ann(data_root, "ins"), size,
                                  synthetic=data_root is None)


def setup(ref: Any, cfg_options: Any, data_root: str | None, metric: str,
          **kwargs: Any) -> tuple[Any, Any, Any, bool]:
    """Registry entry point of ``ins`` (see :func:`alz_core.tasks.det.setup_for`)."""
    return setup_for("ins", ref, cfg_options, data_root, metric, **kwargs)


def build(metric: str, config: Any, settings: Any) -> tuple[DetProxyTask, dict[str, Any]]:
    """Registry entry point of ``ins``: the Mask R-CNN proxy task and its problems."""
    return build_for("ins", metric, config, settings)
