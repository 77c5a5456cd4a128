"""The semantic-segmentation proxy task: train an mmseg model with a candidate loss.

Any mmsegmentation config works, the project's (``tiny``, ``proxy``, ``retrain``) or one taken
unchanged from mmseg's ``configs/``: :func:`adapt_config` replaces the losses of the decode head
and of the auxiliary head(s) by ``ALZLoss`` (each keeping its ``loss_weight``, e.g. 0.4 for
DeepLabV3+'s auxiliary FCN head: the searched loss trains both heads, as the library's loss did),
makes the evaluator ``ALZSegMetric`` (the six metrics), sets the heads' ``num_classes`` and
``ignore_index`` to the dataset's, and points the dataloaders at the data root and, for a search's
proxy runs, at the search split (:mod:`alz_core.data.splits`).

Datasets: whatever the config's dataset class reads (VOC, Cityscapes, a custom
``BaseSegDataset`` with its own classes...). The project's own configs name VOC; given a data
root in another known layout (Cityscapes: ``leftImg8bit/``, ``gtFine/*_labelTrainIds.png``) their
dataset section follows it (:func:`apply_layout`).

OpenMMLab is imported inside the functions that need it only, so this module (and the search that
holds a task object) can be imported without it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..data.splits import (
    SearchSplit,
    split_for,
)
from ..data.voc import synthetic_search_split, write_voc_dataset
from ..graph.expr import BranchKind
from ..graph.loss_graph import LossGraph
from ..metrics.segmentation import IGNORE_INDEX
from .base import (
    ProxyResult,
    check_run_args,
    finish_run_config,
    load_run_config,
    train_and_validate,
)
from .configs import (
    DatasetInfo,
    DatasetProblem,
)
from .seg_config import (
    BOUNDARY_METRICS,
    adapt_config,
    rejection_side,
    rejection_target,
    set_classes,
    set_loss_formula,
    use_search_split,
)
from .seg_data import (
    build_leaves,
    config_sources,
    find_split,
    inspect_dataset,
    prepare_split,
    rejection_labels,
)

SEG_METRIC_NAMES: tuple[str, ...] = ("miou", "fwiou", "gacc", "macc", "biou", "bf1")

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "seg"
TINY_CONFIG = CONFIG_DIR / "tiny_deeplabv3plus_synthetic.py"
PROXY_CONFIG = CONFIG_DIR / "deeplabv3plus_r50_voc_proxy.py"
RETRAIN_CONFIG = CONFIG_DIR / "deeplabv3plus_r101_voc_retrain.py"
#: built-in configs that train on the synthetic dataset when no data root is given
SYNTHETIC_CONFIGS = frozenset({"tiny"})

#: The default tiny dataset: 32x32 scenes, 1840 to train on (240 of them held out by the
#: search split: 1600 train each proxy run) and 240 more for the validation split of
#: re-trainings (docs/proxy.md: why these sizes).
SYNTHETIC_IMAGES = 1840
SYNTHETIC_EVAL = 240
SYNTHETIC_VAL = 240
SYNTHETIC_SIZE = 32


def ensure_synthetic_voc(root: str | Path, num_images: int = SYNTHETIC_IMAGES,
                         eval_count: int = SYNTHETIC_EVAL, size: int = SYNTHETIC_SIZE,
                         seed: int = 0, val_count: int | None = SYNTHETIC_VAL) -> Path:
    """Create (once) the synthetic VOC-layout dataset the tiny config trains on, with its
    search split; return root."""
    return write_voc_dataset(root, num_images, size=size, eval_count=eval_count, seed=seed,
                             val_count=val_count)


# --- the proxy task ------------------------------------------------------------------------------
class SegProxyTask:
    """ProxyTask ``seg``: one dense branch, the six segmentation metrics.

    ``config_path``: an mmengine config (default: the tiny CPU config), adapted by
    :func:`adapt_config`; ``builtin``: it is one of the project's configs (default: it lives in
    ``alz_core/configs/seg``); ``data_root`` overrides the config's dataset root; ``split``: the
    search split a proxy run trains and evaluates on (``None``: the config's own train and val
    splits, as a re-training uses); ``num_classes`` / ``ignore_index``: the dataset's;
    ``max_iters`` overrides an iteration-based schedule (the poly schedule is stretched to
    match); ``cfg_options`` are merged into the config first, ``hooks`` (custom hook dicts)
    added last. ``boundary_targets``: for BIoU/BF1 the target ``y`` is the labels' class
    boundaries (the paper, A.1) instead of the full one-hot. ``torch_threads`` sets torch's intra-op
    threads for the run (restored after): on a 2-core CPU shared with other work, 2 threads
    were measured 6x slower per iteration than 1 (thread thrashing); ``None`` leaves torch's
    setting alone.
    """

    name = "seg"
    branches: Mapping[str, BranchKind] = {"seg": BranchKind.DENSE}
    metrics: tuple[str, ...] = SEG_METRIC_NAMES

    def __init__(self, config_path: str | Path = TINY_CONFIG, data_root: str | Path | None = None,
                 max_iters: int | None = None, cfg_options: Mapping[str, Any] | None = None,
                 boundary_targets: bool = True, log_level: str = "WARNING",
                 torch_threads: int | None = None, *, split: SearchSplit | None = None,
                 builtin: bool | None = None, num_classes: int | None = None,
                 ignore_index: int | None = None,
                 hooks: Sequence[Mapping[str, Any]] = ()) -> None:
        self.config_path = Path(config_path)
        if not self.config_path.is_file():
            raise FileNotFoundError(f"config_path={str(config_path)!r} is not a file")
        if max_iters is not None and max_iters < 1:
            raise ValueError(f"max_iters={max_iters!r} must be a positive integer")
        self.data_root = None if data_root is None else str(data_root)
        self.max_iters = max_iters
        self.cfg_options = dict(cfg_options or {})
        self.boundary_targets = boundary_targets
        self.log_level = log_level
        if torch_threads is not None and torch_threads < 1:
            raise ValueError(f"torch_threads={torch_threads!r} must be a positive integer")
        self.torch_threads = torch_threads
        self.split = split
        self.builtin = (self.config_path.resolve().parent == CONFIG_DIR) if builtin is None \
            else builtin
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.hooks = [dict(h) for h in hooks]
        #: a last change to every run's config (``cfg -> None``; see :func:`finish_run_config`)
        self.config_edit: Callable[[Any], None] | None = None

    def target_kind(self, metric: str) -> str:
        return "boundary" if self.boundary_targets and metric in BOUNDARY_METRICS else "onehot"

    def build_config(self, graph: LossGraph, metric: str, work_dir: Path, seed: int = 0) -> Any:
        """The mmengine ``Config`` of one proxy run (exposed for inspection and tests)."""
        cfg = load_run_config(self.config_path, work_dir, "seg", seed, self.log_level,
                              self.cfg_options)
        target = self.target_kind(metric)
        adapt_config(cfg, target=target, data_root=self.data_root, builtin=self.builtin,
                     split=self.split, num_classes=self.num_classes,
                     ignore_index=self.ignore_index)
        set_loss_formula(cfg.model, graph.text, target)
        return finish_run_config(cfg, max_iters=self.max_iters, hooks=self.hooks,
                                 edit=self.config_edit)

    def run(self, graphs: Mapping[str, LossGraph], metric: str, work_dir: Path,
            seed: int = 0) -> ProxyResult:
        """Train with ``graphs['seg']``, evaluate on the eval split, return the result.

        A non-finite training loss (or weights) ends the run early: ``diverged=True``, fitness
        ``None``, no metrics. Other errors (bad config, missing data) propagate.
        """
        metric, work_dir = check_run_args(self, graphs, metric, work_dir)
        graph = graphs["seg"]
        cfg = self.build_config(graph, metric, work_dir, seed)
        run = train_and_validate(cfg, self.torch_threads)
        metrics: dict[str, float] = {}
        if not run.diverged:
            metrics = self.val_metrics(run.metrics or {}, strict=True)
        return run.result(metrics, metric, {
            "formula": graph.text, "target": self.target_kind(metric),
            "config": str(self.config_path), "work_dir": str(work_dir)})

    def val_metrics(self, raw: Mapping[str, float], *, strict: bool = False
                    ) -> dict[str, float]:
        """The task's metrics out of a validation's raw ones (``ALZSegMetric`` already names
        them ``miou``, ...). ``strict``: every one must be there (else ``RuntimeError``: the
        config's evaluator is not ALZSegMetric); otherwise the ones present."""
        missing = [k for k in SEG_METRIC_NAMES if k not in raw]
        if missing and strict:
            raise RuntimeError(f"evaluation reported {sorted(raw)}, missing {missing}: the "
                               f"config's val_evaluator must be ALZSegMetric")
        return {k: float(raw[k]) for k in SEG_METRIC_NAMES if k in raw}


# --- the task registry's entry points ----------------------------------------------------------
def rejection_problems(metric: str, config: Any, data_root: Path | None,
                       size: int | None) -> dict[str, Any]:
    """``alz check``'s problems: the built-in synthetic scene stream without a data root, else
    the VOC-layout data root's search split (see :func:`alz_core.tasks.registry.
    seg_rejection_problem`)."""
    from .registry import seg_rejection_problem

    return {"seg": seg_rejection_problem(metric, config, data_root, size=size or 64)}


def synthetic_root(data_dir: str | Path) -> Path:
    """The synthetic dataset under ``data_dir`` (written once; several workers may start at
    once: one of them writes it, the others wait)."""
    import fcntl

    target = Path(data_dir).resolve() / "synthetic_voc"
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".synthetic_voc.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        return ensure_synthetic_voc(target)


def build(metric: str, config: Any, settings: Any) -> tuple[SegProxyTask, dict[str, Any]]:
    """The seg proxy task of a search and its rejection problem (see
    :class:`alz_core.tasks.registry.TaskSettings`).

    Without a data root, the synthetic dataset under ``settings.data_dir`` (and its search
    split). With one, the split is ``settings.split_dir`` (made by ``alz data prepare`` or
    ``alz search create``); it must exist on this node. The rejection samples are B label maps
    of the split's training part, read through the config's dataset class.
    """
    from .configs import load_config

    path = Path(settings.config) if settings.config else TINY_CONFIG
    builtin = settings.builtin if settings.builtin is not None else \
        path.resolve().parent == CONFIG_DIR
    root = settings.data_root
    if root is None:
        root = synthetic_root(settings.data_dir)
    elif not Path(root).is_dir():
        raise FileNotFoundError(f"data_root={str(root)!r} is not a directory")
    cfg = load_config(path, settings.cfg_options)
    adapt_config(cfg, data_root=root, builtin=builtin)
    # the classes and the ignore index are the dataset class's
    _, ds = build_leaves(cfg)[0]
    num_classes = len(ds.metainfo["classes"])
    ignore = int(getattr(ds, "ignore_index", IGNORE_INDEX))
    split = None
    if settings.search_split:
        split = synthetic_search_split(root) if settings.data_root is None else \
            split_for(root, "seg", config_sources(cfg), settings.split_dir)
    task = SegProxyTask(path, data_root=root, max_iters=settings.max_iters,
                        cfg_options=settings.cfg_options, torch_threads=settings.torch_threads,
                        split=split, builtin=builtin, num_classes=num_classes,
                        ignore_index=ignore, hooks=settings.hooks)
    if split is None:
        return task, {}
    # the rejection samples: B label maps of the split's training part
    import torch

    from ..rejection.dense import DenseRejectionProblem

    info_cfg = copy.deepcopy(cfg)
    use_search_split(info_cfg, split)
    labels = rejection_labels(info_cfg, config.num_samples, config.seed,
                              settings.rejection_size or rejection_side(cfg))
    problem = DenseRejectionProblem(torch.from_numpy(labels).long(), num_classes, metric, config,
                                    ignore_index=ignore, target=rejection_target(metric, config))
    return task, {"seg": problem}


def setup(ref: Any, cfg_options: Mapping[str, Any], data_root: str | None, metric: str, *,
          prepare: bool = True, split_seed: int = 0, eval_count: int | None = None,
          ) -> tuple[list[str], DatasetInfo | None, SearchSplit | None, bool]:
    """What a search on this config needs, checked before anything is stored:
    ``(changes, dataset, split, split_created)``. The built-in tiny config without a data root
    trains on the synthetic scenes each worker writes (no dataset to check here). Otherwise
    the dataset is read through the config's dataset class, and its search split found or, with
    ``prepare``, written (else :class:`DatasetProblem` naming the command that writes it)."""
    from .configs import data_roots, load_config

    cfg = load_config(ref.path, cfg_options)
    target = "boundary" if metric in BOUNDARY_METRICS else "onehot"
    if data_root is None and ref.name in SYNTHETIC_CONFIGS:
        return adapt_config(cfg, target=target), None, None, False
    if data_root is None:
        roots = data_roots(cfg)
        if not roots:
            raise DatasetProblem(f"config {ref.label}: train_dataloader.dataset has no "
                                 f"data_root: pass --data-root")
        data_root = str(Path(roots[0]).expanduser().resolve())
    if not Path(data_root).is_dir():
        raise DatasetProblem(f"dataset root {data_root} is not a directory (pass --data-root, "
                             f"or fix train_dataloader.dataset.data_root of {ref.label})")
    changes = adapt_config(cfg, target=target, data_root=data_root, builtin=ref.builtin)
    info, names = inspect_dataset(cfg)
    changes += set_classes(cfg, len(info.classes), info.ignore_index or IGNORE_INDEX)
    split, created = find_split(data_root, info), False
    if split is None:
        if not prepare:
            raise DatasetProblem(f"{data_root} has no search split for this config: run "
                                 f"`alz data prepare {data_root} --task seg"
                                 + ("" if ref.name == "tiny" else f" --config {ref.label}")
                                 + "`")
        try:
            split = prepare_split(data_root, info, names, seed=split_seed,
                                  eval_count=eval_count)
        except PermissionError:
            raise DatasetProblem(f"{data_root} has no search split and is not writable here: "
                                 f"run `alz data prepare {data_root} --task seg` as a user who "
                                 f"can write it") from None
        created = True
    changes += use_search_split(cfg, split)
    rejection_labels(cfg, min(5, split.counts.get("train", 5)), 0)  # the samples load
    return changes, info, split, created
