"""``hierqdrant query``: the top k of a collection by D for one or more query images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from hierqdrant.core.errors import InputError

from .choices import DeviceName, StrategyName
from .common import (
    EXIT_OK,
    EXIT_PARTIAL,
    api_key_option,
    check_at_least,
    console,
    data_dir_option,
    err_console,
    handle_errors,
    open_engine,
    print_json,
    resolve_collection,
    shown,
    timeout_option,
    url_option,
)
from .report_files import check_report_paths, write_reports

QUERY_INPUTS = "image files, folders of images or a features file made by `hierqdrant embed`"


def parse_filters(pairs: list[str]) -> Any:
    """``key=value`` pairs → a Qdrant ``Filter`` (all must match); ints, floats and true/false are typed."""
    from qdrant_client import models

    if not pairs:
        return None
    conditions: list[Any] = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--filter {pair!r} is not key=value", "e.g. --filter split=test")
        value: Any = raw
        if raw.lower() in {"true", "false"}:
            value = raw.lower() == "true"
        else:
            try:
                value = int(raw)
            except ValueError:
                value = raw
            if isinstance(value, int) and not -(2**63) <= value < 2**63:  # Qdrant's integers are 64-bit
                raise InputError(f"--filter {pair!r}: {raw} is beyond a 64-bit integer", "payload integers are 64-bit")
        conditions.append(models.FieldCondition(key=key.strip(), match=models.MatchValue(value=value)))
    return models.Filter(must=conditions)


def _query_vectors(
    inputs: list[Path], extractor: dict[str, Any], weights: str | None, device: str
) -> tuple[list[str], Any, list[tuple[str, str]]]:
    """(names, raw feature rows or None, skipped) for images, folders of images or features .npz files."""
    import numpy as np

    from hierqdrant.core.features import FeatureSet
    from hierqdrant.vision.images import IMAGE_EXTENSIONS, regular_file_reason

    names: list[str] = []
    rows: list[Any] = []
    skipped: list[tuple[str, str]] = []
    images: list[Path] = []

    def add_image(path: Path) -> None:
        # A FIFO or device named *.png is reported and never opened (opening a FIFO waits for a writer).
        reason = regular_file_reason(path)
        if reason is None:
            images.append(path)
        else:
            skipped.append((str(path), reason))

    for item in inputs:
        if item.suffix.lower() == ".npz" and item.is_file():
            fs = FeatureSet.load(item, fix=f"pass {QUERY_INPUTS}")
            names.extend(fs.paths or [f"{item.name}#{i}" for i in range(len(fs))])
            rows.extend(fs.features)
        elif item.is_dir():
            for path in sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS):
                add_image(path)
        elif item.exists():
            add_image(item)
        else:
            raise InputError(f"{item} does not exist", f"pass {QUERY_INPUTS}")
    if images:
        from hierqdrant.vision import extract_features
        from hierqdrant.vision.extractor import extractor_from_description

        backbone = extractor_from_description(extractor, weights)
        got = extract_features(
            images, backbone, device=device, num_workers=0, progress=len(images) > 256, console=err_console
        )
        skipped.extend((s.path, s.reason) for s in got.skipped)
        names.extend(str(images[i]) for i in got.indices)
        rows.extend(got.features)
    return names, (np.stack(rows) if rows else None), skipped


def _drop_zero(model: Any, names: list[str], vectors: Any) -> tuple[list[str], Any, list[tuple[str, str]]]:
    """Raw feature rows that project onto the model's mean have no direction: skipped, with the reason."""
    if vectors is None or vectors.shape[1] != model.input_dims:
        return names, vectors, []
    zero = model.zero_rows(model.transform(vectors))
    reason = "its features project to the zero vector (the model's mean feature): no cosine is defined"
    dropped = [(name, reason) for name, z in zip(names, zero, strict=True) if z]
    keep = [name for name, z in zip(names, zero, strict=True) if not z]
    return keep, (vectors[~zero] if keep else None), dropped


def _nothing_to_query(skipped: list[tuple[str, str]]) -> InputError:
    """The one-line error when no query could be read: the file and its reason, or how many and where."""
    if len(skipped) == 1:
        path, reason = skipped[0]
        return InputError(f"cannot query with {path}: {reason}", f"pass {QUERY_INPUTS}")
    return InputError(
        f"none of the {len(skipped)} queries could be used (reasons above)" if skipped else "no query images found",
        f"pass {QUERY_INPUTS}",
    )


def _warn_if_incomplete(engine: Any, name: str) -> list[str]:
    """Warnings about the collection (an ingest that did not finish), printed on stderr and returned."""
    from hierqdrant.store.collection import state_warnings

    warnings = state_warnings(engine, name)
    for text in warnings:
        err_console.print(f"[yellow]warning:[/] {shown(text)}", highlight=False, soft_wrap=True)
    return warnings


@handle_errors
def query_command(
    images: list[Path] = typer.Argument(..., help="Query images, folders of images, or features .npz files."),
    k: int = typer.Option(10, "-k", "--top", help="How many results per query (at least 1)."),
    collection: str | None = typer.Option(
        None,
        "--collection",
        "-c",
        help="Collection (default: the only one in the store, else $HIERQDRANT_COLLECTION).",
    ),
    strategy: StrategyName = typer.Option(StrategyName("auto"), "--strategy", help="auto, exact, rerank or formula."),
    alpha: float | None = typer.Option(None, "--alpha", help="Weight of the hierarchy term (default: the model's)."),
    filters: list[str] = typer.Option(
        [], "--filter", help="key=value on the stored payload (repeatable), e.g. split=train or hq.label=cat."
    ),
    explain: bool = typer.Option(
        False, "--explain", help="Show cosine, the LCA node with its classes, its height and D."
    ),
    weights: str | None = typer.Option(
        None, "--weights", "-w", help="The local checkpoint the collection was embedded with, if it moved."
    ),
    device: DeviceName = typer.Option(DeviceName("auto"), "--device", help="auto, cuda or cpu."),
    exact_search: bool = typer.Option(False, "--exact-search", help="Exhaustive search on every prefetch (no HNSW)."),
    hnsw_ef: int | None = typer.Option(None, "--hnsw-ef", help="HNSW ef for every prefetch."),
    url: str | None = url_option(),
    api_key: str | None = api_key_option(),
    data_dir: Path = data_dir_option(),
    timeout: float = timeout_option(),
    html: Path | None = typer.Option(
        None,
        "--html",
        help="Also write a self-contained HTML report: per query its image and leaf, the cosine and the "
        "hierarchical top-k with thumbnails, labels, D, cosine and LCA.",
    ),
    grid: Path | None = typer.Option(None, "--grid", help="Also write the same as a PNG contact sheet."),
    image_root: list[Path] = typer.Option(
        [],
        "--image-root",
        envvar="HIERQDRANT_IMAGE_ROOT",
        metavar="DIR",
        help="Folder the collection was ingested from, where the results' paths are found (for --html and "
        "--grid; default: the folders above the query images, then the working directory). Repeatable.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Rank a collection by D = cosine distance + α·height(LCA)/H for each query image."""
    from hierqdrant.core.model import check_alpha
    from hierqdrant.store.search import HierarchicalSearcher

    # options first: before the model loads and the queries are embedded
    check_at_least(1, k=k, hnsw_ef=hnsw_ef)
    check_report_paths(html=html, grid=grid)
    if alpha is not None:
        check_alpha(alpha)
    query_filter = parse_filters(filters)
    engine = open_engine(url, api_key, data_dir, create=False, timeout=timeout)
    try:
        name = resolve_collection(engine, collection)
        searcher = HierarchicalSearcher(
            engine, name, alpha=alpha, strategy=strategy.value, exact=exact_search, hnsw_ef=hnsw_ef
        )
        warnings = _warn_if_incomplete(engine, name)
        names, vectors, skipped = _query_vectors(images, searcher.model.extractor, weights, device.value)
        names, vectors, zero = _drop_zero(searcher.model, names, vectors)
        skipped += zero
        results = [] if vectors is None else searcher.search_batch(vectors, k, filter=query_filter, explain=True)
        # The report compares with plain cosine: the same search with α = 0 (exact, so it is the true top-k).
        cosine = (
            searcher.search_batch(vectors, k, filter=query_filter, strategy="exact", explain=True, alpha=0.0)
            if (html or grid) and vectors is not None
            else []
        )
    finally:
        engine.close()
    model = searcher.model
    key = searcher.payload_key

    def document(queries: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "collection": name,
            "strategy": strategy.value,
            "alpha": searcher.alpha,
            "model_id": model.model_id,
            "queries": queries,
            "skipped": [{"path": p, "reason": r} for p, r in skipped],
            "warnings": warnings,
            **({"reports": reports} if reports else {}),
        }

    reports: dict[str, str] = {}
    if (html or grid) and names:
        reports = write_reports(
            html, grid, searcher, name, names, {"cosine": cosine, "hierarchical": results}, images, image_root, k
        )
    if not names:  # nothing to query: the reasons (in the JSON too), then the one-line error
        if as_json:
            print_json(document([]))
        elif len(skipped) > 1:  # one reason fits in the error line; several get a line each
            _print_skipped(skipped)
        raise _nothing_to_query(skipped)
    if as_json:
        print_json(
            document(
                [
                    {
                        "query": qname,
                        "leaf": hits[0].explanation["query_leaf"] if hits and hits[0].explanation else None,
                        "hits": [{"rank": r + 1, **h.to_dict(explanation=explain)} for r, h in enumerate(hits)],
                    }
                    for qname, hits in zip(names, results, strict=True)
                ]
            )
        )
    else:
        for qname, hits in zip(names, results, strict=True):
            leaf_name = model.leaf_names[hits[0].explanation["query_leaf"]] if hits and hits[0].explanation else "?"
            table = Table(title=f"{shown(qname)}  [dim](query leaf: {shown(leaf_name)})[/]", title_justify="left")
            table.add_column("rank", justify="right")
            table.add_column("D", justify="right")
            if explain:
                table.add_column("cosine", justify="right")
                table.add_column("LCA (height: classes)")
                table.add_column("α·h/H", justify="right")
            table.add_column("label")
            table.add_column("leaf")
            table.add_column("path", overflow="fold")
            for r, h in enumerate(hits, 1):
                hq = h.payload.get(key) or {}
                leaf = model.leaf_names[h.leaf] if h.leaf is not None and h.leaf < model.num_classes else "?"
                row = [str(r), f"{h.distance:.4f}"]
                if explain and h.explanation:
                    ex = h.explanation
                    classes = ex["lca_classes"]
                    listed = ", ".join(classes[:4]) + (f", … ({len(classes)})" if len(classes) > 4 else "")
                    row += [
                        f"{h.cosine:.4f}",
                        shown(f"{ex['lca_name']} (h={h.lca_height}: {listed})"),
                        f"{ex['hierarchy_term']:.3f}",
                    ]
                row += [shown(hq.get("label", "")), shown(leaf), shown(h.payload.get("path", ""))]
                table.add_row(*row)
            console.print(table)
        _print_skipped(skipped)
    raise typer.Exit(EXIT_PARTIAL if skipped else EXIT_OK)


def _print_skipped(skipped: list[tuple[str, str]]) -> None:
    for path, reason in skipped:
        err_console.print(f"[yellow]skipped[/] {shown(path)}: {shown(reason)}", highlight=False, soft_wrap=True)
