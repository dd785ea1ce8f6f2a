"""``hierqdrant info``: the store's collections with their counts and models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from .common import (
    api_key_option,
    console,
    data_dir_option,
    handle_errors,
    open_engine,
    print_json,
    url_option,
)


@handle_errors
def info_command(
    url: str | None = url_option(),
    api_key: str | None = api_key_option(),
    data_dir: Path = data_dir_option(),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """List the store's collections: points, model id, classes, levels, vector size, engine."""
    engine = open_engine(url, api_key, data_dir)
    rows: list[dict[str, Any]] = []
    try:
        for name in engine.collections():
            info = engine.read_info(name) or {}
            rows.append(
                {
                    "collection": name,
                    "points": engine.count(name),
                    "dims": engine.vector_size(name),
                    "model_id": info.get("model_id"),
                    "classes": info.get("classes"),
                    "levels": info.get("levels"),
                    "height": info.get("height"),
                    "alpha": info.get("alpha"),
                    "extractor": (info.get("extractor") or {}).get("name"),
                }
            )
    finally:
        engine.close()
    if as_json:
        print_json({"engine": engine.kind, "location": engine.location, "collections": rows})
        return
    table = Table(title=f"{engine.kind} store at {engine.location}")
    for column in ("collection", "points", "dims", "classes", "levels", "alpha", "extractor", "model_id"):
        table.add_column(
            column, justify="right" if column in {"points", "dims", "classes", "levels", "alpha"} else "left"
        )
    for row in rows:
        table.add_row(
            *(
                str(row[c]) if row[c] is not None else "—"
                for c in (
                    "collection",
                    "points",
                    "dims",
                    "classes",
                    "levels",
                    "alpha",
                    "extractor",
                    "model_id",
                )
            )
        )
    console.print(table if rows else f"no collections at {engine.location} — try: hierqdrant demo")
