"""An "application" collection for the attach tests: what a real app's collection looks like.

Two named vectors (``image`` 16-d Cosine, ``text`` 8-d Dot), a ``category`` field (12 classes in a
3-level structure: 2 groups × 2 families × 3 leaves), unrelated payload fields (a nested dict, lists,
strings, numbers, a tenant), points without a category, and a few points without an ``image`` vector.
Built with the engine-level helpers (:mod:`hierqdrant.store.engines.vectors`), the way an application's
own client would build it; :func:`snapshot` and :func:`brute_force` are the references the tests compare
against.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hierqdrant.core.model import HierarchyModel, unit_rows
from hierqdrant.store.engines.vectors import (
    VectorSpec,
    create_app_collection,
    scroll_vectors,
    upsert_app_points,
)

CATEGORIES = [f"cat{i:02d}" for i in range(12)]
IMAGE, TEXT = 16, 8
_NS = uuid.UUID("0b7f6a4e-8f2e-4a7e-9d1c-5a3b2c1d0e9f")


@dataclass
class App:
    """The points of an application collection, as the application knows them."""

    ids: list[str] = field(default_factory=list)
    image: dict[str, np.ndarray] = field(default_factory=dict)  # id → raw image vector (not normalised)
    text: dict[str, np.ndarray] = field(default_factory=dict)
    payloads: dict[str, dict[str, Any]] = field(default_factory=dict)
    centres: np.ndarray | None = None

    def category(self, pid: str) -> str | None:
        return self.payloads[pid].get("category")


def centres(seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    group = rng.standard_normal((2, IMAGE)) * 3
    family = group[np.arange(4) // 2] + rng.standard_normal((4, IMAGE)) * 1.5
    return family[np.arange(12) // 3] + rng.standard_normal((12, IMAGE)) * 0.8


def make_points(
    n: int, *, seed: int, start: int = 0, unlabelled_every: int = 9, no_image_every: int = 0,
    extra_categories: tuple[str, ...] = (),
) -> App:  # fmt: skip
    """``n`` points around the class centres, with the application's own payload."""
    rng = np.random.default_rng(seed)
    c = centres()
    app = App(centres=c)
    names = CATEGORIES + list(extra_categories)
    for i in range(start, start + n):
        cls = int(rng.integers(0, len(names)))
        centre = c[cls % 12] + (3.0 if cls >= 12 else 0.0)
        pid = str(uuid.uuid5(_NS, f"p{i}"))
        app.ids.append(pid)
        if not (no_image_every and i % no_image_every == no_image_every - 1):
            app.image[pid] = centre + rng.standard_normal(IMAGE) * 0.9 + 2.0  # off the origin: raw ≠ unit
        app.text[pid] = rng.standard_normal(TEXT)
        payload: dict[str, Any] = {
            "title": f"item {i}",
            "price": round(float(rng.uniform(1, 100)), 2),
            "tenant": "north" if i % 3 else "south",
            "shop": {"name": f"shop-{i % 4}", "tags": ["new", "sale"][: 1 + i % 2], "stock": {"n": i % 7}},
            "sizes": [36, 38, 40][: i % 3],
        }
        if i % unlabelled_every != unlabelled_every - 1:
            payload["category"] = names[cls]
        app.payloads[pid] = payload
    return app


def build(engine: Any, name: str, app: App, *, quantization: str | None = None) -> None:
    """Create the collection and upsert the app's points (payloads exactly as given)."""
    create_app_collection(
        engine, name, {"image": VectorSpec(IMAGE), "text": VectorSpec(TEXT, "Dot")}, quantization=quantization  # type: ignore[arg-type]
    )
    upsert(engine, name, app, app.ids)


def upsert(engine: Any, name: str, app: App, ids: list[str], extra: dict[str, dict[str, Any]] | None = None) -> None:
    vectors = []
    for pid in ids:
        v = {"text": app.text[pid]}
        if pid in app.image:
            v["image"] = app.image[pid]
        vectors.append(v)
    payloads = [{**app.payloads[pid], **((extra or {}).get(pid) or {})} for pid in ids]
    upsert_app_points(engine, name, ids, vectors, payloads)


def snapshot(engine: Any, name: str, payload_key: str = "hq") -> dict[str, tuple[str, bytes, bytes]]:
    """Per point: its payload without ``payload_key`` as canonical JSON, and its stored vectors' bytes."""
    images = {r.id: r for batch in scroll_vectors(engine, name, "image") for r in batch}
    texts = {r.id: r for batch in scroll_vectors(engine, name, "text") for r in batch}
    out = {}
    for pid, r in texts.items():
        own = {k: v for k, v in r.payload.items() if k != payload_key}
        img = images[pid].vector
        out[pid] = (
            json.dumps(own, sort_keys=True),
            b"" if img is None else img.astype(np.float32).tobytes(),
            np.asarray(r.vector, dtype=np.float32).tobytes(),
        )
    return out


def stored(engine: Any, name: str, payload_key: str = "hq") -> tuple[list[str], np.ndarray, list[dict | None]]:
    """Ids, stored (unit) image vectors and ``hq`` payloads of the points that have an image vector."""
    ids, vecs, hqs = [], [], []
    for batch in scroll_vectors(engine, name, "image"):
        for r in batch:
            if r.vector is not None:
                ids.append(r.id)
                vecs.append(r.vector)
                hqs.append(r.payload.get(payload_key))
    return ids, np.stack(vecs).astype(np.float64), hqs


def brute_force(
    model: HierarchyModel,
    ids: list[str],
    x: np.ndarray,
    hqs: list[dict | None],
    query: np.ndarray,
    k: int,
    alpha: float,
    mask: np.ndarray | None = None,
) -> tuple[list[str], np.ndarray]:
    """The top-k by D on the application's vectors: ``1 − cos(q, x) + α·h(LCA)/H``, LCA the root for a
    point without ``hq``; ties by id. ``query`` is the raw application vector."""
    q = unit_rows(np.atleast_2d(query))
    leaf_q = int(model.assign(model.transform(q), projected=True)[0])
    cos = (unit_rows(x) @ q[0]).astype(np.float64)
    lca = model.lca_height_matrix()
    H = max(model.tree_height, 1)
    h = np.asarray([lca[leaf_q, hq["leaf"]] if hq else model.tree_height for hq in hqs], dtype=np.float64)
    d = 1.0 - cos + alpha * h / H
    if mask is not None:
        d = np.where(mask, d, np.inf)
    arr = np.asarray(ids)
    order = np.lexsort((arr, d))[:k]
    order = order[np.isfinite(d[order])]
    return arr[order].tolist(), d[order]


def assert_same_ranking(hits: list[Any], ids: list[str], dists: np.ndarray, tol: float = 2e-5) -> None:
    assert len(hits) == len(ids), (len(hits), len(ids))
    for hit, want_id, want_d in zip(hits, ids, dists, strict=True):
        assert hit.id == want_id or abs(hit.distance - want_d) < tol, (hit.id, want_id, hit.distance, want_d)
        assert abs(hit.distance - want_d) < tol, (hit.distance, want_d)


def taxonomy() -> Any:
    """The categories' own tree: root → 2 groups → 2 families each → 3 categories each (height 3)."""
    from hierqdrant.core.hierarchy import Hierarchy

    k = len(CATEGORIES)
    parent = np.full(k + 4 + 2 + 1, -1)
    for leaf in range(k):
        parent[leaf] = k + leaf // 3
    for f in range(4):
        parent[k + f] = k + 4 + f // 2
    parent[[k + 4, k + 5]] = k + 6
    return Hierarchy(parent, k, class_names=list(CATEGORIES))
