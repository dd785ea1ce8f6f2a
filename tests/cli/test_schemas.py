"""The contracts in ``schemas/``, checked against what the code really writes.

- every schema file is a valid draft 2020-12 schema with ``$id`` / ``title`` / ``description``, and its
  ``$ref``s resolve;
- every CLI command (found by walking the Typer app) has a ``--json`` option, a schema
  ``schemas/cli/<command>.v<N>.schema.json`` and a ``test_json_<command>`` here that validates its real
  output — or an entry in ``EXEMPT`` saying why not;
- the ``hq`` payload of real points and the stored model info, read back from collections on the embedded
  engine (and qdrant-client's local mode), match ``payload`` and ``model-info``;
- the schemas' closed vocabularies equal the library's.

Outputs are checked strictly (see ``tests/schema_check.py``): a key the schema does not document fails.
"""

from __future__ import annotations

import json
import shutil
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from jsonschema import Draft202012Validator
from referencing.exceptions import Unresolvable
from typer.testing import CliRunner

from hierqdrant.core.features import FeatureSet
from hierqdrant_cli import app
from tests.cli.test_cli_ingest import make_folder
from tests.conftest import gaussian_classes
from tests.schema_check import (
    DRAFT,
    SCHEMAS_DIR,
    check,
    errors,
    latest,
    load,
    refs,
    registry,
    relpath,
    schema_files,
    versions,
)

runner = CliRunner()

EXEMPT: dict[str, str] = {
    "hierarchy export": "it writes the tree itself, not a summary: Newick, parent-child text, a PNG, or with "
    "--format json the tree document of schemas/hierarchy.v1.schema.json "
    "(test_hierarchy_export_json_is_a_tree_document)",
}
"""Commands without ``--json``, and why."""


# ---------------------------------------------------------------------------------------------------------
# the schema files


@pytest.mark.parametrize("path", schema_files(), ids=relpath)
def test_schema_file_is_valid_draft_2020_12(path: Path) -> None:
    schema = load(path)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == DRAFT
    base = str(load(SCHEMAS_DIR / "payload.v1.schema.json")["$id"]).removesuffix("payload.v1.schema.json")
    assert schema["$id"] == base + relpath(path), "the $id mirrors the file's place under schemas/"
    version = path.name.split(".")[-3]
    assert schema["title"].endswith(f", {version}") and schema["description"].strip()
    resolver = registry(False).resolver()
    for pointer, target in refs(schema):
        try:
            resolver.lookup(target)
        except Unresolvable as e:
            pytest.fail(f"{relpath(path)}#{pointer}: $ref {target} does not resolve ({e})")


def test_vocabularies_match_the_library() -> None:
    from hierqdrant.core.build import BUILDERS
    from hierqdrant.core.gaussian import ESTIMATORS
    from hierqdrant.core.hierarchy import JSON_FORMAT
    from hierqdrant.core.settings import LeafFrom, QueryClassifier
    from hierqdrant.store.collection import DEFAULT_PAYLOAD_KEY, INFO_FORMAT
    from hierqdrant.store.engines import EdgeEngine, QdrantEngine
    from hierqdrant.store.search import Strategy

    defs = load(SCHEMAS_DIR / "common.v1.schema.json")["$defs"]
    assert defs["builder"]["enum"] == list(BUILDERS)
    assert defs["covariance"]["enum"] == list(ESTIMATORS)
    assert defs["strategy"]["enum"] == list(typing.get_args(Strategy))
    assert defs["leafFrom"]["enum"] == list(typing.get_args(LeafFrom))
    assert defs["queryClassifier"]["enum"] == list(typing.get_args(QueryClassifier))
    assert set(defs["engineKind"]["enum"]) == {EdgeEngine.kind, QdrantEngine.kind}
    assert load(SCHEMAS_DIR / "model-info.v1.schema.json")["properties"]["format"]["const"] == INFO_FORMAT
    assert load(SCHEMAS_DIR / "hierarchy.v1.schema.json")["properties"]["format"]["const"] == JSON_FORMAT
    assert list(load(SCHEMAS_DIR / "payload.v1.schema.json")["properties"])[0] == DEFAULT_PAYLOAD_KEY


# ---------------------------------------------------------------------------------------------------------
# every command has a schema


def cli_commands() -> dict[str, Any]:
    """Every leaf command of the CLI by its space-separated name (``ingest``, ``hierarchy build``, …).

    Duck-typed on the click API (groups have ``commands``, options ``opts``): Typer may vendor click.
    """
    found: dict[str, Any] = {}

    def visit(command: Any, path: tuple[str, ...]) -> None:
        if isinstance(getattr(command, "commands", None), dict):
            for name, sub in command.commands.items():
                visit(sub, (*path, name))
        else:
            found[" ".join(path)] = command

    visit(typer.main.get_command(app), ())
    return found


def has_json(command: Any) -> bool:
    return any("--json" in getattr(p, "opts", ()) for p in command.params)


def test_every_command_has_a_schema_and_a_test() -> None:
    commands = cli_commands()
    assert {"ingest", "query", "info", "eval", "tune", "embed", "train", "demo", "hierarchy build"} <= set(commands)
    problems: list[str] = []
    for name, command in sorted(commands.items()):
        file = name.replace(" ", "-")
        if name in EXEMPT:
            if has_json(command):
                problems.append(
                    f"`{name}` has --json now: write schemas/cli/{file}.v1.schema.json, drop it from EXEMPT"
                )
            continue
        if not has_json(command):
            problems.append(f"`{name}` has no --json: add one with its schema, or exempt it in EXEMPT with the reason")
            continue
        if latest(f"cli/{file}") is None:
            problems.append(f"`{name} --json` has no schema: write schemas/cli/{file}.v1.schema.json")
        test = f"test_json_{file.replace('-', '_')}"
        if not callable(globals().get(test)):
            problems.append(f"`{name} --json` is validated nowhere: add {test} to {Path(__file__).name}")
    problems += [f"EXEMPT names `{name}`, which is not a command" for name in sorted(set(EXEMPT) - set(commands))]
    files = {name.replace(" ", "-") for name in commands}
    for path in sorted((SCHEMAS_DIR / "cli").glob("*.schema.json")):
        stem = path.name.split(".v")[0]
        if stem not in files:
            problems.append(f"schemas/cli/{path.name} belongs to no command")
        elif sorted(versions(f"cli/{stem}")) != list(range(1, len(versions(f"cli/{stem}")) + 1)):
            problems.append(f"schemas/cli/{stem}.v*: versions must run 1, 2, … without gaps")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------------------
# real outputs

CENTRES = np.array([[0.0, 0.0], [1.0, 0.0], [7.0, 7.0], [7.6, 7.0], [3.0, -9.0]])
EMBED = ["--device", "cpu", "--workers", "0"]


@dataclass
class World:
    """Small inputs made once, and a store that the fixture fills through `hierqdrant ingest`."""

    root: Path
    store: Path
    images: Path  # train/ and test/ image folders, 3 classes
    bad: Path  # an image folder with one file that is not an image
    npz: Path  # 5 classes × 30 Gaussian features with paths and train/test splits
    ingested: list[dict[str, Any]]


def cli_json(*args: Any, ok: tuple[int, ...] = (0,)) -> Any:
    """Run the CLI; stdout must be exactly one JSON document."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code in ok, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, f"--json printed {len(lines)} lines on stdout:\n{result.stdout}"
    return json.loads(lines[0])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("schemas")
    images = root / "tt"
    make_folder(images / "train", per_class=6, size=16)
    make_folder(images / "test", per_class=2, size=16)
    loose = root / "loose"
    loose.mkdir()
    for i, png in enumerate(sorted((images / "test").rglob("*.png"))[:3]):
        shutil.copy(png, loose / f"u{i}.png")
    bad = make_folder(root / "bad", classes=2, per_class=3, size=16)
    (bad / "class1" / "notes.jpg").write_text("this is not an image\n")
    x, y = gaussian_classes(CENTRES, per_class=30, dims=5, seed=0)
    splits = np.where(np.arange(len(y)) % 30 < 24, "train", "test")
    FeatureSet(
        x, y, classes=[f"k{i}" for i in range(5)], paths=[f"{s}/{i}.jpg" for i, s in enumerate(splits)],
        splits=list(splits),
    ).save(root / "f.npz")  # fmt: skip
    store = root / "store"
    at = ["--data-dir", store, "--json"]
    ingested = [
        cli_json("ingest", images, "-c", "pics", "--model", "pixels", "--image-size", "8", "-t", "0.2", *EMBED, *at),
        cli_json("ingest", loose, "-c", "pics", *EMBED, *at),  # unlabelled: no label, no split, fitted false
        cli_json("ingest", root / "f.npz", "-c", "feats", *at),
        cli_json("ingest", root / "f.npz", "-c", "custom", "--payload-key", "meta", "--leaf-from", "label", *at),
    ]
    return World(root, store, images, bad, root / "f.npz", ingested)


def test_json_ingest(world: World) -> None:
    assert [o["source"] for o in world.ingested] == ["train-test", "unlabelled", "features", "features"]
    assert world.ingested[1]["fitted"] is False
    partial = cli_json("ingest", world.bad, "-c", "bad", "--model", "pixels", "--image-size", "8", *EMBED,
                       "--data-dir", world.store, "--json", ok=(1,))  # fmt: skip
    assert partial["skipped"]
    for out in [*world.ingested, partial]:
        check(out, "cli/ingest")


def test_json_query(world: World) -> None:
    at = ["--data-dir", world.store, "--json"]
    image = world.images / "test" / "class1" / "000.png"
    explained = cli_json("query", image, "-c", "pics", "-k", "4", "--explain", *at)
    assert "explanation" in explained["queries"][0]["hits"][0]
    rows = cli_json("query", world.npz, "-c", "feats", "-k", "2", "--strategy", "exact", "--filter", "hq.split=test",
                    *at)  # fmt: skip
    assert len(rows["queries"]) == 150
    partial = cli_json("query", world.bad, "-c", "pics", "-k", "2", *at, ok=(1,))
    assert partial["skipped"]
    for out in (explained, rows, partial):
        check(out, "cli/query")


def test_json_info(world: World) -> None:
    out = cli_json("info", "--data-dir", world.store, "--json")
    assert {"pics", "feats", "custom"} <= {c["collection"] for c in out["collections"]}
    check(out, "cli/info")
    check(cli_json("info", "--data-dir", world.root / "empty", "--json"), "cli/info")


def test_json_hierarchy_build(world: World) -> None:
    for builder in ("overlap", "ward"):
        out = cli_json("hierarchy", "build", "-f", world.npz, "-o", world.root / f"m-{builder}", "--builder", builder,
                       "--json")  # fmt: skip
        assert out["builder"] == builder
        assert (out["query_classifier"], out["leaf_from"]) == ("tied", "label")
        check(out, "cli/hierarchy-build")
    paper = cli_json("hierarchy", "build", "-f", world.npz, "-o", world.root / "m-paper", "--paper", "--json")
    assert (paper["query_classifier"], paper["leaf_from"]) == ("mahalanobis", "predicted")
    check(paper, "cli/hierarchy-build")


def test_json_hierarchy_show(world: World) -> None:
    model = world.root / "m-show"
    cli_json("hierarchy", "build", "-f", world.npz, "-o", model, "--json")
    check(cli_json("hierarchy", "show", model, "--json"), "cli/hierarchy-show")
    check(cli_json("hierarchy", "show", "-c", "pics", "--data-dir", world.store, "--json"), "cli/hierarchy-show")


def test_hierarchy_export_json_is_a_tree_document(world: World) -> None:
    model = world.root / "m-export"
    cli_json("hierarchy", "build", "-f", world.npz, "-o", model, "--json")
    result = runner.invoke(app, ["hierarchy", "export", str(model), "--format", "json"])
    assert result.exit_code == 0, result.output
    check(json.loads(result.stdout), "hierarchy")
    out = world.root / "tree.json"
    assert runner.invoke(app, ["hierarchy", "export", str(model), "--format", "json", "-o", str(out)]).exit_code == 0
    check(json.loads(out.read_text()), "hierarchy")


def test_json_embed(world: World) -> None:
    out = cli_json("embed", world.images, "-o", world.root / "e.npz", "--model", "pixels", "--image-size", "8",
                   *EMBED, "--json")  # fmt: skip
    partial = cli_json("embed", world.bad, "-o", world.root / "eb.npz", "--model", "pixels", *EMBED, "--json", ok=(1,))
    assert partial["skipped"]
    check(out, "cli/embed")
    check(partial, "cli/embed")


def test_json_eval(world: World) -> None:
    short = ["--k", "1,5", "--mahp-k", "5", "--hdist-k", "5", "--json"]
    loo = cli_json("eval", "--db", world.npz, "--plot", world.root / "map.png", *short)
    assert loo["path"] == "numpy" and "plot" in loo
    split = cli_json("eval", "--db", world.npz, "--db-split", "train", "--queries", world.npz, "--query-split", "test",
                     "--methods", "cosine,overlap,ward", *short)  # fmt: skip
    assert split["protocol"] == "queries-vs-database"
    engine = cli_json("eval", "--db", "feats", "--data-dir", world.store, "--methods", "cosine,overlap", "--tune",
                      "--thresholds", "0.1,0.5", "--alphas", "1,2", *short)  # fmt: skip
    assert engine["path"] == "engine" and engine["tuning"]
    for out in (loo, split, engine):
        check(out, "cli/eval")


def test_json_tune(world: World) -> None:
    grid = ["--thresholds", "0.1,0.5", "--alphas", "1,2", "--json"]
    to_dir = cli_json("tune", "-f", world.npz, "-o", world.root / "tuned", *grid)
    ward = cli_json("tune", "-f", world.npz, "-o", world.root / "tuned-ward", "--builder", "ward", *grid)
    assert ward["best_threshold"] is None
    collection = cli_json("tune", "-c", "feats", "--data-dir", world.store, *grid)
    assert collection["reassigned"] == 150
    for out in (to_dir, ward, collection):
        check(out, "cli/tune")


def test_json_train(world: World) -> None:
    out = cli_json("train", world.images, "-o", world.root / "c.pt", "--model", "cifar_resnet20", "--weights", "random",
                   "--epochs", "1", "--batch-size", "8", "--image-size", "16", *EMBED, "--json")  # fmt: skip
    check(out, "cli/train")


@pytest.mark.slow
def test_json_demo(tmp_path: Path) -> None:
    out = cli_json("demo", "--workdir", tmp_path / "digits", "--data-dir", tmp_path / "store", "--json")
    check(out, "cli/demo")


@pytest.fixture(scope="module")
def app_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An application's collection (named vectors, its own payload) on the embedded engine."""
    from hierqdrant.store.engines import EdgeEngine
    from tests.store import application

    store = tmp_path_factory.mktemp("app")
    engine = EdgeEngine(store)
    application.build(engine, "shop", application.make_points(60, seed=0, no_image_every=20))
    engine.close()
    return store


def test_json_attach(app_store: Path) -> None:
    at = ["--data-dir", app_store, "--json"]
    dry = cli_json("attach", "shop", "--vector", "image", "--label-key", "category", "--dry-run", *at)
    assert dry["dry_run"] and dry["state"] is None
    first = cli_json("attach", "shop", "--vector", "image", "--label-key", "category", "-t", "0.2", *at)
    assert first["mode"] == "attach" and first["without_vector"] == 3
    update = cli_json("attach", "shop", "--update", *at)
    refit = cli_json("attach", "shop", "--refit", "--alpha", "2", *at)
    assert refit["previous_model_id"] == first["model_id"] != refit["model_id"]
    for out in (dry, first, update, refit):
        check(out, "cli/attach")
    listed = cli_json("info", *at)  # an attached collection is listed (its dims: the attached vector's)
    check(listed, "cli/info")
    assert [(c["collection"], c["dims"], c["model_id"]) for c in listed["collections"]] == [
        ("shop", 16, refit["model_id"])
    ]


def test_json_detach(app_store: Path) -> None:
    at = ["--data-dir", app_store, "--json"]
    cli_json("attach", "shop", "--vector", "image", "--label-key", "category", *at)
    dry = cli_json("detach", "shop", "--dry-run", *at)
    gone = cli_json("detach", "shop", *at)
    assert dry["points"] == gone["points"] == 57 and gone["indexes"] == ["hq.ancestors", "hq.leaf", "hq.model"]
    for out in (dry, gone):
        check(out, "cli/detach")


# ---------------------------------------------------------------------------------------------------------
# what is stored: the payload of every point and the model info


def _check_stored(engine: Any, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Check the model info and every point's payload of ``name``; returns (info, payloads)."""
    info = engine.read_info(name)
    check(info, "model-info")
    key = info["payload_key"]
    payloads = [r.payload for batch in engine.scroll(name, with_vectors=False) for r in batch]
    assert len(payloads) == engine.count(name) > 0
    for payload in payloads:
        if key == "hq":
            check(payload, "payload")
        else:  # another namespace: the same object under the collection's key
            assert "hq" not in payload
            check(payload[key], "payload", pointer="/$defs/hq")
        hq = payload[key]
        assert hq["model"] == info["model_id"] and hq["ancestors"][0] == hq["leaf"]
    return info, payloads


def test_payload_and_model_info_on_the_embedded_engine(world: World) -> None:
    from hierqdrant.store.engines import EdgeEngine

    engine = EdgeEngine(world.store)
    try:
        seen: dict[str, list[dict[str, Any]]] = {}
        for name in ("pics", "feats", "custom"):
            info, seen[name] = _check_stored(engine, name)
            assert info["extractor"]["name"] == ("pixels" if name == "pics" else "features-file")
    finally:
        engine.close()
    pics = [p["hq"] for p in seen["pics"]]
    assert any("label" in hq and "split" in hq for hq in pics)
    assert any("label" not in hq and "split" not in hq for hq in pics)  # the unlabelled images
    assert all("meta" in p for p in seen["custom"])
    listed = cli_json("info", "--data-dir", world.store, "--json")["collections"]
    assert {c["collection"]: c["model_id"] for c in listed}["pics"] == pics[0]["model"]


def test_payload_and_model_info_through_qdrant_client(world: World) -> None:
    from qdrant_client import QdrantClient

    from hierqdrant.core.model import HierarchyModel
    from hierqdrant.store.collection import create_collection, upsert_points
    from hierqdrant.store.engines import QdrantEngine

    data = FeatureSet.load(world.npz)
    assert data.labels is not None and data.paths is not None
    model = HierarchyModel.fit(data.features, data.labels, class_names=data.classes)
    engine = QdrantEngine(QdrantClient(":memory:"))
    try:
        create_collection(engine, "birds", model)
        upsert_points(engine, "birds", model, data.features, data.paths, labels=data.labels, splits=data.splits,
                      payloads=[{"shop": "north"} for _ in data.paths])  # fmt: skip
        info, payloads = _check_stored(engine, "birds")
    finally:
        engine.close()
    assert info["extractor"] == {} and payloads[0]["shop"] == "north"


def test_the_hq_namespace_is_closed_and_outputs_are_checked_strictly(world: World) -> None:
    good = {"path": "a.png", "shop": "north", "hq": {"leaf": 1, "ancestors": [1, 5], "model": "0123456789abcdef"}}
    check(good, "payload")
    bad = [
        {**good, "hq": {**good["hq"], "colour": "red"}},  # an undeclared key inside hq
        {**good, "hq": {"leaf": 1, "ancestors": [1, 5]}},  # no model
        {**good, "hq": {**good["hq"], "model": "not-an-id"}},
        {**good, "hq": {**good["hq"], "ancestors": []}},
        {"path": "a.png"},  # no namespace
    ]
    for payload in bad:
        assert errors(payload, "payload", strict=False), payload
    # Published schemas accept a key that v1 may gain; the tests' strict mode does not.
    grown = {**world.ingested[0], "new_key": 1}
    assert not errors(grown, "cli/ingest", strict=False)
    assert errors(grown, "cli/ingest")
    nested = {**world.ingested[0], "skipped": [{"path": "x", "reason": "y", "new_key": 1}]}
    assert errors(nested, "cli/ingest") and not errors(nested, "cli/ingest", strict=False)
