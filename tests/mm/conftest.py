"""Shared fixtures of the OpenMMLab tests: a small synthetic VOC-layout dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("mmseg", reason="the OpenMMLab stack is not installed (scripts/install.sh)")


@pytest.fixture(scope="session")
def synthetic_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """96 synthetic 64x64 scenes in the VOC layout; 24 of them form search_eval."""
    from alz_core.tasks.seg import ensure_synthetic_voc

    return ensure_synthetic_voc(tmp_path_factory.mktemp("voc"), num_images=96, eval_count=24)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: on 2 cores shared with other test runs, two threads thrash (the
    tiny model's iteration took 1.5 s instead of 0.3 s when the machine was loaded); these
    tests check results, never speed."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _no_leftover_default_scope():
    """Each test starts with no mmengine default scope: a runner built by an earlier test (an
    mmdet, mmpose or mmseg config) leaves its scope current for the rest of the process, and
    registries then build from that scope's registry (ALZLoss exists in each of them)."""
    from mmengine.registry import DefaultScope

    DefaultScope._instance_dict.clear()
    yield
