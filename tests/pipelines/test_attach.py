"""``attach`` / ``detach`` on an application's own collection (issue 14), on the embedded engine and on
qdrant-client's local mode.

The application's collection (:mod:`tests.store.application`) has two named vectors (``image`` 16-d
Cosine, ``text`` 8-d Dot), a ``category`` field, unrelated payload fields (nested dicts, lists, strings,
numbers), points without a category and points without an ``image`` vector. Throughout — attach, search,
new points, ``attach --update``, detach — the application's payload (minus ``hq``) and both vectors of
every point must stay byte-for-byte what they were, and every strategy must equal the NumPy brute force
of D on the application's own vectors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from typer.testing import CliRunner

from hierqdrant.core.errors import InputError, NotFoundError
from hierqdrant.core.faults import FAULT_EXIT
from hierqdrant.pipelines.attach import attach, detach, label_of
from hierqdrant.store.collection import hq_payload_for
from hierqdrant.store.engines import EdgeEngine, QdrantEngine
from hierqdrant.store.engines.vectors import payload_indexes
from hierqdrant.store.search import HierarchicalSearcher
from hierqdrant_cli import app as cli
from tests.pipelines.conftest import ForkServer
from tests.schema_check import check
from tests.store import application as appmod

TENANT = models.Filter(must=[models.FieldCondition(key="tenant", match=models.MatchValue(value="north"))])
FIT = {"builder": "given", "taxonomy": appmod.taxonomy(), "alpha": 1.5, "pca": None}


def _engine(kind: str, tmp_path: Path) -> Any:
    return EdgeEngine(tmp_path / "store") if kind == "edge" else QdrantEngine(QdrantClient(":memory:"))


def _compare_every_strategy(engine: Any, with_filter: bool = True) -> None:
    """Every strategy, with and without a filter on the application's fields, against the brute force."""
    ids, x, hqs = appmod.stored(engine, "shop")
    payloads = {r.id: r.payload for batch in engine.scroll("shop") for r in batch}
    north = np.asarray([payloads[i]["tenant"] == "north" for i in ids])
    rng = np.random.default_rng(0)
    queries = appmod.centres()[rng.integers(0, 12, 4)] + rng.standard_normal((4, appmod.IMAGE)) + 2.0
    for strategy in ("exact", "auto", "rerank", "formula"):
        # rerank and formula are exact when their candidates cover every point
        searcher = HierarchicalSearcher(engine, "shop", strategy=strategy, exact=True, oversample=1000)
        model = searcher.model
        for user, mask in ((None, None), (TENANT, north)) if with_filter else ((None, None),):
            for alpha in (0.0, 1.5, 5.0):
                results = searcher.search_batch(queries, 7, filter=user, alpha=alpha)
                for q, hits in zip(queries, results, strict=True):
                    appmod.assert_same_ranking(hits, *appmod.brute_force(model, ids, x, hqs, q, 7, alpha, mask))


def _same_data(got: dict, want: dict, exact: bool) -> None:
    """The application's payloads byte-for-byte; its vectors byte-for-byte, or within float32 rounding
    where qdrant-client's local mode re-normalised them in place during a search (its own doing: its
    cosine search divides the stored vectors by their norms, which moves some by an ulp)."""
    if exact:
        assert got == want
        return
    assert got.keys() == want.keys()
    for pid, (payload, image, text) in got.items():
        assert payload == want[pid][0]
        for a, b in ((image, want[pid][1]), (text, want[pid][2])):
            assert len(a) == len(b)
            np.testing.assert_allclose(np.frombuffer(a, np.float32), np.frombuffer(b, np.float32), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["edge", "local"])
def test_attach_search_update_detach_leave_the_application_s_data_alone(kind: str, tmp_path: Path) -> None:
    """The issue's "done when". Every write of ours (attach, update, detach) is checked byte-for-byte
    around it; across searches too on the embedded engine (see :func:`_same_data` for local mode)."""
    engine = _engine(kind, tmp_path)
    exact = kind == "edge"
    app = appmod.make_points(200, seed=1, no_image_every=40)
    appmod.build(engine, "shop", app)
    if kind == "local":  # the application's own collection metadata must survive attach and detach
        engine.client.update_collection("shop", metadata={"owner": "shop-app"})
    before = appmod.snapshot(engine, "shop")
    imaged = [p for p in app.ids if p in app.image]

    result = attach(engine, "shop", vector="image", label_key="category", **FIT)
    assert appmod.snapshot(engine, "shop") == before
    assert result.mode == "attach" and result.fitted and result.state == "complete"
    assert result.points == 200 and result.annotated == len(imaged) and result.without_vector == 200 - len(imaged)
    assert result.labelled == sum(app.category(p) is not None for p in imaged)
    assert result.predicted_without_label == sum(app.category(p) is None for p in imaged) > 0
    assert result.model.num_classes == 12 and result.to_dict()["classes"] == 12
    info = engine.read_info("shop")
    check(info, "model-info")
    assert (info["vector"], info["label_key"], info["model_id"]) == ("image", "category", result.model_id)
    for batch in engine.scroll("shop"):
        for r in batch:
            assert ("hq" in r.payload) == (r.id in app.image)
            if "hq" in r.payload:
                check(r.payload, "payload")
                assert r.payload["hq"].get("label") == r.payload.get("category")
    if kind == "edge":
        assert {"hq.ancestors", "hq.leaf", "hq.model"} <= set(payload_indexes(engine, "shop"))
    _compare_every_strategy(engine)
    _same_data(appmod.snapshot(engine, "shop"), before, exact)

    # the application adds points: most with hq_payload_for, some without it, one class the model never saw
    new = appmod.make_points(40, seed=2, start=1000, extra_categories=("zebra",), no_image_every=13)
    new_imaged = [p for p in new.ids if p in new.image]
    with_hq, bare = new_imaged[:25], [p for p in new.ids if p not in new_imaged[:25]]
    vecs, labels = np.stack([new.image[p] for p in with_hq]), [new.category(p) for p in with_hq]
    payloads = hq_payload_for(result.model, vecs, labels)
    appmod.upsert(engine, "shop", new, with_hq, extra=dict(zip(with_hq, payloads, strict=True)))
    appmod.upsert(engine, "shop", new, bare)
    added = appmod.snapshot(engine, "shop")
    for pid in new.ids:  # the new points hold what the application gave them, hq aside
        assert json.loads(added[pid][0]) == new.payloads[pid]
    expected = {**before, **{p: added[p] for p in new.ids}}
    _compare_every_strategy(engine, with_filter=False)  # the bare new points rank as if their LCA were the root

    searched = appmod.snapshot(engine, "shop")
    update = attach(engine, "shop", update=True)
    assert appmod.snapshot(engine, "shop") == searched
    assert update.mode == "update" and not update.fitted and update.model_id == result.model_id
    assert update.annotated == len([p for p in bare if p in new.image])
    assert update.current == len(imaged) + len(with_hq)
    zebras = sum(new.category(p) == "zebra" for p in new_imaged)
    assert zebras and update.unseen_labels == {"zebra": zebras}
    _compare_every_strategy(engine)
    again = attach(engine, "shop")  # run again: nothing is missing
    assert again.mode == "resume" and again.annotated == 0 and again.unseen_labels == {"zebra": zebras}

    searched = appmod.snapshot(engine, "shop")
    gone = detach(engine, "shop")
    assert appmod.snapshot(engine, "shop") == searched
    assert gone.points == len(imaged) + len(new_imaged) and gone.model_id == result.model_id
    assert engine.read_info("shop") is None and engine.read_model("shop") is None
    assert all("hq" not in r.payload for batch in engine.scroll("shop") for r in batch)
    _same_data(searched, expected, exact)
    assert not {"hq.ancestors", "hq.leaf", "hq.model"} & set(payload_indexes(engine, "shop"))
    if kind == "local":
        assert engine.client.get_collection("shop").config.metadata == {"owner": "shop-app"}
        assert [c.name for c in engine.client.get_collections().collections] == ["shop"]  # no model sidecar
    engine.close()


@pytest.mark.parametrize("kind", ["edge", "local"])
def test_dry_runs_write_nothing_and_refit_makes_a_new_model(kind: str, tmp_path: Path) -> None:
    engine = _engine(kind, tmp_path)
    app = appmod.make_points(120, seed=3)
    appmod.build(engine, "shop", app)
    before = appmod.snapshot(engine, "shop", payload_key="nothing")  # hq included
    dry = attach(engine, "shop", vector="image", label_key="category", dry_run=True, **FIT)
    assert dry.dry_run and dry.annotated == 120 and dry.state is None
    assert engine.read_info("shop") is None and appmod.snapshot(engine, "shop", payload_key="nothing") == before
    first = attach(engine, "shop", vector="image", label_key="category", **FIT)
    assert first.model_id == dry.model_id  # the dry run fitted the very same model
    refit = attach(engine, "shop", refit=True, **{**FIT, "alpha": 2.0})
    assert refit.mode == "refit" and refit.model_id != first.model_id and refit.previous_model_id == first.model_id
    assert refit.annotated == 120 and refit.current == 0
    assert {r.payload["hq"]["model"] for batch in engine.scroll("shop") for r in batch} == {refit.model_id}
    assert HierarchicalSearcher(engine, "shop").alpha == 2.0
    marked = appmod.snapshot(engine, "shop", payload_key="nothing")
    assert detach(engine, "shop", dry_run=True).points == 120
    assert engine.read_info("shop")["model_id"] == refit.model_id
    assert appmod.snapshot(engine, "shop", payload_key="nothing") == marked
    engine.close()


def test_what_attach_refuses(tmp_path: Path) -> None:
    engine = EdgeEngine(tmp_path / "store")
    app = appmod.make_points(60, seed=4)
    appmod.build(engine, "shop", app)
    with pytest.raises(InputError, match="uses Dot distance; hierqdrant attaches to Cosine vectors only"):
        attach(engine, "shop", vector="text", label_key="category")
    with pytest.raises(InputError, match=r"several vectors \(image, text\)"):
        attach(engine, "shop", label_key="category")
    with pytest.raises(InputError, match="no vector 'sound'"):
        attach(engine, "shop", vector="sound", label_key="category")
    with pytest.raises(InputError, match="--label-key"):
        attach(engine, "shop", vector="image")
    with pytest.raises(InputError, match="no point .* has both"):
        attach(engine, "shop", vector="image", label_key="colour")
    with pytest.raises(NotFoundError, match="is not attached"):
        attach(engine, "shop", update=True)
    with pytest.raises(NotFoundError, match="is not attached"):
        detach(engine, "shop")
    with pytest.raises(InputError, match="exclude each other"):
        attach(engine, "shop", update=True, refit=True)
    with pytest.raises(InputError, match="options are"):
        attach(engine, "shop", colour="red")
    with pytest.raises(InputError, match="already have a payload field 'title'"):
        attach(engine, "shop", vector="image", label_key="category", payload_key="title")
    attach(engine, "shop", vector="image", label_key="category", threshold=0.2)
    with pytest.raises(InputError, match="attached with label key 'category', not 'tenant'"):
        attach(engine, "shop", label_key="tenant")
    assert attach(engine, "shop", refit=True, label_key="tenant").label_key == "tenant"  # a refit may change it
    engine.close()


def test_a_collection_of_our_own_is_not_attached(tmp_path: Path) -> None:
    from hierqdrant.core.model import HierarchyModel
    from hierqdrant.store.collection import create_collection, upsert_points

    engine = EdgeEngine(tmp_path / "store")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 6)), np.repeat(np.arange(4), 10)
    model = HierarchyModel.fit(x + y[:, None] * 3, y)
    create_collection(engine, "ours", model)
    upsert_points(engine, "ours", model, x, [str(i) for i in range(40)], labels=y)
    with pytest.raises(InputError, match="built by hierqdrant ingest"):
        attach(engine, "ours", label_key="x")
    with pytest.raises(InputError, match="built by hierqdrant ingest"):
        detach(engine, "ours")
    engine.close()


def test_label_of_reads_strings_numbers_and_nested_fields() -> None:
    payload = {"category": "owl", "n": 7, "a": {"b": "deep"}, "odd.key": "dot", "flag": True, "l": [1], "e": ""}
    assert [label_of(payload, k) for k in ("category", "n", "a.b", "odd.key", "flag", "l", "e", "zz", "a")] == [
        "owl", "7", "deep", "dot", None, None, None, None, None,
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# the command line, and a kill


def _app_store(tmp_path: Path, n: int = 90) -> Path:
    store = tmp_path / "store"
    engine = EdgeEngine(store)
    appmod.build(engine, "shop", appmod.make_points(n, seed=5))
    engine.close()
    return store


def test_cli_attach_and_detach_on_the_embedded_engine(tmp_path: Path) -> None:
    store = _app_store(tmp_path)
    runner = CliRunner()
    at = ["--data-dir", str(store)]
    refused = runner.invoke(cli, ["attach", "shop", "--vector", "text", "--label-key", "category", *at])
    assert refused.exit_code == 2 and "uses Dot distance" in refused.output
    assert len(refused.output.strip().splitlines()) <= 3  # one error line (wrapped at most)
    dry = runner.invoke(cli, ["attach", "shop", "--vector", "image", "--label-key", "category", "--dry-run", *at])
    assert dry.exit_code == 0 and "dry run" in dry.output, dry.output
    out = runner.invoke(
        cli, ["attach", "shop", "--vector", "image", "--label-key", "category", "-t", "0.2", "--json", *at]
    )
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    check(summary, "cli/attach")
    assert summary["annotated"] == 90 and summary["engine"] == "embedded" and summary["mode"] == "attach"
    update = runner.invoke(cli, ["attach", "shop", "--update", "--json", *at], env={"HIERQDRANT_COLLECTION": "x"})
    assert json.loads(update.stdout)["annotated"] == 0
    gone = runner.invoke(cli, ["detach", "--json", *at], env={"HIERQDRANT_COLLECTION": "shop"})
    assert gone.exit_code == 0, gone.output
    check(json.loads(gone.stdout), "cli/detach")
    assert json.loads(gone.stdout)["points"] == 90
    engine = EdgeEngine(store)
    assert engine.read_info("shop") is None
    engine.close()


@pytest.mark.slow
def test_a_killed_attach_resumes_and_annotates_only_what_is_missing(children: ForkServer, tmp_path: Path) -> None:
    store = _app_store(tmp_path, n=120)
    argv = ["attach", "shop", "--vector", "image", "--label-key", "category", "-t", "0.2", "--batch-size", "25",
            "--data-dir", str(store), "--json", "--quiet"]  # fmt: skip
    killed = children.one(argv, env={"HIERQDRANT_FAULT": "after-annotate-batch:2"})
    assert killed.code == FAULT_EXIT, killed.stderr
    engine = EdgeEngine(store)
    info = engine.read_info("shop")
    assert info is not None and info["state"] == "incomplete"
    done = sum("hq" in r.payload for batch in engine.scroll("shop") for r in batch)
    engine.close()
    assert done == 50  # two batches of 25 were written
    again = children.one(argv)
    assert again.code == 0, again.stderr
    summary = again.json
    assert summary["mode"] == "resume" and not summary["fitted"] and summary["model_id"] == info["model_id"]
    assert summary["annotated"] == 70 and summary["current"] == 50 and summary["state"] == "complete"
    # killed right after the model was stored: the rerun annotates everything with that model
    assert children.one(["detach", "shop", "--data-dir", str(store)]).code == 0
    killed = children.one(argv, env={"HIERQDRANT_FAULT": "after-attach-model"})
    assert killed.code == FAULT_EXIT
    again = children.one(argv)
    assert again.code == 0 and again.json["annotated"] == 120 and again.json["mode"] == "resume"
