"""The collection lifecycle (DESIGN.md §2.6) on any engine: the writer lock, damage, states, the point count
an ingest left, the id namespace and the generation a reader compares.

The info dict (:func:`hierqdrant.store.collection.collection_info`) carries, besides the model's summary:

- ``state`` — ``"incomplete"`` while an ingest (attach, detach) writes, ``"complete"`` after its last write;
- ``points`` — the point count an ingest left when it completed (:func:`mark_complete`); a collection that
  holds fewer lost points (:func:`count_problem`);
- ``id_namespace`` — what point ids are derived from (the collection's name when it was created): a
  collection renamed, moved or reached through a symbolic link keeps its ids (:func:`id_namespace`);
- ``generation`` — a random token made when the collection is created: a reader that finds another one knows
  the collection was deleted and made again (:class:`Revision`).

Collections written before these keys existed have none: their ids come from their current name, their
count is not compared, and a recreate is told by the model id (the embedded engine also by its own files).
This module imports nothing of :mod:`hierqdrant.store.collection`, which re-exports its names.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal

from hierqdrant.core.errors import InputError, ModelMismatchError, NotFoundError
from hierqdrant.core.faults import fault
from hierqdrant.store.engines import Engine
from hierqdrant.store.engines.base import EngineBase

State = Literal["incomplete", "complete"]
STATES: tuple[State, ...] = ("incomplete", "complete")

__all__ = [
    "STATES",
    "Revision",
    "State",
    "check_intact",
    "check_new_name",
    "check_recreate",
    "collection_state",
    "count_problem",
    "id_namespace",
    "is_attached",
    "mark_complete",
    "new_generation",
    "not_a_hierqdrant_collection",
    "open_for_writing",
    "refuse_attached",
    "rerun_hint",
    "revision",
    "set_state",
    "state_warnings",
    "writing",
]


# ---------------------------------------------------------------------------------------------------------
# whose collection it is


def is_attached(info: Mapping[str, Any] | None) -> bool:
    """Whether an info dict is an attached collection's (it names the application's vector)."""
    return info is not None and isinstance(info.get("vector"), str)


def refuse_attached(name: str, info: Mapping[str, Any] | None, what: str, fix: str | None = None) -> None:
    """Refuse to write our own vectors into an attached collection (``what``: "ingest into it", …);
    ``fix``: the hint, when not the default (upsert with your own client, then ``attach --update``)."""
    if is_attached(info):
        assert info is not None
        raise InputError(
            f"collection {name!r} is an application's collection attached on its vector {info['vector']!r}: "
            f"hierqdrant does not {what}",
            fix
            or "upsert with your own client and hq_payload_for(...), then run hierqdrant attach --update; or "
            "ingest into another collection",
        )


def not_a_hierqdrant_collection(name: str, points: int) -> InputError:
    """The error for a collection that holds points but no hierqdrant model: an application's own (or a
    detached one), which hierqdrant neither ingests into nor deletes."""
    return InputError(
        f"collection {name!r} holds {points} points but no hierqdrant model",
        f"make it hierarchical in place (hierqdrant attach {name} --vector NAME --label-key FIELD), "
        "or ingest into another --collection",
    )


def check_recreate(engine: Engine, name: str) -> None:
    """Refuse ``ingest --recreate`` unless whatever it would delete under ``name`` is a collection that
    ``hierqdrant ingest`` (or ``create_collection``) made: nothing there, a damaged collection of the
    embedded engine (its files without ``collection.json``: :meth:`EngineBase.check_replaceable`), or a
    collection whose stored info dict is ours and not an attached one's (:func:`is_attached`). An attached
    collection, one without a hierqdrant model (an application's own, a detached one, or an empty one)
    and one whose info cannot be read are refused with one line (``InputError``) and left as they are."""
    if isinstance(engine, EngineBase):
        engine.check_replaceable(name)
    if not engine.exists(name):
        return
    info = engine.read_info(name)  # an unreadable one raises: whose it is cannot be told
    refuse_attached(
        name,
        info,
        "delete and rebuild it (ingest --recreate deletes only collections that hierqdrant ingest created)",
        f"fit its model again in place with hierqdrant attach {name} --refit, or ingest into another --collection",
    )
    if info is not None:
        return
    points = engine.count(name)
    if points:
        raise InputError(
            f"collection {name!r} holds {points} points but no hierqdrant model: hierqdrant ingest did not "
            "create it, and --recreate deletes only collections that it created",
            f"make it hierarchical in place (hierqdrant attach {name} --vector NAME --label-key FIELD), "
            "or ingest into another --collection",
        )
    raise InputError(
        f"collection {name!r} has no hierqdrant model: --recreate deletes only collections that hierqdrant "
        "ingest created",
        "ingest into it without --recreate (an empty collection is given the model), or choose another --collection",
    )


# ---------------------------------------------------------------------------------------------------------
# the writer


def writing(
    engine: Engine, name: str, *, wait: bool = False, on_wait: Callable[[int | None], None] | None = None
) -> AbstractContextManager[None]:
    """The engine's writer lock of ``name`` (:meth:`EngineBase.writing`); none for a bare-protocol engine."""
    if isinstance(engine, EngineBase):
        return engine.writing(name, wait=wait, on_wait=on_wait)
    return nullcontext()


def check_intact(engine: Engine, name: str) -> None:
    """Raise ``InputError`` when the storage under ``name`` is damaged (:meth:`EngineBase.check_intact`)."""
    if isinstance(engine, EngineBase):
        engine.check_intact(name)


def check_new_name(engine: Engine, name: str, *, recreate: bool = False) -> None:
    """Raise ``InputError`` when ``name`` may not be created here (:meth:`EngineBase.check_new_name`: on the
    embedded store, ``cache`` is the feature cache's folder) and a writer would create it: it does not exist,
    or ``recreate`` (it is deleted first)."""
    if isinstance(engine, EngineBase) and (recreate or not engine.exists(name)):
        engine.check_new_name(name)


def open_for_writing(engine: Engine, name: str) -> None:
    """Take what writing ``name`` needs besides the lock, before the first write changes anything
    (:meth:`EngineBase.open_for_writing`: the embedded engine opens the shard, which another process may
    hold open), so that a writer refused there leaves the collection as it was."""
    if isinstance(engine, EngineBase) and engine.exists(name):
        engine.open_for_writing(name)


# ---------------------------------------------------------------------------------------------------------
# states and counts


def collection_state(info: Mapping[str, Any] | None) -> State | None:
    """The state in an info dict: ``None`` without a hierqdrant model, ``"complete"`` when not recorded
    (collections written before states existed)."""
    if info is None:
        return None
    return "incomplete" if info.get("state") == "incomplete" else "complete"


def set_state(engine: Engine, name: str, state: State, *, points: int | None = None) -> None:
    """Record ``state`` (and with ``points`` the point count) in the collection's info dict; the model
    files are left as they are. Opens what the writer needs first (:func:`open_for_writing`)."""
    info = engine.read_info(name)
    if info is None:
        raise NotFoundError(f"collection {name!r} has no hierqdrant model", "ingest it with `hierqdrant ingest`")
    if info.get("state") == state and (points is None or info.get("points") == points):
        return
    open_for_writing(engine, name)
    info = {**info, "state": state}
    if points is not None:
        info["points"] = int(points)
    if isinstance(engine, EngineBase):
        engine.update_info(name, info)
    else:
        stored = engine.read_model(name)
        assert stored is not None
        engine.write_model(name, stored[0], info)
    fault(f"after-{state}")


def mark_complete(engine: Engine, name: str) -> int:
    """The last write of an ingest: ``complete``, with the point count it leaves (returned)."""
    points = engine.count(name)
    set_state(engine, name, "complete", points=points)
    return points


def count_problem(name: str, info: Mapping[str, Any] | None, points: int) -> str | None:
    """What is wrong when a complete collection of our own holds fewer points than its last ingest left
    (lost segments, points deleted by another client); ``None`` when nothing is, or nothing was recorded."""
    if info is None or is_attached(info) or collection_state(info) != "complete":
        return None
    recorded = info.get("points")
    if not isinstance(recorded, int) or isinstance(recorded, bool) or points >= recorded:
        return None
    return (
        f"collection {name!r} holds {points} of the {recorded} points its last ingest left: "
        f"{recorded - points} are missing (lost segments, or deleted by another client)"
    )


def rerun_hint(attached: bool) -> str:
    """What completes an incomplete collection: the same ingest, or for an ``attached`` one the same attach
    (or detach) that was stopped."""
    if attached:
        return "an attach or detach of it did not finish — run the same hierqdrant attach (or detach) again"
    return "an ingest into it did not finish — run the same ingest again"


def state_warnings(engine: Engine, name: str) -> list[str]:
    """Warnings for a reader of ``name``: one when a write into it did not finish, one when points are missing."""
    info = engine.read_info(name)
    if collection_state(info) == "incomplete":
        return [f"collection {name!r} is incomplete: {rerun_hint(is_attached(info))}, so points may be missing"]
    problem = count_problem(name, info, engine.count(name)) if info and "points" in info else None
    if problem is not None:
        return [f"{problem} — restore a backup, or run the same ingest again"]
    return []


# ---------------------------------------------------------------------------------------------------------
# identity: point ids, generations


def id_namespace(info: Mapping[str, Any] | None, name: str) -> str:
    """What the collection's point ids are derived from: the ``id_namespace`` its info records (its name
    when it was created), else (collections written before it was recorded) its current name."""
    recorded = (info or {}).get("id_namespace")
    return recorded if isinstance(recorded, str) and recorded else name


def new_generation() -> str:
    """A fresh generation token (16 hex digits) for a collection being created."""
    return uuid.uuid4().hex[:16]


def revision(engine: Engine, name: str) -> tuple[str | None, str | None]:
    """``(generation, model id)`` of the collection as it is stored now (:meth:`EngineBase.revision`): a
    recreate changes the first, a new model the second; NotFoundError when it is gone."""
    if isinstance(engine, EngineBase):
        return engine.revision(name)
    if not engine.exists(name):
        raise NotFoundError(f"collection {name!r} no longer exists at {engine.location}", "it was deleted")
    info = engine.read_info(name) or {}
    return info.get("generation"), info.get("model_id")


class Revision:
    """What a long-lived reader read (:func:`revision`), and a cheap check that it is still what is stored.

    The check runs on every call where it is cheap (the embedded engine: a ``stat``; qdrant-client's local
    mode: in-process), and at most every :attr:`every` seconds on a server (one request).
    """

    every = 5.0

    def __init__(self, engine: Engine, name: str, model_id: str) -> None:
        self.engine, self.name, self.model_id = engine, name, model_id
        local = getattr(engine, "kind", "") == "embedded" or bool(getattr(engine, "local", False))
        self.interval = 0.0 if local else self.every
        self.seen = revision(engine, name)
        self._checked = time.monotonic()
        if self.seen[1] is not None and self.seen[1] != model_id:
            raise self._stale(self.seen)  # the model changed between reading it and now

    def check(self) -> None:
        """Raise one line when the collection was deleted, made again or given another model since."""
        if self.interval and time.monotonic() - self._checked < self.interval:
            return
        try:
            now = revision(self.engine, self.name)
        except NotFoundError:
            raise NotFoundError(
                f"collection {self.name!r} was deleted since this searcher read its model {self.model_id}",
                "make a new searcher once it exists again",
            ) from None
        self._checked = time.monotonic()
        if now != self.seen:
            raise self._stale(now)

    def _stale(self, now: tuple[str | None, str | None]) -> ModelMismatchError:
        what = (
            "was deleted and made again" if now[0] != self.seen[0] else f"was given another model ({now[1] or 'none'})"
        )
        return ModelMismatchError(
            f"collection {self.name!r} {what} since this searcher read its model {self.model_id}",
            "make a new HierarchicalSearcher: it reads the collection as it is now",
        )
