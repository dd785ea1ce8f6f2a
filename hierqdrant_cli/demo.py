"""``hierqdrant demo``: the whole pipeline offline in under a minute — digits, ingest, queries."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.columns import Columns
from rich.table import Table

from .common import console, data_dir_option, err_console, handle_errors, print_json, shown
from .report_files import check_report_paths


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
    html: Path | None = typer.Option(
        None,
        "--html",
        help="Where to write the HTML report of the example queries (default: demo-report.html beside --workdir).",
    ),
    no_html: bool = typer.Option(False, "--no-html", help="Write no HTML report."),
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

    report = None if no_html else (html if html is not None else workdir.parent / "demo-report.html")
    if report is not None:
        if html is None:  # the default sits beside the workdir, which the demo creates anyway
            report.parent.mkdir(parents=True, exist_ok=True)
        check_report_paths(html=report)
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
            "cosine": searcher.search_batch(
                z, 10, filter=train_only, alpha=0.0, projected=True, strategy="exact", explain=True
            ),
            "hierarchical": searcher.search_batch(
                z, 10, filter=train_only, projected=True, strategy="auto", explain=True
            ),
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
    rng = np.random.default_rng(0)
    picks = [int(q) for q in rng.choice(len(test), size=min(queries, len(test)), replace=False)]
    if report is not None:
        reported = _differing(ranked, [p["hq"]["label"] for p, _ in test], k, max(queries, 4)) or picks
        _write_report(report, searcher.model, root, [test[q][0] for q in reported], ranked, reported, k, summary)
        summary["report"] = str(report)
    if as_json:
        print_json(summary)
        return
    console.print(result.model.hierarchy.rich_tree())
    for q in picks:
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
    if report is not None:
        console.print(f"report: {shown(str(report))}", highlight=False, soft_wrap=True)


def _differing(ranked: dict[str, list[list[Any]]], truth: list[str], k: int, n: int) -> list[int]:
    """Up to ``n`` queries where the hierarchical top-k has the most more right labels than cosine's
    (then the most fewer): where the two rankings differ, which is what the report is there to show."""
    gains = []
    for q, label in enumerate(truth):
        right = {m: sum(h.payload["hq"]["label"] == label for h in rows[q][:k]) for m, rows in ranked.items()}
        gain = right["hierarchical"] - right["cosine"]
        if gain:
            gains.append((-gain, q))
    return [q for _, q in sorted(gains)[:n]]


def _write_report(
    path: Path,
    model: Any,
    root: Path,
    queries: list[dict[str, Any]],
    ranked: dict[str, list[list[Any]]],
    picks: list[int],
    k: int,
    summary: dict[str, Any],
) -> None:
    """The demo's HTML report: the example queries, cosine beside hierarchical, with thumbnails."""
    from hierqdrant.reports.cases import QueryCase, hits_from_search
    from hierqdrant.reports.query_report import write_query_report
    from hierqdrant.reports.thumbnails import ImageFinder

    finder = ImageFinder([root])
    cases = []
    for payload, q in zip(queries, picks, strict=True):
        first = ranked["hierarchical"][q][0] if ranked["hierarchical"][q] else None
        leaf = first.explanation["query_leaf_name"] if first is not None and first.explanation else None
        rows = {method: hits_from_search(model, answers[q][:k], "hq", finder) for method, answers in ranked.items()}
        cases.append(QueryCase(payload["path"], finder.find(payload["path"]), leaf, payload["hq"]["label"], rows))
    scores = "; ".join(f"{m}: map@10 {s['map@10']:.3f}, p@1 {s['p@1']:.3f}" for m, s in summary["scores"].items())
    facts = [
        f"{summary['images']} digit images",
        f"{summary['queries']} held-out queries against the training digits",
        f"tree height {summary['height']}",
        scores,
    ]
    write_query_report(path, cases, "hierqdrant demo — cosine against hierarchical retrieval", facts)
