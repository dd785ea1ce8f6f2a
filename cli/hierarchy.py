"""``hierqdrant hierarchy``: build, show and export the class tree of a model."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

import typer

from hierqdrant.core.errors import InputError

from .choices import BuilderName
from .common import (
    api_key_option,
    console,
    data_dir_option,
    handle_errors,
    open_engine,
    parse_pca,
    print_json,
    resolve_collection,
    url_option,
)

app = typer.Typer(help="Build, show and export class hierarchies.", no_args_is_help=True)


class ExportFormat(str, Enum):
    newick = "newick"
    json = "json"
    parent_child = "parent-child"
    png = "png"


@app.command("build")
@handle_errors
def build_command(
    features: Path = typer.Option(
        ..., "--features", "-f", help="Features .npz with 'features' and 'labels' (and optionally 'classes')."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write the model into (model.json + arrays.npz)."),
    builder: BuilderName = typer.Option(
        BuilderName("overlap"),
        help="overlap (the paper), ward (linkage of class means) or given (a taxonomy file).",
    ),
    taxonomy: Path | None = typer.Option(
        None, help="Taxonomy file for --builder given (parent-child, JSON or Newick)."
    ),
    threshold: float = typer.Option(
        0.3, "--threshold", "-t", help="Classes whose Bhattacharyya coefficient ≥ t merge (overlap builder)."
    ),
    alpha: float = typer.Option(3.0, help="Default weight α of the hierarchy term for queries."),
    pca: str = typer.Option("0.95", help="Variance share to keep (0.95), a number of components (64) or 'all'."),
    covariance: str = typer.Option("ledoit-wolf", help="Shrinkage estimator: ledoit-wolf or oas."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Fit PCA, class Gaussians and a class hierarchy on labelled features."""
    from hierqdrant.core.features import FeatureSet
    from hierqdrant.core.model import HierarchyModel

    data = FeatureSet.load(features)
    if data.labels is None:
        raise InputError(f"{features} has no 'labels' array", "a hierarchy is fitted on labelled features")
    model = HierarchyModel.fit(
        data.features,
        data.labels,
        class_names=data.class_names,
        builder=builder.value,
        threshold=threshold,
        alpha=alpha,
        taxonomy=taxonomy,
        n_components=parse_pca(pca),
        covariance=covariance,
        extractor={"features_file": features.name},
    )
    model.save(out)
    summary = {**model.summary(), "out": str(out)}
    if as_json:
        print_json(summary)
        return
    console.print(model.hierarchy.rich_tree())
    _print_summary(summary)


def _load(model_dir: Path | None, collection: str | None, url: str | None, api_key: str | None, data_dir: Path) -> Any:
    """A model from a directory, or the one stored with a collection."""
    from hierqdrant.core.model import HierarchyModel

    if model_dir is not None:
        return HierarchyModel.load(model_dir)
    from hierqdrant.store.collection import read_collection_model

    engine = open_engine(url, api_key, data_dir)
    try:
        return read_collection_model(engine, resolve_collection(engine, collection))[0]
    finally:
        engine.close()


@app.command("show")
@handle_errors
def show_command(
    model_dir: Path | None = typer.Argument(None, help="A model directory (default: the model of --collection)."),
    collection: str | None = typer.Option(
        None, "--collection", "-c", help="Show the model stored with this collection."
    ),
    url: str | None = url_option(),
    api_key: str | None = api_key_option(),
    data_dir: Path = data_dir_option(),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the tree."),
) -> None:
    """Print a model's class tree with class names, node heights and sizes."""
    model = _load(model_dir, collection, url, api_key, data_dir)
    if as_json:
        print_json({**model.summary(), "hierarchy": model.hierarchy.to_dict()})
        return
    console.print(model.hierarchy.rich_tree())
    _print_summary(model.summary())


@app.command("export")
@handle_errors
def export_command(
    model_dir: Path | None = typer.Argument(None, help="A model directory (default: the model of --collection)."),
    collection: str | None = typer.Option(None, "--collection", "-c", help="Export the model of this collection."),
    url: str | None = url_option(),
    api_key: str | None = api_key_option(),
    data_dir: Path = data_dir_option(),
    fmt: ExportFormat = typer.Option(ExportFormat.newick, "--format", help="newick, json, parent-child or png."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write to this file instead of stdout (required for png)."
    ),
) -> None:
    """Export a model's class tree (Newick, JSON, parent-child text, or a PNG drawing)."""
    tree = _load(model_dir, collection, url, api_key, data_dir).hierarchy
    if fmt is ExportFormat.png:
        if out is None:
            raise InputError("--format png needs --out FILE.png")
        from hierqdrant.evaluation.plots import draw_tree

        draw_tree(tree, out)
        console.print(f"wrote {out}")
        return
    text = {
        ExportFormat.newick: lambda: tree.to_newick() + "\n",
        ExportFormat.json: lambda: tree.to_json() + "\n",
        ExportFormat.parent_child: tree.to_parent_child,
    }[fmt]()
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")


def _print_summary(summary: dict[str, object]) -> None:
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for key, value in summary.items():
        table.add_row(f"[dim]{key}[/]", str(value))
    console.print(table)
