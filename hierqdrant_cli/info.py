"""``hierqdrant info``: the store's collections with their counts, models and states."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from .common import (
    api_key_option,
    console,
    data_dir_option,
    err_console,
    handle_errors,
    open_engine,
    print_json,
    shown,
    timeout_option,
    url_option,
)
from .eval_shared import show_table


@handle_errors
def info_command(
    url: str | None = url_option(),
    api_key: str | None = api_key_option(),
    data_dir: Path = data_dir_option(),
    timeout: float = timeout_option(),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """List the store's collections: points, state, model id, classes, levels, leaf sources, vector size, engine.

    The leaves column reads "query classifier / stored leaves" (e.g. tied / label); "—" where the collection's
    info does not record them (written before they were stored: `hierarchy show -c NAME` reads its model).

    A collection whose ingest did not finish is marked incomplete (run the same ingest again); one that
    another process is writing says so with its pid, one that is open in another process, on a read-only
    store, or an application's collection that is not attached says that; one whose files are damaged (a
    lost collection.json, fewer points than its last ingest left) is listed apart, with the reason; one
    embedded by a randomly initialised network (--weights random) is flagged, for its rankings mean little.
    """
    from hierqdrant.store.lifecycle import rerun_hint
    from hierqdrant.store.status import list_collections
    from hierqdrant.vision.extractor import is_random_init

    engine = open_engine(url, api_key, data_dir, create=False, timeout=timeout)
    try:
        listing = list_collections(engine)
    finally:
        engine.close()
    attached = {}
    for row in listing.rows + listing.other:
        row["random_init"] = is_random_init(row.pop("_extractor"))
        attached[row["collection"]] = row.pop("_attached")
    rows, damaged = listing.rows, listing.damaged
    problems = [{"collection": n, "problem": damaged[n]} for n in sorted(damaged)]
    if as_json:
        other = [{k: v for k, v in row.items() if k in _OTHER_KEYS and v is not None} for row in listing.other]
        print_json(
            {"engine": engine.kind, "location": engine.location, "collections": rows, "other": other,
             "damaged": problems}
        )  # fmt: skip
        return
    for p in problems:
        line = f"[yellow]damaged[/] {shown(p['collection'])}: {shown(p['problem'])}"
        err_console.print(line, highlight=False, soft_wrap=True)
    table = Table(title=f"{engine.kind} store at {shown(engine.location)}")
    columns = ("collection", "points", "state", "dims", "classes", "levels", "alpha", "leaves", "extractor", "model_id")
    for column in columns:
        table.add_column(
            column,
            justify="right" if column in {"points", "dims", "classes", "levels", "alpha"} else "left",
            no_wrap=column in {"collection", "state"},
        )
    for row in rows + listing.other:
        cells = [shown(_leaves(row)) if c == "leaves" else "—" if row[c] is None else shown(row[c]) for c in columns]
        cells[columns.index("collection")] = shown(row["collection"])
        cells[columns.index("state")] = _state(row)
        if row["random_init"]:
            cells[columns.index("extractor")] = f"[yellow]{cells[columns.index('extractor')]} (random)[/]"
        table.add_row(*cells)
    if rows or listing.other or not problems:
        if rows or listing.other:
            show_table(table)  # off a terminal at full width, not squeezed to 80 columns
        else:
            console.print(f"no collections at {shown(engine.location)} — try: hierqdrant demo")
    for row in rows:
        if row["state"] == "incomplete":
            hint = rerun_hint(attached[row["collection"]])
            err_console.print(
                f"[yellow]incomplete[/] {shown(row['collection'])}: {hint} to complete it",
                highlight=False,
                soft_wrap=True,
            )
        if row["random_init"]:
            err_console.print(
                f"[yellow]random init[/] {shown(row['collection'])}: embedded by {shown(str(row['extractor']))} "
                "with random weights (--weights random), so its rankings mean little — ingest again with "
                "pretrained or trained weights (--recreate)",
                highlight=False,
                soft_wrap=True,
            )


_OTHER_KEYS = ("collection", "status", "state", "points", "pid", "model_id")


def _state(row: dict[str, Any]) -> str:
    """The state cell: the info's state, why the collection has no full row (``being written (pid N)``, …),
    ``not attached`` for a collection without a hierqdrant model."""
    state, status = row["state"], row.get("status")
    if status == "being written":
        status = f"being written (pid {row['pid'] or 'unknown'})"
    text = ", ".join(str(t) for t in (state, status) if t) or "not attached"
    return f"[yellow]{shown(text)}[/]" if state == "incomplete" or status else shown(text)


def _leaves(row: dict[str, Any]) -> str:
    """``tied / label``: the query classifier and where stored leaves come from; ``—`` when not recorded."""
    if row.get("query_classifier") is None:
        return "—"
    return f"{row['query_classifier']} / {row.get('leaf_from') or '—'}"
