"""``hierqdrant ingest``: embed a labelled image folder, fit the hierarchy, upsert into Qdrant."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from hierqdrant.vision.devices import Backend

from .choices import BuilderName, DeviceName, LeafFromName, QueryClassifierName, choices
from .common import (
    EXIT_OK,
    EXIT_PARTIAL,
    WEIGHTS_HELP,
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
from .fit_options import fit_settings, leaf_from_option, paper_option, pca_option, query_classifier_option

if TYPE_CHECKING:  # to the type checker a choice is an Enum whose ``.value`` is the chosen string
    BackendName = Enum
else:
    BackendName = choices("BackendName", Backend)


@handle_errors
def ingest_command(
    source: Path = typer.Argument(
        ...,
        help="An ImageFolder (class subfolders), a folder with train/ and test/, a CUB-200-2011 folder, "
        "an unlabelled folder (assigned by the collection's model) or a features .npz.",
    ),
    collection: str = typer.Option(
        ..., "--collection", "-c", envvar="HIERQDRANT_COLLECTION", help="Collection to create or update."
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Backbone: a torchvision classification model (resnet50, efficientnet_b0, …), cifar_resnet20/32/44/56/110 "
        "or pixels. Default: the collection's extractor, else resnet50.",
    ),
    weights: str | None = typer.Option(
        None,
        "--weights",
        "-w",
        help=WEIGHTS_HELP,
    ),
    image_size: int | None = typer.Option(None, "--image-size", help="Override the backbone's input size."),
    device: DeviceName = typer.Option(
        DeviceName("auto"), "--device", help="Where to embed: auto (GPU if there is one), cuda or cpu."
    ),
    batch_size: int = typer.Option(128, "--batch-size", help="Images per embedding batch."),
    workers: int | None = typer.Option(None, "--workers", help="DataLoader worker processes (default: min(8, CPUs))."),
    backend: BackendName = typer.Option(
        BackendName("local"),
        "--backend",
        help="Where to embed: local (this process) or ray (a pool of Ray actors, one per GPU, else one per CPU; "
        'pip install "hierqdrant[ray]"; uses RAY_ADDRESS or an existing ray.init, else a local instance).',
    ),
    ray_concurrency: int | None = typer.Option(
        None, "--ray-concurrency", min=1, help="With --backend ray: how many embedding actors."
    ),
    builder: BuilderName = typer.Option(
        BuilderName("overlap"), "--builder", help="overlap (the paper), ward or given."
    ),
    threshold: float = typer.Option(
        0.3, "--threshold", "-t", help="Overlap threshold t on the Bhattacharyya coefficient."
    ),
    alpha: float = typer.Option(3.0, "--alpha", help="Default weight α of the hierarchy term for queries."),
    taxonomy: Path | None = typer.Option(None, "--taxonomy", help="Taxonomy file for --builder given."),
    pca: str | None = pca_option(),
    query_classifier: QueryClassifierName | None = query_classifier_option(),
    leaf_from: LeafFromName | None = leaf_from_option(),
    paper: bool = paper_option(),
    head: str | None = typer.Option(
        None,
        "--head",
        help="With --query-classifier head and a features file: the checkpoint of the network the features "
        "came from, whose final layer scores the classes (from images, the backbone's own is used).",
    ),
    split_classes: bool = typer.Option(
        False,
        "--split-classes",
        help="Sub-class leaves: split each class whose features are several clusters (Gaussian mixtures, k by"
        " BIC), each sub-class under its class's node. Automatic with a --objective gaussian checkpoint.",
    ),
    tune: bool = typer.Option(
        False, "--tune", help="Choose t and α on a validation split of the labelled training images."
    ),
    tune_metric: str = typer.Option("map@r", "--tune-metric", help="What --tune maximises: map@K, map@r, p@1."),
    keep_model: bool = typer.Option(
        False,
        "--keep-model",
        help="Assign new images with the collection's stored model (and its leaf sources) instead of refitting.",
    ),
    recreate: bool = typer.Option(
        False, "--recreate", help="Drop and rebuild the collection (also a damaged one)."
    ),
    wait: bool = typer.Option(
        False,
        "--wait",
        help="If another process is writing the collection, wait for it to finish instead of failing.",
    ),
    upsert_batch: int = typer.Option(1024, "--upsert-batch", min=1, help="Points per upsert request."),
    shards: int | None = typer.Option(
        None, "--shards", min=1, help="Shards of a new collection on a Qdrant server or cluster (default: 1)."
    ),
    replicas: int | None = typer.Option(
        None, "--replicas", min=1, help="Copies of each shard of a new collection on a Qdrant cluster (default: 1)."
    ),
    payload_key: str = typer.Option("hq", "--payload-key", help="Payload namespace of the plugin's fields."),
    url: str | None = url_option(),
    api_key: str | None = api_key_option(),
    data_dir: Path = data_dir_option(),
    timeout: float = timeout_option(),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress and no phase lines on stderr."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
) -> None:
    """Embed images, fit PCA + class Gaussians + the hierarchy, and upsert them into a collection.

    Re-running the same command updates the same points and embeds nothing again; after an
    interruption it resumes (until then the collection is marked incomplete). One process at a time
    writes a collection: another ingest into it exits 2 at once, or with --wait waits for it. Exit
    code 1 when some files were skipped.

    Leaves (DESIGN.md §1.5): a query's comes from the tied (LDA) classifier and a stored image's from its
    label where it has one, by default; --paper fits the paper's setting (Mahalanobis leaves for queries
    and stored images, 95 % PCA). Both are stored with the collection's model.

    Progress goes to stderr, also with --json (whose stdout stays one JSON document): bars on a
    terminal, a few plain lines otherwise. Warnings (a random network, a narrow PCA, a flat tree, classes
    with too few images, a low leaf accuracy) are printed in yellow and listed in the JSON.
    """
    from hierqdrant.pipelines.ingest import IngestOptions, ingest

    from .eval_shared import hooks, print_warnings

    engine = open_engine(url, api_key, data_dir, timeout=timeout)
    show = not quiet
    options = fit_settings(
        IngestOptions,
        paper=paper,
        pca=pca,
        query_classifier=query_classifier,
        leaf_from=leaf_from,
        backbone=model,
        weights=weights,
        image_size=image_size,
        device=device.value,
        batch_size=batch_size,
        num_workers=workers,
        backend=backend.value,
        ray_concurrency=ray_concurrency,
        builder=builder.value,
        threshold=threshold,
        alpha=alpha,
        taxonomy=taxonomy,
        head=head,
        split_classes=split_classes,
        payload_key=payload_key,
        tune=tune,
        tune_metric=tune_metric,
        keep_model=keep_model,
        recreate=recreate,
        wait=wait,
        upsert_batch=upsert_batch,
        shards=shards,
        replicas=replicas,
        cache_dir=data_dir / "cache",
        progress=show and err_console.is_terminal,
    )
    try:
        result = ingest(source, engine, collection, options, console=err_console, hooks=hooks(show))
    finally:
        engine.close()
    summary = {**result.to_dict(), "engine": engine.kind, "location": engine.location}
    if as_json:
        if show:
            print_warnings(result.warnings, to_stderr=True)
        print_json(summary)
    else:
        if result.fitted:
            console.print(result.model.hierarchy.rich_tree())
        table = Table(title=f"ingest → {shown(collection)}", show_header=False)
        for key in (
            "ingested",
            "embedded",
            "reused_from_cache",
            "classes",
            "height",
            "levels",
            "query_classifier",
            "leaf_from",
            "model_id",
            "splits",
            "seconds",
            "embed_images_per_s",
            "upsert_points_per_s",
            "engine",
            "location",
        ):
            table.add_row(key, shown(summary[key]))  # a location like /data/[red]x/ prints as it is
        table.add_row("skipped", str(len(result.skipped)))
        console.print(table)
        print_warnings(result.warnings)
        for skip in result.skipped[:50]:
            err_console.print(f"[yellow]skipped[/] {shown(skip.path)}: {shown(skip.reason)}", highlight=False)
        if len(result.skipped) > 50:
            err_console.print(f"… and {len(result.skipped) - 50} more (see --json)")
    raise typer.Exit(EXIT_PARTIAL if result.skipped else EXIT_OK)
