"""Sub-class leaves at ingest (DESIGN.md §1.9): from a ``--objective gaussian`` checkpoint, or ``--split-classes``.

With a checkpoint that carries ``subclass_of`` (``hierqdrant train --objective gaussian``), each labelled
training image's sub-class is the network head's best sub-class **of its known class**
(``argmax_{s: class(s) = y} (W x + b)_s``); without one, ``--split-classes`` splits every class of the raw
features x-means style (:func:`hierqdrant.core.subclasses.split_classes`, no retraining). Sub-classes no
image falls in are dropped. The model is then fitted with one Gaussian per sub-class and the sub-classes
as the tree's leaves, each under its class's node (:meth:`HierarchyModel.fit` with ``subclass_of``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hierqdrant.core.errors import InputError
from hierqdrant.core.model import HierarchyModel
from hierqdrant.core.subclasses import SubclassSplit, compact, split_classes

__all__ = ["fit_subclasses", "subclass_checkpoint"]


def subclass_checkpoint(opts: Any, extractor: dict[str, Any]) -> str | None:
    """The checkpoint of the features' network when it carries sub-classes (else None)."""
    from hierqdrant.vision.gaussian_objective import read_subclasses

    for path in (opts.weights, extractor.get("weights_path"), extractor.get("weights"), opts.head):
        if isinstance(path, str) and Path(path).expanduser().is_file() and read_subclasses(path) is not None:
            return path
    return None


def fit_subclasses(
    table: Any, train_x: np.ndarray, train_y: np.ndarray, opts: Any, say: Callable[[str], None]
) -> HierarchyModel | None:
    """The model with sub-class leaves, or None when there are none to use (no such checkpoint and no
    ``opts.split_classes``). ``opts`` is ingest's :class:`~hierqdrant.pipelines.ingest.IngestOptions`."""
    checkpoint = subclass_checkpoint(opts, table.extractor)
    if checkpoint is None and not getattr(opts, "split_classes", False):
        return None
    if opts.tune:
        raise InputError("--tune does not take sub-class leaves yet", "drop --tune, or fit with -t and --alpha")
    y = np.asarray(train_y, dtype=np.int64)
    head = None
    if checkpoint is not None:
        from hierqdrant.vision.checkpoints import read_head
        from hierqdrant.vision.gaussian_objective import read_subclasses

        found = read_subclasses(checkpoint)
        assert found is not None
        classes, subclass_of = found
        if classes != list(table.class_names):
            raise InputError(
                f"{Path(checkpoint).name} was trained on other classes than the source's",
                "ingest the dataset the checkpoint was trained on",
            )
        saved = read_head(checkpoint, int(train_x.shape[1])).classifier
        mine = np.asarray(subclass_of)[None, :] == y[:, None]
        split = compact(np.where(mine, saved.scores(train_x), -np.inf).argmax(axis=1), np.asarray(subclass_of))
        if opts.query_classifier == "head":
            if split.num_subclasses != saved.num_classes:
                raise InputError("some of the head's sub-classes hold no training image", "use --query-classifier tied")
            head = saved
        where = f"the sub-classes of {Path(checkpoint).name}"
    else:
        if opts.query_classifier == "head":
            raise InputError(
                "--split-classes makes sub-classes the network's head does not score",
                "use --query-classifier tied or mahalanobis, or train with --objective gaussian",
            )
        split = split_classes(train_x, y, np.arange(len(table.class_names)))
        where = "--split-classes"
    say(_line(split, len(table.class_names), where))
    return HierarchyModel.fit(
        train_x,
        split.labels,
        class_names=table.class_names,
        subclass_of=split.subclass_of,
        builder=opts.builder,
        threshold=opts.threshold,
        alpha=opts.alpha,
        taxonomy=opts.taxonomy,
        n_components=opts.pca,
        covariance=opts.covariance,
        extractor=table.extractor,
        query_classifier=opts.query_classifier,
        leaf_from=opts.leaf_from,
        head=head,
    )


def _line(split: SubclassSplit, classes: int, where: str) -> str:
    counts = np.bincount(split.subclass_of, minlength=classes)
    split_count = int((counts > 1).sum())
    kinds = f"{split.num_subclasses} sub-classes of {classes} classes"
    return f"sub-class leaves from {where}: {kinds} ({split_count} split)"
