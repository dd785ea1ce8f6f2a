"""Names that come from data (file names, class names, payload paths): checked before they are stored, made
printable before they are shown.

A file name that is not valid UTF-8 reaches Python as a ``str`` with lone surrogates (``os.fsdecode``'s
``surrogateescape``), and a features file can hold such strings too. They cannot be encoded as UTF-8, so
JSON payloads, point ids and the engines refuse them: :func:`is_utf8` finds them before anything is
written (ingest skips and reports such files), :func:`printable` shows them (``\\xff`` for each raw byte).
"""

from __future__ import annotations

from collections.abc import Sequence

from hierqdrant.core.errors import InputError

__all__ = ["NOT_UTF8", "check_class_names", "is_utf8", "printable"]

#: The reason given for a file or row skipped because its name is not valid UTF-8.
NOT_UTF8 = "name is not valid UTF-8 (rename it to store it)"


def is_utf8(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8 (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(text: object) -> str:
    """``text`` as a string that every console and file can take: the raw bytes of a non-UTF-8 file name
    as ``\\xNN``, any other lone surrogate as ``\\udNNN``."""
    s = str(text)
    if is_utf8(s):
        return s
    try:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


def check_class_names(names: Sequence[str], where: str) -> list[str]:
    """``names`` as a list, or one ``InputError`` for an empty name, a name given twice, or one that is not
    valid UTF-8 (class names become the tree's labels, the payload's ``label`` and the model's JSON)."""
    out = [str(n) for n in names]
    empty = [i for i, n in enumerate(out) if not n.strip()]
    if empty:
        raise InputError(
            f"{where}: class {empty[0]} has an empty name ({len(empty)} empty of {len(out)})",
            "give every class a non-empty name",
        )
    seen: dict[str, int] = {}
    for i, n in enumerate(out):
        if n in seen:
            raise InputError(
                f"{where}: class name {printable(n)!r} is given twice (classes {seen[n]} and {i})",
                "give every class its own name",
            )
        seen[n] = i
    bad = [n for n in out if not is_utf8(n)]
    if bad:
        raise InputError(
            f"{where}: class name {printable(bad[0])!r} is not valid UTF-8", "rename the class (UTF-8 text)"
        )
    return out
