"""Newick text → a raw tree, with errors that point at the character where the text goes wrong.

Grammar read (one tree; the final ``;`` may be left out)::

    tree    := subtree [";"]
    subtree := "(" subtree ("," subtree)* ")" [name] [":" length]  |  name [":" length]

Names are unquoted (any characters but ``( ) [ ] , : ;`` and ``'``; blanks inside are kept, a line
break ends the name) or single-quoted, with ``''`` for a quote inside (``'o''neil'``). Comments in
square brackets (``[&R]``) are skipped. Branch lengths must be numbers and are ignored.

Every error is one line: what was found, the character offset (and line:column for text of more than
one line), an excerpt with ``^`` just before the offending character, and a fix.

Linear time: one pass over the text, tokens read lazily, no recursion. Groups may nest at most
:data:`MAX_DEPTH` levels; the first ``(`` past it is an error at once (nothing after it is read), so a
huge or hostile file costs no more than its first ~10,000 groups.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from hierqdrant.core.errors import InputError

__all__ = ["MAX_DEPTH", "RawTree", "newick_error", "parse_newick"]

QUOTE_HINT = "quote names that contain ( ) , : ; with single quotes, e.g. ('sea lion (adult)',seal)root;"
_CLOSE_HINT = "close every ( with ) and end the tree with ;"
_PUNCT = "(),;:"
_EXCERPT = 24  # characters shown either side of the error

MAX_DEPTH = 10_000
"""How deep groups may nest. Real taxonomies have tens of levels (WordNet's deepest noun ~20, a tree of life
with every rank ~40); far above that, the limit keeps every tree that reaches a model in bounds."""


@dataclass
class RawTree:
    """Nodes in parse order (the root first): parent (``-1`` for the root), name, leaf flag, offset."""

    parent: list[int] = field(default_factory=list)
    label: list[str] = field(default_factory=list)
    is_leaf: list[bool] = field(default_factory=list)
    offset: list[int] = field(default_factory=list)

    def add(self, parent: int, leaf: bool, offset: int, label: str = "") -> int:
        self.parent.append(parent)
        self.label.append(label)
        self.is_leaf.append(leaf)
        self.offset.append(offset)
        return len(self.parent) - 1


def where(text: str, offset: int) -> str:
    """``offset 12`` or, for text of several lines, ``offset 12 (line 2, column 3)``."""
    if "\n" not in text.rstrip("\n"):
        return f"offset {offset}"
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"offset {offset} (line {line}, column {column})"


def excerpt(text: str, offset: int) -> str:
    """Up to 24 characters either side of ``offset`` with ``^`` inserted there, on one line."""
    lo, hi = max(0, offset - _EXCERPT), min(len(text), offset + _EXCERPT)
    flat = [(" " if ch in "\r\n\t" else ch) for ch in text[lo:hi]]
    left, right = "".join(flat[: offset - lo]), "".join(flat[offset - lo :])
    return ("…" if lo > 0 else "") + left + "^" + right + ("…" if hi < len(text) else "")


def newick_error(text: str, offset: int, what: str, fix: str) -> InputError:
    """The one-line error for ``what`` found at ``offset`` of ``text``."""
    near = f', near "{excerpt(text, offset)}"' if text.strip() else ""
    return InputError(f"Newick error at {where(text, offset)}: {what}{near}", fix)


def _show(token: str) -> str:
    return repr(token if len(token) <= 20 else token[:19] + "…")


def _tokens(text: str) -> Iterator[tuple[str, str, int]]:
    """(kind, text, offset), read lazily: kind is one of ``( ) , ; :``, ``name`` or ``end`` (last); quotes and
    comments resolved."""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == "[":
            close = text.find("]", i + 1)
            if close < 0:
                raise newick_error(text, i, "unclosed comment '['", "close the comment with ] or " + QUOTE_HINT)
            i = close + 1
        elif ch == "]":
            raise newick_error(text, i, "unexpected ']'", QUOTE_HINT)
        elif ch in _PUNCT:
            yield ch, ch, i
            i += 1
        elif ch == "'":
            j, parts = i + 1, []
            while True:
                close = text.find("'", j)
                if close < 0:
                    raise newick_error(
                        text, i, "unclosed quote \"'\"", "end the quoted name with ' (write a quote inside it as '')"
                    )
                parts.append(text[j:close])
                if text.startswith("''", close):
                    parts.append("'")
                    j = close + 2
                    continue
                break
            yield "name", "".join(parts), i
            i = close + 1
        else:
            j = i
            while j < n and text[j] not in "()[],:;'\n\r":
                j += 1
            yield "name", text[i:j].strip(), i
            i = j
    yield "end", "", n


def parse_newick(text: str) -> RawTree:
    """Parse one Newick tree; raise a one-line :class:`InputError` that points at the first problem."""
    tokens = _tokens(text)
    tree = RawTree()
    first = next(tokens)
    if first[0] == "end":
        raise newick_error(text, 0, "the text is empty", "write a tree such as ((cat,lynx)felids,dog)root;")
    open_groups: list[int] = []  # inner nodes whose ")" has not come yet
    expect_subtree = True
    current, named, has_length = -1, False, False  # the subtree just finished and what it took
    token = first
    while True:
        kind, tok, at = token
        parent = open_groups[-1] if open_groups else -1
        if expect_subtree:
            if kind == "(":
                if len(open_groups) >= MAX_DEPTH:
                    what = f"groups nest deeper than {MAX_DEPTH:,} levels"
                    raise newick_error(text, at, what, "a taxonomy has tens of levels: check where its groups close")
                open_groups.append(tree.add(parent, False, at))
            elif kind == "name" and tok:
                current, named, has_length = tree.add(parent, True, at, tok), True, False
                expect_subtree = False
            elif kind == "name" or kind in ",):":
                raise newick_error(text, at, "a leaf without a name", "name every leaf, e.g. (cat,dog)pets;")
            else:
                raise newick_error(text, at, "the text ends where a name or '(' should come", _CLOSE_HINT)
            token = next(tokens)
            continue
        if kind == "name" and not named and not has_length:
            tree.label[current], named = tok, True
        elif kind == "name":
            raise newick_error(text, at, f"unexpected name {_show(tok)}", QUOTE_HINT)
        elif kind == ":":
            length_kind, length, length_at = next(tokens)
            if has_length or length_kind != "name" or not _is_number(length):
                found = _show(length) if length_kind == "name" else _show(length_kind)
                raise newick_error(
                    text, length_at, f"branch length {found} is not a number", "write e.g. cat:0.5, or " + QUOTE_HINT
                )
            has_length = True
        elif kind == ",":
            if not open_groups:
                raise newick_error(text, at, "',' outside any group", "wrap the whole tree in ( ), e.g. (a,b)root;")
            expect_subtree = True
        elif kind == ")":
            if not open_groups:
                raise newick_error(text, at, "unmatched ')'", "remove it or open the group with (")
            current, named, has_length = open_groups.pop(), False, False
        elif kind == "(":
            after = f"the name {_show(tree.label[current])}" if named else "')'"
            raise newick_error(text, at, f"unexpected '(' after {after}", QUOTE_HINT)
        elif open_groups:  # ";" or the end, inside a group
            opened = tree.offset[open_groups[-1]]
            what = "';' comes" if kind == ";" else "the text ends"
            raise newick_error(text, at, f"{what} inside the group '(' opened at offset {opened}", _CLOSE_HINT)
        else:
            if kind == ";":
                extra_kind, _, extra = next(tokens)
                if extra_kind != "end":
                    raise newick_error(text, extra, "text after the tree's final ';'", "keep one tree per Newick file")
            return tree
        token = next(tokens)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
