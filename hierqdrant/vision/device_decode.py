"""JPEG decoding on the device: the DataLoader workers only read bytes, the GPU decodes and resizes.

On a GPU machine the CPU's JPEG decoding, not the network, limits ingest (BENCHMARKS §3: embedding ran at
0.16× the model-only rate on an H200). Here the workers read each file's bytes; the main process decodes a
batch of JPEGs at once with ``torchvision.io.decode_jpeg(..., device=cuda)`` (nvJPEG) and applies the
transform's geometry — Resize(shorter side, antialias) → CenterCrop — on the device, so only compressed
bytes cross PCIe.

What stays on the CPU, exactly as the workers' path does it (:func:`~hierqdrant.vision.images.load_rgb` and
:meth:`ImageTransform.to_uint8`): every file that is not a JPEG (PNG, WebP, …), and any JPEG the device
decoder refuses (CMYK, progressive variants nvJPEG lacks, a truncated file) — so a corrupt file is skipped
with the same reason on both paths. The pixels are close to the CPU path's, not identical: nvJPEG's IDCT
and the tensor resize round differently from libjpeg and Pillow (a few levels of 255; DESIGN.md §4.6).

The same code runs with ``device="cpu"`` (torchvision's CPU decoder), which is how the tests exercise it on
a machine without a GPU.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.io import ImageReadMode, decode_jpeg

from hierqdrant.vision.images import (
    MIN_SIDE,
    ImageDecodeError,
    header_pixels_reason,
    load_rgb,
    open_image_file,
    os_error_reason,
)
from hierqdrant.vision.preprocessing import ImageTransform

__all__ = ["EncodedBatch", "EncodedDataset", "DeviceDecoder", "collate_encoded", "is_jpeg"]

_JPEG_MAGIC = b"\xff\xd8\xff"


def is_jpeg(data: bytes | bytearray | memoryview) -> bool:
    """Whether the bytes start like a JPEG file (SOI marker), whatever the file is called."""
    return bytes(data[:3]) == _JPEG_MAGIC


#: (index, "jpeg" with the file's bytes | "pixels" with the CPU path's uint8 image | None, tensor, reason)
Sample = tuple[int, str | None, "torch.Tensor | None", str | None]


class EncodedDataset(Dataset[Sample]):
    """A JPEG's bytes as a uint8 tensor; any other image decoded and transformed as the worker path does."""

    def __init__(self, paths: Sequence[str | Path], transform: ImageTransform) -> None:
        self.paths = [str(p) for p in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Sample:
        path = self.paths[index]
        try:
            with open_image_file(path) as fh:  # a FIFO or device named .jpg is refused, never waited on
                data = fh.read()
        except ImageDecodeError as exc:
            return index, None, None, exc.reason
        except OSError as exc:
            return index, None, None, os_error_reason(exc)
        if is_jpeg(data):
            big = header_pixels_reason(data)  # a huge JPEG is skipped, not decoded on the device
            if big is not None:
                return index, None, None, big
            return index, "jpeg", torch.frombuffer(bytearray(data), dtype=torch.uint8), None
        return cpu_sample(index, path, self.transform)


def cpu_sample(index: int, path: str, transform: ImageTransform) -> Sample:
    """The worker path for one file: decode with Pillow, resize and crop to uint8."""
    try:
        img = load_rgb(path)
    except ImageDecodeError as exc:
        return index, None, None, exc.reason
    try:
        return index, "pixels", transform.to_uint8(img), None
    except (OSError, ValueError) as exc:
        return index, None, None, f"transform failed ({exc})"


@dataclass
class EncodedBatch:
    """A batch as the workers left it: JPEG bytes, CPU-decoded images, and the files that failed."""

    jpegs: list[tuple[int, torch.Tensor]]
    pixels: list[tuple[int, torch.Tensor]]
    failed: list[tuple[int, str]]


def collate_encoded(samples: list[Sample]) -> EncodedBatch:
    batch = EncodedBatch([], [], [])
    for index, kind, tensor, reason in samples:
        if kind == "jpeg" and tensor is not None:
            batch.jpegs.append((index, tensor))
        elif kind == "pixels" and tensor is not None:
            batch.pixels.append((index, tensor))
        else:
            batch.failed.append((index, reason or "unknown error"))
    return batch


class DeviceDecoder:
    """Turns an :class:`EncodedBatch` into (indices, (N, 3, S, S) uint8 images on ``device``, failed)."""

    def __init__(self, transform: ImageTransform, device: torch.device, paths: Sequence[str]) -> None:
        self.transform = transform
        self.device = device
        self.paths = paths
        mode = T.InterpolationMode(transform.interpolation)
        size = transform.image_size
        self.geometry = T.Compose([T.Resize(size, interpolation=mode, antialias=True), T.CenterCrop(size)])

    def __call__(self, batch: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor | None, list[tuple[int, str]]]:
        failed = list(batch.failed)
        images: list[tuple[int, torch.Tensor]] = [(i, t.to(self.device, non_blocking=True)) for i, t in batch.pixels]
        for index, decoded in self._decode(batch.jpegs):
            if decoded is not None and min(decoded.shape[-2:]) >= MIN_SIDE:
                images.append((index, self._fit(decoded)))
                continue
            # Refused by the device decoder, or too small: the CPU path decides (and names the reason).
            i, kind, tensor, reason = cpu_sample(index, self.paths[index], self.transform)
            if kind is None or tensor is None:
                failed.append((i, reason or "unknown error"))
            else:
                images.append((i, tensor.to(self.device)))
        if not images:
            return torch.empty(0, dtype=torch.long), None, failed
        images.sort(key=lambda item: item[0])
        indices = torch.tensor([i for i, _ in images], dtype=torch.long)
        return indices, torch.stack([t for _, t in images]), failed

    def _decode(self, jpegs: list[tuple[int, torch.Tensor]]) -> list[tuple[int, torch.Tensor | None]]:
        """Every JPEG decoded in one call; when the batch call fails, one at a time (None: refused)."""
        if not jpegs:
            return []
        data = [t for _, t in jpegs]
        # torchvision 0.29 marks its decoders deprecated in favour of TorchCodec; they are what nvJPEG batch
        # decoding is reachable through here without another dependency, so the notice is silenced.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                out = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
                return [(i, img) for (i, _), img in zip(jpegs, out, strict=True)]
            except RuntimeError:
                pass
            single: list[tuple[int, torch.Tensor | None]] = []
            for i, t in jpegs:
                try:
                    single.append((i, decode_jpeg(t, mode=ImageReadMode.RGB, device=self.device)))
                except RuntimeError:
                    single.append((i, None))
            return single

    def _fit(self, img: torch.Tensor) -> torch.Tensor:
        """Resize (shorter side) and centre-crop one decoded (3, H, W) uint8 image, on its device."""
        h, w = img.shape[-2:]
        size = self.transform.image_size
        if h == size and w == size:
            return img
        return self.geometry(img)
