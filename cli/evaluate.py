"""``hierqdrant eval`` and ``hierqdrant tune``: score the paper's methods, choose t and α.

``eval`` ranks a database (a collection, through the engine and the searcher; or a features .npz /
image folder, with NumPy) for labelled queries by every method and prints map@k, map@r, p@1, mahp@k,
hdist@k and severity per method, a paired test of ours (overlap) against cosine, and optionally the
map@k plot. ``tune`` grid-searches t and α on a validation split of the training images and stores the
choice in a model directory or in a collection.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hierqdrant.core.errors import InputError, NotFoundError

from .common import (
    EXIT_OK,
    api_key_option,
    console,
    data_dir_option,
    err_console,
    handle_errors,
    open_engine,
    parse_pca,
    print_json,
    url_option,
)

if TYPE_CHECKING:
    import numpy as np

    from hierqdrant.core.model import HierarchyModel
    from hierqdrant.evaluation.evaluate import EvalResult, Method, Scoring


class LeafFromName(str, Enum):
    predicted = "predicted"
    label = "label"


class StrategyName(str, Enum):
    exact = "exact"
    auto = "auto"
    rerank = "rerank"
    formula = "formula"


class TuneProtocol(str, Enum):
    holdout = "split"  # (a member named "split" would shadow str.split)
    loo = "loo"


class BuilderChoice(str, Enum):
    overlap = "overlap"
    ward = "ward"
    given = "given"


PLOT_SUFFIXES = (".png", ".pdf", ".svg")
DEFAULT_METHODS = "euclidean,cosine,hierarchy-only,overlap,ward,given"
# Metrics where a smaller value is better (bold the minimum in the table).
LOWER_IS_BETTER = ("hdist@", "severity")


# ------------------------------------------------------------------------------------ parsing


def parse_ints(text: str, what: str, minimum: int = 1) -> list[int]:
    """``"1,5,10"`` → [1, 5, 10] (sorted, unique, each ≥ minimum)."""
    out: set[int] = set()
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or int(part) < minimum:
            raise InputError(f"--{what} {part!r} is not an integer ≥ {minimum}", f"e.g. --{what} 1,5,10")
        out.add(int(part))
    return sorted(out)


def parse_floats(text: str | None, what: str) -> list[float] | None:
    if text is None or not str(text).strip():
        return None
    out: list[float] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise InputError(f"--{what} {part!r} is not a number", f"e.g. --{what} 0.1,0.2,0.3") from None
        if not math.isfinite(value):
            raise InputError(f"--{what} {part!r} is not a finite number")
        out.append(value)
    return out or None


def check_plot_path(plot: Path | None) -> None:
    if plot is None:
        return
    if plot.suffix.lower() not in PLOT_SUFFIXES:
        raise InputError(f"--plot {plot} must end in {', '.join(PLOT_SUFFIXES)}", "e.g. --plot map_at_k.png")
    if not plot.parent.is_dir():
        raise NotFoundError(f"the folder of --plot {plot} does not exist", "create it or choose another path")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError("--plot needs matplotlib", 'pip install "hierqdrant[plot]"') from None


# ------------------------------------------------------------------------------------ sources


@dataclass
class Source:
    """Raw features with labels, class names, keys (relative paths) and splits, from a file or images."""

    features: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    keys: list[str]
    splits: list[str] | None
    name: str
    extractor: dict[str, Any] | None = None

    def select(self, split: str | None) -> Source:
        if split is None:
            return self
        if self.splits is None:
            raise InputError(f"{self.name} has no splits, so --*-split {split!r} cannot select from it")
        import numpy as np

        idx = np.flatnonzero(np.asarray(self.splits) == split)
        if idx.size == 0:
            found = sorted(set(self.splits))
            raise InputError(f"{self.name} has no items of split {split!r}", f"its splits: {', '.join(found)}")
        return Source(
            self.features[idx],
            self.labels[idx],
            self.class_names,
            [self.keys[i] for i in idx],
            [self.splits[i] for i in idx],
            f"{self.name} [{split}]",
            self.extractor,
        )

    def has_split(self, split: str) -> bool:
        return self.splits is not None and split in self.splits

    def __len__(self) -> int:
        return int(self.features.shape[0])


@dataclass
class EmbedOptions:
    model: str | None
    weights: str | None
    device: str
    batch_size: int
    workers: int | None
    quiet: bool


def load_npz(path: Path) -> Source:
    import numpy as np

    from hierqdrant.core.features import FeatureSet

    data = FeatureSet.load(path)
    if data.labels is None:
        raise InputError(f"{path} has no labels", "evaluation needs labelled features (a 'labels' array)")
    keys = data.paths if data.paths is not None else [f"{path.name}#{i}" for i in range(len(data))]
    return Source(
        data.features,
        np.asarray(data.labels),
        data.class_names,
        list(keys),
        [s or "" for s in data.splits] if data.splits is not None else None,
        path.name,
    )


def load_images(
    folder: Path,
    opts: EmbedOptions,
    extractor: dict[str, Any] | None,
    perturb: str | None,
    seed: int,
    split: str | None,
) -> Source:
    """Embed a labelled image folder (optionally one split, optionally perturbed with a fixed seed)."""
    import numpy as np

    from hierqdrant.vision import discover, extract_features, load_backbone
    from hierqdrant.vision.extractor import describe, extractor_from_description, has_image_extractor

    found = discover(folder)
    items = [it for it in found.items if split is None or it.split == split]
    if split is not None and not items:
        raise InputError(f"{folder} has no images of split {split!r}", "check --db-split / --query-split")
    if any(it.label is None for it in items):
        raise InputError(f"{folder} holds unlabelled images", "evaluation needs class subfolders")
    if opts.model is not None:
        backbone = load_backbone(opts.model, opts.weights)
        description = describe(backbone, opts.weights)
    elif extractor is not None and has_image_extractor(extractor):
        backbone = extractor_from_description(extractor, opts.weights)
        description = dict(extractor)
    else:
        raise InputError(
            f"embedding {folder} needs a feature extractor",
            "pass --model NAME (and --weights PATH), or evaluate a collection that stores its extractor",
        )
    hook = None
    if perturb is not None:
        from hierqdrant.evaluation.perturb import parse_perturbation, perturbation_hook

        hook = perturbation_hook(parse_perturbation(perturb), seed)
    got = extract_features(
        [it.path for it in items],
        backbone,
        device=opts.device,
        batch_size=opts.batch_size,
        num_workers=opts.workers,
        image_hook=hook,
        progress=not opts.quiet,
        console=err_console,
    )
    for s in got.skipped:
        err_console.print(f"[yellow]skipped[/] {escape(s.path)}: {escape(s.reason)}", highlight=False)
    kept = [items[i] for i in got.indices]
    if not kept:
        raise InputError(f"none of the images in {folder} could be read")
    return Source(
        got.features,
        np.asarray([it.label for it in kept], dtype=np.int64),
        list(found.class_names),
        [it.key for it in kept],
        [it.split or "" for it in kept] if any(it.split for it in kept) else None,
        folder.name + (f" ({perturb})" if perturb else ""),
        description,
    )


def relabel(source: Source, class_names: Sequence[str]) -> np.ndarray:
    """The source's labels as indices into ``class_names`` (matched by name)."""
    import numpy as np

    if list(source.class_names) == list(class_names):
        return source.labels
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({source.class_names[y] for y in set(source.labels.tolist())} - set(index))
    if unknown:
        raise InputError(
            f"{source.name} has classes the model does not know: {', '.join(unknown[:5])}",
            "evaluate with the classes the database was built on",
        )
    mapping = np.asarray([index.get(name, -1) for name in source.class_names], dtype=np.int64)
    return mapping[source.labels]


def _is_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.endswith(".npz") or text in (".", "..")


def resolve_source(value: str, what: str) -> tuple[str, Path | None]:
    """("collection", None) | ("npz", path) | ("folder", path)."""
    path = Path(value).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise InputError(f"{what} {value} is a file but not a features .npz", "pass an .npz or a folder")
        return "npz", path
    if path.is_dir():
        return "folder", path
    if _is_path(value):
        raise NotFoundError(f"{what} {value} does not exist", "pass an existing .npz, folder or a collection name")
    return "collection", None


# ------------------------------------------------------------------------------------ output


def metrics_table(result: EvalResult, title: str) -> Table:
    columns: list[str] = []
    for row in result.metrics.values():
        for key in row:
            if key not in columns:
                columns.append(key)
    table = Table(title=escape(title), title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("method", no_wrap=True)
    for key in columns:
        table.add_column(key, justify="right", no_wrap=True)
    best: dict[str, float] = {}
    for key in columns:
        values = [r[key] for r in result.metrics.values() if key in r and math.isfinite(r[key])]
        if values:
            best[key] = min(values) if key.startswith(LOWER_IS_BETTER) else max(values)
    for name, row in result.metrics.items():
        cells = [name]
        for key in columns:
            v = row.get(key, float("nan"))
            text = "–" if not math.isfinite(v) else f"{v:.4f}"
            if key in best and math.isfinite(v) and round(v, 4) == round(best[key], 4):
                text = f"[bold]{text}[/]"
            cells.append(text)
        table.add_row(*cells)
    return table


def settings_table(result: EvalResult) -> Table:
    table = Table(title="methods", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("method", "distance", "t", "α", "tree height", "ran through"):
        table.add_column(col)
    for name, s in result.settings.items():
        table.add_row(
            name,
            str(s.get("distance", "")),
            "" if s.get("threshold") is None else f"{s['threshold']:g}",
            "" if s.get("alpha") is None else f"{s['alpha']:g}",
            "" if s.get("tree_height") is None else str(s["tree_height"]),
            str(s.get("path") or result.info.get("path", "")),
        )
    return table


def paired_dict(tests: dict[str, Any], a: str, b: str) -> dict[str, Any]:
    return {
        metric: {
            "a": a,
            "b": b,
            "mean_a": r.mean_a,
            "mean_b": r.mean_b,
            "diff": r.diff,
            "ci95": [r.ci_low, r.ci_high],
            "p_value": r.p_value,
            "n": r.n,
        }
        for metric, r in tests.items()
    }


def tune_table(result: Any) -> Table:
    """The grid as a t × α table (ward/given: one row), best cell bold."""
    ts: list[float | None] = []
    alphas: list[float] = []
    for r in result.rows:
        if r.threshold not in ts:
            ts.append(r.threshold)
        if r.alpha not in alphas:
            alphas.append(r.alpha)
    table = Table(
        title=f"{result.builder}: {result.metric} on the validation split ({result.protocol}, "
        f"{result.queries} queries; cosine: {result.cosine_score:.4f})",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("t \\ α" if result.builder == "overlap" else result.builder)
    table.add_column("height", justify="right")
    for a in alphas:
        table.add_column(f"{a:g}", justify="right")
    for t in ts:
        rows = {r.alpha: r for r in result.rows if r.threshold == t}
        first = next(iter(rows.values()))
        cells = ["–" if t is None else f"{t:g}", str(first.height)]
        for a in alphas:
            r = rows.get(a)
            if r is None or not math.isfinite(r.score):
                cells.append("–")
                continue
            text = f"{r.score:.4f}"
            if t == result.best_threshold and a == result.best_alpha:
                text = f"[bold]{text}[/]"
            cells.append(text)
        table.add_row(*cells)
    return table


def show_table(table: Table) -> None:
    """Print a table; off a terminal (a pipe, a file) at full width instead of squeezed to 80 columns."""
    out = console if console.is_terminal else Console(width=max(console.width, 200))
    out.print(table)


def _progress(enabled: bool, total: int, label: str) -> tuple[Any, Callable[[int], None] | None]:
    if not enabled:
        return None, None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err_console, transient=True
    )
    task = bar.add_task(label, total=total)
    bar.start()
    return bar, lambda n: bar.advance(task, n)


# --------------------------------------------------------------------------------------- eval


def _taxonomy_scoring(score_taxonomy: Path, class_names: Sequence[str]) -> Scoring:
    """mahp / hdist / severity scored against a taxonomy file."""
    from hierqdrant.core.build import build_given
    from hierqdrant.evaluation.evaluate import Scoring

    tree = build_given(score_taxonomy, list(class_names), len(class_names))
    return Scoring.from_hierarchy(tree, f"taxonomy {score_taxonomy.name} (height {tree.tree_height})")


def _scoring(
    score_taxonomy: Path | None, methods: Sequence[Method], base: HierarchyModel, fallback_name: str
) -> Scoring:
    from hierqdrant.evaluation.evaluate import Scoring

    if score_taxonomy is not None:
        return _taxonomy_scoring(score_taxonomy, base.class_names)
    for m in methods:
        if m.name in ("overlap", "hierarchy-only") and m.model is not None:
            t = m.model.threshold
            return Scoring.from_hierarchy(
                m.model.hierarchy,
                f"learned overlap tree (t={t:g}, height {m.model.tree_height})"
                if t is not None
                else f"learned {m.model.builder} tree",
            )
    return Scoring.from_hierarchy(base.hierarchy, fallback_name)


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
        StrategyName.exact, "--strategy", help="Search strategy through a collection (exact is exact)."
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
    import time

    leaf_choice = leaf_from.value if leaf_from is not None else None  # None: the stored or default mode

    import numpy as np

    from hierqdrant.core.model import HierarchyModel
    from hierqdrant.evaluation.evaluate import (
        Items,
        TuneSettings,
        evaluate_arrays,
        evaluate_collection,
        paired,
        prepare_methods,
        read_collection_items,
        split_metric_values,
        stored_leaf_mode,
    )
    from hierqdrant.evaluation.perturb import parse_perturbation

    started = time.perf_counter()
    # -- everything that can be checked before any work -------------------------------------
    ks = parse_ints(k, "k")
    mahp_ks = parse_ints(mahp_k, "mahp-k", minimum=2)
    hdist_ks = parse_ints(hdist_k, "hdist-k")
    if not ks:
        raise InputError("--k is empty", "e.g. --k 1,5,10")
    from hierqdrant.evaluation.evaluate import _check_names, parse_per_method

    names = _check_names(methods.split(","))
    if "given" in names and taxonomy is None:
        if methods.strip() != DEFAULT_METHODS:
            raise InputError("method 'given' needs a taxonomy", "pass --taxonomy FILE or leave 'given' out")
        names.remove("given")  # the default list: evaluate 'given' only when a taxonomy is there
    if taxonomy is not None and not taxonomy.is_file():
        raise NotFoundError(f"taxonomy file {taxonomy} does not exist", "pass an existing file with --taxonomy")
    if score_taxonomy is not None and not score_taxonomy.is_file():
        raise NotFoundError(f"--score-taxonomy {score_taxonomy} does not exist", "pass an existing taxonomy file")
    t_common, t_per = parse_per_method(threshold, "threshold")
    a_common, a_per = parse_per_method(alpha, "alpha")
    paired_list = [p.strip() for p in paired_metrics.split(",") if p.strip()]
    split_metric_values(paired_list)  # validates the names
    t_grid = parse_floats(thresholds, "thresholds")
    a_grid = parse_floats(alphas, "alphas")
    if tune_flag:
        from hierqdrant.evaluation.tune import DEFAULT_ALPHAS, DEFAULT_THRESHOLDS, check_grids, check_tune_metric

        # mahp needs a scoring hierarchy, which only --score-taxonomy gives before tuning.
        check_tune_metric(tune_metric, True if score_taxonomy is not None else None)  # type: ignore[arg-type]
        check_grids(t_grid or DEFAULT_THRESHOLDS, a_grid or DEFAULT_ALPHAS)
    if perturb is not None:
        parse_perturbation(perturb)
    if perturb_db is not None:
        parse_perturbation(perturb_db)
    if max_queries is not None and max_queries < 1:
        raise InputError(f"--max-queries {max_queries} must be ≥ 1")
    if seed < 0:
        raise InputError(f"--seed {seed} must be ≥ 0")
    check_plot_path(plot)
    if queries is not None and not queries.exists():
        raise NotFoundError(f"--queries {queries} does not exist", "pass a labelled image folder or a features .npz")
    if queries is not None and queries.is_file() and queries.suffix.lower() != ".npz":
        raise InputError(f"--queries {queries} is a file but not a features .npz", "pass an .npz or a folder")
    if perturb is not None and queries is not None and not queries.is_dir():
        raise InputError("--perturb changes query images, but --queries is a features file", "pass --queries FOLDER")
    db_kind, db_path = resolve_source(db, "--db")
    if db_kind == "collection" and (fit is not None or fit_split is not None):
        raise InputError(
            "--fit / --fit-split apply to a file or folder database",
            "a collection's model was fitted at ingest (re-fit it with `hierqdrant tune --collection`)",
        )
    if db_kind == "collection" and model is not None:
        raise InputError(
            "--model would embed the queries differently from the collection",
            "leave --model out: queries are embedded with the collection's extractor (--weights if it moved)",
        )
    if perturb_db is not None and db_kind != "folder":
        raise InputError("--perturb-db changes database images, but --db is not an image folder", "pass --db FOLDER")
    if perturb is not None and queries is None and db_kind != "folder":
        raise InputError(
            "--perturb without --queries perturbs the database's own images, but --db is not an image folder",
            "pass --queries FOLDER (or --db FOLDER)",
        )
    embed_opts = EmbedOptions(model, weights, device, batch_size, workers, quiet or as_json)
    tuning = (
        TuneSettings(
            metric=tune_metric,
            thresholds=t_grid,
            alphas=a_grid,
            val_share=val_share,
            seed=seed,
            max_queries=tune_queries,
        )
        if tune_flag
        else None
    )
    if tuning is not None and not 0.0 < val_share < 1.0:
        raise InputError(f"--val-share {val_share} must be between 0 and 1", "e.g. --val-share 0.2")
    show = not (quiet or as_json)
    say = (lambda msg: err_console.print(f"[dim]{escape(msg)}[/]")) if show else (lambda msg: None)
    rng = np.random.default_rng(seed)

    def sample(n: int) -> np.ndarray:
        if max_queries is None or n <= max_queries:
            return np.arange(n)
        return np.sort(rng.choice(n, size=max_queries, replace=False))

    info: dict[str, Any] = {}
    result: EvalResult
    if db_kind == "collection":
        engine = open_engine(url, api_key, data_dir)
        try:
            base, _info, database, db_splits = read_collection_items(engine, db, split=db_split)
            if len(database) == 0:
                raise InputError(
                    f"collection {db!r} has no points" + (f" of split {db_split!r}" if db_split else ""),
                    "ingest first or pick another --db-split",
                )
            # Training points: labelled and not test, as ingest fitted them.
            _, _, everything, all_splits = (
                read_collection_items(engine, db) if db_split is not None else (base, _info, database, db_splits)
            )
            train_rows = np.flatnonzero(
                (everything.labels >= 0) & np.asarray([s != "test" for s in all_splits], dtype=bool)
            )
            fit_z, fit_y = everything.z[train_rows], everything.labels[train_rows]
            info["fit"] = f"collection {db!r}: {train_rows.size} labelled non-test points"
            if queries is not None:
                q_src = _load_queries(queries, query_split, embed_opts, base.extractor, perturb, seed)
                q_labels = relabel(q_src, base.class_names)
                q_z = base.transform(q_src.features)
                from hierqdrant.store.collection import point_id

                q_items = Items(q_z, q_labels, [point_id(db, key) for key in q_src.keys])
                info["queries_from"] = q_src.name
            elif query_split is not None and query_split != db_split:
                _, _, q_items, _ = read_collection_items(engine, db, split=query_split)
                info["queries_from"] = f"collection {db!r} [{query_split}]"
            else:
                q_items = database
                info["queries_from"] = f"collection {db!r}" + (f" [{db_split}]" if db_split else "")
            q_items = q_items.subset(sample(len(q_items)))
            stored_mode = stored_leaf_mode(base, database)
            built, tuned = prepare_methods(
                names,
                base,
                fit_z,
                fit_y,
                threshold=t_common,
                thresholds=t_per,
                alpha=a_common,
                alphas=a_per,
                taxonomy=taxonomy,
                tuning=tuning,
                protocol="loo" if queries is None and query_split in (None, db_split) else "split",
                leaf_from=leaf_choice or stored_mode,
                log=say,
            )
            scoring = _scoring(score_taxonomy, built, base, "the collection's tree")
            bar, advance = _progress(show, len(q_items) * len(built), "searching")
            try:
                result = evaluate_collection(
                    engine,
                    db,
                    q_items if q_items is not database else None,
                    built,
                    database=database,
                    db_split=db_split,
                    ks=ks,
                    map_r=map_r,
                    scoring=scoring,
                    mahp_ks=mahp_ks,
                    hdist_ks=hdist_ks,
                    leaf_from=leaf_choice,
                    strategy=strategy.value,
                    exact=not hnsw,
                    progress=advance,
                )
            finally:
                if bar is not None:
                    bar.stop()
        finally:
            engine.close()
    else:
        assert db_path is not None
        if db_kind == "npz":
            db_all = load_npz(db_path)
        else:
            db_all = load_images(db_path, embed_opts, None, perturb_db, seed + 1, None)
        db_src = db_all.select(db_split)
        # The training items the model is fitted on.
        if fit is not None:
            fit_kind, fit_path = resolve_source(str(fit), "--fit")
            assert fit_path is not None
            fit_all = (
                load_npz(fit_path)
                if fit_kind == "npz"
                else load_images(fit_path, embed_opts, db_all.extractor, None, seed, None)
            )
            fit_src = fit_all.select(fit_split if fit_split else ("train" if fit_all.has_split("train") else None))
        elif fit_split is not None:
            fit_src = db_all.select(fit_split)
        elif db_all.has_split("train"):
            if db_kind == "folder" and perturb_db is not None:
                fit_src = load_images(db_path, embed_opts, None, None, seed, "train")  # fit on clean images
            else:
                fit_src = db_all.select("train")
        elif db_kind == "folder" and perturb_db is not None:
            fit_src = load_images(db_path, embed_opts, None, None, seed, db_split)  # fit on clean images
        else:
            fit_src = db_src
        info["fit"] = f"{fit_src.name}: {len(fit_src)} labelled items"
        class_names = fit_src.class_names
        say(f"fitting PCA and class Gaussians on {info['fit']}")
        base = HierarchyModel.fit(
            fit_src.features,
            fit_src.labels,
            class_names=class_names,
            builder="overlap",
            threshold=t_per.get("overlap", t_common if t_common is not None else 0.3),
            alpha=a_common if a_common is not None else 3.0,
            n_components=parse_pca(pca),
        )
        fit_z = base.transform(fit_src.features)
        db_labels = relabel(db_src, class_names)
        database = Items(base.transform(db_src.features), db_labels, db_src.keys)
        if queries is not None:
            q_src = _load_queries(queries, query_split, embed_opts, db_all.extractor, perturb, seed)
        elif perturb is not None:
            assert db_path is not None
            q_src = load_images(db_path, embed_opts, None, perturb, seed, query_split or db_split)
        else:
            q_src = db_all.select(query_split) if query_split is not None else db_src
        info["queries_from"] = q_src.name
        q_items = Items(base.transform(q_src.features), relabel(q_src, class_names), q_src.keys)
        q_items = q_items.subset(sample(len(q_items)))
        loo = queries is None and query_split in (None, db_split)
        built, tuned = prepare_methods(
            names,
            base,
            fit_z,
            fit_src.labels,
            threshold=t_common,
            thresholds=t_per,
            alpha=a_common,
            alphas=a_per,
            taxonomy=taxonomy,
            tuning=tuning,
            protocol="loo" if loo else "split",
            leaf_from=leaf_choice or "predicted",
            log=say,
        )
        scoring = _scoring(score_taxonomy, built, base, "the learned tree")
        bar, advance = _progress(show, len(q_items), "ranking")
        try:
            result = evaluate_arrays(
                q_items,
                database,
                built,
                num_classes=base.num_classes,
                ks=ks,
                map_r=map_r,
                scoring=scoring,
                mahp_ks=mahp_ks,
                hdist_ks=hdist_ks,
                leaf_from=leaf_choice or "predicted",
                progress=advance,
            )
        finally:
            if bar is not None:
                bar.stop()

    tests = (
        paired(result, "overlap", "cosine", paired_list, seed=seed)
        if {"overlap", "cosine"} <= set(result.metrics)
        else {}
    )
    out = result.to_dict()
    out.update(info)
    out["leaf_from"] = leaf_choice or result.info.get("leaves", "predicted")
    out["paired"] = paired_dict(tests, "overlap", "cosine")
    out["tuning"] = {name: r.to_dict() for name, r in tuned.items()}
    out["perturb"] = {"queries": perturb, "database": perturb_db, "seed": seed}
    out["seconds_total"] = round(time.perf_counter() - started, 2)
    if plot is not None:
        from hierqdrant.evaluation.plots import plot_map_at_k

        curves = {
            name: {kk: row[f"map@{kk}"] for kk in ks if math.isfinite(row.get(f"map@{kk}", float("nan")))}
            for name, row in result.metrics.items()
        }
        plot_map_at_k(curves, plot, title=f"map@k — {result.protocol}", highlight=["overlap"])
        out["plot"] = str(plot)
    if as_json:
        print_json(out)
        raise typer.Exit(EXIT_OK)
    for name, r in tuned.items():
        show_table(tune_table(r))
        console.print(
            f"{name}: chose t={r.best_threshold if r.best_threshold is not None else '–'}, α={r.best_alpha:g} "
            f"({r.metric} {r.best_score:.4f} on {r.queries} validation queries)",
            markup=False,
            highlight=False,
        )
    title = (
        f"{result.protocol}: {result.queries} queries, {result.database} database items "
        f"({out.get('queries_from', '')}); mahp/hdist/severity scored by {result.scored_by}"
    )
    show_table(metrics_table(result, title))
    show_table(settings_table(result))
    for metric, r in tests.items():
        console.print(
            f"overlap − cosine on {metric}: {r.diff:+.4f} (95% CI [{r.ci_low:+.4f}, {r.ci_high:+.4f}], "
            f"paired sign-flip p = {r.p_value:.4g}, n = {r.n})",
            markup=False,
            highlight=False,
        )
    if plot is not None:
        console.print(f"plot: {plot}", markup=False, highlight=False)
    raise typer.Exit(EXIT_OK)


def _load_queries(
    path: Path,
    split: str | None,
    opts: EmbedOptions,
    extractor: dict[str, Any] | None,
    perturb: str | None,
    seed: int,
) -> Source:
    if path.is_dir():
        return load_images(path, opts, extractor, perturb, seed, split)
    return load_npz(path).select(split)


# --------------------------------------------------------------------------------------- tune


@handle_errors
def tune_command(
    features: Path | None = typer.Option(
        None, "--features", "-f", help="Labelled training features .npz (default with --collection: its points)."
    ),
    split: str | None = typer.Option(None, "--split", help="Split of --features to use (default: train if any)."),
    collection: str | None = typer.Option(
        None, "--collection", "-c", help="Tune this collection's model and update the collection (reassign)."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the tuned model into this directory."),
    builder: BuilderChoice = typer.Option(BuilderChoice.overlap, "--builder", help="overlap, ward or given."),
    taxonomy: Path | None = typer.Option(None, "--taxonomy", help="Taxonomy file of --builder given."),
    metric: str = typer.Option("map@r", "--metric", help="Metric to maximise: map@K, map@r, p@1 or mahp@K."),
    thresholds: str | None = typer.Option(None, "--thresholds", help="t grid, e.g. 0.05,0.1,0.2,0.3,0.5."),
    alphas: str | None = typer.Option(None, "--alphas", help="α grid, e.g. 0.5,1,2,3,5."),
    val_share: float = typer.Option(0.2, "--val-share", help="Share of the training items held out."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split and the query sample."),
    protocol: TuneProtocol = typer.Option(
        TuneProtocol.holdout,
        "--protocol",
        help="split: validation queries against the rest; loo: leave-one-out within the validation items.",
    ),
    max_queries: int = typer.Option(2000, "--max-queries", help="At most this many validation queries."),
    leaf_from: LeafFromName = typer.Option(LeafFromName.predicted, "--leaf-from", help="predicted or label."),
    score_taxonomy: Path | None = typer.Option(None, "--score-taxonomy", help="Hierarchy that scores mahp@K."),
    pca: str = typer.Option("0.95", "--pca", help="PCA of a model fitted from --features."),
    covariance: str = typer.Option("ledoit-wolf", "--covariance", help="ledoit-wolf or oas."),
    url: str | None = url_option(),
    api_key: str | None = api_key_option(),
    data_dir: Path = data_dir_option(),
    quiet: bool = typer.Option(False, "--quiet", help="No progress output."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Choose t and α on a validation split of the training images; store them in the model."""
    import numpy as np

    from hierqdrant.evaluation.tune import DEFAULT_ALPHAS, DEFAULT_THRESHOLDS, check_grids, check_tune_metric, tune

    if features is None and collection is None:
        raise InputError("nothing to tune on", "pass --features FILE.npz or --collection NAME")
    if out is None and collection is None:
        raise InputError("nowhere to store the tuned model", "pass --out MODEL_DIR or --collection NAME")
    if out is not None and out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory", "choose another --out")
    if features is not None and not features.is_file():
        raise NotFoundError(f"--features {features} does not exist", "pass a features .npz")
    if builder == BuilderChoice.given and taxonomy is None:
        raise InputError("the 'given' builder needs a taxonomy", "pass --taxonomy FILE")
    if taxonomy is not None and not taxonomy.is_file():
        raise NotFoundError(f"taxonomy file {taxonomy} does not exist", "pass an existing file with --taxonomy")
    if score_taxonomy is not None and not score_taxonomy.is_file():
        raise NotFoundError(f"--score-taxonomy {score_taxonomy} does not exist")
    check_tune_metric(metric, True if score_taxonomy is not None else None)  # type: ignore[arg-type]
    t_grid, a_grid = check_grids(
        parse_floats(thresholds, "thresholds") or list(DEFAULT_THRESHOLDS),
        parse_floats(alphas, "alphas") or list(DEFAULT_ALPHAS),
    )
    if not 0.0 < val_share < 1.0:
        raise InputError(f"--val-share {val_share} must be between 0 and 1", "e.g. --val-share 0.2")
    if max_queries < 1:
        raise InputError(f"--max-queries {max_queries} must be ≥ 1")
    show = not (quiet or as_json)

    engine = None
    stored: tuple[HierarchyModel, dict[str, Any]] | None = None
    try:
        if collection is not None:
            from hierqdrant.evaluation.evaluate import read_collection_items

            engine = open_engine(url, api_key, data_dir)
            base, _info, items, splits = read_collection_items(engine, collection)
            stored = (base, _info)
        if features is not None:
            src = load_npz(features)
            src = src.select(split if split else ("train" if src.has_split("train") else None))
            class_names = stored[0].class_names if stored is not None else src.class_names
            x, y = src.features, relabel(src, class_names)
            projected = False
            source_name = f"{src.name}: {len(src)} items"
            extractor = {"name": "features-file", "file": features.name, "feature_dim": int(x.shape[1])}
        else:
            assert stored is not None
            rows = np.flatnonzero((items.labels >= 0) & np.asarray([s != "test" for s in splits], dtype=bool))
            if rows.size == 0:
                raise InputError(f"collection {collection!r} has no labelled training points", "ingest labelled images")
            x, y = items.z[rows], items.labels[rows]
            class_names = stored[0].class_names
            projected = True
            source_name = f"collection {collection!r}: {rows.size} labelled non-test points"
            extractor = None
        scoring = _taxonomy_scoring(score_taxonomy, class_names) if score_taxonomy is not None else None
        if show:
            err_console.print(f"[dim]tuning on {escape(source_name)}[/]")
        result = tune(
            x,
            y,
            class_names,
            builder=builder.value,
            metric=metric,
            thresholds=t_grid,
            alphas=a_grid,
            val_share=val_share,
            seed=seed,
            protocol=protocol.value,
            taxonomy=taxonomy,
            leaf_from=leaf_from.value,
            base_model=stored[0] if stored is not None else None,
            projected=projected,
            n_components=parse_pca(pca),
            covariance=covariance,
            max_queries=max_queries,
            scoring=scoring,
            extractor=extractor,
        )
        summary = result.to_dict()
        summary["source"] = source_name
        if out is not None:
            result.model.save(out)
            summary["out"] = str(out)
        if collection is not None and engine is not None:
            from hierqdrant.store.collection import reassign

            summary["reassigned"] = reassign(engine, collection, result.model, leaf_from=leaf_from.value)
            summary["collection"] = collection
    finally:
        if engine is not None:
            engine.close()
    if as_json:
        print_json(summary)
        raise typer.Exit(EXIT_OK)
    show_table(tune_table(result))
    where = ", ".join(
        [f"model → {out}" for _ in [0] if out is not None]
        + [f"collection {collection!r} reassigned ({summary['reassigned']} points)" for _ in [0] if collection]
    )
    console.print(
        f"chose t={result.best_threshold if result.best_threshold is not None else '–'}, α={result.best_alpha:g}: "
        f"{metric} {result.best_score:.4f} (cosine {result.cosine_score:.4f}) on {result.queries} validation "
        f"queries; model {result.model.model_id}; {where}",
        markup=False,
        highlight=False,
    )
    raise typer.Exit(EXIT_OK)
