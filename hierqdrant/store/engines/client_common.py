"""What the synchronous and the asynchronous qdrant-client engines share: URLs without secrets, the
insecure-key warning, qdrant-client errors as one-line hierqdrant errors, and the layout of the model
sidecar (``<name>--hq-model``: a manifest point and chunk points, see :mod:`~hierqdrant.store.engines.client`)
with its checks, so both engines read a model the same way.
"""

from __future__ import annotations

import base64
import json
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import ValidationError
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from hierqdrant.core.errors import EngineError, HierqdrantError, InputError, NotFoundError
from hierqdrant.store.engines.base import check_model_file, corrupt_model
from hierqdrant.store.engines.http_guard import last_answer, not_qdrant

__all__ = [
    "InsecureApiKeyWarning",
    "Place",
    "chunk_batches",
    "check_manifest",
    "describe",
    "insecure_key_warning",
    "join_chunks",
    "safe_url",
    "translate_errors",
]

_NS = uuid.UUID("6f1c2e1a-3d38-4d6b-9a55-1f0f7b2a9c41")  # namespace of the sidecar's point ids
_MANIFEST_ID = str(uuid.uuid5(_NS, "manifest"))
_SIDECAR_FORMAT = "hierqdrant-model-sidecar/1"
_REQUEST_BYTES = 12 * 1024 * 1024  # keep each sidecar upsert well below Qdrant's 32 MiB request limit


def safe_url(url: str) -> str:
    """``url`` without user info, query or fragment (where API keys sometimes hide)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    try:
        port: int | str | None = parts.port
    except ValueError:  # out of range or not a number: keep what was typed (after any user info)
        port = parts.netloc.rpartition("@")[2].rpartition(":")[2][:24]
    netloc = f"{host}:{port}" if port is not None and port != "" else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


class InsecureApiKeyWarning(UserWarning):
    """An API key sent over plain ``http://``: anyone on the network path can read it."""


_WARNED_INSECURE: set[str] = set()


@contextmanager
def insecure_key_warning(url: str, api_key: str | None) -> Iterator[None]:
    """Around ``QdrantClient(url=..., api_key=...)``: qdrant-client's "Api key is used with an insecure
    connection" becomes one :class:`InsecureApiKeyWarning` of ours, once per URL and process, that names
    the URL (never the key)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Api key is used with an insecure connection")
        yield
    where = safe_url(url)
    if api_key and urlsplit(url).scheme.lower() == "http" and where not in _WARNED_INSECURE:
        _WARNED_INSECURE.add(where)
        warnings.warn(
            InsecureApiKeyWarning(
                f"the API key is sent unencrypted over http to {where} — use https:// for a remote server"
            ),
            stacklevel=3,
        )


def describe(client: Any) -> tuple[str, bool]:
    """(location, is_local) of a client, without secrets."""
    inner = getattr(client, "_client", None)
    try:
        from qdrant_client.local.qdrant_local import QdrantLocal

        if isinstance(inner, QdrantLocal):
            return str(inner.location), True
    except ImportError:  # pragma: no cover - qdrant-client always ships local mode
        pass
    uri = getattr(inner, "rest_uri", None)
    return (safe_url(uri) if uri else "qdrant"), False


def server_message(e: UnexpectedResponse) -> str:
    try:
        body = e.structured()
        msg = body.get("status", {}).get("error") if isinstance(body, dict) else None
    except Exception:
        msg = None
    if not msg:
        msg = e.reason_phrase or f"HTTP {e.status_code}"
    return str(msg).splitlines()[0]


class Place(Protocol):
    """Where requests go: ``location`` (never a key) and the not-found error of a collection."""

    location: str

    def _not_found(self, name: str) -> NotFoundError: ...


def unreachable(place: Place) -> EngineError:
    return EngineError(f"cannot reach Qdrant at {place.location}", "start the server or check --url / QDRANT_URL")


def _bad_json(e: ValueError) -> bool:
    """Whether ``e`` is a JSON decoder's (json, orjson, pydantic-core) rather than an argument check's."""
    text = str(e).lower()
    return isinstance(e, json.JSONDecodeError) or "line 1 column" in text or "expected value" in text


def _handling_error(place: Place, e: ResponseHandlingException) -> EngineError:
    """What a qdrant-client ``ResponseHandlingException`` means: a request past its deadline
    (:mod:`~hierqdrant.store.engines.http_guard`), an answer that is not Qdrant's, or no server."""
    source = getattr(e, "source", None)
    timeout = getattr(place, "timeout", None)
    if isinstance(source, httpx.TimeoutException) and not isinstance(source, httpx.ConnectTimeout):
        within = f" within {timeout:g} s" if timeout else " in time"
        return EngineError(
            f"Qdrant at {place.location} did not answer{within}",
            "check the server (a slow link or a busy server: raise --timeout / HIERQDRANT_TIMEOUT)",
        )
    answer = last_answer()
    if isinstance(source, ValidationError) and answer is not None:
        return not_qdrant(place.location, answer[0], answer[1], ": not an answer of Qdrant's API")
    return unreachable(place)


@contextmanager
def translate_errors(place: Place, what: str, name: str | None = None) -> Iterator[None]:
    """Turn qdrant-client exceptions into one-line hierqdrant errors (never echoing credentials)."""
    try:
        yield
    except HierqdrantError:
        raise
    except UnexpectedResponse as e:
        msg = server_message(e)
        if e.status_code == 404 and "point" in msg.lower():
            raise NotFoundError(f"{msg} (collection {name!r})", "upsert the point first") from None
        if e.status_code == 404 and name is not None:
            raise place._not_found(name) from None
        if e.status_code in (401, 403):
            raise EngineError(
                f"Qdrant at {place.location} refused the request (HTTP {e.status_code})",
                "check the API key (--api-key / QDRANT_API_KEY)",
            ) from None
        if e.status_code in (400, 422):
            raise InputError(f"Qdrant rejected the request to {what}: {msg}", "fix the request") from None
        raise EngineError(
            f"Qdrant at {place.location} failed to {what}: {msg}", "check the server's logs and retry"
        ) from None
    except ResponseHandlingException as e:
        raise _handling_error(place, e) from None
    except ValueError as e:  # local mode reports problems as ValueError
        answer = last_answer()
        if getattr(place, "local", True) is False and answer is not None and _bad_json(e):  # a server's answer
            raise not_qdrant(place.location, answer[0], answer[1], ": unreadable JSON") from None
        msg = str(e).splitlines()[0] if str(e) else "invalid request"
        if name is not None and "not found" in msg.lower() and "vector" not in msg.lower():
            raise place._not_found(name) from None
        raise InputError(f"cannot {what}: {msg}", "fix the request") from None
    except AssertionError as e:  # qdrant-client's "... returned None": JSON without Qdrant's "result"
        answer = last_answer()
        if getattr(place, "local", True) is False and answer is not None and "returned None" in str(e):
            raise not_qdrant(place.location, answer[0], answer[1], ": not an answer of Qdrant's API") from None
        raise
    except Exception as e:
        if type(e).__module__.startswith("grpc"):  # prefer_grpc clients
            code = getattr(e, "code", lambda: None)()
            cname = getattr(code, "name", "")
            if cname == "NOT_FOUND" and name is not None:
                raise place._not_found(name) from None
            if cname in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                raise unreachable(place) from None
            if cname in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
                raise EngineError(
                    f"Qdrant at {place.location} refused the request ({cname})",
                    "check the API key (--api-key / QDRANT_API_KEY)",
                ) from None
            if cname == "INVALID_ARGUMENT":
                details = getattr(e, "details", lambda: "")() or cname
                raise InputError(f"Qdrant rejected the request to {what}: {details}", "fix the request") from None
        raise


def chunk_id(gen: str, fname: str, k: int) -> str:
    """The sidecar point id of chunk ``k`` of file ``fname`` in model generation ``gen``."""
    return str(uuid.uuid5(_NS, f"{gen}/{fname}/{k}"))


def check_manifest(name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The manifest point's payload, or the corrupt-model error for an unknown format."""
    if payload.get("format") != _SIDECAR_FORMAT or not isinstance(payload.get("files"), dict):
        raise corrupt_model(name, "manifest", "unknown format")
    return payload


def chunk_batches(
    name: str, manifest: dict[str, Any], chunk_bytes: int
) -> list[tuple[str, int, int, str, list[list[str]]]]:
    """Per model file: ``(file, chunks, size, sha256, chunk ids per retrieve)``, as many chunks per retrieve
    as fit in one request of the size used for writing."""
    gen = str(manifest["gen"])
    try:
        step = max(1, _REQUEST_BYTES // max(1, int(manifest.get("chunk_bytes", chunk_bytes))))
        entries = [(str(f), int(r["chunks"]), int(r["size"]), str(r["sha256"])) for f, r in manifest["files"].items()]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise corrupt_model(name, "manifest", "unreadable file list") from None
    out = []
    for fname, n, size, sha in entries:
        ids = [chunk_id(gen, fname, k) for k in range(n)]
        out.append((fname, n, size, sha, [ids[a : a + step] for a in range(0, n, step)]))
    return out


def join_chunks(name: str, fname: str, n: int, size: int, sha: str, payloads: Sequence[dict[str, Any]]) -> bytes:
    """File ``fname`` from its chunk points' payloads, checked against its size and sha256."""
    parts: dict[int, bytes] = {}
    for p in payloads:
        try:
            parts[int(p["index"])] = base64.b64decode(p["data"], validate=True)
        except (KeyError, ValueError, TypeError):
            raise corrupt_model(name, fname, "unreadable chunk") from None
    if len(parts) != n:
        raise corrupt_model(name, fname, f"{n - len(parts)} of {n} chunks missing")
    return check_model_file(name, fname, b"".join(parts[k] for k in range(n)), size, sha)
