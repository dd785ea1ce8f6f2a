"""What ``hierqdrant info`` says of each collection of a store (DESIGN.md §2.6): a row with its count and model,
or listed apart with the reason it has no row, or damaged. Damaged means damaged:

- **rows** — collections that can be read and counted (the state is the info dict's: ``incomplete`` while a
  write into it has not finished);
- **other** — collections that are fine but cannot be counted or have no model of ours: ``being written``
  (another process holds the writer lock: pid), ``open in another process`` (a reader holds the embedded
  shard), ``read-only`` (the embedded store's files cannot be written, which qdrant-edge needs also to
  read them), ``not attached`` (an application's collection of named vectors without a hierqdrant model);
- **damaged** — ``collection.json`` lost or unreadable, a corrupt model, or fewer points than the last
  ingest left (:func:`~hierqdrant.store.lifecycle.count_problem`), each with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hierqdrant.core.errors import EngineError, HierqdrantError, InputError
from hierqdrant.store.collection import searched_dims
from hierqdrant.store.engines import Engine
from hierqdrant.store.engines.base import EngineBase
from hierqdrant.store.engines.edge_state import READ_ONLY
from hierqdrant.store.lifecycle import collection_state, count_problem, is_attached

__all__ = ["Listing", "list_collections", "unavailable"]


@dataclass
class Listing:
    rows: list[dict[str, Any]] = field(default_factory=list)
    other: list[dict[str, Any]] = field(default_factory=list)  # each with "status" (and "pid" when known)
    damaged: dict[str, str] = field(default_factory=dict)


def _row(name: str, raw: dict[str, Any] | None, points: int | None, dims: int | None) -> dict[str, Any]:
    info = raw or {}
    return {
        "collection": name,
        "points": points,
        "dims": dims,
        "state": collection_state(raw),
        "model_id": info.get("model_id"),
        "classes": info.get("classes"),
        "levels": info.get("levels"),
        "height": info.get("height"),
        "alpha": info.get("alpha"),
        "query_classifier": info.get("query_classifier"),
        "leaf_from": info.get("leaf_from"),
        "extractor": (info.get("extractor") or {}).get("name"),
        "_extractor": info.get("extractor"),  # for the caller (removed before printing): the whole description,
        "_attached": is_attached(raw),  # … and whether it is an application's collection attached
    }


def unavailable(engine: Engine, name: str, error: EngineError) -> tuple[str, int | None] | None:
    """Why ``name`` cannot be opened when that is no damage — ``("being written", pid)``, ``("open in another
    process", None)`` or ``("read-only", None)`` — else ``None``."""
    pid = engine.writer(name) if isinstance(engine, EngineBase) else None
    if pid is not None:
        return "being written", pid
    if "open in another process" in error.problem:
        return "open in another process", None
    if READ_ONLY in error.problem:
        return "read-only", None
    return None


def list_collections(engine: Engine) -> Listing:
    """Every collection of ``engine`` in one of the three lists (one unreadable one hides no other)."""
    out = Listing()
    for name in engine.collections():
        try:
            raw = engine.read_info(name)
        except HierqdrantError as e:
            out.damaged[name] = e.problem
            continue
        try:
            points = engine.count(name)
        except EngineError as e:
            why = unavailable(engine, name, e)
            if why is None and engine.kind != "embedded":  # the server's trouble (timeout, …), not the collection's
                raise
            if why is None:
                out.damaged[name] = e.problem
            else:
                out.other.append({**_row(name, raw, None, None), "status": why[0], "pid": why[1]})
            continue
        except HierqdrantError as e:
            out.damaged[name] = e.problem
            continue
        problem = count_problem(name, raw, points)
        if problem is not None:
            out.damaged[name] = f"{problem} — restore a backup, or run the same ingest again"
            continue
        try:
            dims = searched_dims(engine, name, raw)
        except InputError as e:
            if raw is None:  # named vectors and no model: an application's own collection
                out.other.append({**_row(name, raw, points, None), "status": "not attached", "pid": None})
            else:
                out.damaged[name] = e.problem
            continue
        except HierqdrantError as e:
            out.damaged[name] = e.problem
            continue
        out.rows.append(_row(name, raw, points, dims))
    if isinstance(engine, EngineBase):
        out.damaged.update(engine.damaged())
    return out
