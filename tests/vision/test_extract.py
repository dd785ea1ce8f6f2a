"""Batched extraction: bad files are skipped with reasons, workers don't change results, callbacks."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from rich.console import Console

from hierqdrant.core.errors import InputError
from hierqdrant.vision.backbones import load_backbone
from hierqdrant.vision.extract import Extracted, extract_features, resolve_device


def _good_images(folder: Path, n: int, size: int = 32) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"ok_{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def _bad_files(folder: Path) -> dict[str, Path]:
    """One file for every failure mode, keyed by the word its reason must contain."""
    jpg = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(jpg, "JPEG")
    (folder / "trunc.jpg").write_bytes(jpg.getvalue()[: len(jpg.getvalue()) // 2])
    (folder / "text.jpg").write_text("this is not a JPEG")
    Image.new("RGB", (1, 1)).save(folder / "pixel.png")
    os.symlink(folder / "loop_b.png", folder / "loop_a.png")
    os.symlink(folder / "loop_a.png", folder / "loop_b.png")
    return {
        "truncated": folder / "trunc.jpg",
        "not an image": folder / "text.jpg",
        "too small": folder / "pixel.png",
        "symlink loop": folder / "loop_a.png",
        "not found": folder / "missing.png",
    }


def _converted(folder: Path) -> list[Path]:
    """Odd but valid modes: all must be converted, none skipped."""
    out = []
    Image.new("L", (20, 20), 100).save(folder / "gray.png")
    Image.new("CMYK", (20, 20), (10, 200, 30, 0)).save(folder / "cmyk.jpg")
    Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16)).save(folder / "deep.png")
    Image.new("RGBA", (20, 20), (0, 0, 255, 100)).save(folder / "alpha.png")
    for name in ("gray.png", "cmyk.jpg", "deep.png", "alpha.png"):
        out.append(folder / name)
    return out


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(InputError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("gpu-please")


def test_bad_files_are_skipped_and_the_run_goes_on(tmp_path: Path) -> None:
    good = _good_images(tmp_path, 3)
    bad = _bad_files(tmp_path)
    odd = _converted(tmp_path)
    paths: list[Path] = [good[0], *bad.values(), good[1], *odd, good[2]]
    bb = load_backbone("cifar_resnet20", "random")
    ex = extract_features(paths, bb, device="cpu", batch_size=3, num_workers=0, progress=False)
    ok = [i for i, p in enumerate(paths) if p not in bad.values()]
    assert ex.indices.tolist() == ok
    assert ex.features.shape == (len(ok), 64) and ex.features.dtype == np.float32
    assert np.isfinite(ex.features).all()
    reasons = {s.path: s.reason for s in ex.skipped}
    assert set(reasons) == {str(p) for p in bad.values()}
    for word, p in bad.items():
        assert word in reasons[str(p)], (word, reasons[str(p)])


def test_workers_give_the_same_features_and_on_batch_covers(tmp_path: Path) -> None:
    paths = _good_images(tmp_path, 10)
    paths.insert(4, tmp_path / "gone.png")  # a failure inside a batch
    bb = load_backbone("cifar_resnet20", "random")
    calls: list[tuple[np.ndarray, np.ndarray]] = []
    ex0 = extract_features(paths, bb, device="cpu", batch_size=4, num_workers=0, progress=False)
    ex2 = extract_features(
        paths,
        bb,
        device="cpu",
        batch_size=4,
        num_workers=2,
        progress=False,
        on_batch=lambda i, f: calls.append((i.copy(), f.copy())),
    )
    np.testing.assert_array_equal(ex0.indices, ex2.indices)
    np.testing.assert_allclose(ex0.features, ex2.features, rtol=0, atol=1e-6)
    assert len(calls) == 3  # ceil(11 / 4) batches
    np.testing.assert_array_equal(np.concatenate([c[0] for c in calls]), ex2.indices)
    np.testing.assert_array_equal(np.concatenate([c[1] for c in calls]), ex2.features)
    assert [c[1].shape[1] for c in calls] == [64, 64, 64]
    assert ex2.indices.tolist() == [0, 1, 2, 3, 5, 6, 7, 8, 9, 10]
    assert [s.path for s in ex2.skipped] == [str(tmp_path / "gone.png")]
    # The features are those of the network applied to each transformed image.
    x = torch.stack([bb.transform(Image.open(paths[0]).convert("RGB"))])
    with torch.no_grad():
        np.testing.assert_allclose(bb.module(x).numpy()[0], ex0.features[0], rtol=1e-5, atol=1e-5)


def _invert_odd(img: Image.Image, index: int) -> Image.Image:
    return ImageOps.invert(img) if index % 2 else img


def test_image_hook_gets_the_index(tmp_path: Path) -> None:
    p = _good_images(tmp_path, 1)[0]
    bb = load_backbone("pixels", image_size=4)
    ex = extract_features([p, p], bb, device="cpu", num_workers=2, progress=False, image_hook=_invert_odd)
    np.testing.assert_allclose(ex.features[0] + ex.features[1], np.ones(16), atol=1e-6)


def test_pixels_features_are_the_pixels(tmp_path: Path) -> None:
    arr = (np.arange(64).reshape(8, 8) * 3).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "digit.png")
    ex = extract_features([tmp_path / "digit.png"], load_backbone("pixels"), device="cpu", progress=False)
    np.testing.assert_allclose(ex.features[0], arr.reshape(-1) / 255.0, atol=1e-7)


def test_empty_and_all_bad(tmp_path: Path) -> None:
    bb = load_backbone("pixels")
    empty = extract_features([], bb, device="cpu", progress=False)
    assert isinstance(empty, Extracted) and empty.features.shape == (0, 64) and len(empty) == 0
    (tmp_path / "x.jpg").write_text("nope")
    seen: list[int] = []
    bad = extract_features(
        [tmp_path / "x.jpg"], bb, device="cpu", progress=False, on_batch=lambda i, f: seen.append(len(i))
    )
    assert bad.features.shape == (0, 64) and bad.indices.shape == (0,) and len(bad.skipped) == 1
    assert seen == [0]


def test_progress_bar_on_a_non_tty_console(tmp_path: Path) -> None:
    paths = _good_images(tmp_path, 5, size=8)
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=100)
    ex = extract_features(paths, load_backbone("pixels"), device="cpu", batch_size=2, num_workers=0, console=console)
    assert len(ex) == 5
    out = buf.getvalue()
    assert "5/5" in out and "img/s" in out


def test_argument_checks(tmp_path: Path) -> None:
    bb = load_backbone("pixels")
    with pytest.raises(InputError):
        extract_features([tmp_path / "a.png"], bb, batch_size=0, device="cpu")
    with pytest.raises(InputError):
        extract_features([tmp_path / "a.png"], bb, num_workers=-1, device="cpu")
