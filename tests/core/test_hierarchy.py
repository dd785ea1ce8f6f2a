"""The tree: heights, ancestors, LCA heights, I/O round trips and validation."""

from __future__ import annotations

import numpy as np
import pytest

from hierqdrant.core.errors import InputError
from hierqdrant.core.hierarchy import Hierarchy


@pytest.fixture
def unbalanced() -> Hierarchy:
    #            7 (root, h=3)
    #          / | \
    #     6(h=2) 3   4
    #      /  \
    #   5(h=1) 2
    #    / \
    #   0   1
    return Hierarchy(np.array([5, 5, 6, 7, 7, 6, 7, -1]), 5, class_names=list("abcde"))


def test_heights_depths_and_ancestors(unbalanced: Hierarchy) -> None:
    assert unbalanced.height.tolist() == [0, 0, 0, 0, 0, 1, 2, 3]
    assert unbalanced.tree_height == 3
    assert unbalanced.depth.tolist() == [3, 3, 2, 1, 1, 2, 1, 0]
    assert unbalanced.num_levels == 4
    assert unbalanced.ancestors(0) == [0, 5, 6, 7]
    assert unbalanced.ancestors(3) == [3, 7]
    assert unbalanced.leaves_under(6) == [0, 1, 2]


def test_lca_height_matrix_by_hand(unbalanced: Hierarchy) -> None:
    expected = np.array(
        [
            [0, 1, 2, 3, 3],
            [1, 0, 2, 3, 3],
            [2, 2, 0, 3, 3],
            [3, 3, 3, 0, 3],
            [3, 3, 3, 3, 0],
        ]
    )
    np.testing.assert_array_equal(unbalanced.lca_height_matrix(), expected)
    assert unbalanced.lca(0, 2) == 6
    assert unbalanced.lca(3, 4) == 7


def test_lca_matches_a_naive_walk_on_a_random_tree() -> None:
    rng = np.random.default_rng(3)
    k = 30
    parent = []
    alive = list(range(k))
    nodes = k
    links: dict[int, int] = {}
    while len(alive) > 1:
        size = min(len(alive), int(rng.integers(2, 5)))
        picked = rng.choice(len(alive), size=size, replace=False)
        for i in sorted(picked, reverse=True):
            links[alive.pop(i)] = nodes
        alive.append(nodes)
        nodes += 1
    parent = [links.get(v, -1) for v in range(nodes)]
    tree = Hierarchy(np.array(parent), k)
    lca = tree.lca_matrix()
    for a in range(k):
        for b in range(k):
            up_a = tree.ancestors(a)
            common = next(v for v in tree.ancestors(b) if v in up_a)
            assert lca[a, b] == common


def test_parent_child_round_trip(unbalanced: Hierarchy) -> None:
    text = unbalanced.to_parent_child()
    back = Hierarchy.from_parent_child(text, class_names=unbalanced.class_names)
    np.testing.assert_array_equal(back.lca_height_matrix(), unbalanced.lca_height_matrix())
    assert back.tree_height == 3


def test_one_based_taxonomy_maps_to_class_indices() -> None:
    # CUB style: leaves 1..3, inner 10 (over 1, 2) and root 11.
    tree = Hierarchy.from_parent_child("10 1\n10 2\n11 10\n11 3\n", class_names=["x", "y", "z"])
    assert tree.num_leaves == 3
    assert tree.ancestors(0) == [0, 3, 4]
    assert tree.ancestors(2) == [2, 4]
    assert tree.lca_height_matrix().tolist() == [[0, 1, 2], [1, 0, 2], [2, 2, 0]]


def test_zero_based_with_explicit_offset() -> None:
    tree = Hierarchy.from_parent_child("5 0\n5 1\n6 5\n6 2\n", leaf_offset=0)
    assert tree.num_leaves == 3
    assert tree.ancestors(1) == [1, 3, 4]


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("5 0\n6 0\n7 5\n7 6\n7 1\n", {}, "two parents"),
        ("3 0\n3 1\n4 3\n3 4\n5 2\n", {}, "cycle"),
        ("3 0\n3 1\n4 3\n4 2\n", {"num_classes": 2}, "not classes"),
        ("4 0\n4 1\n5 4\n5 2\n", {"num_classes": 4}, "missing"),
        ("3 0\n3 1\n4 2\n", {}, "roots"),
        ("3 0 9\n", {}, "fields"),
    ],
)
def test_invalid_parent_child_names_the_problem(text: str, kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        Hierarchy.from_parent_child(text, **kwargs)


def test_json_and_newick_round_trips(unbalanced: Hierarchy) -> None:
    back = Hierarchy.from_json(unbalanced.to_json())
    assert back.same_shape(unbalanced)
    assert back.class_names == unbalanced.class_names
    newick = unbalanced.to_newick()
    assert newick.endswith(";")
    again = Hierarchy.from_newick(newick, class_names=unbalanced.class_names)
    np.testing.assert_array_equal(again.lca_height_matrix(), unbalanced.lca_height_matrix())


def test_newick_with_quoted_names() -> None:
    tree = Hierarchy.from_newick("(('sea lion',seal)pinniped,cat)root;")
    assert tree.class_names == ["sea lion", "seal", "cat"]
    assert tree.lca_height_matrix()[0, 1] == 1
    assert "'sea lion'" in tree.to_newick()


def test_constructor_validation() -> None:
    with pytest.raises(InputError, match="exactly one root"):
        Hierarchy(np.array([-1, 2, -1]), 2)
    with pytest.raises(InputError, match="no children"):
        Hierarchy(np.array([3, 3, 4, 4, -1]), 2)
    with pytest.raises(InputError, match="class names"):
        Hierarchy(np.array([2, 2, -1]), 2, class_names=["only-one"])


def test_read_by_extension(tmp_path, unbalanced: Hierarchy) -> None:
    (tmp_path / "t.json").write_text(unbalanced.to_json())
    (tmp_path / "t.nwk").write_text(unbalanced.to_newick())
    (tmp_path / "t.txt").write_text(unbalanced.to_parent_child())
    for name in ("t.json", "t.nwk", "t.txt"):
        tree = Hierarchy.read(tmp_path / name, class_names=unbalanced.class_names)
        np.testing.assert_array_equal(tree.lca_height_matrix(), unbalanced.lca_height_matrix())
    with pytest.raises(InputError, match="does not exist"):
        Hierarchy.read(tmp_path / "missing.txt")


def test_rich_tree_shows_class_names(unbalanced: Hierarchy) -> None:
    from rich.console import Console

    console = Console(record=True, width=80)
    console.print(unbalanced.rich_tree())
    text = console.export_text()
    for name in "abcde":
        assert name in text


@pytest.mark.parametrize(
    ("text", "offset", "token", "near"),
    [
        ("((a(b),c)x,d)r;", 3, "unexpected '(' after the name 'a'", '"((a^(b),c)x,d)r;"'),
        ("((a,b),c", 8, "the text ends inside the group '(' opened at offset 0", '"((a,b),c^"'),
        ("(a,b;", 4, "';' comes inside the group", '"(a,b^;"'),
        ("(a,b));", 5, "unmatched ')'", '"(a,b)^);"'),
        ("(a,,b);", 3, "a leaf without a name", '"(a,^,b);"'),
        ("'sea lion,seal);", 0, "unclosed quote", "^'sea lion"),
        ("(a,b)r;(c,d);", 7, "text after the tree's final ';'", '"(a,b)r;^(c,d);"'),
        ("(a:x,b);", 3, "branch length 'x' is not a number", '"(a:^x,b);"'),
        ("(a,b)r,c;", 6, "',' outside any group", '"(a,b)r^,c;"'),
        ("(a[x,b);", 2, "unclosed comment '['", '"(a^[x,b);"'),
        ("(a,a);", 3, "leaf 'a' appears twice (first at offset 1)", '"(a,^a);"'),
    ],
)
def test_newick_errors_point_at_the_spot(text: str, offset: int, token: str, near: str) -> None:
    with pytest.raises(InputError) as err:
        Hierarchy.from_newick(text)
    msg = str(err.value)
    assert msg.startswith(f"Newick error at offset {offset}: {token}"), msg
    assert near in msg and "\n" not in msg and " — " in msg  # one line: problem, excerpt, fix


def test_newick_errors_in_multi_line_text_give_line_and_column(tmp_path) -> None:
    text = "((cat,dog)pets,\n  sea lion(adult),fox)root;\n"
    with pytest.raises(InputError) as err:
        Hierarchy.from_newick(text)
    msg = str(err.value)
    assert "at offset 26 (line 2, column 11): unexpected '(' after the name 'sea lion'" in msg
    assert 'near "…cat,dog)pets,   sea lion^(adult),fox)root; "' in msg and "\n" not in msg
    assert "quote names that contain ( ) , : ; with single quotes" in msg
    (tmp_path / "tax.nwk").write_text(text)
    with pytest.raises(InputError, match=r"^tax\.nwk: Newick error at offset 26 \(line 2, column 11\)"):
        Hierarchy.read(tmp_path / "tax.nwk")
    with pytest.raises(InputError, match="line 2, column 1\\): unexpected name 'lion'"):
        Hierarchy.from_newick("(sea\nlion,b);")
    with pytest.raises(InputError, match="the text is empty —"):
        Hierarchy.from_newick("  \n")


def test_newick_leaves_checked_against_class_names() -> None:
    with pytest.raises(InputError, match=r"offset 4: leaf 'e' is not a class \(nor are \['c'\]\)"):
        Hierarchy.from_newick("((a,e)x,c);", class_names=["a", "b", "d"])
    with pytest.raises(InputError, match=r"4 classes, missing \['d'\]"):
        Hierarchy.from_newick("((a,b)x,c);", class_names=["a", "b", "c", "d"])


def test_newick_lengths_comments_and_escaped_quotes() -> None:
    tree = Hierarchy.from_newick("(('sea lion':0.5,'o''neil':1e-1)[&comment]pinniped:2,cat)root;")
    assert tree.class_names == ["sea lion", "o'neil", "cat"]
    assert tree.node_names[3:] == ["pinniped", "root"]
    back = Hierarchy.from_newick(tree.to_newick(), class_names=tree.class_names)
    np.testing.assert_array_equal(back.lca_height_matrix(), tree.lca_height_matrix())
    assert "'o''neil'" in tree.to_newick()
    assert Hierarchy.from_newick("(a,b)").class_names == ["a", "b"]  # the final ';' may be left out
