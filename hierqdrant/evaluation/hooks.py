"""How a long evaluation or tuning reports while it runs: one-line messages and progress counters.

The library never prints; it calls :class:`Hooks`. The command line passes hooks that write to stderr
(a rich progress bar on a terminal, a few plain lines otherwise), so ``--json`` keeps stdout to one
JSON document.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

__all__ = ["Hooks", "ProgressFactory"]

#: ``progress(total, label)`` is a context in which the callable it yields (or None) is told how many
#: units (queries, grid points, …) were done.
ProgressFactory = Callable[[int, str], AbstractContextManager[Callable[[int], None] | None]]


@contextmanager
def _no_progress(_total: int, _label: str) -> Iterator[None]:
    yield None


def _no_log(_message: str) -> None:
    return None


@dataclass
class Hooks:
    """How a long run reports: one-line messages (``log``) and progress counters (``progress``)."""

    log: Callable[[str], None] = _no_log
    progress: ProgressFactory = _no_progress
