"""The report files of ``query --html/--grid``, ``eval --html`` and ``demo``: checks and writing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import err_console, shown


def check_report_paths(**paths: Path | None) -> None:
    """Before any work: each report path (``html=…``, ``grid=…``) has the right suffix and an existing folder."""
    from hierqdrant.core.errors import InputError, NotFoundError

    suffixes = {"html": (".html", ".htm"), "grid": (".png",)}
    for option, path in paths.items():
        if path is None:
            continue
        flag = f"--{option}"
        allowed = suffixes.get(option, ())
        if allowed and path.suffix.lower() not in allowed:
            raise InputError(f"{flag} {path} must end in {' or '.join(allowed)}", f"e.g. {flag} report{allowed[0]}")
        if not path.parent.is_dir():
            raise NotFoundError(f"the folder of {flag} {path} does not exist", "create it or choose another path")
        if path.is_dir():
            raise InputError(
                f"{flag} {path} is a folder", f"pass a file name, e.g. {flag} {path / ('report' + allowed[0])}"
            )


def say(text: str) -> None:
    """One plain line on stderr (paths are escaped, never read as rich markup)."""
    err_console.print(shown(text), highlight=False, soft_wrap=True)


def write_reports(
    html: Path | None,
    grid: Path | None,
    searcher: Any,
    collection: str,
    names: Sequence[str],
    rows: dict[str, Sequence[Sequence[Any]]],
    inputs: Sequence[Path],
    image_root: Sequence[Path],
    k: int,
) -> dict[str, str]:
    """Write the query report (HTML) and/or contact sheet (PNG); say where on stderr. Returns
    ``{"html": path, "grid": path}`` for the JSON output. Without image paths in the results, one line
    says that thumbnails need them, and the report is written without thumbnails."""
    from hierqdrant.reports.cases import query_cases
    from hierqdrant.reports.grid import write_grid
    from hierqdrant.reports.query_report import NO_THUMBNAILS, has_images, write_query_report
    from hierqdrant.reports.thumbnails import ImageFinder

    model = searcher.model
    finder = ImageFinder(image_root, near=inputs)
    cases = query_cases(model, names, rows, searcher.payload_key, finder)
    written: dict[str, str] = {}
    if not has_images(cases):
        err_console.print(f"[yellow]note:[/] {shown(NO_THUMBNAILS)}", highlight=False, soft_wrap=True)
    if html is not None:
        facts = [
            f"collection {collection}",
            f"model {model.model_id}",
            f"α = {searcher.alpha:g}",
            f"tree height {model.tree_height}",
            f"top {k}",
        ]
        write_query_report(html, cases, f"hierqdrant query — {collection}", facts)
        written["html"] = str(html)
        say(f"report: {html}")
    if grid is not None:
        write_grid(grid, cases, k)
        written["grid"] = str(grid)
        say(f"contact sheet: {grid}")
    return written


def eval_id_paths(report: Any, db: str, queries: Path | None, engine: Any | None) -> dict[str, str]:
    """Item id → image path for an evaluation of a collection: the points' payload ``path`` and, for a
    query folder, the point id each query image got (uuid5 of the collection and its key)."""
    from hierqdrant.store.collection import id_namespace, iter_points, point_id

    paths: dict[str, str] = {}
    namespace = db  # the point ids' namespace: the collection's recorded one (its name when it was made)
    if engine is not None:
        namespace = id_namespace(engine.read_info(db), db)
        for ids, _, payloads in iter_points(engine, db, with_vectors=False):
            paths.update((pid, str(p["path"])) for pid, p in zip(ids, payloads, strict=True) if "path" in p)
    if queries is not None and queries.is_dir():
        from hierqdrant.vision import IMAGE_EXTENSIONS

        for f in queries.rglob("*"):
            if f.suffix.lower() in IMAGE_EXTENSIONS:
                paths.setdefault(point_id(namespace, f.relative_to(queries).as_posix()), str(f))
    return paths


def write_eval_report(
    html: Path, report: Any, db: str, queries: Path | None, image_root: Sequence[Path], open_store: Any
) -> None:
    """Write ``eval --html``: for a collection database the item ids are mapped to the points' paths
    first; thumbnails are found under ``image_root``, the query folder, the database folder and the
    working directory. Without image paths, one line says so and the page has no thumbnails."""
    from hierqdrant.reports.eval_report import eval_page
    from hierqdrant.reports.query_report import write_text
    from hierqdrant.reports.thumbnails import ImageFinder

    roots = [*image_root, *(p for p in (queries, Path(db)) if p is not None and p.is_dir())]
    roots += [p.parent for p in (queries, Path(db)) if p is not None and p.is_file()]  # beside a features file
    id_paths: dict[str, str] = {}
    if report.result.info.get("path") == "engine" and report.result.tops is not None:
        engine = open_store()
        try:
            id_paths = eval_id_paths(report, db, queries, engine)
        finally:
            engine.close()
    text, notes = eval_page(report, finder=ImageFinder(roots), id_paths=id_paths, title=f"hierqdrant eval — {db}")
    for note in notes:
        err_console.print(f"[yellow]note:[/] {shown(note)}", highlight=False, soft_wrap=True)
    write_text(html, text)
