"""The class tree: node ids, parents, heights, ancestor paths, LCA heights, and its file formats.

Node ids are dense integers. Leaves are ``0 … K-1`` and equal the class indices; inner nodes are
``K … n-1``; the root is the last node. Heights follow the paper: a leaf has height 0 and a node's
height is the longest way down to a leaf, ``h(v) = 1 + max_{c ∈ children(v)} h(c)``. The tree height
is ``H = h(root)``.

Formats read and written:

* parent-child text (``../shared/hierarchies``): one ``parent child`` pair of integer ids per line;
  leaves may be numbered from 0 or from 1 (CUB) — the mapping to class indices is explicit;
* JSON (``{"format": "hierqdrant.hierarchy", "parent": [...], "num_leaves": K, ...}``);
* Newick (``((0,1)craft,…)root;`` with leaf labels as class names or indices).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hierqdrant.core.errors import InputError
from hierqdrant.core.newick import newick_error, parse_newick

JSON_FORMAT = "hierqdrant.hierarchy"


def _ids(ids: Iterable[int], limit: int = 8) -> str:
    items = sorted(set(int(i) for i in ids))
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", … ({len(items)} in all)" if len(items) > limit else "")


@dataclass(eq=False)
class Hierarchy:
    """A rooted tree over K classes.

    Args:
        parent: ``parent[v]`` for every node ``v``; ``-1`` for the root. Leaves are ``0 … K-1``.
        num_leaves: K, the number of classes.
        class_names: one name per leaf (defaults to the leaf index as a string).
        node_names: one name per node (leaves default to their class names, inner nodes to ``n<id>``).
    """

    parent: np.ndarray
    num_leaves: int
    class_names: list[str] = field(default_factory=list)
    node_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.parent = np.asarray(self.parent, dtype=np.int64)
        n = self.parent.shape[0]
        k = int(self.num_leaves)
        if self.parent.ndim != 1 or n < 1:
            raise InputError("a hierarchy needs at least one node")
        if k < 1 or k > n:
            raise InputError(f"num_leaves={k} is not between 1 and the number of nodes ({n})")
        bad = np.flatnonzero((self.parent < -1) | (self.parent >= n))
        if bad.size:
            raise InputError(f"nodes {_ids(bad)} have a parent id outside 0…{n - 1}")
        roots = np.flatnonzero(self.parent == -1)
        if roots.size != 1:
            raise InputError(
                f"a hierarchy needs exactly one root, found {roots.size} (nodes {_ids(roots)})",
                "add a common parent above them",
            )
        if int(roots[0]) != n - 1:
            raise InputError(f"the root must be the last node ({n - 1}), got {int(roots[0])}")
        self._children: list[list[int]] = [[] for _ in range(n)]
        for v, p in enumerate(self.parent.tolist()):
            if p >= 0:
                self._children[p].append(v)
        inner_without_children = [v for v in range(k, n) if not self._children[v]]
        if inner_without_children:
            raise InputError(f"inner nodes {_ids(inner_without_children)} have no children")
        leaves_with_children = [v for v in range(k) if self._children[v]]
        if leaves_with_children:
            raise InputError(f"leaves (classes) {_ids(leaves_with_children)} have children")
        self._order = self._topological_order()
        self.height = self._heights()
        self.depth = self._depths()
        if not self.class_names:
            self.class_names = [str(i) for i in range(k)]
        if len(self.class_names) != k:
            raise InputError(f"{len(self.class_names)} class names for {k} leaves")
        if not self.node_names:
            self.node_names = list(self.class_names) + [f"n{v}" for v in range(k, n)]
        if len(self.node_names) != n:
            raise InputError(f"{len(self.node_names)} node names for {n} nodes")
        self._lca: np.ndarray | None = None

    # -- structure -------------------------------------------------------------------------

    def _topological_order(self) -> list[int]:
        """Nodes from the root down (BFS); every node must be reachable, which rules out cycles."""
        order = [self.root]
        for v in order:
            order.extend(self._children[v])
            if len(order) > self.num_nodes:
                break
        if len(order) != self.num_nodes:
            unreachable = set(range(self.num_nodes)) - set(order)
            raise InputError(
                f"the parent links contain a cycle through nodes {_ids(unreachable)}",
                "every node must lead up to the root",
            )
        return order

    def _heights(self) -> np.ndarray:
        height = np.zeros(self.num_nodes, dtype=np.int64)
        for v in reversed(self._order):
            p = int(self.parent[v])
            if p >= 0:
                height[p] = max(height[p], height[v] + 1)
        return height

    def _depths(self) -> np.ndarray:
        depth = np.zeros(self.num_nodes, dtype=np.int64)
        for v in self._order[1:]:
            depth[v] = depth[self.parent[v]] + 1
        return depth

    @property
    def num_nodes(self) -> int:
        return int(self.parent.shape[0])

    @property
    def root(self) -> int:
        return self.num_nodes - 1

    @property
    def tree_height(self) -> int:
        """H, the height of the root."""
        return int(self.height[self.root])

    @property
    def num_levels(self) -> int:
        """Number of distinct depths (root at depth 0)."""
        return int(self.depth.max()) + 1

    def children(self, node: int) -> list[int]:
        return list(self._children[node])

    def ancestors(self, node: int) -> list[int]:
        """The path from ``node`` up to the root, both included: ``[node, parent, …, root]``."""
        if not 0 <= node < self.num_nodes:
            raise InputError(f"node {node} does not exist (0…{self.num_nodes - 1})")
        path = [int(node)]
        while self.parent[path[-1]] >= 0:
            path.append(int(self.parent[path[-1]]))
        return path

    def ancestor_paths(self) -> list[list[int]]:
        """``ancestors(leaf)`` for every leaf."""
        return [self.ancestors(c) for c in range(self.num_leaves)]

    def leaves_under(self, node: int) -> list[int]:
        """The classes below ``node`` (``[node]`` for a leaf), ascending."""
        out: list[int] = []
        stack = [node]
        while stack:
            v = stack.pop()
            if v < self.num_leaves:
                out.append(v)
            else:
                stack.extend(self._children[v])
        return sorted(out)

    def lca_matrix(self) -> np.ndarray:
        """(K, K) node id of the lowest common ancestor of every pair of classes.

        Vectorised over pairs: visiting nodes from the root down, every node writes itself into the
        block of the pairs below it, so the deepest common ancestor is written last.
        """
        if self._lca is None:
            k = self.num_leaves
            member = np.zeros((self.num_nodes, k), dtype=bool)
            member[np.arange(k), np.arange(k)] = True
            for v in reversed(self._order):
                p = int(self.parent[v])
                if p >= 0:
                    member[p] |= member[v]
            lca = np.full((k, k), self.root, dtype=np.int64)
            for v in self._order:
                below = np.flatnonzero(member[v])
                lca[np.ix_(below, below)] = v
            self._lca = lca
        return self._lca

    def lca_height_matrix(self) -> np.ndarray:
        """(K, K) ``h(LCA(a, b))``: 0 on the diagonal, H for classes that meet only at the root."""
        return self.height[self.lca_matrix()]

    def lca(self, a: int, b: int) -> int:
        return int(self.lca_matrix()[a, b])

    # -- equality and summary ----------------------------------------------------------------

    def same_shape(self, other: Hierarchy) -> bool:
        return self.num_leaves == other.num_leaves and np.array_equal(self.parent, other.parent)

    def summary(self) -> dict[str, Any]:
        return {
            "leaves": self.num_leaves,
            "nodes": self.num_nodes,
            "inner_nodes": self.num_nodes - self.num_leaves,
            "height": self.tree_height,
            "levels": self.num_levels,
        }

    # -- JSON ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": JSON_FORMAT,
            "num_leaves": self.num_leaves,
            "parent": self.parent.tolist(),
            "class_names": list(self.class_names),
            "node_names": list(self.node_names),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Hierarchy:
        if not isinstance(data, dict) or data.get("format") != JSON_FORMAT:
            raise InputError('not a hierqdrant hierarchy JSON (missing "format": "hierqdrant.hierarchy")')
        try:
            return cls(
                parent=np.asarray(data["parent"], dtype=np.int64),
                num_leaves=int(data["num_leaves"]),
                class_names=[str(s) for s in data.get("class_names", [])],
                node_names=[str(s) for s in data.get("node_names", [])],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"hierarchy JSON is missing or has a bad field: {exc}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Hierarchy:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"hierarchy JSON does not parse: {exc}") from None
        return cls.from_dict(data)

    # -- parent-child text ---------------------------------------------------------------------

    def to_parent_child(self, leaf_offset: int = 0) -> str:
        """One ``parent child`` line per edge, root's edges first; leaves written as ``class + leaf_offset``.

        Inner nodes are renumbered after the leaves so ids stay unique whatever the offset.
        """
        k = self.num_leaves

        def out_id(v: int) -> int:
            return v + leaf_offset if v < k else v + leaf_offset

        lines = [f"{out_id(int(self.parent[v]))} {out_id(v)}" for v in self._order[1:]]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_parent_child(
        cls,
        source: str | Path,
        *,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        leaf_offset: int | None = None,
        node_names: dict[int, str] | None = None,
    ) -> Hierarchy:
        """Read a parent-child file (or its text).

        Leaves are the ids that never appear as a parent. They must be exactly
        ``leaf_offset … leaf_offset + K - 1`` (K = ``num_classes`` or ``len(class_names)``, or the number
        of leaves found); ``leaf_offset`` is detected (0 or 1) when not given. Leaf ``leaf_offset + c``
        becomes class ``c``; inner nodes get ids ``K, K+1, …`` in order of first appearance, the root last.
        """
        text = _read_text(source)
        edges: list[tuple[int, int]] = []
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2:
                raise InputError(
                    f"parent-child line {lineno} has {len(parts)} fields: {line!r}", "write `parent child`"
                )
            try:
                edges.append((int(parts[0]), int(parts[1])))
            except ValueError:
                raise InputError(f"parent-child line {lineno} is not two integers: {line!r}") from None
        if not edges:
            raise InputError("the parent-child file has no edges")
        parent_of: dict[int, int] = {}
        twice: set[int] = set()
        for p, c in edges:
            if c in parent_of and parent_of[c] != p:
                twice.add(c)
            parent_of[c] = p
        if twice:
            raise InputError(f"nodes {_ids(twice)} have two parents", "a hierarchy must be a tree")
        self_loops = [c for p, c in edges if p == c]
        if self_loops:
            raise InputError(f"nodes {_ids(self_loops)} are their own parent")
        parents = {p for p, _ in edges}
        nodes = parents | set(parent_of)
        leaves = sorted(nodes - parents)
        if class_names is not None and num_classes is None:
            num_classes = len(class_names)
        k = num_classes if num_classes is not None else len(leaves)
        if leaf_offset is None:
            leaf_offset = 1 if (leaves and min(leaves) == 1 and 0 not in nodes) else 0
        expected = set(range(leaf_offset, leaf_offset + k))
        not_classes = sorted(set(leaves) - expected)
        if not_classes:
            raise InputError(
                f"leaves {_ids(not_classes)} are not classes (classes are {leaf_offset}…{leaf_offset + k - 1})",
                "give every class a leaf id and every inner node a child",
            )
        missing = sorted(expected - set(leaves))
        if missing:
            inner = sorted(set(missing) & parents)
            detail = f" ({_ids(inner)} appear as parents)" if inner else ""
            raise InputError(f"classes {_ids(missing)} are missing from the hierarchy file{detail}")
        roots = sorted(nodes - set(parent_of))
        if len(roots) != 1:
            if not roots:
                raise InputError("the parent-child links form a cycle: no node is without a parent")
            raise InputError(
                f"the hierarchy has {len(roots)} roots ({_ids(roots)})", "add one root above them"
            )
        # Remap: leaves → class index, inner nodes → K.. in first-appearance order, root last.
        inner_order: list[int] = []
        seen: set[int] = set()
        for p, _ in edges:
            if p not in seen and p != roots[0]:
                seen.add(p)
                inner_order.append(p)
        inner_order.append(roots[0])
        new_id = {leaf: leaf - leaf_offset for leaf in leaves}
        new_id.update({old: k + i for i, old in enumerate(inner_order)})
        parent = np.full(len(new_id), -1, dtype=np.int64)
        for c, p in parent_of.items():
            parent[new_id[c]] = new_id[p]
        names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
        node_label = [*names] + [(node_names or {}).get(old, f"n{old}") for old in inner_order]
        return cls(parent=parent, num_leaves=k, class_names=names, node_names=node_label)

    # -- Newick --------------------------------------------------------------------------------

    def to_newick(self) -> str:
        """Newick with class names on leaves and node names on inner nodes, e.g. ``((cat,dog)pets,fox)root;``."""

        def label(v: int) -> str:
            name = self.node_names[v]
            quoted = name.replace("'", "''")
            return f"'{quoted}'" if re.search(r"[\s(),:;'\[\]]", name) else name

        # Iterative and linear (pieces joined once): a tree as deep as a Newick file may nest (newick.MAX_DEPTH)
        # is far past Python's recursion limit.
        parts: list[str] = []
        stack: list[tuple[int, int]] = [(self.root, 0)]  # (node, children written so far)
        while stack:
            v, done = stack.pop()
            kids = self._children[v]
            if not kids:
                parts.append(label(v))
            elif done < len(kids):
                parts.append("(" if done == 0 else ",")
                stack.append((v, done + 1))
                stack.append((kids[done], 0))
            else:
                parts.append(")" + label(v))
        return "".join(parts) + ";"

    @classmethod
    def from_newick(cls, text: str, class_names: Sequence[str] | None = None) -> Hierarchy:
        """Parse Newick. Leaves are matched to ``class_names`` by name; without names, leaves
        must be labelled ``0 … K-1`` (or named, and then sorted by order of appearance)."""
        raw = parse_newick(text)
        raw_parent, raw_label, raw_is_leaf = raw.parent, raw.label, raw.is_leaf
        leaf_raw = [i for i, is_leaf in enumerate(raw_is_leaf) if is_leaf]
        labels = [raw_label[i] for i in leaf_raw]
        seen: dict[str, int] = {}
        for i in leaf_raw:
            if raw_label[i] in seen:
                first = raw.offset[seen[raw_label[i]]]
                raise newick_error(
                    text, raw.offset[i], f"leaf {raw_label[i]!r} appears twice (first at offset {first})",
                    "name every class once",
                )
            seen[raw_label[i]] = i
        if class_names is not None:
            index = {name: c for c, name in enumerate(class_names)}
            unknown = [i for i in leaf_raw if raw_label[i] not in index]
            if unknown:
                more = f" (nor are {[raw_label[i] for i in unknown[1:6]]})" if len(unknown) > 1 else ""
                raise newick_error(
                    text, raw.offset[unknown[0]], f"leaf {raw_label[unknown[0]]!r} is not a class{more}",
                    f"use the class names ({', '.join(list(class_names)[:5])}{', …' if len(class_names) > 5 else ''})",
                )
            classes = [index[lab] for lab in labels]
            names = list(class_names)
        elif all(lab.isdigit() for lab in labels):
            classes = [int(lab) for lab in labels]
            names = [str(i) for i in range(len(labels))]
        else:
            classes = list(range(len(labels)))
            names = labels
        k = len(names)
        if sorted(classes) != list(range(k)):
            missing = sorted(set(range(k)) - set(classes))
            raise InputError(
                f"Newick leaves must cover every class exactly once: {len(labels)} leaves for {k} classes"
                + (f", missing {[names[c] for c in missing[:5]]}" if missing else ""),
                "add the missing classes as leaves (or number leaves 0 … K-1)",
            )
        inner_raw = [i for i, is_leaf in enumerate(raw_is_leaf) if not is_leaf]
        # The Newick root comes first in parse order; ours must be last.
        inner_raw = inner_raw[1:] + inner_raw[:1]
        new_id = {r: c for r, c in zip(leaf_raw, classes, strict=True)}
        new_id.update({r: k + i for i, r in enumerate(inner_raw)})
        parent = np.full(len(raw_parent), -1, dtype=np.int64)
        for r, p in enumerate(raw_parent):
            if p >= 0:
                parent[new_id[r]] = new_id[p]
        node_names = list(names) + [raw_label[r] or f"n{k + i}" for i, r in enumerate(inner_raw)]
        return cls(parent=parent, num_leaves=k, class_names=names, node_names=node_names)

    # -- reading any format ------------------------------------------------------------------------

    @classmethod
    def read(
        cls, path: str | Path, class_names: Sequence[str] | None = None, leaf_offset: int | None = None
    ) -> Hierarchy:
        """Read a taxonomy file, choosing the format by extension (.json, .nwk/.newick/.tree, else parent-child)."""
        p = Path(path)
        if not p.is_file():
            raise InputError(f"taxonomy file {p} does not exist", "pass an existing file with --taxonomy")
        suffix = p.suffix.lower()
        if suffix == ".json":
            tree = cls.from_json(_read_text(p))
            if class_names is not None and len(class_names) != tree.num_leaves:
                raise InputError(
                    f"the taxonomy has {tree.num_leaves} leaves but there are {len(class_names)} classes"
                )
            if class_names is not None:
                tree = cls(
                    tree.parent,
                    tree.num_leaves,
                    list(class_names),
                    list(class_names) + tree.node_names[tree.num_leaves :],
                )
            return tree
        if suffix in {".nwk", ".newick", ".tree"}:
            try:
                return cls.from_newick(_read_text(p), class_names)
            except InputError as exc:
                raise InputError(f"{p.name}: {exc.problem}", exc.fix) from None
        return cls.from_parent_child(p, class_names=class_names, leaf_offset=leaf_offset)

    # -- display ---------------------------------------------------------------------------------

    def rich_tree(self, max_children: int = 50, marks: dict[int, str] | None = None, max_depth: int = 64) -> Any:
        """A ``rich.tree.Tree`` with class names on leaves and node id, height and size on inner nodes;
        ``marks`` adds a note to some nodes (e.g. "sub-class of cat"). At most ``max_children`` children of a
        node and ``max_depth`` levels are shown (rich lays out each line of a tree in time proportional to
        its depth, so a 10,000-level chain would take minutes); what is left out is counted."""
        from rich.tree import Tree

        size = np.zeros(self.num_nodes, dtype=np.int64)  # classes below each node, bottom-up: linear
        size[: self.num_leaves] = 1
        for v in reversed(self._order[1:]):
            size[self.parent[v]] += size[v]

        def shown(name: str) -> str:  # a class named "[/x]" or "[red]x" prints as it is (names are data)
            from rich.markup import escape

            from hierqdrant.core.names import printable

            return escape(printable(name))

        def label(v: int) -> str:
            note = f" [magenta]{shown(marks[v])}[/]" if marks and v in marks else ""
            if v < self.num_leaves:
                return f"[bold]{shown(self.class_names[v])}[/] [dim]#{v}[/]{note}"
            h, n = int(self.height[v]), int(size[v])
            return f"[cyan]{shown(self.node_names[v])}[/] [dim]#{v} h={h} ({n} classes)[/]"

        root = Tree(label(self.root))
        stack: list[tuple[int, Any, int]] = [(self.root, root, 0)]
        while stack:
            v, branch, depth = stack.pop()
            kids = sorted(self._children[v], key=lambda c: (-int(self.height[c]), c))
            if kids and depth >= max_depth:
                branch.add(f"[dim]… {int(self.height[v])} more levels below (not shown)[/]")
                continue
            for c in kids[:max_children]:
                stack.append((c, branch.add(label(c)), depth + 1))
            if len(kids) > max_children:
                branch.add(f"[dim]… {len(kids) - max_children} more[/]")
        return root


def _read_text(source: str | Path) -> str:
    if isinstance(source, Path) or ("\n" not in str(source) and Path(str(source)).is_file()):
        try:
            return Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read {source}: {exc}") from None
    return str(source)
