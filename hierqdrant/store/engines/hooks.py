"""The collection lifecycle's hooks of an engine (DESIGN.md §2.6), with the defaults of an engine that keeps
no files of its own (a server, qdrant-client's local mode): no writer lock, no damage, nothing to open
before a write, and the generation read from the info dict. The embedded engine overrides them.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

__all__ = ["LifecycleHooks"]


class LifecycleHooks:
    """Mixed into :class:`~hierqdrant.store.engines.base.EngineBase`."""

    def read_info(self, name: str) -> dict[str, Any] | None:  # pragma: no cover - every engine overrides it
        raise NotImplementedError

    def writing(
        self, name: str, *, wait: bool = False, on_wait: Callable[[int | None], None] | None = None
    ) -> AbstractContextManager[None]:
        """Hold the collection's writer lock for a sequence of writes (a no-op on a server).

        The embedded engine's lock is exclusive between processes: another writer gets ``EngineError``
        "being written by another process (pid N)", or with ``wait`` calls ``on_wait(pid)`` and blocks.
        """
        return nullcontext()

    def writer(self, name: str) -> int | None:
        """The pid of another process that holds the collection's writer lock now; ``None`` when none does
        (or the engine has no lock)."""
        return None

    def check_intact(self, name: str) -> None:
        """Raise ``InputError`` when storage under ``name`` is damaged or not a collection (engines override)."""

    def check_replaceable(self, name: str) -> None:
        """Raise ``InputError`` when what is stored under ``name`` is neither a collection nor a damaged one,
        so that :meth:`delete` would remove files that are not this engine's (engines override)."""

    def check_new_name(self, name: str) -> None:
        """Raise ``InputError`` when a collection may not be created under ``name`` here (the embedded
        engine: ``cache``, the feature cache's folder beside its collections)."""

    def open_for_writing(self, name: str) -> None:
        """Take what writing the existing collection needs besides the lock (the embedded engine opens its
        shard, which another process may hold open), so that a writer refused there has written nothing."""

    def damaged(self) -> dict[str, str]:
        """``{name: problem}`` of damaged collections that :meth:`collections` cannot list (engines override)."""
        return {}

    def revision(self, name: str) -> tuple[str | None, str | None]:
        """``(generation, model id)`` of the collection as stored now: a recreate makes a new generation
        (the info dict's, recorded at create; ``None`` in collections written before), a model write
        another model id. ``NotFoundError`` when it does not exist."""
        info = self.read_info(name) or {}
        return info.get("generation"), info.get("model_id")
