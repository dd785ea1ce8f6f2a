"""Named write boundaries where a test can kill the process (fault injection).

The store-writing code calls :func:`fault` with a boundary name at each point where everything written so
far is durable (``after-create``, ``after-upsert-batch``, ``after-cache-flush``, ``before-complete`` …; the
list is in README.md, "Reliability"). Nothing happens unless ``$HIERQDRANT_FAULT`` is set to
``name[:count]``: then the ``count``-th time (default the first) the process reaches that boundary it
ends at once with :data:`FAULT_EXIT` through ``os._exit`` — no cleanup, no buffered output, like a kill.
"""

from __future__ import annotations

import os

__all__ = ["FAULT_ENV", "FAULT_EXIT", "fault"]

FAULT_ENV = "HIERQDRANT_FAULT"
FAULT_EXIT = 137
"""The exit status of a process ended by :func:`fault` (what a shell reports for SIGKILL)."""

_hits: dict[str, int] = {}


def fault(name: str) -> None:
    """End the process here if ``$HIERQDRANT_FAULT`` names this boundary (and this is the count-th hit)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target != name:
        return
    _hits[name] = n = _hits.get(name, 0) + 1
    if n == (int(count) if count.isdigit() else 1):
        os._exit(FAULT_EXIT)
