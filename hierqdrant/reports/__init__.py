"""Results people can look at: self-contained HTML reports, PNG contact sheets and inline SVG figures.

Everything here renders results computed elsewhere (searches, evaluations); nothing here searches or
scores. A report is one HTML file with every image inlined as a data URI and no network access, so it
can be mailed, archived or opened from a CI artifact as it is.

- :mod:`~hierqdrant.reports.html` — escaping and the page frame;
- :mod:`~hierqdrant.reports.thumbnails` — finding a result's image file and making a small thumbnail;
- :mod:`~hierqdrant.reports.cases` — the query cases (query, leaf, cosine and hierarchical rows);
- :mod:`~hierqdrant.reports.query_report` — ``hierqdrant query --html`` and the demo's report;
- :mod:`~hierqdrant.reports.grid` — ``hierqdrant query --grid``: the same as a PNG contact sheet;
- :mod:`~hierqdrant.reports.svg` — the learned tree and the map@k-against-k plot as inline SVG;
- :mod:`~hierqdrant.reports.eval_report` — ``hierqdrant eval --html``.
"""
