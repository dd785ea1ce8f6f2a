"""Hierarchy builders: class overlap (the paper §3.1), Ward linkage of class means, a given taxonomy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from hierqdrant.core.errors import InputError
from hierqdrant.core.gaussian import (
    Estimator,
    Gaussians,
    add_ridge,
    bhattacharyya_distance_pairs,
    eigenvalues,
    overlap_candidates,
    shrunk_covariance,
)
from hierqdrant.core.hierarchy import Hierarchy

Builder = Literal["overlap", "ward", "given"]
BUILDERS: tuple[str, ...] = ("overlap", "ward", "given")


@dataclass
class MergeLevel:
    """What one round of overlap merging did."""

    nodes_before: int
    groups: int  # new parent nodes created
    merged: int  # nodes that got a parent this round
    pairs_total: int
    pairs_evaluated: int  # after the provable BC < t pruning


@dataclass
class OverlapReport:
    levels: list[MergeLevel] = field(default_factory=list)
    root_added: bool = False


def check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not (0.0 < t <= 1.0) or not np.isfinite(t):
        raise InputError(
            f"overlap threshold t={threshold} is outside (0, 1]", "pass --threshold between 0 and 1, e.g. 0.3"
        )
    return t


def build_overlap(
    points: np.ndarray,
    labels: np.ndarray,
    class_gaussians: Gaussians,
    threshold: float,
    *,
    class_names: Sequence[str] | None = None,
    estimator: Estimator = "ledoit-wolf",
) -> tuple[Hierarchy, OverlapReport]:
    """Merge overlapping Gaussians bottom-up (Venkataramanan et al. 2023, §3.1).

    At every level, nodes i, j overlap when ``BC(i, j) = exp(−D_B) ≥ t``. Each connected group of
    overlapping nodes becomes one node of the next level (its mean and shrunk covariance recomputed
    from the pooled points of its classes); a node that overlaps nothing is carried up alone. Repeat
    until no pair overlaps or one node is left; if several are left, a root is added above them.
    Only pairs that involve a node created in the previous round are evaluated (the others were
    below t already), and pairs whose BC provably stays below t are skipped.
    """
    t = check_threshold(threshold)
    z = np.asarray(points, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    k = class_gaussians.num
    order = np.argsort(labels, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=k))])

    parent: list[int] = [-1] * k
    current = list(range(k))  # node ids alive at this level
    members: dict[int, list[int]] = {c: [c] for c in range(k)}
    # Read-only here: every level builds new arrays, so the class Gaussians are not copied.
    means = class_gaussians.means
    covs = class_gaussians.covariances
    spectra = eigenvalues(covs)
    is_new = np.ones(k, dtype=bool)
    report = OverlapReport()

    while len(current) > 1:
        m = len(current)
        iu = np.triu_indices(m, 1)
        pairs = np.stack(iu, axis=1)
        pairs = pairs[is_new[pairs[:, 0]] | is_new[pairs[:, 1]]]
        total = pairs.shape[0]
        if total:
            pairs = pairs[overlap_candidates(means, spectra[:, -1], pairs, t)]
        edges = np.empty((0, 2), dtype=np.int64)
        if pairs.shape[0]:
            logdets = np.log(spectra).sum(axis=1)
            bc = np.exp(-bhattacharyya_distance_pairs(means, covs, pairs, logdets))
            edges = pairs[bc >= t]
        if edges.shape[0] == 0:
            report.levels.append(MergeLevel(m, 0, 0, total, int(pairs.shape[0])))
            break
        graph = coo_matrix((np.ones(edges.shape[0]), (edges[:, 0], edges[:, 1])), shape=(m, m))
        n_comp, comp = connected_components(graph, directed=False)
        sizes = np.bincount(comp, minlength=n_comp)
        next_nodes: list[int] = []
        new_means: list[np.ndarray] = []
        new_covs: list[np.ndarray] = []
        new_flags: list[bool] = []
        merged = 0
        groups = 0
        keep = [i for i in range(m) if sizes[comp[i]] == 1]
        for i in keep:
            next_nodes.append(current[i])
            new_means.append(means[i])
            new_covs.append(covs[i])
            new_flags.append(False)
        for g in np.flatnonzero(sizes > 1):
            idx = np.flatnonzero(comp == g)
            node = len(parent)
            parent.append(-1)
            for j in idx:
                parent[current[j]] = node
            classes = sorted(c for j in idx for c in members[current[j]])
            members[node] = classes
            pooled = z[np.concatenate([order[bounds[c] : bounds[c + 1]] for c in classes])]
            next_nodes.append(node)
            new_means.append(pooled.mean(axis=0))
            new_covs.append(shrunk_covariance(pooled, estimator)[0])
            new_flags.append(True)
            merged += idx.size
            groups += 1
        report.levels.append(MergeLevel(m, groups, merged, total, int(pairs.shape[0])))
        current = next_nodes
        means = np.stack(new_means)
        is_new = np.asarray(new_flags)
        covs = np.stack(new_covs)
        covs[is_new] = add_ridge(covs[is_new])
        spectra = eigenvalues(covs)

    if len(current) > 1:
        root = len(parent)
        parent.append(-1)
        for node in current:
            parent[node] = root
        report.root_added = True
    names = list(class_names) if class_names is not None else None
    return Hierarchy(np.asarray(parent), k, class_names=names or []), report


def build_ward(means: np.ndarray, class_names: Sequence[str] | None = None) -> Hierarchy:
    """Ward linkage of the class means (the paper's baseline): a binary tree with K − 1 inner nodes.

    SciPy numbers the merge of row i as node ``K + i`` and the last merge is the root, which is
    exactly this package's node-id convention.
    """
    from scipy.cluster.hierarchy import linkage

    k = means.shape[0]
    link = linkage(np.asarray(means, dtype=np.float64), method="ward")
    parent = np.full(2 * k - 1, -1, dtype=np.int64)
    for row, (a, b) in enumerate(link[:, :2].astype(np.int64)):
        parent[a] = k + row
        parent[b] = k + row
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    node_names = names + [f"ward{row}" for row in range(k - 1)]
    return Hierarchy(parent, k, class_names=names, node_names=node_names)


def build_given(
    taxonomy: str | Path, class_names: Sequence[str] | None, num_classes: int, leaf_offset: int | None = None
) -> Hierarchy:
    """Read a taxonomy file whose leaves are the classes (parent-child, JSON or Newick)."""
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    tree = Hierarchy.read(taxonomy, class_names=names, leaf_offset=leaf_offset)
    if tree.num_leaves != num_classes:
        raise InputError(f"the taxonomy has {tree.num_leaves} leaves but the features have {num_classes} classes")
    return tree


def build_tree(
    builder: str,
    points: np.ndarray,
    labels: np.ndarray,
    gaussians: Gaussians,
    class_names: Sequence[str],
    *,
    threshold: float | None = None,
    taxonomy: str | Path | Hierarchy | None = None,
    leaf_offset: int | None = None,
    estimator: Estimator = "ledoit-wolf",
) -> tuple[Hierarchy, dict[str, object]]:
    """The tree of ``builder`` over the classes of ``gaussians`` (one per class of ``labels``), and what
    goes into the model's fit report (the overlap levels)."""
    k = gaussians.num
    names = list(class_names)
    if builder == "overlap":
        tree, report = build_overlap(
            points, labels, gaussians, check_threshold(threshold or 0.3), class_names=names, estimator=estimator
        )
        return tree, {"overlap_levels": [vars(level) for level in report.levels], "root_added": report.root_added}
    if builder == "ward":
        return build_ward(gaussians.means, names), {}
    if builder != "given":
        raise InputError(f"unknown builder {builder!r}", f"use one of {', '.join(BUILDERS)}")
    if taxonomy is None:
        raise InputError("the 'given' builder needs a taxonomy", "pass --taxonomy FILE")
    if isinstance(taxonomy, Hierarchy):
        if taxonomy.num_leaves != k:
            raise InputError(f"the taxonomy has {taxonomy.num_leaves} leaves for {k} classes")
        return taxonomy, {}
    return build_given(taxonomy, names, k, leaf_offset), {}


def graft_subclasses(class_tree: Hierarchy, subclass_of: np.ndarray, leaf_names: Sequence[str]) -> Hierarchy:
    """The tree whose leaves are the sub-classes (DESIGN.md §1.9): each sub-class of a split class hangs
    directly under a new node named after its class, which takes the class's place in ``class_tree``; a
    class with one sub-class stays a leaf. Node ids: sub-class leaves ``0 … K'−1``, then the split classes'
    nodes in class order, then the class tree's inner nodes in their order (the root stays last)."""
    s = np.asarray(subclass_of, dtype=np.int64)
    k, kp = class_tree.num_leaves, int(s.size)
    counts = np.bincount(s, minlength=k)
    split = np.flatnonzero(counts > 1)
    class_node = np.searchsorted(s, np.arange(k))  # an unsplit class: its one leaf
    class_node[split] = kp + np.arange(split.size)
    inner0 = kp + split.size

    def new_id(v: int) -> int:
        return -1 if v < 0 else int(class_node[v]) if v < k else inner0 + v - k

    parent = np.empty(inner0 + class_tree.num_nodes - k, dtype=np.int64)
    for leaf, c in enumerate(s.tolist()):
        parent[leaf] = class_node[c] if counts[c] > 1 else new_id(int(class_tree.parent[c]))
    for c in split.tolist():
        parent[class_node[c]] = new_id(int(class_tree.parent[c]))
    for v in range(k, class_tree.num_nodes):
        parent[inner0 + v - k] = new_id(int(class_tree.parent[v]))
    names = class_tree.node_names
    node_names = [*leaf_names, *(names[c] for c in split.tolist()), *names[k:]]
    return Hierarchy(parent, kp, class_names=list(leaf_names), node_names=node_names)


def collapse_subclasses(tree: Hierarchy, subclass_of: np.ndarray, class_names: Sequence[str]) -> Hierarchy:
    """The class tree under a tree of sub-class leaves (the inverse of :func:`graft_subclasses`): each split
    class's node becomes the leaf of its class (its sub-class leaves dropped), an unsplit class's one leaf
    stays. Leaves ``0 … K−1`` are the classes, inner nodes keep their order. What scores an evaluation whose
    relevance is by class (mahp, hdist, severity index the tree by class)."""
    s = np.asarray(subclass_of, dtype=np.int64)
    k = len(class_names)
    counts = np.bincount(s, minlength=k)
    first = np.searchsorted(s, np.arange(k))  # sub-classes are numbered by class
    class_node = np.where(counts > 1, tree.parent[first], first)
    is_class = np.zeros(tree.num_nodes, dtype=bool)
    is_class[class_node] = True
    inner = [v for v in range(tree.num_leaves, tree.num_nodes) if not is_class[v]]
    new_id = np.full(tree.num_nodes, -1, dtype=np.int64)
    new_id[class_node] = np.arange(k)
    new_id[inner] = k + np.arange(len(inner))
    old_of = [*class_node.tolist(), *inner]
    parent = np.asarray([-1 if tree.parent[v] < 0 else int(new_id[tree.parent[v]]) for v in old_of], dtype=np.int64)
    names = tree.node_names
    return Hierarchy(parent, k, class_names=list(class_names), node_names=[*class_names, *(names[v] for v in inner)])


def build_with_subclasses(
    builder: str,
    points: np.ndarray,
    leaf_labels: np.ndarray,
    subclass_of: np.ndarray,
    class_names: Sequence[str],
    leaf_names: Sequence[str],
    leaf_gaussians: Gaussians | None = None,
    **options: object,
) -> tuple[Hierarchy, dict[str, object]]:
    """The builder's tree over the classes (their own Gaussians, from the points of all their sub-classes;
    a given taxonomy names classes), with the sub-classes grafted under it (:func:`graft_subclasses`).
    Without points (ward and given refits), the class Gaussians pool the sub-classes' ``leaf_gaussians``."""
    z = np.asarray(points, dtype=np.float64)
    y = np.asarray(subclass_of)[np.asarray(leaf_labels, dtype=np.int64)]
    estimator = options.get("estimator", "ledoit-wolf")
    if z.shape[0] == 0 and leaf_gaussians is not None and builder != "overlap":
        class_gaussians = leaf_gaussians.pooled(np.asarray(subclass_of), len(class_names))
    else:
        class_gaussians = Gaussians.fit(z, y, len(class_names), estimator=estimator)  # type: ignore[arg-type]
    tree, info = build_tree(builder, z, y, class_gaussians, class_names, **options)  # type: ignore[arg-type]
    return graft_subclasses(tree, subclass_of, leaf_names), info
