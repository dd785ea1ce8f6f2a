"""Sub-class leaves at ingest (DESIGN.md §1.9): from a ``--objective gaussian`` checkpoint, or ``--split-classes``.

With a checkpoint that carries ``subclass_of`` (``hierqdrant train --objective gaussian``), each labelled
training image's sub-class is the network head's best sub-class **of its known class**
(``argmax_{s: class(s) = y} (W x + b)_s``); without one, ``--split-classes`` splits every class of the raw
features x-means style (:func:`hierqdrant.core.subclasses.split_classes`, no retraining). Sub-classes no
image falls in are dropped. The model is then fitted with one Gaussian per sub-class and the sub-classes
as the tree's leaves, each under its class's node (:meth:`HierarchyModel.fit` with ``subclass_of``);
with ``--tune`` the same sub-classes are found on the fit part of the validation split and the grid is
searched with them (:func:`hierqdrant.evaluation.tuning.tune`, ``splitter``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hierqdrant.core import diagnostics
from hierqdrant.core.classifiers import LinearClassifier
from hierqdrant.core.errors import InputError
from hierqdrant.core.model import HierarchyModel
from hierqdrant.core.subclasses import Splitter, SubclassSplit, compact, split_classes

__all__ = [
    "SubclassSource",
    "fit_subclasses",
    "subclass_checkpoint",
    "subclass_line",
    "subclass_source",
    "subclass_warnings",
]


def subclass_checkpoint(opts: Any, extractor: dict[str, Any]) -> str | None:
    """The checkpoint of the features' network when it carries sub-classes (else None)."""
    from hierqdrant.vision.gaussian_objective import read_subclasses

    for path in (opts.weights, extractor.get("weights_path"), extractor.get("weights"), opts.head):
        if isinstance(path, str) and Path(path).expanduser().is_file() and read_subclasses(path) is not None:
            return path
    return None


@dataclass(frozen=True)
class SubclassSource:
    """Where a source's sub-class leaves come from: ``split`` gives the sub-classes of labelled features
    (tuning calls it on its fit part only), ``where`` names it, ``head`` is the checkpoint's final layer
    (one output per sub-class; None for ``--split-classes``)."""

    split: Splitter
    where: str
    head: LinearClassifier | None = None


def subclass_source(table: Any, opts: Any) -> SubclassSource | None:
    """The sub-class leaves of ingest's source: a checkpoint that carries them, else ``--split-classes``,
    else None. ``opts`` is ingest's :class:`~hierqdrant.pipelines.ingest.IngestOptions`."""
    checkpoint = subclass_checkpoint(opts, table.extractor)
    if checkpoint is None and not getattr(opts, "split_classes", False):
        return None
    classes = np.arange(len(table.class_names))
    if checkpoint is None:
        if opts.query_classifier == "head":
            raise InputError(
                "--split-classes makes sub-classes the network's head does not score",
                "use --query-classifier tied or mahalanobis, or train with --objective gaussian",
            )
        return SubclassSource(lambda x, y: split_classes(x, y, classes), "--split-classes")
    from hierqdrant.vision.checkpoints import read_head
    from hierqdrant.vision.gaussian_objective import read_subclasses

    found = read_subclasses(checkpoint)
    assert found is not None
    names, subclass_of = found
    if names != list(table.class_names):
        raise InputError(
            f"{Path(checkpoint).name} was trained on other classes than the source's",
            "ingest the dataset the checkpoint was trained on",
        )
    head = read_head(checkpoint, int(table.features.shape[1])).classifier
    of = np.asarray(subclass_of)

    def within_class(x: np.ndarray, y: np.ndarray) -> SubclassSplit:
        # Each item's sub-class: the head's best output of its known class, argmax_{s: class(s) = y} (Wx + b)_s.
        mine = of[None, :] == np.asarray(y, dtype=np.int64)[:, None]
        return compact(np.where(mine, head.scores(x), -np.inf).argmax(axis=1), of)

    return SubclassSource(within_class, f"the sub-classes of {Path(checkpoint).name}", head)


def fit_subclasses(
    source: SubclassSource, table: Any, train_x: np.ndarray, train_y: np.ndarray, opts: Any, say: Callable[[str], None]
) -> tuple[HierarchyModel, SubclassSplit]:
    """The model with ``source``'s sub-class leaves on the labelled training features (``opts`` as above),
    and the split it was fitted with."""
    split = source.split(train_x, np.asarray(train_y, dtype=np.int64))
    head = None
    if opts.query_classifier == "head":
        assert source.head is not None  # subclass_source refuses head without a checkpoint
        if split.num_subclasses != source.head.num_classes:
            raise InputError("some of the head's sub-classes hold no training image", "use --query-classifier tied")
        head = source.head
    say(subclass_line(split.subclass_of, len(table.class_names), source.where))
    model = opts.fit_model(
        train_x,
        split.labels,
        class_names=table.class_names,
        extractor=table.extractor,
        head=head,
        subclass_of=split.subclass_of,
    )
    return model, split


def subclass_line(subclass_of: np.ndarray, classes: int, where: str) -> str:
    """ "sub-class leaves from <where>: K' sub-classes of K classes (n split)"."""
    counts = np.bincount(np.asarray(subclass_of), minlength=classes)
    kinds = f"{len(subclass_of)} sub-classes of {classes} classes"
    return f"sub-class leaves from {where}: {kinds} ({int((counts > 1).sum())} split)"


def subclass_warnings(
    model: HierarchyModel, split: SubclassSplit, train_x: np.ndarray, train_y: np.ndarray
) -> list[str]:
    """Whether the model keeps ``split`` (of the training features; its sub-class of each labelled image is
    the split's), and whether every sub-class has images enough for a Gaussian."""
    if split.num_subclasses != model.num_classes:
        return []  # a tuned model's split may differ from this one: tune warns about that
    leaves = model.database_leaves(train_x, np.asarray(train_y, dtype=np.int64), leaf_from="label")
    out = diagnostics.subclass_agreement(leaves, split.labels, split.subclass_of, model.dims, model.input_dims)
    return out + diagnostics.few_per_class(split.labels, model.num_classes, model.leaf_names)
