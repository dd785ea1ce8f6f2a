"""Errors a user can fix: each carries one line that names the problem and the fix.

The CLI prints ``str(error)`` and exits with status 2; the library raises them for bad input
before anything is written.
"""

from __future__ import annotations


class HierqdrantError(Exception):
    """A user error: bad input, a missing collection, an unreachable server, a mismatched model."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} — {fix}" if fix else problem)


class InputError(HierqdrantError, ValueError):
    """Bad data or arguments (NaN features, wrong shapes, thresholds out of range, corrupt files)."""


class NotFoundError(HierqdrantError, LookupError):
    """A collection, model or file that does not exist."""


class EngineError(HierqdrantError, RuntimeError):
    """The vector store cannot be reached or refused the request."""


class ModelMismatchError(HierqdrantError):
    """A model that does not belong to the collection (other model id or other vector size)."""
