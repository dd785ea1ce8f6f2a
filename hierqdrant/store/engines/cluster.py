"""Sharded and replicated collections (DESIGN.md §3.11): the shard count and replication factor of a create.

A Qdrant server or cluster (:class:`~hierqdrant.store.engines.client.QdrantEngine`) takes
``shard_number`` (the collection's points split over N shards, each request fanned out to all of them
and merged) and ``replication_factor`` (R copies of every shard). The embedded engine keeps one shard in
one process and has no replicas: anything above 1 is refused there with a one-line error, never ignored.

``create_collection(..., shards=, replicas=)`` (and so ``ingest --shards/--replicas``) passes them to
:meth:`EngineBase.create`, which checks them here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hierqdrant.core.errors import InputError

__all__ = ["check_layout"]


def _count(value: Any, name: str, flag: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a whole number ≥ 1, got {value!r}", f"e.g. {flag} 2")
    return int(value)


def check_layout(engine: Any, shard_number: Any = None, replication_factor: Any = None) -> dict[str, int]:
    """The ``shard_number`` / ``replication_factor`` to create with, as keyword arguments for the engine's
    create (``None`` values left out: the server's default); ``{}`` on an engine that keeps one shard.
    ``InputError`` for values < 1, or > 1 on an engine that keeps one shard (the embedded one)."""
    given = {
        "shard_number": _count(shard_number, "shard_number (--shards)", "--shards"),
        "replication_factor": _count(replication_factor, "replication_factor (--replicas)", "--replicas"),
    }
    layout = {k: v for k, v in given.items() if v is not None}
    if not getattr(engine, "clustered", False):
        if any(v > 1 for v in layout.values()):
            what = ", ".join(f"{k}={v}" for k, v in layout.items() if v > 1)
            raise InputError(
                f"the embedded engine keeps each collection in one shard without replicas ({what} asked)",
                "drop --shards/--replicas, or ingest into a Qdrant server or cluster (--url http://…)",
            )
        return {}
    return layout
