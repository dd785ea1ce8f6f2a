"""``hierqdrant eval``: score the paper's methods on labelled queries.

The database is a collection (ranked through the engine and the searcher) or a features .npz / a
labelled image folder (ranked with NumPy); the report is map@k, map@r, p@1, mahp@k, hdist@k and
severity per method (the raw-feature baselines first), the protocol (cross-fitting when the queries
are among the training items), warnings and notes under the table, a paired test of ours (overlap)
against cosine, and optionally the map@k plot. Progress goes to stderr, also with --json.
The work is :func:`hierqdrant.evaluation.run.run_eval`; this file declares the options and renders.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from hierqdrant.evaluation.plan import EvalProtocol
from hierqdrant.evaluation.tuning import Protocol

from .choices import LeafFromName, QueryClassifierName, StrategyName, choices
from .common import (
    EXIT_OK,
    WEIGHTS_HELP,
    api_key_option,
    data_dir_option,
    err_console,
    handle_errors,
    open_engine,
    parse_pca,
    print_json,
    timeout_option,
    url_option,
)
from .eval_shared import (
    chosen,
    hooks,
    metrics_table,
    parse_ints,
    print_gaussianity,
    print_leaf_sources,
    print_line,
    print_notes,
    print_warnings,
    settings_table,
    show_table,
    tune_settings,
    tune_table,
    warn_skipped,
)
from .fit_options import paper_option, query_classifier_option
from .report_files import check_report_paths, write_eval_report

DEFAULT_METHODS = "cosine-raw,euclidean-raw,euclidean,cosine,hierarchy-only,overlap,ward,given"

if TYPE_CHECKING:
    EvalProtocolName = Enum
    TuneProtocolName = Enum
else:
    EvalProtocolName = choices("EvalProtocolName", EvalProtocol)
    TuneProtocolName = choices("TuneProtocolName", Protocol)


@handle_errors
def eval_command(
    db: str = typer.Option(
        ..., "--db", help="The database: a collection name, a features .npz, or a labelled image folder."
    ),
    queries: Path | None = typer.Option(
        None,
        "--queries",
        "-q",
        help="Labelled query images (folder) or features .npz. Default: the database's own items, each left out of "
        "its own ranking (cross-fitted when they are training items, see --protocol).",
    ),
    db_split: str | None = typer.Option(None, "--db-split", help="Use only the database items of this split."),
    query_split: str | None = typer.Option(
        None,
        "--query-split",
        help="Use only the query items of this split (or, without --queries, "
        "take the queries from the database source's split).",
    ),
    fit: Path | None = typer.Option(
        None,
        "--fit",
        "--fit-on",
        help="Labelled training features (.npz) or images the model is fitted on, for a file or folder "
        "database. Default: the database source's 'train' split if it has one, else the database itself.",
    ),
    protocol: EvalProtocolName = typer.Option(
        EvalProtocolName("auto"),
        "--protocol",
        help="auto: cross-fitting when queries are among the training items, else one fit; cross-fit: always; "
        "loo-leaky: fit once on everything, queries included (optimistic; flagged with a warning).",
    ),
    folds: int = typer.Option(5, "--folds", help="Folds of cross-fitting."),
    fit_split: str | None = typer.Option(None, "--fit-split", help="Split of --fit to use (default: train if any)."),
    methods: str = typer.Option(
        DEFAULT_METHODS,
        "--methods",
        help="Comma-separated: cosine-raw, euclidean-raw (the raw features, as a plain Qdrant collection "
        "ranks them), euclidean, cosine, hierarchy-only, overlap (ours), ward, given "
        "('given' is dropped when there is no --taxonomy).",
    ),
    taxonomy: Path | None = typer.Option(None, "--taxonomy", help="Taxonomy file of the 'given' method."),
    threshold: str | None = typer.Option(
        None, "--threshold", "-t", help="Overlap threshold t (default: the model's, else 0.3), e.g. 0.3."
    ),
    alpha: str | None = typer.Option(
        None, "--alpha", help="α per method, e.g. 3 or overlap=3,ward=1 (default: the model's α)."
    ),
    k: str = typer.Option("1,5,10,20,100,250", "--k", help="The k of map@k."),
    map_r: bool = typer.Option(True, "--map-r/--no-map-r", help="Also map@r (needs the top R of each query)."),
    mahp_k: str = typer.Option("250", "--mahp-k", help="The k of mahp@k."),
    hdist_k: str = typer.Option("10", "--hdist-k", help="The k of hdist@k."),
    score_taxonomy: Path | None = typer.Option(
        None,
        "--score-taxonomy",
        help="Hierarchy that scores mahp@k, hdist@k and severity (default: the learned overlap tree).",
    ),
    leaf_from: LeafFromName | None = typer.Option(
        None,
        "--leaf-from",
        help="Leaf of a database item of a model fitted here: label (its label where it has one, the default) or "
        "predicted (the query classifier, the paper). A collection's leaves are the stored ones and are checked "
        "against this.",
    ),
    query_classifier: QueryClassifierName | None = query_classifier_option(),
    paper: bool = paper_option(),
    tune_flag: bool = typer.Option(
        False, "--tune", help="Choose the PCA, t and α on a validation split of the training items first."
    ),
    tune_metric: str = typer.Option("map@r", "--tune-metric", help="Metric that --tune maximises."),
    thresholds: str | None = typer.Option(None, "--thresholds", help="t grid of --tune, e.g. 0.1,0.2,0.3."),
    alphas: str | None = typer.Option(None, "--alphas", help="α grid of --tune, e.g. 0.5,1,2,3,5."),
    pcas: str | None = typer.Option(
        None, "--pcas", help="PCA grid of --tune: variance shares, dims or 'all' (default 0.95,0.99,all)."
    ),
    tune_protocol: TuneProtocolName = typer.Option(
        TuneProtocolName("split"),
        "--tune-protocol",
        help="split: validation queries against the rest (as tune and ingest --tune); loo: within validation.",
    ),
    val_share: float = typer.Option(0.2, "--val-share", help="Share of the training items held out by --tune."),
    tune_queries: int = typer.Option(2000, "--tune-queries", help="At most this many validation queries."),
    perturb: str | None = typer.Option(
        None, "--perturb", help="Perturb the query images: blur, saturation or occlusion[:strength]."
    ),
    perturb_db: str | None = typer.Option(
        None, "--perturb-db", help="Perturb the database images (an image-folder database)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of perturbations, --max-queries, --tune and the paired test."),
    max_queries: int | None = typer.Option(None, "--max-queries", help="Evaluate a seeded sample of the queries."),
    paired_metrics: str = typer.Option(
        "map@10,map@r", "--paired", help="Metrics of the paired test of overlap against cosine-raw (cosine without it)."
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Backbone that embeds image folders (default: the collection's)."
    ),
    weights: str | None = typer.Option(None, "--weights", "-w", help=WEIGHTS_HELP),
    device: str = typer.Option("auto", "--device", help="auto, cuda or cpu (embedding)."),
    batch_size: int = typer.Option(128, "--batch-size", help="Images per embedding batch."),
    workers: int | None = typer.Option(None, "--workers", help="DataLoader worker processes."),
    image_size: int | None = typer.Option(None, "--image-size", help="Override the backbone's input size."),
    strategy: StrategyName = typer.Option(
        StrategyName("exact"), "--strategy", help="Search strategy through a collection (exact is exact)."
    ),
    hnsw: bool = typer.Option(
        False, "--hnsw", help="Search a collection through its HNSW index instead of exhaustively."
    ),
    pca: str | None = typer.Option(
        None,
        "--pca",
        help="PCA of a fitted model: variance share, count or 'all' (default 0.95; with --tune: pins the PCA).",
    ),
    url: str | None = url_option(),
    api_key: str | None = api_key_option(),
    data_dir: Path = data_dir_option(),
    timeout: float = timeout_option(),
    plot: Path | None = typer.Option(None, "--plot", help="Save map@k against k per method (.png/.pdf/.svg)."),
    html: Path | None = typer.Option(
        None,
        "--html",
        help="Also write a self-contained HTML report: the tables, map@k against k, the tree and example queries "
        "where the hierarchical ranking differs most from cosine (thumbnails when the items are image files).",
    ),
    image_root: list[Path] = typer.Option(
        [],
        "--image-root",
        envvar="HIERQDRANT_IMAGE_ROOT",
        metavar="DIR",
        help="Folder a collection was ingested from, where --html finds its images (repeatable).",
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress on stderr."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Score cosine-raw, euclidean-raw, euclidean, cosine, hierarchy-only, overlap (ours), ward and given on
    labelled queries, without letting a query shape the model that ranks it."""
    from hierqdrant.core.errors import InputError
    from hierqdrant.core.settings import PAPER
    from hierqdrant.evaluation.methods import parse_per_method
    from hierqdrant.evaluation.run import EvalPlan, run_eval
    from hierqdrant.evaluation.sources import EmbedOptions

    show = not quiet
    check_report_paths(html=html)
    if paper:  # the paper's leaf sources and PCA; refuse an explicit value it would override
        clash = [
            flag
            for flag, v in (("--pca", pca), ("--query-classifier", query_classifier), ("--leaf-from", leaf_from))
            if v is not None
        ]
        if clash:
            raise InputError(f"--paper fixes {', '.join(clash)}", f"drop {', '.join(clash)}, or drop --paper")
        pca, query_classifier, leaf_from = (
            str(PAPER["pca"]),
            QueryClassifierName(PAPER["query_classifier"]),
            LeafFromName(PAPER["leaf_from"]),
        )
    t_common, t_per = parse_per_method(threshold, "threshold")
    a_common, a_per = parse_per_method(alpha, "alpha")
    plan = EvalPlan(
        db=db,
        queries=queries,
        db_split=db_split,
        query_split=query_split,
        fit=fit,
        fit_split=fit_split,
        methods=None if methods.strip() == DEFAULT_METHODS else methods.split(","),  # None: 'given' if a taxonomy
        taxonomy=taxonomy,
        threshold=t_common,
        thresholds=t_per,
        alpha=a_common,
        alphas=a_per,
        ks=parse_ints(k, "k"),
        map_r=map_r,
        mahp_ks=parse_ints(mahp_k, "mahp-k", minimum=2),
        hdist_ks=parse_ints(hdist_k, "hdist-k"),
        score_taxonomy=score_taxonomy,
        leaf_from=leaf_from.value if leaf_from is not None else None,  # None: the stored or default mode
        tuning=tune_settings(
            tune_metric, thresholds, alphas, val_share, seed, tune_queries, tune_protocol.value, pcas, pca
        )
        if tune_flag
        else None,
        perturb=perturb,
        perturb_db=perturb_db,
        seed=seed,
        max_queries=max_queries,
        paired=[p.strip() for p in paired_metrics.split(",") if p.strip()],
        embed=EmbedOptions(
            model, weights, device, batch_size, workers, quiet, err_console, warn_skipped, image_size=image_size
        ),
        strategy=strategy.value,
        exact=not hnsw,
        pca=parse_pca(pca) if pca is not None else 0.95,
        plot=plot,
        protocol=protocol.value,
        folds=folds,
        query_classifier=query_classifier.value if query_classifier is not None else None,
    )

    def store() -> Any:
        return open_engine(url, api_key, data_dir, create=False, timeout=timeout)

    report = run_eval(plan, connect=store, hooks=hooks(show))
    if html is not None:
        write_eval_report(html, report, db, queries, image_root, store)
        report.extra["html"] = str(html)
    if as_json:
        if not quiet:
            print_warnings(report.warnings, to_stderr=True)
        print_json(report.to_dict())
        raise typer.Exit(EXIT_OK)
    for name, r in report.tuned.items():
        show_table(tune_table(r))
        print_line(f"{name}: chose {chosen(r)} ({r.metric} {r.best_score:.4f} on {r.queries} validation queries)")
    result = report.result
    named = report.protocol + (f" ({plan.folds} folds)" if report.protocol == "cross-fitting" else "")
    title = (
        f"{named}: {result.queries} queries, {result.database} database items "
        f"({report.sources.get('queries_from', '')}); mahp/hdist/severity scored by {result.scored_by}"
    )
    show_table(metrics_table(result, title))
    print_leaf_sources(report.extra.get("leaf_sources"))
    print_gaussianity(report.extra.get("gaussianity"))
    print_warnings(report.warnings)
    print_notes(report.notes)
    show_table(settings_table(result))
    for metric, test in report.tests.items():
        print_line(
            f"overlap − {report.baseline} on {metric}: {test.diff:+.4f} "
            f"(95% CI [{test.ci_low:+.4f}, {test.ci_high:+.4f}], paired sign-flip p = {test.p_value:.4g}, n = {test.n})"
        )
    if plot is not None:
        print_line(f"plot: {plot}")
    if html is not None:
        print_line(f"report: {html}")
    raise typer.Exit(EXIT_OK)
