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

from hierqdrant.core.errors import EngineError, InputError, NotFoundError
from hierqdrant.store.engines.base import SIDECAR_SUFFIX, Engine, Hit, Record
from hierqdrant.store.engines.client import QdrantEngine, insecure_key_warning, safe_url
from hierqdrant.store.engines.edge import EdgeEngine, default_data_dir
from hierqdrant.store.engines.http_guard import Guard, check_api_key

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


DEFAULT_TIMEOUT = 60.0
"""Seconds one request to a server may take, all of it (:func:`connect`'s ``timeout``)."""


def connect(
    url: str | None = None,
    api_key: str | None = None,
    data_dir: str | Path | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    create: bool = True,
) -> Engine:
    """Open an engine.

    - no ``url``: the embedded engine under ``data_dir`` (default ``$HIERQDRANT_DATA`` or ``./.hierqdrant``);
    - ``http(s)://host:port``: a Qdrant server/cloud, checked at once (``EngineError`` "cannot reach Qdrant
      at <url>" when nothing answers, "did not answer within N s" past ``timeout``, "did not answer as
      Qdrant" for another kind of server; the API key is never echoed, and one with a line break or a
      non-ASCII character is refused before it is sent). ``timeout`` bounds each request as a whole, the
      answer's last byte included (:mod:`~hierqdrant.store.engines.http_guard`);
    - ``":memory:"`` or ``"local:<dir>"``: qdrant-client's local mode (in memory / persisted in ``<dir>``),
      slow pure-Python evaluation, meant for tests; with ``create=False`` (a reader) a ``<dir>`` that does
      not exist is a NotFoundError instead of being made.
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
        if not create and not Path(path).expanduser().is_dir():
            raise NotFoundError(
                f"there is no local store at {path} (local:{path} does not exist)",
                "check --url (hierqdrant ingest --url local:DIR makes one)",
            )
        try:
            client = QdrantClient(path=path)
        except RuntimeError as e:  # portalocker: one client at a time may open a local store
            if "already accessed" not in str(e):
                raise
            raise EngineError(
                f"the local store at {path} is open in another process",
                "close it (one process at a time may open local:DIR), or use a Qdrant server",
            ) from None
        return QdrantEngine(client, location=path)
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
    if api_key is not None:
        check_api_key(api_key)
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise InputError(f"invalid timeout {timeout!r}", "pass a number of seconds above 0, e.g. --timeout 60")
    guard = Guard(safe_url(url), timeout)
    try:
        # our own reachability check below replaces the client's version check (which only warns)
        with insecure_key_warning(url, api_key):
            client = QdrantClient(
                url=url, api_key=api_key, timeout=max(1, math.ceil(timeout)), check_compatibility=False,
                transport=guard.transport(),
            )  # fmt: skip
    except ValueError:
        raise InputError(f"invalid Qdrant URL {safe_url(url)!r}", "use http(s)://host:port") from None
    client.http.client.add_middleware(guard)
    engine = QdrantEngine(client, location=url)
    engine.timeout = float(timeout)
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
