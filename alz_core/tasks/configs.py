"""Which mmengine config a training uses, and the generic steps that make any config runnable.

Every training of the project (a search's proxy runs, a re-training, a tuning study, a baseline,
an ablation) names its config as one of the task's built-in configs (``tiny``: the CPU config on
synthetic data; ``proxy``: the paper's proxy task; ``retrain``: the paper's re-training) or as a
path to any mmengine config file, such as one taken unchanged from mmsegmentation's,
mmdetection's or mmpose's own ``configs/``. Overrides use mmengine's ``--cfg-options`` syntax
(``key.sub=value``, ``a=1,2`` and ``a=[1,2]`` lists, ``(1,2)`` tuples, ``True``/``None``).

What the project then changes in a config, per task (see each task module's
``adapt_config``), is printed by ``alz search create`` and stored with the search: the losses of
the searched branches become ALZ losses, the evaluator becomes the task's, the dataset paths
follow ``--data-root``, and a search's proxy runs train on the search split's training part and
are evaluated on its evaluation part (:mod:`alz_core.data.splits`).

A search stores the config (its name, or its absolute path), the overrides and a digest of the
config as loaded (:func:`config_digest`: the file and every ``_base_`` file it inherits); a
worker whose copy is missing or differs refuses the search for itself.

OpenMMLab (mmengine) is imported inside the functions only.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidValue, one_line

#: the built-in configs of every task, by name, and the attribute of the task module holding each
CONFIG_NAMES: dict[str, str] = {"tiny": "TINY_CONFIG", "proxy": "PROXY_CONFIG",
                                "retrain": "RETRAIN_CONFIG"}
CONFIG_SUFFIXES = (".py", ".json", ".yaml", ".yml")
#: dataset wrappers whose training samples come from inner datasets
_WRAPPERS_MANY = ("ConcatDataset",)
_WRAPPERS_ONE = ("RepeatDataset", "ClassBalancedDataset", "MultiImageMixDataset")


class ConfigProblem(InvalidValue):
    """A config that cannot be used: the message names the file, the key and what was
    expected."""


class OverrideProblem(ConfigProblem):
    """An override stored with a search that no node may apply (:func:`check_overrides`): a
    fault of the search itself, the same on every node, unlike a config file that is missing
    or broken on one node."""


@dataclass(frozen=True)
class ConfigRef:
    """A config as a training names it: a built-in ``name`` (``tiny``/``proxy``/``retrain``;
    resolved on each node) or ``None`` for a user's file, and the file's absolute path here."""

    name: str | None
    path: Path

    @property
    def label(self) -> str:
        return self.name if self.name is not None else str(self.path)

    @property
    def builtin(self) -> bool:
        return self.name is not None


def builtin_config(task_module: str, name: str) -> Path:
    """The path of built-in config ``name`` of the task whose module is ``task_module``."""
    module = importlib.import_module(task_module)
    attr = CONFIG_NAMES[name]
    path = getattr(module, attr, None)
    if path is None:
        raise ConfigProblem(f"config {name!r} is invalid: this task has no {name} config")
    return Path(path)


def resolve_config(task_module: str, config: str | Path | None, *,
                   default: str = "tiny") -> ConfigRef:
    """``config`` (a built-in name or a path; ``None``: ``default``) as a :class:`ConfigRef`.
    Raises :class:`ConfigProblem` for a path that is not a config file."""
    text = default if config is None else str(config).strip()
    if text in CONFIG_NAMES:
        return ConfigRef(text, builtin_config(task_module, text).resolve())
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigProblem(f"--config {text!r} is invalid: no such file (expected an mmengine "
                            f"config file or one of {', '.join(CONFIG_NAMES)})")
    if path.suffix not in CONFIG_SUFFIXES:
        raise ConfigProblem(f"--config {text!r} is invalid: expected an mmengine config file "
                            f"({', '.join(CONFIG_SUFFIXES)})")
    return ConfigRef(None, path.resolve())


def parse_cfg_options(items: Sequence[str] | None) -> dict[str, Any]:
    """``["a.b=1", "c=[1,2]"]`` -> ``{"a.b": 1, "c": [1, 2]}``, with mmengine's ``DictAction``
    value syntax. Raises :class:`ConfigProblem` for an item that is not ``KEY=VALUE``."""
    from mmengine.config import DictAction

    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigProblem(f"--cfg-options {item!r} is invalid: expected KEY=VALUE in "
                                f"mmengine's syntax, e.g. train_cfg.max_iters=100")
        try:
            out[key] = DictAction._parse_iterable(value)
        except Exception as exc:  # noqa: BLE001 - mmengine's parser raises plain errors
            raise ConfigProblem(f"--cfg-options {item!r} is invalid: {one_line(exc)}") from None
    return out


#: the top-level keys ``--cfg-options`` may set: the model, data, schedule and optimisation.
#: Not the keys that import or run code (``custom_imports``, ``custom_hooks``, hooks and
#: visualisers, ``_base_``) nor where a run reads or writes (``work_dir``, ``load_from``).
OVERRIDABLE = frozenset({
    "model", "train_dataloader", "val_dataloader", "test_dataloader", "train_cfg", "val_cfg",
    "test_cfg", "optim_wrapper", "param_scheduler", "val_evaluator", "test_evaluator",
    "auto_scale_lr", "randomness", "find_unused_parameters", "sync_bn", "data_root",
    "crop_size", "num_classes"})


def check_overrides(options: Mapping[str, Any] | None) -> None:
    """Refuse overrides that could run code on the workers (they are stored with a search and
    merged on every node): a key outside :data:`OVERRIDABLE`, ``_base_`` or ``custom_imports``
    anywhere in a key, and a dotted ``type`` (mmengine imports a dotted type string, e.g.
    ``os.system``, as any callable). One-line :class:`OverrideProblem`."""
    for key, value in (options or {}).items():
        parts = str(key).split(".")
        if parts[0] not in OVERRIDABLE:
            raise OverrideProblem(f"--cfg-options {key}: {parts[0]!r} cannot be overridden "
                                f"(allowed: {', '.join(sorted(OVERRIDABLE))})")
        if any(p in ("_base_", "custom_imports", "custom_hooks") for p in parts):
            raise OverrideProblem(f"--cfg-options {key}: _base_, custom_imports and custom_hooks "
                                f"cannot be set by an override")
        if any(p in ("init_cfg", "checkpoint", "pretrained") for p in parts) and \
                value is not None:
            raise OverrideProblem(f"--cfg-options {key}: weights to load (a checkpoint is "
                                f"unpickled) can only be switched off here ({key}=None); "
                                f"name them in the config file")
        for path, v in _leaves(parts, value):
            if path[-1] == "type" and isinstance(v, str) and "." in v:
                raise OverrideProblem(f"--cfg-options {'.'.join(path)}={v!r}: a dotted type is "
                                    f"imported as any callable; name a registered type "
                                    f"without dots")


def _leaves(path: list[str], value: Any) -> Iterator[tuple[list[str], Any]]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _leaves([*path, str(k)], v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _leaves(path, v)
    else:
        yield path, value


def read_config(path: str | Path) -> Any:
    """``Config.fromfile(path)``, with any failure as one :class:`ConfigProblem` line naming
    the file (a syntax error, a missing ``_base_``, an import of ``custom_imports``)."""
    from mmengine.config import Config

    try:
        return Config.fromfile(str(path))
    except Exception as exc:  # noqa: BLE001 - a user's file may fail in any way
        raise ConfigProblem(f"config {path} cannot be loaded: {type(exc).__name__}: "
                            f"{one_line(exc)}") from None


def merge_options(cfg: Any, options: Mapping[str, Any] | None, *, source: str) -> Any:
    """Merge ``options`` into ``cfg`` one key at a time, naming the key that fails."""
    for key, value in (options or {}).items():
        try:
            cfg.merge_from_dict({key: copy.deepcopy(value)})
        except Exception as exc:  # noqa: BLE001 - mmengine raises plain errors here
            raise ConfigProblem(f"config {source}: --cfg-options {key}={value!r} cannot be "
                                f"applied: {one_line(exc)}") from None
    return cfg


def load_config(path: str | Path, options: Mapping[str, Any] | None = None) -> Any:
    """The config at ``path`` with ``options`` merged (one-line :class:`ConfigProblem`s);
    ``options`` are checked by :func:`check_overrides` first."""
    check_overrides(options)
    return merge_options(read_config(path), options, source=str(path))


def config_digest(path: str | Path) -> str:
    """The SHA-256 of the config at ``path`` as loaded (before overrides): it covers the file
    and every ``_base_`` file it inherits, so a change in any of them changes it."""
    cfg = read_config(path)
    text = json.dumps(cfg.to_dict(), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def ensure_custom_import(cfg: Any, module: str = "alz_core.mm") -> bool:
    """Add ``module`` to ``cfg.custom_imports`` (the ALZ losses and metrics register there);
    ``True`` if it was missing."""
    ci = cfg.get("custom_imports")
    if ci is None:
        cfg.custom_imports = dict(imports=[module], allow_failed_imports=False)
        return True
    imports = ci.get("imports")
    imports = [imports] if isinstance(imports, str) else list(imports or [])
    if module in imports:
        return False
    ci["imports"] = imports + [module]
    return True


# --- datasets inside a config -------------------------------------------------------------------
def dataset_leaves(dataset: Any) -> list[Any]:
    """The leaf dataset dicts of a dataset config (inside ``ConcatDataset``, ``RepeatDataset``,
    ...), in order; the returned dicts are the config's own (edit them in place)."""
    if dataset is None:
        return []
    kind = dataset.get("type")
    if kind in _WRAPPERS_MANY:
        return [leaf for d in dataset.get("datasets", []) for leaf in dataset_leaves(d)]
    if kind in _WRAPPERS_ONE:
        return dataset_leaves(dataset.get("dataset"))
    return [dataset]


def train_leaves(cfg: Any) -> list[Any]:
    loader = cfg.get("train_dataloader")
    leaves = dataset_leaves(loader.get("dataset") if loader else None)
    if not leaves:
        raise ConfigProblem(f"config {cfg.filename}: train_dataloader.dataset is missing: "
                            f"expected a dataset to train on")
    return leaves


def val_leaves(cfg: Any) -> list[Any]:
    loader = cfg.get("val_dataloader")
    return dataset_leaves(loader.get("dataset") if loader else None)


def val_pipeline(cfg: Any) -> list[Any]:
    """The pipeline of the config's validation dataset (the training one's if it has none)."""
    for leaf in val_leaves(cfg) + train_leaves(cfg):
        if leaf.get("pipeline") is not None:
            return copy.deepcopy(list(leaf["pipeline"]))
    return []


def set_val_dataset(cfg: Any, leaves: Sequence[Mapping[str, Any]]) -> None:
    """Make ``leaves`` the validation (and test) dataset: one leaf as it is, several as a
    ``ConcatDataset``."""
    dataset = dict(leaves[0]) if len(leaves) == 1 else \
        dict(type="ConcatDataset", datasets=[dict(x) for x in leaves])
    loader = cfg.get("val_dataloader")
    if loader is None:
        cfg.val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                                  sampler=dict(type="DefaultSampler", shuffle=False),
                                  dataset=dataset)
        cfg.val_cfg = cfg.get("val_cfg") or dict(type="ValLoop")
    else:
        loader["dataset"] = dataset
    cfg.test_dataloader = copy.deepcopy(cfg.val_dataloader)


def config_dicts(obj: Any) -> Iterator[dict]:
    """Every dict nested in ``obj`` (dicts and lists), depth first."""
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from config_dicts(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from config_dicts(v)


def data_roots(cfg: Any) -> list[str]:
    """Every ``data_root`` of the training dataset's leaves, in order, without repeats."""
    roots: list[str] = []
    for leaf in train_leaves(cfg):
        root = leaf.get("data_root")
        if root and root not in roots:
            roots.append(str(root))
    return roots


def describe_loss(loss: Any) -> str:
    """``CrossEntropyLoss (loss_weight 0.4)``, or a list of such."""
    if isinstance(loss, (list, tuple)):
        return "[" + ", ".join(describe_loss(x) for x in loss) + "]"
    if not hasattr(loss, "get"):
        return repr(loss)
    return f"{loss.get('type')} (loss_weight {float(loss.get('loss_weight', 1.0)):g})"


def get_path(cfg: Any, dotted: str) -> Any:
    node = cfg
    for key in dotted.split("."):
        node = node.get(key) if hasattr(node, "get") else None
        if node is None:
            return None
    return node




class DatasetProblem(InvalidValue):
    """A dataset the config names that cannot be read as the task needs (missing files, labels
    that are not class indices, no training images)."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a config's training dataset holds, as the task's dataset class reads it."""

    dataset_type: str
    root: str | None
    classes: tuple[str, ...]
    ignore_index: int | None
    train_images: int
    sources: tuple[Any, ...]  # alz_core.data.splits.SplitSource, one per training leaf
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"dataset_type": self.dataset_type, "root": self.root,
                "num_classes": len(self.classes), "classes": list(self.classes),
                "ignore_index": self.ignore_index, "train_images": self.train_images,
                "sources": [s.to_json() for s in self.sources], "notes": list(self.notes)}


__all__ = ["CONFIG_NAMES", "ConfigProblem", "ConfigRef", "DatasetInfo", "DatasetProblem",
           "builtin_config", "config_digest", "config_dicts", "data_roots", "dataset_leaves",
           "describe_loss", "ensure_custom_import", "get_path", "load_config", "merge_options",
           "parse_cfg_options", "read_config", "check_overrides", "OVERRIDABLE", "OverrideProblem",
           "resolve_config", "set_val_dataset",
           "train_leaves", "val_leaves", "val_pipeline"]
