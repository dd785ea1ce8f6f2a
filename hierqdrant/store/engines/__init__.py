"""Storage engines behind one small interface (:class:`Engine`).

- :class:`EdgeEngine` — the embedded default: Qdrant's engine in-process (``qdrant-edge-py``), one shard per
  collection under a data directory.
- :class:`QdrantEngine` — a Qdrant server, cluster or cloud through ``qdrant-client`` (also its local mode).

:func:`connect` picks one from a URL; :func:`as_engine` accepts an engine or a plain ``QdrantClient`` wherever
the API takes an engine.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from urllib.parse import urlsplit

from qdrant_client import QdrantClient

from hierqdrant.core.errors import InputError
from hierqdrant.store.engines.base import SIDECAR_SUFFIX, Engine, Hit, Record
from hierqdrant.store.engines.client import QdrantEngine, insecure_key_warning, safe_url
from hierqdrant.store.engines.edge import EdgeEngine, default_data_dir

__all__ = [
    "SIDECAR_SUFFIX",
    "EdgeEngine",
    "Engine",
    "Hit",
    "QdrantEngine",
    "Record",
    "as_engine",
    "connect",
    "default_data_dir",
]

_URL_RE = re.compile(r"^https?://[^\s]+$", re.IGNORECASE)


def connect(
    url: str | None = None,
    api_key: str | None = None,
    data_dir: str | Path | None = None,
    *,
    timeout: float = 10,
) -> Engine:
    """Open an engine.

    - no ``url``: the embedded engine under ``data_dir`` (default ``$HIERQDRANT_DATA`` or ``./.hierqdrant``);
    - ``http(s)://host:port``: a Qdrant server/cloud, checked at once (``EngineError`` "cannot reach Qdrant
      at <url>" when it does not answer within ``timeout`` seconds; the API key is never echoed);
    - ``":memory:"`` or ``"local:<dir>"``: qdrant-client's local mode (in memory / persisted in ``<dir>``),
      slow pure-Python evaluation, meant for tests.
    """
    if url is None or url == "":
        return EdgeEngine(data_dir)
    if not isinstance(url, str):
        raise InputError(
            f"invalid Qdrant URL of type {type(url).__name__}", "pass a string such as http://localhost:6333"
        )
    if url == ":memory:":
        return QdrantEngine(QdrantClient(location=":memory:"))
    if url.startswith("local:"):
        path = url[len("local:") :]
        if not path:
            raise InputError("empty path in 'local:' URL", "use local:<directory>")
        return QdrantEngine(QdrantClient(path=path), location=path)
    if not _URL_RE.match(url):
        raise InputError(
            f"invalid Qdrant URL {safe_url(url)!r}",
            "use http(s)://host:port (e.g. http://localhost:6333), ':memory:' or 'local:<dir>'",
        )
    try:
        parts = urlsplit(url)
    except ValueError:
        raise InputError(f"invalid Qdrant URL {safe_url(url)!r}", "use http(s)://host:port") from None
    try:
        port = parts.port
    except ValueError:  # not a number, or out of range
        port = 0
    if port == 0:
        raise InputError(
            f"invalid port in Qdrant URL {safe_url(url)!r}: a port is a number from 1 to 65535",
            "e.g. http://localhost:6333",
        )
    try:
        # our own reachability check below replaces the client's version check (which only warns)
        with insecure_key_warning(url, api_key):
            client = QdrantClient(
                url=url, api_key=api_key, timeout=max(1, math.ceil(timeout)), check_compatibility=False
            )
    except ValueError:
        raise InputError(f"invalid Qdrant URL {safe_url(url)!r}", "use http(s)://host:port") from None
    engine = QdrantEngine(client, location=url)
    engine.ping()
    return engine


def as_engine(x: Engine | QdrantClient) -> Engine:
    """``x`` itself if it is an engine, a :class:`QdrantEngine` around it if it is a ``QdrantClient``."""
    if isinstance(x, QdrantClient):
        return QdrantEngine(x)
    if isinstance(x, Engine):
        return x
    raise InputError(
        f"expected a hierqdrant engine or a QdrantClient, got {type(x).__name__}",
        "pass hierqdrant.connect(...) or a qdrant_client.QdrantClient",
    )
