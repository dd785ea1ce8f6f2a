"""A tiny HTTP server on 127.0.0.1 in a thread, for what a real Qdrant never does: answer a byte a second,
answer with a web page, answer JSON of another API. Bounded: each answer is at most ``max_bytes`` long and
``max_seconds`` slow, and the server stops when its ``with`` block ends."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def serve(answer: bytes, *, per_byte: float = 0.0, max_seconds: float = 60.0) -> Iterator[str]:
    """Serve ``answer`` (a whole HTTP response) to every connection, one byte each ``per_byte`` seconds
    (0: at once); yields the server's URL."""
    stop = threading.Event()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)

    def one(conn: socket.socket) -> None:
        started = time.monotonic()
        try:
            conn.settimeout(1.0)
            try:
                conn.recv(65536)  # the request (its head is enough)
            except OSError:
                pass
            if not per_byte:
                conn.sendall(answer)
                return
            for b in answer:
                if stop.is_set() or time.monotonic() - started > max_seconds:
                    return
                conn.sendall(bytes([b]))
                stop.wait(per_byte)
        except OSError:
            pass
        finally:
            conn.close()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


def response(status: str, content_type: str, body: bytes) -> bytes:
    """An HTTP/1.1 response with ``body`` (``Connection: close``)."""
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body
