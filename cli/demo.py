"""``hierqdrant demo``: the whole pipeline offline in under a minute — digits, ingest, queries."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.columns import Columns
from rich.table import Table

from .common import console, data_dir_option, err_console, handle_errors, print_json


@handle_errors
def demo_command(
    workdir: Path = typer.Option(
        Path(".hierqdrant") / "demo-digits", "--workdir", help="Where the digit PNGs are written."
    ),
    data_dir: Path = data_dir_option(),
    collection: str = typer.Option("digits-demo", "--collection", "-c", help="Collection to build."),
    queries: int = typer.Option(3, "--queries", help="How many example queries to print."),
    k: int = typer.Option(8, "-k", help="Results per example query."),
    threshold: float = typer.Option(1e-3, "--threshold", "-t", help="Overlap threshold t (8×8 digits barely overlap)."),
    alpha: float = typer.Option(1.0, "--alpha", help="Weight α of the hierarchy term."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
) -> None:
    """Write scikit-learn's digits as PNG folders, ingest them with the `pixels` backbone into the
    embedded engine, and compare cosine with hierarchical retrieval on the held-out digits."""
    from qdrant_client import models

    from hierqdrant.evaluation.metrics import map_at_k, precision_at_1
    from hierqdrant.pipelines.demo import write_digits
    from hierqdrant.pipelines.ingest import IngestOptions, ingest
    from hierqdrant.store.collection import iter_points
    from hierqdrant.store.engines import connect
    from hierqdrant.store.search import HierarchicalSearcher

    started = time.perf_counter()
    root, count = write_digits(workdir)
    if not as_json:
        err_console.print(f"[dim]wrote {count} digit images under {root}[/]")
    engine = connect(data_dir=data_dir)
    try:
        result = ingest(
            root,
            engine,
            collection,
            IngestOptions(
                backbone="pixels",
                device="cpu",
                num_workers=0,
                pca=0.95,
                threshold=threshold,
                alpha=alpha,
                cache_dir=data_dir / "cache",
                progress=not as_json,
            ),
            console=err_console,
        )
        searcher = HierarchicalSearcher(engine, collection)
        train_only = models.Filter(must=[models.FieldCondition(key="hq.split", match=models.MatchValue(value="train"))])
        test_only = models.Filter(must=[models.FieldCondition(key="hq.split", match=models.MatchValue(value="test"))])
        test: list[tuple[dict[str, Any], np.ndarray]] = []
        for _, vecs, payloads in iter_points(engine, collection, filter=test_only):
            assert vecs is not None
            test.extend(zip(payloads, vecs, strict=True))
        test.sort(key=lambda pv: pv[0]["path"])
        z = np.stack([v for _, v in test])
        truth = np.asarray([searcher.model.class_names.index(p["hq"]["label"]) for p, _ in test])
        ranked = {
            "cosine": searcher.search_batch(z, 10, filter=train_only, alpha=0.0, projected=True, strategy="exact"),
            "hierarchical": searcher.search_batch(z, 10, filter=train_only, projected=True, strategy="auto"),
        }
    finally:
        engine.close()
    names = searcher.model.class_names
    scores = {}
    for method, rows in ranked.items():
        labels = np.asarray([[names.index(h.payload["hq"]["label"]) for h in row] for row in rows])
        scores[method] = {"map@10": map_at_k(labels, truth, 10), "p@1": precision_at_1(labels, truth)}
    summary = {
        "collection": collection,
        "images": result.ingested,
        "model_id": result.model_id,
        "height": result.height,
        "queries": len(test),
        "scores": scores,
        "certificate_rate": searcher.stats.certificate_rate,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if as_json:
        print_json(summary)
        return
    console.print(result.model.hierarchy.rich_tree())
    rng = np.random.default_rng(0)
    for q in rng.choice(len(test), size=min(queries, len(test)), replace=False):
        tables = []
        for method, rows in ranked.items():
            t = Table(title=f"{method}", title_style="bold")
            t.add_column("#", justify="right")
            t.add_column("label")
            t.add_column("D" if method == "hierarchical" else "cos dist", justify="right")
            for r, h in enumerate(rows[q][:k], 1):
                label = h.payload["hq"]["label"]
                style = "green" if label == test[q][0]["hq"]["label"] else "red"
                t.add_row(str(r), f"[{style}]{label}[/]", f"{h.distance:.3f}")
            tables.append(t)
        console.print(f"\nquery [bold]{test[q][0]['path']}[/] (true class {test[q][0]['hq']['label']})")
        console.print(Columns(tables))
    table = Table(title=f"{len(test)} held-out digits against the training digits")
    table.add_column("method")
    table.add_column("map@10", justify="right")
    table.add_column("p@1", justify="right")
    for method, s in scores.items():
        table.add_row(method, f"{s['map@10']:.3f}", f"{s['p@1']:.3f}")
    console.print(table)
    console.print(
        f"[dim]{summary['seconds']} s; collection {collection!r} in {data_dir} — try: "
        f"hierqdrant query {root / 'test' / 'seven'} -c {collection} -k 5 --explain[/]"
    )
