"""The search split of a dataset: a seeded evaluation subset of the *training* split.

The paper never scores a candidate on the validation set: it holds out a seeded random subset of
the training images (1500 for PASCAL VOC + SBD, 5000 for COCO) as the search's evaluation set and
trains the proxy on the rest (for detection and instance segmentation, on a quarter of the rest).
This module writes that split for any dataset and reads it back; it knows nothing of OpenMMLab:
callers hand it the training samples their config's dataset class lists.

On disk, under the dataset root (one folder per split, so splits made for different configs or
seeds live side by side)::

    alz_split/<kind>-<id>/split.json       the manifest (written last: a split without it is
                                           incomplete and is never used)
    alz_split/<kind>-<id>/train_<k>.txt    seg: sample names of training source k (an mmseg
    alz_split/<kind>-<id>/eval_<k>.txt          ``ann_file``: one name per line, no suffix)
    alz_split/<kind>-<id>/train_0.json     det/ins/pose: a COCO annotation file holding the
    alz_split/<kind>-<id>/eval_0.json           split's images and their annotations

``kind`` is ``seg``, ``instances`` (det and ins share it) or ``keypoints``; ``id`` is a digest of
the sources, the seed and the sizes, so preparing the same split twice finds the first one.

Sizes (:func:`default_eval_count`): the paper's count (1500 seg, 5000 det/ins/pose) where the
training split has at least five times as many images, else 20 % of it (at least one image, and
at least one left to train on). Detection and instance segmentation train on a quarter of the
remaining images where at least 25,000 remain (COCO scale, the paper's 1/4), else on all of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidValue

SPLIT_ROOT = "alz_split"
MANIFEST = "split.json"
#: the paper's evaluation images per task (appendix A.1-A.4)
PAPER_EVAL_COUNT = {"seg": 1500, "det": 5000, "ins": 5000, "pose": 5000}
#: the evaluation share of a training split smaller than five times the paper's count
EVAL_FRACTION = 0.2
#: detection / instance segmentation: the paper trains on 1/4 of the remaining COCO images
DET_TRAIN_FRACTION = 0.25
DET_TRAIN_FRACTION_MIN_IMAGES = 25_000
#: which split a task uses (det and ins read the same COCO "instances" files)
SPLIT_KIND = {"seg": "seg", "det": "instances", "ins": "instances", "pose": "keypoints"}
VERSION = 1


class SplitError(InvalidValue):
    """A split that cannot be made or read (too few images, a missing or broken file)."""


@dataclass(frozen=True)
class SplitSource:
    """One training dataset of a config (a leaf of ``train_dataloader.dataset``), as the config
    names it: its annotation file (``None``: the dataset class lists a folder) and its image
    and label folders, relative to the data root."""

    ann_file: str | None
    img_prefix: str
    label_prefix: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"ann_file": self.ann_file, "img_prefix": self.img_prefix,
                "label_prefix": self.label_prefix}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SplitSource:
        return cls(data.get("ann_file"), str(data.get("img_prefix", "")),
                   data.get("label_prefix"))


@dataclass(frozen=True)
class SearchSplit:
    """A prepared split: where it is, how it was drawn, and its files per source."""

    directory: Path
    kind: str
    seed: int
    eval_count: int
    train_fraction: float
    sources: tuple[SplitSource, ...]
    train_files: tuple[Path, ...]
    eval_files: tuple[Path, ...]
    counts: Mapping[str, int] = field(default_factory=dict)  # pool / train / eval images
    created: float = 0.0

    @property
    def id(self) -> str:
        return self.directory.name

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION, "kind": self.kind, "seed": self.seed,
                "eval_count": self.eval_count, "train_fraction": self.train_fraction,
                "sources": [s.to_json() for s in self.sources],
                "train_files": [p.name for p in self.train_files],
                "eval_files": [p.name for p in self.eval_files],
                "counts": dict(self.counts), "created": self.created}

    @classmethod
    def from_json(cls, directory: Path, data: Mapping[str, Any]) -> SearchSplit:
        return cls(directory=directory, kind=str(data["kind"]), seed=int(data["seed"]),
                   eval_count=int(data["eval_count"]),
                   train_fraction=float(data.get("train_fraction", 1.0)),
                   sources=tuple(SplitSource.from_json(s) for s in data["sources"]),
                   train_files=tuple(directory / n for n in data["train_files"]),
                   eval_files=tuple(directory / n for n in data["eval_files"]),
                   counts=dict(data.get("counts") or {}),
                   created=float(data.get("created", 0.0)))

    def summary(self) -> dict[str, Any]:
        """What a search stores about its split (JSON)."""
        return {"directory": str(self.directory), "id": self.id, "kind": self.kind,
                "seed": self.seed, "counts": dict(self.counts)}

    def missing_files(self) -> list[Path]:
        return [p for p in (*self.train_files, *self.eval_files, self.directory / MANIFEST)
                if not p.is_file()]


def default_eval_count(task: str, train_images: int) -> int:
    """The evaluation images of a search split of ``train_images`` (see the module doc)."""
    paper = PAPER_EVAL_COUNT[task]
    count = paper if train_images >= 5 * paper else round(EVAL_FRACTION * train_images)
    return max(1, min(count, train_images - 1))


def default_train_fraction(task: str, remaining: int) -> float:
    """The share of the non-evaluation images the proxy trains on (see the module doc)."""
    if task in ("det", "ins") and remaining >= DET_TRAIN_FRACTION_MIN_IMAGES:
        return DET_TRAIN_FRACTION
    return 1.0


def _split_id(kind: str, sources: Sequence[SplitSource], seed: int, eval_count: int | None,
              train_fraction: float | None) -> str:
    key = json.dumps({"kind": kind, "sources": [s.to_json() for s in sources], "seed": seed,
                      "eval_count": eval_count, "train_fraction": train_fraction,
                      "version": VERSION}, sort_keys=True)
    return f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _choose(pool: Sequence[str], eval_count: int, train_fraction: float,
            seed: int) -> tuple[list[str], list[str]]:
    """(train, eval) names: ``eval_count`` of the sorted pool drawn with ``seed``, then
    ``train_fraction`` of the rest drawn with a second stream of the same seed."""
    names = sorted(set(pool))
    if len(names) < 2:
        raise SplitError(f"a search split needs at least 2 training images, found {len(names)}")
    if not 1 <= eval_count < len(names):
        raise SplitError(f"eval_count={eval_count} is invalid: expected 1 to {len(names) - 1} "
                         f"for {len(names)} training images")
    if not 0 < train_fraction <= 1:
        raise SplitError(f"train_fraction={train_fraction} is invalid: expected (0, 1]")
    rng = np.random.default_rng([seed, 0])
    chosen = set(rng.choice(len(names), size=eval_count, replace=False).tolist())
    evals = [n for i, n in enumerate(names) if i in chosen]
    rest = [n for i, n in enumerate(names) if i not in chosen]
    if train_fraction < 1:
        keep = max(1, round(train_fraction * len(rest)))
        picked = set(np.random.default_rng([seed, 1]).choice(len(rest), size=keep,
                                                             replace=False).tolist())
        rest = [n for i, n in enumerate(rest) if i in picked]
    return rest, evals


def _directory(root: Path, split_id: str) -> Path:
    # absolute: configs name the split's files as ``ann_file``, which datasets join to a
    # relative data root
    return Path(root).resolve() / SPLIT_ROOT / split_id


def write_name_split(root: str | Path, task: str, sources: Sequence[SplitSource],
                     names: Sequence[Sequence[str]], *, seed: int = 0,
                     eval_count: int | None = None) -> SearchSplit:
    """The seg split: ``names[k]`` are the sample names of source ``k`` (as an mmseg
    ``ann_file`` lists them). A name in several sources belongs to the first (VOC's finely
    annotated ``train.txt`` before SBD's ``aug.txt``, as the paper's train-aug). Writes the
    files and the manifest, or returns the split already written with these parameters."""
    if len(sources) != len(names) or not sources:
        raise SplitError("write_name_split needs one list of names per source")
    owner: dict[str, int] = {}
    for k, ns in enumerate(names):
        for n in ns:
            owner.setdefault(n, k)
    pool = sorted(owner)
    count = default_eval_count(task, len(pool)) if eval_count is None else int(eval_count)
    kind = SPLIT_KIND[task]
    directory = _directory(Path(root), _split_id(kind, sources, seed, count, 1.0))
    existing = load_split(directory)
    if existing is not None and not existing.missing_files():
        return existing
    train, evals = _choose(pool, count, 1.0, seed)
    directory.mkdir(parents=True, exist_ok=True)
    train_files, eval_files = [], []
    for k in range(len(sources)):
        for part, chosen, out in (("train", train, train_files), ("eval", evals, eval_files)):
            path = directory / f"{part}_{k}.txt"
            _atomic_write(path, "".join(f"{n}\n" for n in chosen if owner[n] == k).encode())
            out.append(path)
    split = SearchSplit(directory, kind, seed, count, 1.0, tuple(sources), tuple(train_files),
                        tuple(eval_files),
                        {"pool": len(pool), "train": len(train), "eval": len(evals)},
                        time.time())
    _atomic_write(directory / MANIFEST, json.dumps(split.to_json(), indent=1).encode())
    return split


def coco_subset(coco: Mapping[str, Any], image_ids: set[int]) -> dict[str, Any]:
    """A COCO annotation dict holding only ``image_ids`` and their annotations."""
    out = {k: v for k, v in coco.items() if k not in ("images", "annotations")}
    out["images"] = [im for im in coco["images"] if im["id"] in image_ids]
    out["annotations"] = [a for a in coco.get("annotations", []) if a["image_id"] in image_ids]
    return out


def write_coco_split(root: str | Path, task: str, source: SplitSource, coco: Mapping[str, Any],
                     *, seed: int = 0, eval_count: int | None = None,
                     train_fraction: float | None = None,
                     usable: set[int] | None = None) -> SearchSplit:
    """The det/ins/pose split of one COCO annotation file (``coco``, its parsed content).

    ``usable``: the image ids that may be drawn at all (e.g. pose keeps images with a person
    whose keypoints can be scored; default: images with at least one annotation)."""
    if usable is None:
        usable = {a["image_id"] for a in coco.get("annotations", [])}
    pool = sorted(str(im["id"]) for im in coco.get("images", []) if im["id"] in usable)
    count = default_eval_count(task, len(pool)) if eval_count is None else int(eval_count)
    fraction = default_train_fraction(task, len(pool) - count) if train_fraction is None \
        else float(train_fraction)
    kind = SPLIT_KIND[task]
    directory = _directory(Path(root), _split_id(kind, [source], seed, count, fraction))
    existing = load_split(directory)
    if existing is not None and not existing.missing_files():
        return existing
    train, evals = _choose(pool, count, fraction, seed)
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for part, chosen in (("train", train), ("eval", evals)):
        path = directory / f"{part}_0.json"
        _atomic_write(path, json.dumps(coco_subset(coco, {int(i) for i in chosen})).encode())
        files.append(path)
    split = SearchSplit(directory, kind, seed, count, fraction, (source,), (files[0],),
                        (files[1],), {"pool": len(pool), "train": len(train),
                                      "eval": len(evals)}, time.time())
    _atomic_write(directory / MANIFEST, json.dumps(split.to_json(), indent=1).encode())
    return split


def load_split(directory: str | Path) -> SearchSplit | None:
    """The split whose manifest is in ``directory``, or ``None`` if there is none."""
    directory = Path(directory).resolve()
    path = directory / MANIFEST
    if not path.is_file():
        return None
    try:
        return SearchSplit.from_json(directory, json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise SplitError(f"search split manifest {path} is unreadable: {exc}") from None


def require_split(split_dir: str | Path | None, root: Any, task: str) -> SearchSplit:
    """The search split stored with a search, as this node sees it; ``FileNotFoundError``
    (naming the command that writes it) if it is missing or incomplete here."""
    split = load_split(split_dir) if split_dir else None
    if split is None:
        raise FileNotFoundError(f"the search split {split_dir} is missing on this node (run "
                                f"`alz data prepare {root} --task {task}`)")
    missing = split.missing_files()
    if missing:
        raise FileNotFoundError(f"the search split {split.directory} is incomplete on this "
                                f"node: {missing[0]} is missing")
    return split


def split_for(root: str | Path, task: str, sources: Sequence[SplitSource],
              split_dir: str | Path | None = None) -> SearchSplit:
    """The split at ``split_dir`` (a search's), else the newest split under ``root`` made for
    ``sources``; ``FileNotFoundError`` naming the command that writes one."""
    if split_dir is not None:
        return require_split(split_dir, root, task)
    found = find_splits(root, task, sources)
    if not found:
        raise FileNotFoundError(f"{root} has no search split for this config (run `alz data "
                                f"prepare {root} --task {task}`)")
    return found[0]


def find_splits(root: str | Path, task: str,
                sources: Sequence[SplitSource] | None = None) -> list[SearchSplit]:
    """The complete splits under ``root`` made for ``sources`` (``None``: any), the newest
    first."""
    base = Path(root).resolve() / SPLIT_ROOT
    kind = SPLIT_KIND[task]
    found = []
    if base.is_dir():
        for d in sorted(base.glob(f"{kind}-*")):
            split = load_split(d)
            if split is not None and (sources is None or split.sources == tuple(sources)) \
                    and not split.missing_files():
                found.append(split)
    return sorted(found, key=lambda s: -s.created)


__all__ = ["DET_TRAIN_FRACTION", "EVAL_FRACTION", "MANIFEST", "PAPER_EVAL_COUNT", "SPLIT_ROOT",
           "SearchSplit", "SplitError", "SplitSource", "coco_subset", "default_eval_count",
           "default_train_fraction", "find_splits", "load_split", "require_split", "split_for",
           "write_coco_split", "write_name_split"]
