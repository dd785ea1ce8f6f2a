"""JPEG decoding on the model's device (issue 17): the same files embedded, the same files skipped with the
same reasons, and pixels and features close to the workers' Pillow path. On a machine without a GPU the same
code runs with torchvision's CPU decoder (``decode="device"`` on ``cpu``)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hierqdrant.core.errors import InputError
from hierqdrant.vision.backbones import load_backbone
from hierqdrant.vision.device_decode import DeviceDecoder, EncodedDataset, collate_encoded, is_jpeg
from hierqdrant.vision.extract import extract_features
from hierqdrant.vision.preprocessing import ImageTransform
from tests.vision.test_extract import _bad_files, _converted


def _photos(folder: Path) -> list[Path]:
    """Smooth JPEGs of several shapes (resized and cropped to 32), one PNG, one JPEG named .png."""
    yy, xx = np.mgrid[0:48, 0:64] / 64.0
    out = []
    for i, (h, w) in enumerate([(32, 32), (48, 64), (64, 48), (40, 40), (33, 70)]):
        img = np.stack([xx[:h, :w] * (200 - 20 * i), yy[:h, :w] * 255, (xx + yy)[:h, :w] * 90 + 10 * i], axis=2)
        img = np.pad(img, ((0, max(0, h - img.shape[0])), (0, max(0, w - img.shape[1])), (0, 0)), mode="edge")
        p = folder / f"photo{i}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(p, quality=95)
        out.append(p)
    Image.open(out[1]).save(folder / "lossless.png")
    buf = io.BytesIO()
    Image.open(out[2]).save(buf, "JPEG", quality=95)
    (folder / "misnamed.png").write_bytes(buf.getvalue())
    return [*out, folder / "lossless.png", folder / "misnamed.png"]


def test_device_decoding_embeds_and_skips_the_same_files_as_the_workers(tmp_path: Path) -> None:
    paths = [*_photos(tmp_path), *_converted(tmp_path), *_bad_files(tmp_path).values()]
    backbone = load_backbone("cifar_resnet20", "random")
    common = {"device": "cpu", "batch_size": 4, "num_workers": 0, "progress": False}
    workers = extract_features(paths, backbone, decode="workers", **common)  # type: ignore[arg-type]
    device = extract_features(paths, backbone, decode="device", **common)  # type: ignore[arg-type]
    assert device.indices.tolist() == workers.indices.tolist()
    assert sorted((s.path, s.reason) for s in device.skipped) == sorted((s.path, s.reason) for s in workers.skipped)
    assert len(workers.skipped) == 5  # truncated, not an image, too small, symlink loop, missing
    a, b = workers.features, device.features
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99, cos  # another JPEG decoder and resize: close, not bit-equal


def test_device_pixels_are_close_to_pillows(tmp_path: Path) -> None:
    paths = [str(p) for p in _photos(tmp_path)]
    transform = ImageTransform(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    data = EncodedDataset(paths, transform)
    batch = collate_encoded([data[i] for i in range(len(paths))])
    assert len(batch.jpegs) == 6 and len(batch.pixels) == 1  # the misnamed JPEG is read as a JPEG
    assert is_jpeg(Path(paths[-1]).read_bytes()) and not is_jpeg(Path(paths[-2]).read_bytes())
    indices, images, failed = DeviceDecoder(transform, torch.device("cpu"), paths)(batch)
    assert failed == [] and images is not None and indices.tolist() == list(range(len(paths)))
    for i, path in enumerate(paths):
        want = transform.to_uint8(Image.open(path).convert("RGB")).to(torch.int16)
        diff = (images[i].to(torch.int16) - want).abs().float()
        assert images[i].shape == (3, 32, 32)
        assert diff.mean() < 4.0, (path, diff.mean())  # a few levels of 255 at most, on average


def test_device_decoding_needs_the_standard_transform_and_no_hook(tmp_path: Path) -> None:
    paths = _photos(tmp_path)[:2]
    with pytest.raises(InputError, match="image hook"):
        extract_features(paths, load_backbone("cifar_resnet20", "random"), device="cpu", decode="device",
                         image_hook=lambda img, i: img, progress=False, num_workers=0)  # fmt: skip
    with pytest.raises(InputError, match="standard image transform"):
        extract_features(paths, load_backbone("pixels", image_size=4), device="cpu", decode="device",
                         progress=False, num_workers=0)  # fmt: skip
    with pytest.raises(InputError, match="unknown decode mode"):
        extract_features(paths, load_backbone("pixels", image_size=4), device="cpu", decode="gpu", progress=False)
    # auto on the CPU decodes in the workers: exactly the Pillow path.
    bb = load_backbone("cifar_resnet20", "random")
    auto = extract_features(paths, bb, device="cpu", progress=False, num_workers=0)
    pillow = extract_features(paths, bb, device="cpu", decode="workers", progress=False, num_workers=0)
    assert np.array_equal(auto.features, pillow.features)
