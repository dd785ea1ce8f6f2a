"""Training: the recipe runs, checkpoints load with weights_only, resume continues, embeddings are exact."""

from __future__ import annotations

import json
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
    base = dict(model="cifar_resnet20", weights="random", epochs=1, batch_size=8, image_size=16, device="cpu")
    base.update(workers=0, lr=0.05)
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
    args = ["train", str(src), "-o", str(out), "--model", "cifar_resnet20", "--weights", "random", "--epochs", "1",
            "--batch-size", "8", "--image-size", "16", "--workers", "0", "--device", "cpu", "--json"]  # fmt: skip
    res = runner.invoke(app, [*args, "--objective", "semantic", "--taxonomy", str(tax)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["best_epoch"] == 1
    feats = tmp_path / "sem.npz"
    res = runner.invoke(app, ["embed", str(src), "-o", str(feats), "--model", "cifar_resnet20", "--weights", str(out),
                              "--image-size", "16", "--workers", "0", "--device", "cpu", "--head", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["dims"] == 3  # the class-embedding space


# -- resume from every point (issue 12): a kill, then the same command again --------------------------------


def _train_args(src: Path, out: Path, *extra: str) -> list[str]:
    return ["train", str(src), "-o", str(out), "--model", "cifar_resnet20", "--weights", "random", "--epochs", "3",
            "--batch-size", "8", "--image-size", "16", "--workers", "0", "--device", "cpu", "--seed", "3",
            *extra]  # fmt: skip


def _killed(args: list[str], boundary: str) -> None:
    """Run ``python -m hierqdrant <args>`` in a child process that is killed at a write boundary."""
    import os
    import subprocess
    import sys

    from hierqdrant.core.faults import FAULT_ENV, FAULT_EXIT

    env = {**os.environ, FAULT_ENV: boundary, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "hierqdrant", *args], env=env, capture_output=True, timeout=300)
    assert done.returncode == FAULT_EXIT, done.stderr.decode()


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_a_train_killed_after_an_epoch_resumes_with_the_same_command(tmp_path: Path) -> None:
    """Killed after epoch 1 of 3, the same command continues at epoch 2, says so, and ends where an
    uninterrupted run ends (each epoch's shuffle and augmentation follow from the seed and the epoch)."""
    from typer.testing import CliRunner

    from hierqdrant_cli import app

    src = make_folder(tmp_path / "imgs", classes=3, per_class=6, size=16)
    out = tmp_path / "ck.pt"
    _killed(_train_args(src, out), "after-train-epoch:1")
    assert torch.load(last_path(out), map_location="cpu", weights_only=True)["epoch"] == 1 and out.is_file()

    res = CliRunner().invoke(app, _train_args(src, out))
    assert res.exit_code == 0, res.output
    assert f"resuming from {last_path(out)} after epoch 1 of 3" in " ".join(res.stderr.split())  # rich wraps
    assert f"resumed after epoch 1 from {last_path(out)}" in " ".join(res.stdout.split())
    last = torch.load(last_path(out), map_location="cpu", weights_only=True)
    assert last["epoch"] == 3 and [h["epoch"] for h in last["history"]] == [1, 2, 3]

    whole = tmp_path / "whole.pt"
    train(src, whole, _cfg(epochs=3, seed=3), progress=False)
    for name, tensor in _weights(last_path(whole)).items():
        assert torch.allclose(tensor.float(), _weights(last_path(out))[name].float(), atol=1e-5), name

    again = CliRunner().invoke(app, [*_train_args(src, out), "--json"])  # a finished run: nothing to redo
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert summary["resumed_after"] == 3 and [e["epoch"] for e in summary["epochs"]] == [1, 2, 3]


@pytest.mark.slow
def test_a_kill_between_the_last_and_the_best_checkpoint_is_repaired(tmp_path: Path) -> None:
    """``<out>.last`` is written first; killed before ``<out>``, the rerun writes ``<out>`` from it."""
    src = make_folder(tmp_path / "imgs", classes=3, per_class=6, size=16)
    out = tmp_path / "ck.pt"
    _killed([*_train_args(src, out), "--json"], "after-train-last:1")
    assert last_path(out).is_file() and not out.exists()
    result = train(src, out, _cfg(epochs=3, seed=3), progress=False)
    assert result.resumed_after == 1 and [e.epoch for e in result.history] == [1, 2, 3]
    best = torch.load(out, map_location="cpu", weights_only=True)
    assert best["epoch"] == result.best_epoch and "optimizer" not in best
    assert result.to_dict()["resumed_after"] == 1


def test_a_rerun_with_other_settings_is_refused_unless_told(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "imgs", classes=3, per_class=6, size=16)
    out = tmp_path / "ck.pt"
    train(src, out, _cfg(epochs=1), progress=False)
    with pytest.raises(InputError) as err:
        train(src, out, _cfg(epochs=2, lr=0.1), progress=False)
    assert str(err.value) == (
        f"{last_path(out)} holds a run with other settings (lr 0.05 → 0.1) — rerun with its settings to finish it, "
        "--resume to continue it with these, or --fresh to start over"
    )
    assert train(src, out, _cfg(epochs=2, lr=0.1, resume=True), progress=False).resumed_after == 1
    fresh = train(src, out, _cfg(epochs=1, lr=0.1, resume=False), progress=False)
    assert fresh.resumed_after == 0 and [e.epoch for e in fresh.history] == [1]
    assert train(src, out, _cfg(epochs=2, lr=0.1), progress=False).resumed_after == 1  # same settings, more epochs
    last_path(out).write_bytes(b"PK\x03\x04 cut off")
    with pytest.raises(InputError, match=r"is not a readable checkpoint .* — pass --fresh to start over"):
        train(src, out, _cfg(epochs=2, lr=0.1), progress=False)


# -- issue 11: each epoch as it ends, and --augment ------------------------------------------------------------


def test_each_epoch_is_reported_as_it_ends(tmp_path: Path) -> None:
    """``on_epoch`` runs once per epoch right after its checkpoints are written (not all at the end); the CLI
    prints a row per epoch on stdout, and under --json a line per epoch on stderr beside one JSON document."""
    from typer.testing import CliRunner

    from hierqdrant_cli import app

    src = make_folder(tmp_path / "imgs", classes=3, per_class=6, size=16)
    out = tmp_path / "ck.pt"
    seen: list[tuple[int, int, int, bool]] = []

    def on_epoch(stats, best_epoch: int, resumed: bool) -> None:
        on_disk = torch.load(last_path(out), map_location="cpu", weights_only=True)["epoch"]
        seen.append((stats.epoch, on_disk, best_epoch, resumed))

    result = train(src, out, _cfg(epochs=2), progress=False, on_epoch=on_epoch)
    assert [(e, disk, r) for e, disk, _, r in seen] == [(1, 1, False), (2, 2, False)]
    assert seen[-1][2] == result.best_epoch
    seen.clear()
    train(src, out, _cfg(epochs=3), progress=False, on_epoch=on_epoch)  # resumed: the earlier epochs first
    assert [(e, r) for e, _, _, r in seen] == [(1, True), (2, True), (3, False)]

    args = [*_train_args(src, tmp_path / "cli.pt")[:-2], "--seed", "0", "--epochs", "2"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["epoch", "loss", "train", "acc", "val", "acc", "images/s", "seconds"]
    assert [line.split()[0] for line in lines[1:3]] == ["1", "2"] and lines[3].startswith("best: epoch")
    assert "┃" not in res.stdout  # no table drawn at the end any more

    res = CliRunner().invoke(app, [*args, "--fresh", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["epochs"][-1]["epoch"] == 2  # stdout: one JSON document
    epochs = [line for line in res.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"], res.stderr
    assert "val acc" in epochs[0]


def test_augment_choices_and_their_transforms() -> None:
    from PIL import Image

    from hierqdrant.vision.train import TrainAugment, check_augment, default_augment

    assert check_augment(None) is None and check_augment(" NONE ") == "none"
    assert check_augment("flip,crop") == check_augment("crop, flip,flip") == "crop,flip"
    for bad in ("flop", "", "none,flip"):
        with pytest.raises(InputError, match="--augment"):
            check_augment(bad)
    assert default_augment(32) == "crop,flip" and default_augment(224) == "flip,rotate"
    assert TrainAugment(16).augment == "crop,flip" and TrainAugment(224).augment == "flip,rotate"

    ramp = np.tile(np.arange(16, dtype=np.uint8) * 16, (16, 1))  # left dark, right bright: flips show
    img = Image.fromarray(np.repeat(ramp[:, :, None], 3, axis=2))
    still = TrainAugment(16, "none")
    flip = TrainAugment(16, "flip")
    torch.manual_seed(0)
    plain = still(img)
    assert all(torch.equal(still(img), plain) for _ in range(10))  # none: the same pixels every time
    flipped = plain.flip(-1)
    outs = [flip(img) for _ in range(20)]
    assert all(torch.equal(o, plain) or torch.equal(o, flipped) for o in outs)
    assert any(torch.equal(o, flipped) for o in outs) and any(torch.equal(o, plain) for o in outs)


def test_augment_is_a_run_setting_that_resume_compares(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hierqdrant_cli import app

    src = make_folder(tmp_path / "imgs", classes=3, per_class=6, size=16)
    out = tmp_path / "ck.pt"
    first = train(src, out, _cfg(epochs=1, augment="none"), progress=False)
    assert first.augment == "none" and first.to_dict()["augment"] == "none"
    with pytest.raises(InputError, match=r"augment 'none' → 'crop,flip'"):
        train(src, out, _cfg(epochs=2), progress=False)  # the default (crop + flip at 16 px) is another run
    again = train(src, out, _cfg(epochs=2, augment="none"), progress=False)
    assert again.resumed_after == 1
    # the recipe's default and the same augmentation named are the same run
    other = tmp_path / "default.pt"
    assert train(src, other, _cfg(epochs=1), progress=False).augment == "crop,flip"
    assert train(src, other, _cfg(epochs=2, augment="flip,crop"), progress=False).resumed_after == 1
    res = CliRunner().invoke(app, _train_args(src, tmp_path / "x.pt", "--augment", "flip,upside-down"))
    assert res.exit_code == 2 and "--augment 'flip,upside-down'" in res.stderr
    assert not (tmp_path / "x.pt").exists()
