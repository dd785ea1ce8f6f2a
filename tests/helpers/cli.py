"""Running ``hierqdrant`` in-process and reading its one-line errors, for the CLI tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from hierqdrant.store.engines import connect
from hierqdrant_cli import app

runner = CliRunner()


def run(*args: object) -> tuple[int, str, str]:
    """``hierqdrant ARGS``: exit code, stdout, stderr; no traceback, and an unexpected exception re-raised."""
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def one_error_line(code: int, err: str) -> str:
    """Exit 2 and one ``error:`` line, the last one on stderr (after the phase lines of what ran before)."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and lines[-1] == errors[0], (code, err)
    assert "Traceback" not in err
    return errors[0]


def only_error_line(output: str) -> str:
    """The output is exactly one ``error:`` line."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0]


def store_args(kind: str, tmp_path: Path) -> list[str]:
    """Where a command stores: the embedded store (``edge``) or a qdrant-client local-mode folder."""
    return ["--data-dir", str(tmp_path / "store")] if kind == "edge" else ["--url", f"local:{tmp_path / 'local'}"]


def open_store(where: list[str]) -> Any:
    """The engine behind :func:`store_args`' arguments."""
    return connect(data_dir=where[1]) if where[0] == "--data-dir" else connect(where[1])
