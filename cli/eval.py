"""``hierqdrant eval``: score the paper's methods on labelled queries.

The database is a collection (ranked through the engine and the searcher) or a features .npz / a
labelled image folder (ranked with NumPy); the report is map@k, map@r, p@1, mahp@k, hdist@k and
severity per method, a paired test of ours (overlap) against cosine, and optionally the map@k plot.
The work is :func:`hierqdrant.evaluation.run.run_eval`; this file declares the options and renders.
"""

from __future__ import annotations

from pathlib import Path

import typer

from .choices import LeafFromName, StrategyName
from .common import (
    EXIT_OK,
    api_key_option,
    data_dir_option,
    err_console,
    handle_errors,
    open_engine,
    parse_pca,
    print_json,
    url_option,
)
from .eval_shared import (
    hooks,
    metrics_table,
    parse_floats,
    parse_ints,
    print_line,
    settings_table,
    show_table,
    tune_table,
    warn_skipped,
)

DEFAULT_METHODS = "euclidean,cosine,hierarchy-only,overlap,ward,given"


@handle_errors
def eval_command(
    db: str = typer.Option(
        ..., "--db", help="The database: a collection name, a features .npz, or a labelled image folder."
    ),
    queries: Path | None = typer.Option(
        None,
        "--queries",
        "-q",
        help="Labelled query images (folder) or features .npz. Default: leave-one-out over the database.",
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
        help="Labelled training features (.npz) or images the model is fitted on, for a file or folder "
        "database. Default: the database source's 'train' split if it has one, else the database itself.",
    ),
    fit_split: str | None = typer.Option(None, "--fit-split", help="Split of --fit to use (default: train if any)."),
    methods: str = typer.Option(
        DEFAULT_METHODS,
        "--methods",
        help="Comma-separated: euclidean, cosine, hierarchy-only, overlap (ours), ward, given "
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
        help="Leaf of a database item: predicted (Mahalanobis, the paper; default) or its label. "
        "A collection's leaves are the stored ones and are checked against this.",
    ),
    tune_flag: bool = typer.Option(
        False, "--tune", help="Choose t and α on a validation split of the training items first."
    ),
    tune_metric: str = typer.Option("map@r", "--tune-metric", help="Metric that --tune maximises."),
    thresholds: str | None = typer.Option(None, "--thresholds", help="t grid of --tune, e.g. 0.1,0.2,0.3."),
    alphas: str | None = typer.Option(None, "--alphas", help="α grid of --tune, e.g. 0.5,1,2,3,5."),
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
        "map@10,map@r", "--paired", help="Metrics of the paired test of overlap against cosine."
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Backbone that embeds image folders (default: the collection's)."
    ),
    weights: str | None = typer.Option(None, "--weights", "-w", help="Local checkpoint of --model."),
    device: str = typer.Option("auto", "--device", help="auto, cuda or cpu (embedding)."),
    batch_size: int = typer.Option(128, "--batch-size", help="Images per embedding batch."),
    workers: int | None = typer.Option(None, "--workers", help="DataLoader worker processes."),
    strategy: StrategyName = typer.Option(
        StrategyName("exact"), "--strategy", help="Search strategy through a collection (exact is exact)."
    ),
    hnsw: bool = typer.Option(
        False, "--hnsw", help="Search a collection through its HNSW index instead of exhaustively."
    ),
    pca: str = typer.Option("0.95", "--pca", help="PCA of a fitted model: variance share, count or 'all'."),
    url: str | None = url_option(),
    api_key: str | None = api_key_option(),
    data_dir: Path = data_dir_option(),
    plot: Path | None = typer.Option(None, "--plot", help="Save map@k against k per method (.png/.pdf/.svg)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Score euclidean, cosine, hierarchy-only, overlap (ours), ward and given on labelled queries."""
    from hierqdrant.evaluation.methods import parse_per_method
    from hierqdrant.evaluation.run import EvalPlan, run_eval
    from hierqdrant.evaluation.sources import EmbedOptions
    from hierqdrant.evaluation.tuning import TuneSettings

    show = not (quiet or as_json)
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
        tuning=TuneSettings(
            metric=tune_metric,
            thresholds=parse_floats(thresholds, "thresholds"),
            alphas=parse_floats(alphas, "alphas"),
            val_share=val_share,
            seed=seed,
            max_queries=tune_queries,
        )
        if tune_flag
        else None,
        perturb=perturb,
        perturb_db=perturb_db,
        seed=seed,
        max_queries=max_queries,
        paired=[p.strip() for p in paired_metrics.split(",") if p.strip()],
        embed=EmbedOptions(model, weights, device, batch_size, workers, quiet or as_json, err_console, warn_skipped),
        strategy=strategy.value,
        exact=not hnsw,
        pca=parse_pca(pca),
        plot=plot,
    )
    report = run_eval(plan, connect=lambda: open_engine(url, api_key, data_dir), hooks=hooks(show))
    if as_json:
        print_json(report.to_dict())
        raise typer.Exit(EXIT_OK)
    for name, r in report.tuned.items():
        show_table(tune_table(r))
        print_line(
            f"{name}: chose t={r.best_threshold if r.best_threshold is not None else '–'}, α={r.best_alpha:g} "
            f"({r.metric} {r.best_score:.4f} on {r.queries} validation queries)"
        )
    result = report.result
    title = (
        f"{result.protocol}: {result.queries} queries, {result.database} database items "
        f"({report.sources.get('queries_from', '')}); mahp/hdist/severity scored by {result.scored_by}"
    )
    show_table(metrics_table(result, title))
    show_table(settings_table(result))
    for metric, test in report.tests.items():
        print_line(
            f"overlap − cosine on {metric}: {test.diff:+.4f} (95% CI [{test.ci_low:+.4f}, {test.ci_high:+.4f}], "
            f"paired sign-flip p = {test.p_value:.4g}, n = {test.n})"
        )
    if plot is not None:
        print_line(f"plot: {plot}")
    raise typer.Exit(EXIT_OK)
