"""Training: the recipe runs, checkpoints load with weights_only, resume continues, embeddings are exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hierqdrant.core.errors import InputError
from hierqdrant.core.hierarchy import Hierarchy
from hierqdrant.vision import load_backbone
from hierqdrant.vision.train import TrainConfig, class_embeddings, last_path, train
from tests.cli.test_cli_ingest import make_folder


@pytest.fixture(autouse=True)
def _one_thread():
    # Two spinning torch threads on a loaded 2-core machine are far slower than one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cfg(**kw) -> TrainConfig:
    base = dict(model="cifar_resnet20", epochs=1, batch_size=8, image_size=16, device="cpu", workers=0, lr=0.05)
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_class_embeddings_have_the_tree_similarity() -> None:
    tree = Hierarchy(np.array([5, 5, 6, 7, 7, 6, 7, -1]), 5)
    phi = class_embeddings(tree)
    assert phi.shape == (5, 5)
    np.testing.assert_allclose(phi @ phi.T, 1 - tree.lca_height_matrix() / 3, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(phi, axis=1), 1.0)


def test_train_checkpoint_loads_resumes_and_feeds_ingest(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "imgs", classes=3, per_class=10, size=16)
    out = tmp_path / "ck.pt"
    first = train(src, out, _cfg(epochs=1), progress=False)
    assert first.best_epoch == 1 and len(first.history) == 1
    state = torch.load(out, map_location="cpu", weights_only=True)
    assert state["arch"] == "cifar_resnet20" and state["classes"] == ["class0", "class1", "class2"]
    # The checkpoint is an ordinary backbone checkpoint: ingest/embed load it (3 classes read off the file).
    bb = load_backbone("cifar_resnet20", str(out), image_size=16)
    assert bb.num_classes == 3
    assert torch.equal(bb.classifier.weight, state["state_dict"]["linear.weight"])  # type: ignore[union-attr]
    again = train(src, out, _cfg(epochs=2, resume=True), progress=False)
    assert [e.epoch for e in again.history] == [1, 2]
    assert torch.load(last_path(out), map_location="cpu", weights_only=True)["epoch"] == 2


def test_semantic_objective_trains_onto_class_embeddings(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "imgs", classes=3, per_class=6, size=16)
    tax = tmp_path / "tax.txt"
    tax.write_text("3 0\n3 1\n4 3\n4 2\n")
    result = train(src, tmp_path / "sem.pt", _cfg(objective="semantic", taxonomy=str(tax)), progress=False)
    state = torch.load(tmp_path / "sem.pt", map_location="cpu", weights_only=True)
    emb = state["class_embeddings"]
    assert state["objective"] == "semantic" and emb.shape[0] == 3
    assert torch.allclose(emb @ emb.T, torch.tensor([[1, 0.5, 0], [0.5, 1, 0], [0, 0, 1]], dtype=emb.dtype), atol=1e-6)
    assert 0.0 <= result.best_val_acc <= 1.0


def test_bad_input_is_refused_before_training(tmp_path: Path) -> None:
    one = make_folder(tmp_path / "one", classes=1, per_class=4)
    with pytest.raises(InputError, match="at least 2 classes"):
        train(one, tmp_path / "x.pt", _cfg(), progress=False)
    src = make_folder(tmp_path / "imgs", classes=2, per_class=4)
    broken = src / "class9"
    broken.mkdir()
    (broken / "a.png").write_text("not an image")
    with pytest.raises(InputError, match="no usable image"):
        train(src, tmp_path / "x.pt", _cfg(), progress=False)
    broken.joinpath("a.png").unlink()
    broken.rmdir()
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 3)}}, other)
    with pytest.raises(InputError, match="does not fit"):
        train(src, tmp_path / "x.pt", _cfg(weights=str(other)), progress=False)
    with pytest.raises(InputError, match="nothing to resume"):
        train(src, tmp_path / "fresh.pt", _cfg(resume=True), progress=False)
    with pytest.raises(InputError, match="taxonomy"):
        train(src, tmp_path / "x.pt", _cfg(objective="semantic"), progress=False)
    assert not (tmp_path / "x.pt").exists()


def test_cli_train_then_embed_the_semantic_head(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from hierqdrant_cli import app

    src = make_folder(tmp_path / "imgs", classes=3, per_class=6, size=16)
    tax = tmp_path / "tax.txt"
    tax.write_text("3 0\n3 1\n4 3\n4 2\n")
    out = tmp_path / "sem.pt"
    runner = CliRunner()
    args = ["train", str(src), "-o", str(out), "--model", "cifar_resnet20", "--epochs", "1", "--batch-size", "8",
            "--image-size", "16", "--workers", "0", "--device", "cpu", "--json"]
    res = runner.invoke(app, [*args, "--objective", "semantic", "--taxonomy", str(tax)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["best_epoch"] == 1
    feats = tmp_path / "sem.npz"
    res = runner.invoke(app, ["embed", str(src), "-o", str(feats), "--model", "cifar_resnet20", "--weights", str(out),
                              "--image-size", "16", "--workers", "0", "--device", "cpu", "--head", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["dims"] == 3  # the class-embedding space
