"""``train --objective gaussian`` (issue 15): the split grows the head, the checkpoint carries the sub-class map
(weights-only), a killed run resumes with its sub-classes, and ingest makes them the tree's leaves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hierqdrant.vision.gaussian_objective import GaussianConfig, batch_hard_triplet, read_subclasses, train_gaussian
from hierqdrant.vision.train import TrainConfig, last_path
from tests.schema_check import check
from tests.vision.test_train import _killed

COLOURS = {"mixed": [(220, 30, 30), (30, 30, 220)], "plain": [(30, 200, 30)]}  # "mixed" has two modes


def _folder(root: Path, per_mode: int = 24) -> Path:
    rng = np.random.default_rng(0)
    for name, modes in COLOURS.items():
        (root / name).mkdir(parents=True)
        for m, colour in enumerate(modes):
            for i in range(per_mode * (2 // len(modes))):
                img = np.clip(np.asarray(colour) + rng.normal(0, 12, size=(8, 8, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / name / f"{m}_{i:03d}.png")
    return root


def _cfg(**kw: object) -> TrainConfig:
    base: dict[str, object] = dict(model="cifar_resnet20", weights="random", epochs=2, batch_size=16, image_size=8)
    base.update(device="cpu", workers=0, lr=0.05, seed=3, objective="gaussian")
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_batch_hard_triplet() -> None:
    f = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, 4.0]])
    y = torch.tensor([0, 0, 1, 1])
    # anchor 0: hardest positive 1, hardest negative 3 → relu(1 − 3 + 1) = 0; anchor 2: relu(1 − √10 + 1) = 0
    assert float(batch_hard_triplet(f, y, 1.0)) == 0.0
    # margin 3: anchors 0…3 give relu(1 − 3 + 3), relu(1 − √10 + 3), relu(1 − 3 + 3), relu(1 − 4 + 3)
    assert float(batch_hard_triplet(f, y, 3.0)) == pytest.approx((1 + (4 - 10**0.5) + 1 + 0) / 4, abs=1e-6)
    assert float(batch_hard_triplet(f, torch.tensor([0, 1, 2, 3]), 1.0)) == 0.0  # no positives


def test_the_split_grows_the_head_and_the_checkpoint_carries_the_map(tmp_path: Path) -> None:
    src = _folder(tmp_path / "imgs")
    out = tmp_path / "g.pt"
    g = GaussianConfig(split_every=1, max_splits=1, min_size=4)
    result = train_gaussian(src, out, _cfg(), g, progress=False)
    assert result.subclass_of == [0, 0, 1]  # the two-mode class is split, the plain one kept
    assert [e.subclasses for e in result.history] == [3, 3]  # type: ignore[attr-defined]
    assert result.splits == [{"epoch": 1, "subclasses": 3, "candidates": result.splits[0]["candidates"]}]
    state = torch.load(out, map_location="cpu", weights_only=True)  # no pickle
    assert state["subclass_of"] == [0, 0, 1] and state["subclasses"] == ["mixed~1", "mixed~2", "plain"]
    assert state["classes"] == ["mixed", "plain"] and state["state_dict"]["linear.weight"].shape[0] == 3
    assert read_subclasses(out) == (["mixed", "plain"], [0, 0, 1])
    summary = result.to_dict()
    assert summary["subclasses"] == 3 and summary["epochs"][0]["subclasses"] == 3


@pytest.mark.slow
def test_a_killed_gaussian_run_resumes_with_its_sub_classes(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hierqdrant_cli import app

    src = _folder(tmp_path / "imgs")
    out = tmp_path / "g.pt"
    args = ["train", str(src), "-o", str(out), "--model", "cifar_resnet20", "--weights", "random", "--epochs", "3",
            "--batch-size", "16", "--image-size", "8", "--workers", "0", "--device", "cpu", "--seed", "3",
            "--objective", "gaussian", "--split-every", "1", "--max-splits", "1"]  # fmt: skip
    _killed(args, "after-train-epoch:1")
    killed = torch.load(last_path(out), map_location="cpu", weights_only=True)
    assert killed["epoch"] == 1 and killed["subclass_of"] == [0, 0, 1]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "with 3 sub-classes of 2 classes" in " ".join(res.stderr.split())
    assert "sub-classes" in res.stdout.splitlines()[0] and "3 sub-classes of 2 classes" in res.stdout  # the table
    last = torch.load(last_path(out), map_location="cpu", weights_only=True)
    assert last["epoch"] == 3 and last["state_dict"]["linear.weight"].shape[0] == 3
    assert torch.equal(last["subclass_labels"], killed["subclass_labels"])

    again = CliRunner().invoke(app, [*args, "--json"])  # finished: nothing to redo, the summary from the file
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    check(summary, "cli/train")
    assert summary["resumed_after"] == 3 and summary["subclass_of"] == [0, 0, 1]
    assert [e["subclasses"] for e in summary["epochs"]] == [3, 3, 3] and len(summary["splits"]) == 1


@pytest.mark.slow
def test_ingest_makes_the_checkpoint_sub_classes_leaves(tmp_path: Path) -> None:
    from hierqdrant.pipelines.ingest import IngestOptions, ingest
    from hierqdrant.store.engines import connect

    src = _folder(tmp_path / "imgs")
    out = tmp_path / "g.pt"
    # three epochs on the sub-class labels after the split teach the head to tell the sub-classes apart
    train_gaussian(src, out, _cfg(epochs=4), GaussianConfig(split_every=1, max_splits=1, min_size=4), progress=False)
    engine = connect(data_dir=tmp_path / "db")
    opts = IngestOptions(backbone="cifar_resnet20", weights=str(out), image_size=8, device="cpu", num_workers=0)
    opts.cache_dir = tmp_path / "cache"
    opts.progress = False
    result = ingest(src, engine, "c", opts)
    model = result.model
    assert model.subclasses is not None and model.class_names == ["mixed", "plain"]
    assert model.leaf_names == ["mixed~1", "mixed~2", "plain"] and "mixed" in model.hierarchy.node_names
    seen: dict[str, set[int]] = {}
    for batch in engine.scroll("c"):
        for r in batch:
            hq = r.payload["hq"]
            seen.setdefault(hq["label"], set()).add(hq["leaf"])
            mode = Path(r.payload["path"]).name[0]
            if hq["label"] == "mixed":  # each mode of the split class lands in one sub-class of it
                seen.setdefault(f"mode{mode}", set()).add(hq["leaf"])
    assert set(seen) == {"mixed", "plain", "mode0", "mode1"}
    assert seen["mixed"] == {0, 1} and seen["plain"] == {2}
    assert len(seen["mode0"]) == 1 and seen["mode0"] != seen["mode1"]
    # the network's own head scores the sub-classes: it is the query classifier as is (K' rows)
    opts.query_classifier = "head"
    head = ingest(src, engine, "h", opts).model
    assert head.classifier is not None and head.classifier.num_classes == 3 and head.subclasses is not None
    # --tune searches PCA × classifier × t × α with the checkpoint's sub-classes as the leaves
    opts.query_classifier, opts.tune = "tied", True
    tuned = ingest(src, engine, "t", opts).model
    assert tuned.leaf_names == model.leaf_names and "tuning" in tuned.info
    assert tuned.info["tuning"]["leaf_accuracy"] > 0.9  # by class, as the validation images' sub-class is unknown
    engine.close()
    # a query names its sub-class leaf (the table's leaf column too), and its hits' labels stay classes
    from typer.testing import CliRunner

    from hierqdrant_cli import app

    store = ["-c", "c", "--data-dir", str(tmp_path / "db"), "--explain", "-k", "5"]
    for image, leaf in (("plain/0_000.png", "plain │"), ("mixed/1_000.png", "mixed~")):  # plain: leaf 2 of 2 classes
        text = CliRunner().invoke(app, ["query", str(src / image), *store])
        assert text.exit_code == 0, text.output
        assert leaf in text.stdout
    common = [str(src / "mixed/1_000.png"), *store]
    out = json.loads(CliRunner().invoke(app, ["query", *common, "--json"]).stdout)
    hits = out["queries"][0]["hits"]
    assert {h["payload"]["hq"]["label"] for h in hits} == {"mixed"}
    assert hits[0]["explanation"]["query_leaf_name"].startswith("mixed~")
