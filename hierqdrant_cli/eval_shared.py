"""What ``eval`` and ``tune`` share: number-list options, the tables, warnings and notes, the progress
on stderr (a rich bar on a terminal, a few plain lines otherwise; also under ``--json``, whose stdout
stays one JSON document)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table

from hierqdrant.core.errors import InputError

from .common import console, err_console, parse_pca, shown

if TYPE_CHECKING:
    from hierqdrant.evaluation.hooks import Hooks
    from hierqdrant.evaluation.scoring import EvalResult
    from hierqdrant.evaluation.tuning import Protocol, TuneResult, TuneSettings

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
    """``"0.1,0.2"`` → [0.1, 0.2]; nothing → None (the default grid)."""
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


def parse_pcas(text: str | None, pca: str | None = None) -> list[int | float | None] | None:
    """``"0.95,0.99,all"`` → [0.95, 0.99, None]; nothing → ``[--pca]`` when that was given (a pinned
    PCA), else None (the default grid)."""
    if text is not None and str(text).strip():
        out = [parse_pca(part) for part in str(text).split(",") if part.strip()]
        if out:
            return out
    return [parse_pca(pca)] if pca is not None else None


def tune_settings(
    metric: str,
    thresholds: str | None,
    alphas: str | None,
    val_share: float,
    seed: int,
    max_queries: int,
    protocol: Protocol = "split",
    pcas: str | None = None,
    pca: str | None = None,
) -> TuneSettings:
    """The tuning options of ``eval --tune``, ``tune`` (and what ``ingest --tune`` uses by default): the
    metric, the PCA, t and α grids as typed (nothing: the default grids; ``--pca`` alone pins the PCA),
    the validation share, the seed, the cap on validation queries, the protocol."""
    from hierqdrant.evaluation.tuning import TuneSettings

    return TuneSettings(
        metric=metric,
        thresholds=parse_floats(thresholds, "thresholds"),
        alphas=parse_floats(alphas, "alphas"),
        val_share=val_share,
        seed=seed,
        max_queries=max_queries,
        protocol=protocol,
        pcas=parse_pcas(pcas, pca),
    )


# ------------------------------------------------------------------------------------ output


def chosen(result: TuneResult) -> str:
    """``tied query leaf, PCA 0.95 (19 dims), t=0.1, α=3`` (``t=–`` for ward and given): what tuning chose."""
    from hierqdrant.evaluation.tune_grid import pca_label

    t = result.best_threshold if result.best_threshold is not None else "–"
    leaf = f"{result.best_classifier} query leaf, " if result.best_classifier else ""
    return f"{leaf}PCA {pca_label(result.best_pca)} ({result.best_dims} dims), t={t}, α={result.best_alpha:g}"


def print_warnings(warnings: Sequence[str], *, to_stderr: bool = False) -> None:
    """Each warning on one line in yellow, under the table (``to_stderr``: on stderr, beside --json)."""
    out = err_console if to_stderr else console
    for w in warnings:
        out.print(f"[yellow]warning:[/] {shown(w)}", highlight=False, soft_wrap=True)


def print_leaf_sources(record: dict[str, Any] | None) -> None:
    """``leaves: tied query classifier (accuracy 0.850 on the queries), database leaves from label (1.000)``."""
    if not record:
        return

    def share(v: float | None) -> str:
        return "not measured" if v is None else f"{v:.3f}"

    console.print(
        f"leaves: {shown(record['query_classifier'])} query classifier (leaf accuracy "
        f"{share(record['query_accuracy'])} on the queries), database leaves from {shown(record['leaf_from'])} "
        f"({share(record['database_accuracy'])})",
        highlight=False,
        soft_wrap=True,
    )


def print_gaussianity(record: dict[str, Any] | None, limit: int = 5) -> None:
    """``gaussianity: median KS 0.041 (radii vs χ²), 0.062 (top axes); least Gaussian: cat 0.21, dog 0.17 …``
    (DESIGN.md §1.9; classes with axis KS ≥ 0.1 in yellow: consider ingest --split-classes)."""
    if not record or record.get("median_ks") is None:
        return
    rows = [(name, s["axis_ks"]) for name, s in record["classes"].items() if s.get("axis_ks") is not None]
    rows.sort(key=lambda r: -r[1])
    worst = ", ".join(
        (f"[yellow]{shown(n)} {v:.2f}[/]" if v >= 0.1 else f"{shown(n)} {v:.2f}") for n, v in rows[:limit]
    )
    console.print(
        f"gaussianity: median KS {record['median_ks']:.3f} (radii vs χ²), {record['median_axis_ks']:.3f} "
        f"(top axes); least Gaussian (axis KS): {worst}",
        highlight=False,
        soft_wrap=True,
    )


def print_notes(notes: Sequence[str]) -> None:
    """Footnotes under the table, dim."""
    for n in notes:
        console.print(f"[dim]note: {shown(n)}[/]", highlight=False, soft_wrap=True)


def metrics_table(result: EvalResult, title: str) -> Table:
    columns: list[str] = []
    for row in result.metrics.values():
        for key in row:
            if key not in columns:
                columns.append(key)
    table = Table(title=shown(title), title_justify="left", box=box.SIMPLE_HEAD)
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


def tune_table(result: TuneResult) -> Table:
    """The grid as a (query classifier, PCA, t) × α table (ward/given: one row per PCA), best cell bold."""
    from hierqdrant.evaluation.tune_grid import pca_label

    keys: list[tuple[str, object, float | None]] = []
    alphas: list[float] = []
    for r in result.rows:
        if (r.classifier, r.pca, r.threshold) not in keys:
            keys.append((r.classifier, r.pca, r.threshold))
        if r.alpha not in alphas:
            alphas.append(r.alpha)
    widened = f"; widened: {', '.join(result.widened)}" if result.widened else ""
    table = Table(
        title=f"{result.builder}: {result.metric} on the validation split ({result.protocol}, "
        f"{result.queries} queries; cosine: {result.cosine_score:.4f}{widened})",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("query leaf")
    table.add_column("PCA (dims)")
    table.add_column("t \\ α" if result.builder == "overlap" else result.builder)
    table.add_column("height", justify="right")
    for a in sorted(alphas):
        table.add_column(f"{a:g}", justify="right")
    best = (result.best_classifier, result.best_pca, result.best_threshold)
    for c, pca, t in keys:
        rows = {r.alpha: r for r in result.rows if (r.classifier, r.pca, r.threshold) == (c, pca, t)}
        first = next(iter(rows.values()))
        accuracy = result.classifier_accuracy.get(c, float("nan"))
        leaf = f"{c} ({accuracy:.3f})" if math.isfinite(accuracy) else c
        cells = [leaf, f"{pca_label(pca)} ({first.dims})", "–" if t is None else f"{t:g}", str(first.height)]  # type: ignore[arg-type]
        for a in sorted(alphas):
            cell = rows.get(a)
            if cell is None or not math.isfinite(cell.score):
                cells.append("–")
                continue
            text = f"{cell.score:.4f}"
            if (c, pca, t) == best and a == result.best_alpha:
                text = f"[bold]{text}[/]"
            cells.append(text)
        table.add_row(*cells)
    return table


def show_table(table: Table) -> None:
    """Print a table; off a terminal (a pipe, a file) at full width instead of squeezed to 80 columns."""
    out = console if console.is_terminal else Console(width=max(console.width, 200))
    out.print(table)


def print_line(text: str) -> None:
    """One plain line on stdout (no markup, no highlighting)."""
    console.print(text, markup=False, highlight=False)


# ----------------------------------------------------------------------------- progress and log


@contextmanager
def progress_bar(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """Progress on stderr; the context yields its ``advance(n)``. On a terminal a transient rich bar;
    otherwise (a pipe, a log file) one plain line when the step ends, so logs stay short."""
    if not err_console.is_terminal:
        started = time.perf_counter()
        done = [0]

        def count(n: int) -> None:
            done[0] += n

        yield count
        err_console.print(
            f"{shown(label)}: {done[0]}/{total} in {time.perf_counter() - started:.1f} s",
            highlight=False,
            soft_wrap=True,
        )
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn(shown(label)),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )
    task = bar.add_task(label, total=total)
    bar.start()
    try:
        yield lambda n: bar.advance(task, n)
    finally:
        bar.stop()


def log_line(message: str) -> None:
    err_console.print(f"[dim]{shown(message)}[/]", highlight=False, soft_wrap=True)


def hooks(show: bool) -> Hooks:
    """Log lines and progress on stderr (also under --json: stdout stays one JSON document), or
    nothing (``--quiet``)."""
    from hierqdrant.evaluation.hooks import Hooks

    return Hooks(log=log_line, progress=progress_bar) if show else Hooks()


def warn_skipped(path: str, reason: str) -> None:
    err_console.print(f"[yellow]skipped[/] {shown(path)}: {shown(reason)}", highlight=False)
