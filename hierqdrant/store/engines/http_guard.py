"""What :func:`~hierqdrant.store.engines.connect` adds to a qdrant-client's REST connection: a total deadline
per request, an answer that is not Qdrant's named as such, and API keys checked before they are sent.

- **Deadline.** httpx's timeouts bound each socket operation, so a server that trickles a byte a second
  holds a request for as long as it likes. Here every socket read and write of a request waits at most
  until the request's deadline (``timeout`` seconds after it started, the body included): a request ends
  by then with :class:`DeadlineExceeded` (an ``httpx.ReadTimeout``). Connecting waits 10 s at most.
- **Not Qdrant.** A successful answer (or a 404 page) that is not JSON is not Qdrant's: it raises one line
  naming the status and the content type; the last answer's status and type are kept per thread
  (:func:`last_answer`) for the errors qdrant-client raises when a JSON answer is not one of Qdrant's.
- **API keys** with a line break or a character outside printable ASCII are refused in one line that
  names what is wrong, never the key (:func:`check_api_key`).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpcore
import httpx

from hierqdrant.core.errors import EngineError, InputError

__all__ = ["DeadlineExceeded", "Guard", "check_api_key", "last_answer", "not_qdrant"]

CONNECT_SECONDS = 10.0
_local = threading.local()


class DeadlineExceeded(httpcore.ReadTimeout):
    """A request that was still running at its deadline."""


def _bounded(timeout: float | None, cap: float | None = None) -> float | None:
    """``timeout`` shortened to what is left of the current request's time (``DeadlineExceeded`` when
    nothing is), and to ``cap``."""
    if cap is not None:
        timeout = cap if timeout is None else min(timeout, cap)
    end = getattr(_local, "end", None)
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded("the request's deadline passed")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, _bounded(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(host, port, _bounded(timeout, CONNECT_SECONDS), local_address, socket_options)
        return _Stream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_unix_socket(path, _bounded(timeout, CONNECT_SECONDS), socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _json(content_type: str) -> bool:
    kind = content_type.split(";")[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def not_qdrant(location: str, status: int, content_type: str, what: str = "") -> EngineError:
    """The error for an answer that is not Qdrant's."""
    kind = content_type.split(";")[0].strip() or "no content type"
    return EngineError(
        f"the server at {location} did not answer as Qdrant (HTTP {status}, {kind}{what})",
        "check --url / QDRANT_URL: Qdrant's REST API (port 6333 by default), not a web page or another service",
    )


def last_answer() -> tuple[int, str] | None:
    """The status and content type of the last answer this thread received through a guard."""
    answer: tuple[int, str] | None = getattr(_local, "last", None)
    return answer


class Guard:
    """The deadline and the answer check for one client: :meth:`transport` for ``httpx.Client`` and the
    guard itself as a qdrant-client middleware (``client.http.client.add_middleware``)."""

    def __init__(self, location: str, timeout: float) -> None:
        self.location = location
        self.timeout = float(timeout)

    def transport(self) -> httpx.HTTPTransport:
        """httpx's own transport, whose connections read and write within the request's deadline."""
        transport = httpx.HTTPTransport()
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if backend is not None:  # httpcore ≥ 1.0; elsewhere each operation has only its own timeout
            pool._network_backend = _Backend(backend)  # type: ignore[union-attr]
        return transport

    def __call__(self, request: httpx.Request, call_next: Any) -> httpx.Response:
        before = getattr(_local, "end", None)
        end = time.monotonic() + self.timeout
        _local.end = end if before is None else min(before, end)
        try:
            response: httpx.Response = call_next(request)
        finally:
            _local.end = before
        content_type = response.headers.get("content-type", "")
        _local.last = (response.status_code, content_type)
        status = response.status_code
        if (200 <= status < 300 or (status == 404 and "html" in content_type.lower())) and not _json(content_type):
            raise not_qdrant(self.location, status, content_type)
        return response


def check_api_key(api_key: str) -> None:
    """Refuse a key that HTTP cannot carry (a line break, a control or non-ASCII character), naming what
    and where, never the key itself."""
    for i, ch in enumerate(api_key):
        if ch == "\n" or ch == "\r" or not (" " <= ch <= "~"):
            what = (
                "a newline"
                if ch == "\n"
                else "a carriage return"
                if ch == "\r"
                else "a non-ASCII character"
                if ord(ch) > 127
                else "a control character"
            )
            raise InputError(
                f"the API key has {what} (character {i + 1} of {len(api_key)}); HTTP headers carry printable "
                "ASCII only, so it cannot be sent",
                "check --api-key / QDRANT_API_KEY: a key read from a file often ends with a newline, a pasted "
                "one may hold a typographic quote or a non-breaking space",
            )
