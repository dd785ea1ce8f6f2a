"""The collection lifecycle through the CLI, in child processes: two ingests at once, a lost
``collection.json``, half-written creates, and what ``info`` and ``query`` say about an incomplete one."""

from __future__ import annotations

from pathlib import Path

from hierqdrant.core.faults import FAULT_EXIT
from hierqdrant.store.engines import EdgeEngine
from tests.pipelines.conftest import SMALL_PARTS, ForkServer, check_store, ingest_argv, keys_of
from tests.schema_check import check

BUSY = "is being written by another process (pid "


def test_two_ingests_into_one_new_collection_at_once(children: ForkServer, images: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    argv = ingest_argv(images, store)
    runs = children.run(argv, argv)
    assert sorted(r.code for r in runs) in ([0, 0], [0, 2]), [(r.code, r.stderr) for r in runs]
    for run in runs:
        assert "Traceback" not in run.stderr
        if run.code == 2:  # failed fast, with one line naming the writer
            (line,) = run.stderr.strip().splitlines()
            assert BUSY in line and "--collection" in line, line
    check_store(store, keys_of(images))
    # with --wait the second one waits for the first, then finds everything done (all from the cache)
    other = tmp_path / "other"
    runs = children.run(ingest_argv(images, other, "--wait"), ingest_argv(images, other, "--wait"))
    assert [r.code for r in runs] == [0, 0], [r.stderr for r in runs]
    assert sorted(r.json["embedded"] for r in runs)[0] == 0
    check_store(other, keys_of(images))
    # other collections of the same store are not held up
    runs = children.run(ingest_argv(images, other, collection="a"), ingest_argv(images, other, collection="b"))
    assert [r.code for r in runs] == [0, 0], [r.stderr for r in runs]


def test_a_lost_collection_json_is_reported_and_never_overwritten(
    children: ForkServer, images: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    argv = ingest_argv(images, store)
    assert children.one(argv).code == 0
    (store / "pics" / "collection.json").unlink()
    shard_files = sorted(p for p in (store / "pics" / "shard").rglob("*") if p.is_file())

    info = children.one(["info", "--data-dir", str(store), "--json"])
    assert info.code == 0
    check(info.json, "cli/info")
    assert info.json["collections"] == []
    (damaged,) = info.json["damaged"]
    assert damaged["collection"] == "pics" and "collection.json is missing" in damaged["problem"]
    text = children.one(["info", "--data-dir", str(store)])
    assert "damaged" in text.stderr and "pics" in text.stderr

    for source in (images, images / "class0"):  # the same ingest, and other data under the same name
        refused = children.one(ingest_argv(source, store))
        assert refused.code == 2 and "Traceback" not in refused.stderr
        assert "damaged" in refused.stderr and "--recreate" in refused.stderr
    assert sorted(p for p in (store / "pics" / "shard").rglob("*") if p.is_file()) == shard_files
    assert not (store / "pics" / "collection.json").exists()

    rebuilt = children.one(ingest_argv(images, store, "--recreate"))
    assert rebuilt.code == 0, rebuilt.stderr
    check_store(store, keys_of(images))


def test_half_written_creates(children: ForkServer, images: Path, tmp_path: Path) -> None:
    # a folder that a create of an older version left without collection.json: refused, kept, --recreate
    store = tmp_path / "old"
    (store / "pics" / "shard" / "segments").mkdir(parents=True)
    refused = children.one(ingest_argv(images, store))
    assert refused.code == 2 and "damaged" in refused.stderr
    assert (store / "pics" / "shard" / "segments").is_dir()
    assert children.one(ingest_argv(images, store, "--recreate")).code == 0
    check_store(store, keys_of(images))

    # an older version's create killed after collection.json, before the model (and a model temporary
    # file): the same ingest completes it
    done = tmp_path / "done"
    assert children.one(ingest_argv(images, done)).code == 0
    dims = EdgeEngine(done).vector_size("pics")
    store = tmp_path / "nomodel"
    EdgeEngine(store).create("pics", dims, integer_index=["hq.ancestors", "hq.leaf"], keyword_index=["hq.model"])
    (store / "pics" / "model").mkdir()
    (store / "pics" / "model" / f".model.json.tmp-{'0' * 32}").write_bytes(b"half")
    again = children.one(ingest_argv(images, store))
    assert again.code == 0, again.stderr
    check_store(store, keys_of(images))

    # a create killed in its temporary folder leaves no collection; the same ingest removes the folder
    store = tmp_path / "tmp"
    killed = children.one(ingest_argv(images, store), env={"HIERQDRANT_FAULT": "before-create-rename"})
    assert killed.code == FAULT_EXIT and [p.name for p in store.glob(".pics.tmp-*")]
    listing = children.one(["info", "--data-dir", str(store), "--json"])
    assert listing.json["collections"] == [] and listing.json["damaged"] == []
    assert children.one(ingest_argv(images, store)).code == 0
    check_store(store, keys_of(images))


def test_an_incomplete_collection_is_marked_until_an_ingest_completes_it(
    children: ForkServer, images: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    argv = ingest_argv(images, store)
    killed = children.one(argv, env={**SMALL_PARTS, "HIERQDRANT_FAULT": "after-upsert-batch:2"})
    assert killed.code == FAULT_EXIT

    info = children.one(["info", "--data-dir", str(store), "--json"])
    check(info.json, "cli/info")
    (row,) = info.json["collections"]
    assert row["state"] == "incomplete" and 0 < row["points"] < 18
    listing = children.one(["info", "--data-dir", str(store)])
    assert "incomplete" in listing.stdout and "run the same ingest again" in listing.stderr

    query = ["query", str(images / "class1" / "002.png"), "-k", "3", "--data-dir", str(store)]
    res = children.one([*query, "--json"])
    assert res.code == 0, res.stderr
    check(res.json, "cli/query")
    (warning,) = res.json["warnings"]
    assert "incomplete" in warning and "ingest" in warning
    assert "warning:" in res.stderr and "incomplete" in res.stderr
    assert "incomplete" in children.one(query).stderr

    assert children.one(argv).code == 0
    info = children.one(["info", "--data-dir", str(store), "--json"])
    assert info.json["collections"][0]["state"] == "complete" and info.json["collections"][0]["points"] == 18
    res = children.one([*query, "--json"])
    assert res.code == 0 and res.json["warnings"] == [] and "incomplete" not in res.stderr
