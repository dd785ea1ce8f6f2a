"""What every command shares: consoles, error handling, JSON output, option parsing."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from hierqdrant.core.errors import HierqdrantError

console = Console()
err_console = Console(stderr=True)

# Exit codes: 0 ok, 1 partial (something was skipped), 2 usage or user error.
EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Turn user errors into one line on stderr and exit 2; Ctrl-C into exit 130 with a resume hint."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except HierqdrantError as exc:
            err_console.print(f"[bold red]error:[/] {shown(exc)}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_USAGE) from None
        except OSError as exc:  # a full or read-only disk under any write: one line, not a traceback
            from hierqdrant.core.fileio import disk_error

            error = disk_error(exc)
            if error is None:
                raise
            err_console.print(f"[bold red]error:[/] {shown(error)}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_USAGE) from None
        except KeyboardInterrupt:
            err_console.print("interrupted — run the same command again to resume")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def shown(value: object) -> str:
    """A value from data (a file, class or collection name, a path, a message naming them) ready for rich
    markup: ``[`` escaped, so ``[red]x`` prints as typed and ``x[/y]`` cannot break the line, and the raw
    bytes of a non-UTF-8 name as ``\\xNN``. Everything a command prints from data goes through it."""
    from hierqdrant.core.names import printable

    return escape(printable(value))


def print_json(data: Any) -> None:
    """One JSON object on stdout (no rich markup, no wrapping); NaN and ±inf become ``null``, since
    strict JSON has no such numbers and other languages' parsers reject them."""
    sys.stdout.write(json.dumps(_finite(data), default=_json_default, allow_nan=False) + "\n")
    sys.stdout.flush()


def _finite(value: Any) -> Any:
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return _finite(value.item())
    if isinstance(value, np.ndarray):
        return _finite(value.tolist())
    return str(value)


def parse_pca(value: str) -> int | float | None:
    """``0.95`` → keep 95 % of the variance; ``64`` → 64 components; ``all`` → every component."""
    from hierqdrant.core.errors import InputError

    text = value.strip().lower()
    if text in {"all", "none"}:
        return None
    wrong = InputError(
        f"--pca {value!r} is neither a variance share in (0, 1] nor a whole number of components (1 or more)",
        "e.g. --pca 0.95, --pca 64 or --pca all",
    )
    try:
        if text.isdigit():
            count = int(text)
            if count < 1:
                raise wrong
            return count
        share = float(text)
    except ValueError:
        raise wrong from None
    if not 0.0 < share <= 1.0:  # 1.5 is no share (and no count); 1.0 keeps all the variance
        raise wrong
    return share


def check_at_least(minimum: int, **options: int | None) -> None:
    """Refuse numeric options below ``minimum`` before anything is loaded (one line, exit 2).

    Keyword names are the options' names with ``_`` for ``-``, e.g. ``check_at_least(1, k=k, hnsw_ef=ef)``.
    """
    from hierqdrant.core.errors import InputError

    for name, value in options.items():
        if value is not None and value < minimum:
            flag = f"-{name}" if len(name) == 1 else f"--{name.replace('_', '-')}"
            raise InputError(f"{flag} {value} must be at least {minimum}", f"e.g. {flag} {max(minimum, 10)}")


# -- the store: options every store command shares -------------------------------------------------

WEIGHTS_HELP = (
    "A local checkpoint file, a torchvision weights name (needs internet unless cached), or `random` for an "
    "untrained network. Default: the backbone's pretrained weights."
)
URL_HELP = "Qdrant server or cloud URL (default: the embedded engine under --data-dir)."


def url_option() -> Any:
    return typer.Option(None, "--url", envvar="QDRANT_URL", help=URL_HELP, show_default=False)


def api_key_option() -> Any:
    return typer.Option(
        None, "--api-key", envvar="QDRANT_API_KEY", help="Qdrant API key.", show_default=False
    )


def timeout_option() -> Any:
    return typer.Option(
        60.0,
        "--timeout",
        envvar="HIERQDRANT_TIMEOUT",
        min=0.1,
        help="With --url: the most seconds one request to the server may take, all of it (a server that "
        "answers slowly, or a byte at a time, is given up on after that).",
    )


def data_dir_option() -> Any:
    return typer.Option(
        Path(".hierqdrant"),
        "--data-dir",
        envvar="HIERQDRANT_DATA",
        help="Directory of the embedded engine (and the local feature cache).",
    )


def open_engine(
    url: str | None, api_key: str | None, data_dir: Path, *, create: bool = True, timeout: float | None = None
) -> Any:
    """:func:`~hierqdrant.store.engines.connect`; its warning about an API key over http becomes one line.
    ``create=False`` (commands that only read): a ``local:DIR`` that does not exist is an error, not made;
    ``timeout``: the most seconds one request to a server may take (default 60)."""
    import warnings

    from hierqdrant.store.engines import connect
    from hierqdrant.store.engines.client import InsecureApiKeyWarning

    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", InsecureApiKeyWarning)
            options: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
            return connect(url=url, api_key=api_key, data_dir=data_dir, create=create, **options)
    finally:  # also when the server does not answer: the key was sent all the same
        for w in caught:
            if issubclass(w.category, InsecureApiKeyWarning):
                err_console.print(f"[yellow]warning:[/] {w.message}", highlight=False, soft_wrap=True)
            else:  # anything else goes back to the normal warning machinery
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def resolve_collection(engine: Any, name: str | None) -> str:
    """The named collection; else the only one in the store; else $HIERQDRANT_COLLECTION; else an error."""
    import os

    from hierqdrant.core.errors import InputError

    if name:
        return name
    names = engine.collections()
    if len(names) == 1:
        return str(names[0])
    env = os.environ.get("HIERQDRANT_COLLECTION")
    if env:
        return env
    if not names:
        raise InputError(
            f"the store at {engine.location} has no collections",
            "ingest images first: hierqdrant ingest FOLDER --collection NAME",
        )
    raise InputError(
        f"the store has several collections ({', '.join(names)})", "pick one with --collection NAME"
    )
