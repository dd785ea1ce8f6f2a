"""``hierqdrant eval --html``: the evaluation as one self-contained page.

The metrics table (ours highlighted), the paired test, warnings and notes, map@k against k and the
learned tree (both inline SVG, drawn in :mod:`~hierqdrant.reports.svg`), and a handful of example
queries where the hierarchical ranking and cosine disagree most — the queries whose map@k changes most
between the two, with both top-10 lists side by side (thumbnails when the items are image files). The
rankings come from :attr:`EvalResult.tops <hierqdrant.evaluation.scoring.EvalResult.tops>`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from hierqdrant.core.hierarchy import Hierarchy
from hierqdrant.evaluation.run import EvalReport
from hierqdrant.evaluation.scoring import TopLists
from hierqdrant.reports.cases import QueryCase, ReportHit
from hierqdrant.reports.html import esc, page
from hierqdrant.reports.query_report import NO_THUMBNAILS, Thumbs, case_html, has_images
from hierqdrant.reports.svg import map_at_k_svg, tree_svg
from hierqdrant.reports.thumbnails import ImageFinder

__all__ = ["EXAMPLES", "example_cases", "eval_page", "pick_examples"]

#: Example queries shown by default.
EXAMPLES = 6
HIERARCHICAL = ("overlap", "ward", "given", "hierarchy-only")
PLAIN = ("cosine", "cosine-raw")
OURS = ' class="ours"'


def _pair(methods: Sequence[str]) -> tuple[str, str] | None:
    """(the hierarchical method, the cosine it is compared with), e.g. (overlap, cosine)."""
    ours = next((m for m in HIERARCHICAL if m in methods), None)
    base = next((m for m in PLAIN if m in methods), None)
    return (ours, base) if ours and base else None


def pick_examples(report: EvalReport, n: int = EXAMPLES) -> list[tuple[int, str]]:
    """Positions of the queries where ours and cosine differ most, with why. By the change of map@k (the
    smallest k ≥ 10 scored, else the largest) from cosine to ours: about two thirds the largest gains,
    the rest the largest losses (a report that hides them would flatter), ties broken by how many of the
    top items differ; queries whose rankings differ without a change of score fill what is left."""
    result, tops = report.result, report.result.tops
    pair = _pair(list(result.metrics))
    if tops is None or pair is None or n <= 0:
        return []
    ours, base = pair
    if ours not in tops.top or base not in tops.top:
        return []
    a, b = tops.top[ours], tops.top[base]
    differ = np.asarray([len(set(x[x >= 0]) ^ set(y[y >= 0])) for x, y in zip(a, b, strict=True)], dtype=float)
    maps = sorted(
        int(key[4:]) for key in result.per_query.get(ours, {}) if key.startswith("map@") and key[4:].isdigit()
    )
    metric = next((f"map@{k}" for k in maps if k >= 10), f"map@{maps[-1]}" if maps else None)
    delta = np.zeros(len(differ))
    if metric is not None and metric in result.per_query.get(base, {}):
        delta = np.nan_to_num(result.per_query[ours][metric] - result.per_query[base][metric])
    gains = [int(q) for q in np.lexsort((-differ, -delta)) if delta[q] > 0]  # last key first: Δ descending
    losses = [int(q) for q in np.lexsort((-differ, delta)) if delta[q] < 0]
    n_gain = min(len(gains), max(n - len(losses), -(-2 * n // 3)))
    chosen = gains[:n_gain] + losses[: n - n_gain]
    chosen += [int(q) for q in np.argsort(-differ, kind="stable") if differ[q] > 0 and delta[q] == 0][: n - len(chosen)]
    picked = []
    for q in chosen:
        why = ""
        if metric is not None and delta[q]:
            va, vb = result.per_query[ours][metric][q], result.per_query[base][metric][q]
            why = f"{metric}: {ours} {va:.3f}, {base} {vb:.3f}"
        why = (why + "; " if why else "") + f"{int(differ[q]) // 2} of the top {a.shape[1]} differ"
        picked.append((q, why))
    return picked


def _name(names: Sequence[str], label: int) -> str | None:
    return names[label] if 0 <= label < len(names) else None


def example_cases(
    report: EvalReport, finder: ImageFinder | None, id_paths: Mapping[str, str] | None = None, n: int = EXAMPLES
) -> list[QueryCase]:
    """The example queries as cases: rows ``cosine`` and ``overlap`` (the methods compared), each hit with
    its label and, in the scoring tree, the LCA of its class and the query's (no D: eval ranks, it does
    not keep distances). ``id_paths`` maps point ids to payload paths (a collection database)."""
    tops = report.result.tops
    pair = _pair(list(report.result.metrics))
    if tops is None or pair is None:
        return []
    tree = tops.tree
    names = tree.class_names if tree is not None else [str(i) for i in range(int(tops.db_labels.max(initial=0)) + 1)]
    paths = id_paths or {}

    def image(item: str) -> tuple[str, object]:
        path = paths.get(item, item)
        return path, (finder.find(path) if finder is not None else None)

    cases = []
    for q, why in pick_examples(report, n):
        truth_label = int(tops.query_labels[q])
        rows: dict[str, list[ReportHit]] = {}
        for method in (pair[1], pair[0]):
            hits = []
            for pos in tops.top[method][q]:
                if pos < 0:
                    continue
                label = int(tops.db_labels[pos])
                path, found = image(tops.db_ids[pos])
                hits.append(_hit(tree, names, truth_label, label, path, found))
            rows[method] = hits
        qpath, qimage = image(tops.query_ids[q])
        cases.append(
            QueryCase(
                name=qpath,
                image=qimage,  # type: ignore[arg-type]
                leaf=None,
                truth=_name(names, truth_label),
                rows=rows,
                note=why,
            )
        )
    return cases


def _hit(tree: Hierarchy | None, names: Sequence[str], truth: int, label: int, path: str, found: object) -> ReportHit:
    lca = lca_h = None
    shared: list[str] = []
    if tree is not None and 0 <= truth < tree.num_leaves and 0 <= label < tree.num_leaves:
        node = tree.lca(truth, label)
        lca, lca_h = tree.node_names[node], int(tree.height[node])
        shared = [tree.node_names[v] for v in tree.ancestors(node)]
    return ReportHit(
        label=_name(names, label), lca=lca, lca_height=lca_h, shared=shared, path=path,
        image=found,  # type: ignore[arg-type]
    )  # fmt: skip


def _fmt(v: float | None) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.4f}"


def metrics_html(report: EvalReport) -> str:
    """The metrics table: one row per method, ours (overlap) in bold."""
    metrics = report.result.metrics
    columns: list[str] = []
    for row in metrics.values():
        columns += [c for c in row if c not in columns]
    head = "<tr><th>method</th>" + "".join(f"<th>{esc(c)}</th>" for c in columns) + "</tr>"
    body = "".join(
        f"<tr{OURS if m == 'overlap' else ''}><td>{esc(m)}</td>"
        + "".join(f"<td>{_fmt(row.get(c))}</td>" for c in columns)
        + "</tr>"
        for m, row in metrics.items()
    )
    return f"<table>{head}{body}</table>"


def eval_page(
    report: EvalReport,
    *,
    finder: ImageFinder | None = None,
    id_paths: Mapping[str, str] | None = None,
    examples: int = EXAMPLES,
    title: str = "hierqdrant eval",
) -> tuple[str, list[str]]:
    """The page and the notes it carries (e.g. that thumbnails need image paths)."""
    result = report.result
    facts = [
        f"protocol: {report.protocol or result.protocol}",
        f"{result.queries} queries",
        f"{result.database} database items",
        f"queries from {report.sources.get('queries_from', '?')}",
    ]
    if result.scored_by:
        facts.append(f"mahp/hdist/severity scored by {result.scored_by}")
    body = [f"<h1>{esc(title)}</h1>", f'<p class="note">{" · ".join(esc(f) for f in facts)}</p>']
    body += ["<h2>Scores</h2>", metrics_html(report)]
    for metric, t in report.tests.items():
        body.append(
            f"<p>overlap − {esc(report.baseline)} on {esc(metric)}: {t.diff:+.4f} (95% CI [{t.ci_low:+.4f}, "
            f"{t.ci_high:+.4f}], paired sign-flip p = {t.p_value:.4g}, n = {t.n})</p>"
        )
    for name, r in report.tuned.items():
        t_text = "–" if r.best_threshold is None else f"{r.best_threshold:g}"
        body.append(
            f'<p class="note">{esc(name)} tuned: t={esc(t_text)}, α={r.best_alpha:g} '
            f"({esc(r.metric)} {r.best_score:.4f})</p>"
        )
    body += [f'<p class="warn">warning: {esc(w)}</p>' for w in report.warnings]
    body += [f'<p class="note">{esc(n)}</p>' for n in report.notes]
    curves = {
        m: {int(key[4:]): v for key, v in row.items() if key.startswith("map@") and key[4:].isdigit()}
        for m, row in result.metrics.items()
    }
    if any(curves.values()):
        body += [
            "<h2>map@k against k</h2>",
            map_at_k_svg(curves, title=f"map@k — {report.protocol or result.protocol}"),
        ]
    tops: TopLists | None = result.tops
    if tops is not None and tops.tree is not None:
        body += [f"<h2>The tree ({esc(result.scored_by or 'learned')})</h2>", tree_svg(tops.tree)]
    notes: list[str] = []
    cases = example_cases(report, finder, id_paths, examples)
    if cases:
        pair = _pair(list(result.metrics))
        assert pair is not None
        body.append(f"<h2>Where {esc(pair[0])} and {esc(pair[1])} differ most</h2>")
        body.append(
            '<p class="note">Labels are <span class="match">green</span> when they are the query\'s class, '
            '<span class="miss">red</span> when not; LCA: of the two classes in the tree above.</p>'
        )
        if not has_images(cases):
            notes.append(NO_THUMBNAILS)
            body.append(f'<p class="warn">{esc(NO_THUMBNAILS)}</p>')
        thumbs = Thumbs()
        body += [case_html(c, thumbs) for c in cases]
    return page(title, "\n".join(body)), notes
