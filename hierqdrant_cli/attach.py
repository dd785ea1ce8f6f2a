"""``hierqdrant attach`` / ``hierqdrant detach``: the plugin on an application's existing collection."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .choices import BuilderName, LeafFromName
from .common import (
    api_key_option,
    console,
    data_dir_option,
    err_console,
    handle_errors,
    open_engine,
    parse_pca,
    print_json,
    shown,
    timeout_option,
    url_option,
)

COLLECTION_HELP = "The application's collection (default: $HIERQDRANT_COLLECTION)."


@handle_errors
def attach_command(
    collection: str = typer.Argument(..., envvar="HIERQDRANT_COLLECTION", help=COLLECTION_HELP, show_default=False),
    vector: str | None = typer.Option(
        None,
        "--vector",
        envvar="HIERQDRANT_VECTOR",
        help="The named vector to attach to (a Cosine one). Default: the attached one, else the only one.",
    ),
    label_key: str | None = typer.Option(
        None,
        "--label-key",
        envvar="HIERQDRANT_LABEL_KEY",
        help="The payload field holding each point's class (a dotted key reads a nested field). Default: the "
        "attached one.",
    ),
    builder: BuilderName = typer.Option(
        BuilderName("overlap"), "--builder", help="overlap (the paper), ward or given."
    ),
    threshold: float = typer.Option(
        0.3, "--threshold", "-t", help="Overlap threshold t on the Bhattacharyya coefficient."
    ),
    alpha: float = typer.Option(3.0, "--alpha", help="Default weight α of the hierarchy term for queries."),
    taxonomy: Path | None = typer.Option(None, "--taxonomy", help="Taxonomy file for --builder given."),
    pca: str = typer.Option("0.95", "--pca", help="Variance share to keep, a number of components, or 'all'."),
    leaf_from: LeafFromName = typer.Option(
        LeafFromName("predicted"),
        "--leaf-from",
        help="Leaf of a point: predicted (Mahalanobis, the paper) or its label where it has a known one.",
    ),
    tune: bool = typer.Option(False, "--tune", help="Choose t and α on a validation split of the labelled points."),
    tune_metric: str = typer.Option("map@r", "--tune-metric", help="What --tune maximises: map@K, map@r, p@1."),
    update: bool = typer.Option(
        False,
        "--update",
        help="Annotate only the points without a current hq payload (new points), with the stored model.",
    ),
    refit: bool = typer.Option(False, "--refit", help="Fit the model again and re-annotate every point."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Report what would be written; write nothing."),
    batch_size: int = typer.Option(1024, "--batch-size", min=1, help="Points per scroll and set_payload request."),
    payload_key: str | None = typer.Option(
        None,
        "--payload-key",
        help="Payload namespace of the plugin's fields (default: the attached one, else hq).",
        show_default=False,
    ),
    wait: bool = typer.Option(
        False, "--wait", help="If another process is writing the collection, wait for it instead of failing."
    ),
    url: str | None = url_option(),
    api_key: str | None = api_key_option(),
    data_dir: Path = data_dir_option(),
    timeout: float = timeout_option(),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
) -> None:
    """Make an existing collection hierarchical: fit the model on its own vectors and label field, and
    write each point's hq payload (no other field, no vector is touched).

    Running it again completes an attach that was stopped, and annotates points added since; --update
    does only that (and reports labels the model has never seen); --refit fits again. Cosine vectors only
    (others exit 2).
    """
    from hierqdrant.pipelines.attach import AttachOptions, attach

    engine = open_engine(url, api_key, data_dir, create=False, timeout=timeout)
    show = not (quiet or as_json)
    log = (lambda msg: err_console.print(f"[dim]{shown(msg)}[/]", highlight=False)) if show else None
    options = AttachOptions(
        vector=vector,
        label_key=label_key,
        builder=builder.value,
        threshold=threshold,
        alpha=alpha,
        taxonomy=taxonomy,
        pca=parse_pca(pca),
        leaf_from=leaf_from.value,
        tune=tune,
        tune_metric=tune_metric,
        update=update,
        refit=refit,
        dry_run=dry_run,
        batch_size=batch_size,
        payload_key=payload_key,
        wait=wait,
        progress=show,
    )
    try:
        result = attach(engine, collection, options, console=err_console, log=log)
    finally:
        engine.close()
    summary = {**result.to_dict(), "engine": engine.kind, "location": engine.location}
    if as_json:
        print_json(summary)
        return
    if result.fitted:
        console.print(result.model.hierarchy.rich_tree())
    title = f"attach → {shown(collection)}" + (" (dry run: nothing written)" if dry_run else "")
    table = Table(title=title, show_header=False)
    for key in ("mode", "vector", "label_key", "model_id", "points", "labelled", "annotated", "current",
                "predicted_without_label", "without_vector", "classes", "height", "state", "seconds", "engine",
                "location"):  # fmt: skip
        table.add_row(key, shown(summary[key]))
    console.print(table)
    for label, n in summary["unseen_labels"].items():
        err_console.print(
            f"[yellow]unseen label[/] {shown(repr(label))} on {n} points: not a class of the model "
            "(hierqdrant attach --refit)",
            highlight=False,
        )


@handle_errors
def detach_command(
    collection: str = typer.Argument(..., envvar="HIERQDRANT_COLLECTION", help=COLLECTION_HELP, show_default=False),
    dry_run: bool = typer.Option(False, "--dry-run", help="Report what would be removed; remove nothing."),
    wait: bool = typer.Option(
        False, "--wait", help="If another process is writing the collection, wait for it instead of failing."
    ),
    url: str | None = url_option(),
    api_key: str | None = api_key_option(),
    data_dir: Path = data_dir_option(),
    timeout: float = timeout_option(),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
) -> None:
    """Remove what attach added: every point's hq payload, its payload indexes and the stored model.

    The application's vectors, payload fields, indexes and collection metadata are left as they are.
    """
    from hierqdrant.pipelines.attach import detach

    engine = open_engine(url, api_key, data_dir, create=False, timeout=timeout)
    try:
        result = detach(engine, collection, dry_run=dry_run, wait=wait)
    finally:
        engine.close()
    summary = {**result.to_dict(), "engine": engine.kind, "location": engine.location}
    if as_json:
        print_json(summary)
        return
    verb = "would remove" if dry_run else "removed"
    console.print(
        f"{shown(collection)}: {verb} the {shown(repr(result.payload_key))} payload of {result.points} points, "
        f"{len(result.indexes)} payload indexes and model {result.model_id}",
        highlight=False,
    )
