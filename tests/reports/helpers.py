"""Tiny report inputs made inside the tests: a few PNGs and query cases, with a hostile label."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from hierqdrant.reports.cases import QueryCase, ReportHit

#: A label that would inject markup if any text reached the page unescaped.
EVIL = "<script>alert(1)</script>&\"'"


def write_pngs(folder: Path, n: int, size: int = 12) -> list[Path]:
    """``n`` small distinct greyscale PNGs (a bright square at a different place in each)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        img = np.full((size, size), 20, dtype=np.uint8)
        r = (i * 3) % (size - 4)
        img[r : r + 4, 2 : size - 2] = 230
        path = folder / f"{i:02d}.png"
        Image.fromarray(img).save(path)
        out.append(path)
    return out


def make_cases(root: Path, with_images: bool = True) -> list[QueryCase]:
    """Two queries × (cosine, hierarchical) × 3 hits; the second query's class is :data:`EVIL`."""
    pngs = write_pngs(root / "imgs", 7) if with_images else [None] * 7
    cases = []
    for q, truth in enumerate(["cat", EVIL]):
        rows = {}
        for m, method in enumerate(["cosine", "hierarchical"]):
            labels = [truth, "dog", truth] if m == 0 else [truth, truth, EVIL + "x"]
            rows[method] = [
                ReportHit(
                    label=label,
                    distance=0.1 * (r + 1),
                    cosine=1 - 0.1 * (r + 1),
                    lca=EVIL if r == 2 else "n5",
                    lca_height=r,
                    shared=["n5", EVIL, "root"],
                    path=f"path/{EVIL}/{r}.png",
                    image=pngs[1 + r + 3 * m],
                )
                for r, label in enumerate(labels)
            ]
        cases.append(QueryCase(name=f"queries/{EVIL}/{q}.png", image=pngs[0], leaf=EVIL, truth=truth, rows=rows))
    return cases
