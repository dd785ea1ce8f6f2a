"""What is ranked: a query set or a database as projected vectors, class labels, ids and leaves."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hierqdrant.core.errors import InputError
from hierqdrant.core.model import HierarchyModel
from hierqdrant.core.settings import LEAF_FROM

__all__ = ["Items", "database_leaves", "self_index", "stored_leaf_mode"]


@dataclass
class Items:
    """A query set or a database: projected vectors ``z`` (N, d), class ``labels`` (N,) indexing the
    class list (−1 = unknown), item ``ids`` (N,) (point ids or file keys: a query is excluded from
    the database item with the same id) and, optionally, stored ``leaves`` (N,) and the ``raw``
    features (N, D) before centring and projection (what a plain Qdrant collection would store; the
    ``cosine-raw`` and ``euclidean-raw`` methods rank by them)."""

    z: np.ndarray
    labels: np.ndarray
    ids: list[str]
    leaves: np.ndarray | None = None
    raw: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.z = np.atleast_2d(np.asarray(self.z, dtype=np.float64))
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.ids = [str(i) for i in self.ids]
        n = self.z.shape[0]
        if self.labels.shape[0] != n or len(self.ids) != n:
            raise InputError(f"{len(self.ids)} ids and {self.labels.shape[0]} labels for {n} vectors")
        if self.leaves is not None:
            self.leaves = np.asarray(self.leaves, dtype=np.int64).reshape(-1)
            if self.leaves.shape[0] != n:
                raise InputError(f"{self.leaves.shape[0]} leaves for {n} vectors")
        if self.raw is not None:
            self.raw = np.atleast_2d(np.asarray(self.raw))
            if self.raw.shape[0] != n:
                raise InputError(f"{self.raw.shape[0]} raw feature rows for {n} vectors")

    def __len__(self) -> int:
        return int(self.z.shape[0])

    def subset(self, index: np.ndarray) -> Items:
        idx = np.asarray(index, dtype=np.int64)
        return Items(
            self.z[idx],
            self.labels[idx],
            [self.ids[i] for i in idx],
            None if self.leaves is None else self.leaves[idx],
            None if self.raw is None else self.raw[idx],
        )


def database_leaves(model: HierarchyModel, database: Items, leaf_from: str = "predicted") -> np.ndarray:
    """Leaf of every database item: the query classifier's (``predicted``, the paper) or its ``label`` —
    with sub-class leaves, the query classifier's best sub-class of its class, as ingest stores it
    (:meth:`HierarchyModel.database_leaves`)."""
    if leaf_from not in LEAF_FROM:
        raise InputError(f"unknown leaf source {leaf_from!r}", "use predicted or label")
    if leaf_from == "label":
        if (database.labels < 0).any():
            raise InputError(
                f"{int((database.labels < 0).sum())} database items have no label for --leaf-from label",
                "use --leaf-from predicted",
            )
        if model.subclasses is None:
            return database.labels.copy()
        return model.database_leaves(database.z, database.labels, projected=True, raw=database.raw, leaf_from="label")
    return model.assign(database.z, projected=True, raw=database.raw)


def stored_leaf_mode(model: HierarchyModel, items: Items) -> str:
    """Whether the stored leaves are the predicted ones or the labels (whichever agrees more)."""
    assert items.leaves is not None
    if len(items) == 0 or (model.query_classifier == "head" and items.raw is None):
        return model.leaf_from  # a head needs the raw features, which a collection does not keep
    predicted = float(np.mean(model.assign(items.z, projected=True, raw=items.raw) == items.leaves))
    known = items.labels >= 0
    leaf_class = model.class_of_leaf(items.leaves[known])  # a sub-class leaf names its class
    by_label = float(np.mean(items.labels[known] == leaf_class)) if known.any() else 0.0
    if by_label == predicted:  # both explain the stored leaves (sub-classes make this common): the model's
        return model.leaf_from
    return "label" if by_label > predicted else "predicted"


def self_index(queries: Items, database: Items) -> np.ndarray:
    """Position of each query's own item in the database (by id), −1 when it is not there."""
    where = {pid: i for i, pid in enumerate(database.ids)}
    return np.asarray([where.get(pid, -1) for pid in queries.ids], dtype=np.int64)
