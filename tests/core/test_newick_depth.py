"""Issue "Nothing lost, second pass", 9: deep Newick. A taxonomy given with ``--taxonomy`` is read in linear
time and may nest at most ``MAX_DEPTH`` groups; past that it is refused in one line at the first group too
deep, without reading the rest. What is built from a tree that deep — the hierarchy, its Newick export and
its display — works without recursion and in linear time (a 5,000-level chain took 2.6 s to display and
could not be exported: RecursionError)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from hierqdrant.core.errors import InputError
from hierqdrant.core.hierarchy import Hierarchy
from hierqdrant.core.newick import MAX_DEPTH, parse_newick
from tests.cli.test_cli_messages import one_error_line, run
from tests.conftest import gaussian_classes

TOO_DEEP = f"groups nest deeper than {MAX_DEPTH:,} levels"


def chain(levels: int) -> str:
    """``levels`` nested groups, each a named node with one child, over three classes."""
    return "(" * levels + "a,b,c" + "".join(f")n{i}" for i in range(levels)) + ";"


def test_a_50000_level_tree_is_refused_in_one_line_at_the_first_group_too_deep() -> None:
    text = chain(50_000)
    with pytest.raises(InputError) as error:
        parse_newick(text)
    message = str(error.value)
    assert "\n" not in message and TOO_DEEP in message
    assert message.startswith(f"Newick error at offset {MAX_DEPTH}: ")
    # Nothing after that group is read: a broken quote further on is never reached.
    with pytest.raises(InputError, match=TOO_DEEP):
        parse_newick("(" * (MAX_DEPTH + 1) + "'unclosed")


def test_exactly_the_limit_parses_and_one_more_level_is_refused() -> None:
    assert Hierarchy.from_newick(chain(MAX_DEPTH)).tree_height == MAX_DEPTH
    with pytest.raises(InputError, match=TOO_DEEP):
        parse_newick(chain(MAX_DEPTH + 1))


def test_a_5000_level_tree_parses_exports_and_displays() -> None:
    tree = Hierarchy.from_newick(chain(5_000))
    assert tree.num_leaves == 3 and tree.tree_height == 5_000 and tree.class_names == ["a", "b", "c"]
    assert tree.ancestors(0)[-1] == tree.root and len(tree.ancestors(0)) == 5_001
    back = Hierarchy.from_newick(tree.to_newick())  # no recursion on the way out either
    assert back.same_shape(tree) and back.node_names == tree.node_names
    console = Console(record=True, width=100)
    console.print(tree.rich_tree(max_depth=8))
    shown = console.export_text()
    assert "n4999 " in shown and "n4991 " in shown and "n4990 " not in shown  # the root and 8 levels
    assert "… 4992 more levels below (not shown)" in shown


def test_the_export_of_a_deep_tree_is_what_it_was_read_from() -> None:
    parent = np.array([3, 3, 4, 4, 5, 6, -1])  # (c,(a,b)n3)n4 under two single-child nodes
    tree = Hierarchy(parent, 3, class_names=list("abc"), node_names=[*"abc", "n3", "n4", "n5", "root"])
    assert tree.to_newick() == "(((c,(a,b)n3)n4)n5)root;"  # children in node-id order, as before


def test_a_taxonomy_file_too_deep_is_one_error_line(tmp_path: Path) -> None:
    nwk = tmp_path / "deep.nwk"
    nwk.write_text(chain(50_000))
    with pytest.raises(InputError) as error:
        Hierarchy.read(nwk)
    assert str(error.value).startswith(f"deep.nwk: Newick error at offset {MAX_DEPTH}: {TOO_DEEP}")
    x, y = gaussian_classes(np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]), per_class=10, dims=4, seed=0)
    from hierqdrant.core.features import FeatureSet

    FeatureSet(x, y, classes=["a", "b", "c"]).save(tmp_path / "f.npz")
    result = run("hierarchy", "build", "-f", tmp_path / "f.npz", "-o", tmp_path / "m", "--builder", "given",
                 "--taxonomy", nwk, "--quiet")  # fmt: skip
    assert TOO_DEEP in one_error_line(result)
