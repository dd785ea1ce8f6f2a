"""``hierqdrant info``: the store's collections with their counts, models and states."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from hierqdrant.core.errors import HierqdrantError

from .common import (
    api_key_option,
    console,
    data_dir_option,
    err_console,
    handle_errors,
    open_engine,
    print_json,
    url_option,
)
from .eval_shared import show_table


@handle_errors
def info_command(
    url: str | None = url_option(),
    api_key: str | None = api_key_option(),
    data_dir: Path = data_dir_option(),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """List the store's collections: points, state, model id, classes, levels, leaf sources, vector size, engine.

    The leaves column reads "query classifier / stored leaves" (e.g. tied / label); "—" where the collection's
    info does not record them (written before they were stored: `hierarchy show -c NAME` reads its model).

    A collection whose ingest did not finish is marked incomplete (run the same ingest again); one whose
    files are damaged (e.g. a lost collection.json) is listed apart, with the reason; one embedded by a
    randomly initialised network (--weights random) is flagged, for its rankings mean little.
    """
    from hierqdrant.store.collection import collection_state, searched_dims
    from hierqdrant.store.engines.base import EngineBase
    from hierqdrant.vision.extractor import is_random_init

    engine = open_engine(url, api_key, data_dir)
    rows: list[dict[str, Any]] = []
    damaged: dict[str, str] = {}
    try:
        for name in engine.collections():
            try:
                raw = engine.read_info(name)
                info = raw or {}
                rows.append(
                    {
                        "collection": name,
                        "points": engine.count(name),
                        "dims": searched_dims(engine, name, raw),
                        "state": collection_state(raw),
                        "model_id": info.get("model_id"),
                        "classes": info.get("classes"),
                        "levels": info.get("levels"),
                        "height": info.get("height"),
                        "alpha": info.get("alpha"),
                        "query_classifier": info.get("query_classifier"),
                        "leaf_from": info.get("leaf_from"),
                        "extractor": (info.get("extractor") or {}).get("name"),
                        "random_init": is_random_init(info.get("extractor")),
                    }
                )
            except HierqdrantError as e:  # one unreadable collection does not hide the others
                damaged[name] = e.problem
        if isinstance(engine, EngineBase):
            damaged.update(engine.damaged())
    finally:
        engine.close()
    problems = [{"collection": n, "problem": damaged[n]} for n in sorted(damaged)]
    if as_json:
        print_json({"engine": engine.kind, "location": engine.location, "collections": rows, "damaged": problems})
        return
    for p in problems:
        err_console.print(f"[yellow]damaged[/] {p['collection']}: {p['problem']}", highlight=False, soft_wrap=True)
    table = Table(title=f"{engine.kind} store at {engine.location}")
    columns = ("collection", "points", "state", "dims", "classes", "levels", "alpha", "leaves", "extractor", "model_id")
    for column in columns:
        table.add_column(
            column,
            justify="right" if column in {"points", "dims", "classes", "levels", "alpha"} else "left",
            no_wrap=column in {"collection", "state"},
        )
    for row in rows:
        cells = [_leaves(row) if c == "leaves" else str(row[c]) if row[c] is not None else "—" for c in columns]
        if row["state"] == "incomplete":
            cells[columns.index("state")] = "[yellow]incomplete[/]"
        if row["random_init"]:
            cells[columns.index("extractor")] = f"[yellow]{escape(cells[columns.index('extractor')])} (random)[/]"
        table.add_row(*cells)
    if rows or not problems:
        if rows:
            show_table(table)  # off a terminal at full width, not squeezed to 80 columns
        else:
            console.print(f"no collections at {engine.location} — try: hierqdrant demo")
    for row in rows:
        if row["state"] == "incomplete":
            err_console.print(
                f"[yellow]incomplete[/] {row['collection']}: an ingest into it did not finish — run the same "
                "ingest again to complete it",
                highlight=False,
                soft_wrap=True,
            )
        if row["random_init"]:
            err_console.print(
                f"[yellow]random init[/] {escape(row['collection'])}: embedded by {escape(str(row['extractor']))} "
                "with random weights (--weights random), so its rankings mean little — ingest again with "
                "pretrained or trained weights (--recreate)",
                highlight=False,
                soft_wrap=True,
            )


def _leaves(row: dict[str, Any]) -> str:
    """``tied / label``: the query classifier and where stored leaves come from; ``—`` when not recorded."""
    if row.get("query_classifier") is None:
        return "—"
    return f"{row['query_classifier']} / {row.get('leaf_from') or '—'}"
