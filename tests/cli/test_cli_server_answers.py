"""Nothing lost, second pass: what a command says about a server that is slow, or not Qdrant, and about
a store that is not there (items 8 and 18 of the issue).

- A server that trickles a byte a second held ``info`` ~100 s and ``query`` over 170 s: every request has a
  total deadline (``--timeout``, ``HIERQDRANT_TIMEOUT``), and the command ends with one line naming it.
- An answer that is not Qdrant's (a web page, JSON of another API) and an API key that HTTP cannot carry
  are named as such, not as an unreachable server.
- ``info --url local:DIR`` on a path that does not exist says so and creates nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hierqdrant_cli import app
from tests.cli.http_stub import response, serve

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
TRICKLE = response("200 OK", "application/json", b'{"result": {"collections": []}, "status": "ok"}' + b" " * 20)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``hierqdrant …`` in another process, guarded: it must end well before the trickle would."""
    return subprocess.run(
        [sys.executable, "-m", "hierqdrant", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=45,
        env={**os.environ, **(env or {})},
    )


def _one_error_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0]


# ---------------------------------------------------------------------------------------------------------
# 8. a total deadline per request


@pytest.mark.parametrize("how", ["option", "envvar"])
def test_info_gives_up_on_a_trickling_server(how: str) -> None:
    with serve(TRICKLE, per_byte=1.0, max_seconds=60) as url:  # would take ~140 s to answer
        if how == "option":
            done = _cli("info", "--url", url, "--timeout", "2")
        else:
            done = _cli("info", "--url", url, env={"HIERQDRANT_TIMEOUT": "2"})
    assert done.returncode == 2, (done.stdout, done.stderr)
    line = _one_error_line(done.stderr)
    assert f"Qdrant at {url} did not answer within 2 s" in line and "--timeout" in line, line


def test_query_gives_up_on_a_trickling_server(tmp_path: Path) -> None:
    queries = tmp_path / "q.npz"
    np.savez(queries, features=np.ones((1, 6)))
    with serve(TRICKLE, per_byte=1.0, max_seconds=60) as url:
        done = _cli("query", str(queries), "-c", "pics", "--url", url, "--timeout", "2")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "did not answer within 2 s" in _one_error_line(done.stderr)


# ---------------------------------------------------------------------------------------------------------
# 18. answers that are not Qdrant's, keys that cannot be sent, a local store that is not there


def _invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.mark.parametrize(
    "answer, says",
    [
        (response("200 OK", "text/html; charset=utf-8", b"<html>a router's page</html>"), "(HTTP 200, text/html)"),
        (response("404 Not Found", "text/html", b"<html>no such page</html>"), "(HTTP 404, text/html)"),
        (response("200 OK", "application/json", b'{"hello": "world"}'), "(HTTP 200, application/json: not an answer"),
        (response("200 OK", "application/json", b"<html>"), "(HTTP 200, application/json: unreadable JSON)"),
    ],
    ids=["html", "html-404", "other-json", "bad-json"],
)
def test_a_server_that_is_not_qdrant_is_named_as_such(answer: bytes, says: str) -> None:
    with serve(answer) as url:
        code, output = _invoke("info", "--url", url, "--timeout", "10")
    line = _one_error_line(output)
    assert code == 2 and f"the server at {url} did not answer as Qdrant {says}" in line, line


@pytest.mark.parametrize(
    "key, says",
    [("secret-key\n", "a newline (character 11 of 11)"), ("sécret", "a non-ASCII character (character 2 of 6)")],
    ids=["newline", "non-ascii"],
)
def test_an_api_key_that_http_cannot_carry_is_named(key: str, says: str) -> None:
    with serve(response("200 OK", "application/json", b'{"result": {"collections": []}}')) as url:
        code, output = _invoke("info", "--url", url, "--api-key", key)
    line = _one_error_line(output)
    assert code == 2 and f"the API key has {says}" in line, line
    assert key.strip() not in line  # never the key itself


def test_info_on_a_local_store_that_does_not_exist_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "nonexistent" / "deep" / "path"
    code, output = _invoke("info", "--url", f"local:{path}")
    line = _one_error_line(output)
    assert code == 2 and f"there is no local store at {path}" in line, line
    assert not (tmp_path / "nonexistent").exists()
