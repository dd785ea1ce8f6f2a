"""Batched feature extraction that keeps the accelerator busy and never stops on a bad file.

Images are decoded (:func:`~hierqdrant.vision.images.load_rgb`), optionally altered by an
``image_hook`` (e.g. deterministic perturbations) and transformed in DataLoader worker processes; a
file that fails to decode yields a marker that the collate function drops and reports as
:class:`~hierqdrant.vision.sources.Skipped`. On CUDA, batches are copied from pinned memory without
blocking, conv nets run in ``channels_last`` and everything runs under ``torch.inference_mode()``
with bf16 autocast; features come back as float32 NumPy arrays on the CPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate

from hierqdrant.core.errors import InputError
from hierqdrant.vision.backbones import Backbone
from hierqdrant.vision.device_decode import DeviceDecoder, EncodedDataset, collate_encoded
from hierqdrant.vision.images import ImageDecodeError, load_rgb
from hierqdrant.vision.preprocessing import ImageTransform
from hierqdrant.vision.sources import Skipped

if TYPE_CHECKING:  # rich is imported only when a progress bar is shown
    from rich.console import Console
    from rich.progress import Progress

__all__ = ["DECODE_MODES", "Extracted", "extract_features", "resolve_device", "default_num_workers"]

#: Where JPEGs are decoded: ``auto`` (on the GPU when the model runs on one, else in the workers),
#: ``workers`` (Pillow in the DataLoader workers) or ``device`` (torchvision.io on the model's device).
DECODE_MODES: tuple[str, ...] = ("auto", "workers", "device")

ImageHook = Callable[[Image.Image, int], Image.Image]
BatchCallback = Callable[[np.ndarray, np.ndarray], None]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → ``cuda`` when a GPU is visible, else ``cpu``; an explicit device must exist."""
    if isinstance(device, torch.device):
        spec = str(device)
    else:
        spec = str(device).strip().lower() or "auto"
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"unknown device {device!r}", "use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {spec!r} requested but no CUDA GPU is available", "use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(
                f"device {spec!r} requested but only {torch.cuda.device_count()} GPU(s) are visible",
                "use cuda:0 … or auto",
            )
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise InputError("device 'mps' requested but it is not available", "use --device cpu or auto")
    elif dev.type != "cpu":
        raise InputError(f"unsupported device {spec!r}", "use auto, cpu, cuda or cuda:N")
    return dev


def default_num_workers() -> int:
    """min(8, usable CPU cores): decoding JPEGs is the bottleneck long before 8 workers on most GPUs."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(0, min(8, cores))


@dataclass
class Extracted:
    """Features of the images that decoded; ``indices`` are their positions in the input paths."""

    features: np.ndarray
    indices: np.ndarray
    skipped: list[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.indices.shape[0])


class ImageDataset(Dataset[tuple[int, "torch.Tensor | None", str | None]]):
    """(index, tensor, None) for a good image, (index, None, reason) for a bad one."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        transform: Callable[[Image.Image], torch.Tensor],
        image_hook: ImageHook | None,
    ) -> None:
        self.paths = [str(p) for p in paths]
        self.transform = transform
        self.image_hook = image_hook

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            img = load_rgb(self.paths[index])
        except ImageDecodeError as exc:
            return index, None, exc.reason
        if self.image_hook is not None:
            img = self.image_hook(img, index)
        try:
            tensor = self.transform(img)
        except (OSError, ValueError) as exc:  # e.g. an image too small for a fixed-size crop
            return index, None, f"transform failed ({exc})"
        return index, tensor, None


@dataclass
class ImageBatch:
    indices: torch.Tensor
    images: torch.Tensor | None
    failed: list[tuple[int, str]]

    def pin_memory(self) -> ImageBatch:
        """Called by the DataLoader's pin-memory thread for custom batch types."""
        if self.images is not None:
            self.images = self.images.pin_memory()
        return self


def collate_images(samples: list[tuple[int, torch.Tensor | None, str | None]]) -> ImageBatch:
    ok = [(i, t) for i, t, _ in samples if t is not None]
    failed = [(i, r or "unknown error") for i, t, r in samples if t is None]
    if not ok:
        return ImageBatch(torch.empty(0, dtype=torch.long), None, failed)
    indices = torch.tensor([i for i, _ in ok], dtype=torch.long)
    # default_collate stacks straight into shared memory inside a worker (no extra copy on send).
    return ImageBatch(indices, default_collate([t for _, t in ok]), failed)


def _progress(console: Console | None) -> Progress:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class _RateColumn(ProgressColumn):
        """Images per second since the start (steadier than rich's windowed speed for bursty batches)."""

        def render(self, task: Task) -> Text:
            elapsed = task.elapsed or 0.0
            rate = task.completed / elapsed if elapsed > 0 else 0.0
            return Text(f"{rate:,.0f} img/s", style="progress.data.speed")

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        transient=False,  # a non-TTY console prints the final state once instead of redraws
    )


def extract_features(
    paths: Sequence[str | Path],
    backbone: Backbone,
    *,
    device: str | torch.device = "auto",
    batch_size: int = 256,
    num_workers: int | None = None,
    image_hook: ImageHook | None = None,
    on_batch: BatchCallback | None = None,
    progress: bool | Callable[[int], None] = True,
    console: Console | None = None,
    decode: str = "auto",
) -> Extracted:
    """Penultimate features of every image in ``paths``.

    Returns an :class:`Extracted` whose ``features[j]`` belongs to ``paths[indices[j]]`` (indices
    ascending); files that cannot be decoded are in ``skipped`` with a reason. ``image_hook(img, i)``
    is applied to the decoded RGB image of ``paths[i]`` before the backbone's transform; with
    ``num_workers > 0`` it must be picklable (a module-level function or object). ``on_batch(indices,
    features)`` is called after every batch, also with empty arrays when a batch held only bad files.
    The backbone's module is moved to the device (and left there). ``progress``: ``True`` a rich bar on
    ``console`` (stderr by default), ``False`` none, or a callable told how many files each batch handled
    (the caller shows the progress). ``decode``: where JPEGs are decoded (:data:`DECODE_MODES`; ``device``
    needs the standard transform and no ``image_hook``, see :mod:`hierqdrant.vision.device_decode`).
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}", "pass e.g. --batch-size 256")
    if num_workers is not None and num_workers < 0:
        raise InputError(f"num_workers must be >= 0, got {num_workers}", "pass 0 to decode in the main process")
    dev = resolve_device(device)
    n = len(paths)
    dim = int(backbone.feature_dim)
    if n == 0:
        return Extracted(np.zeros((0, dim), np.float32), np.zeros(0, np.int64), [])
    workers = default_num_workers() if num_workers is None else num_workers
    workers = min(workers, -(-n // batch_size))  # never more workers than batches
    on_cuda = dev.type == "cuda"
    loader_kwargs: dict[str, Any] = {}
    if workers > 0:
        loader_kwargs.update(persistent_workers=True, prefetch_factor=2)
    # The standard transform is split: workers resize + crop to uint8 (4× fewer bytes through shared
    # memory, pinned memory and PCIe), the device converts and normalises the whole batch.
    split = backbone.transform if isinstance(backbone.transform, ImageTransform) else None
    path_strs = [str(p) for p in paths]
    decoder = _device_decoder(decode, dev, split, image_hook, path_strs)
    dataset: Dataset[Any] = (
        EncodedDataset(paths, split)  # type: ignore[arg-type]
        if decoder is not None
        else ImageDataset(paths, split.to_uint8 if split is not None else backbone.transform, image_hook)
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_encoded if decoder is not None else collate_images,
        pin_memory=on_cuda and decoder is None,
        **loader_kwargs,
    )
    model = backbone.module
    was_training = model.training
    model.eval()
    channels_last = on_cuda and backbone.is_conv
    model.to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    autocast = (
        torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        if on_cuda
        else torch.autocast(device_type="cpu", enabled=False)
    )
    normalize = split.normalizer(dev) if split is not None else None
    cudnn_benchmark = torch.backends.cudnn.benchmark
    feats: list[np.ndarray] = []
    idxs: list[np.ndarray] = []
    skipped: list[Skipped] = []
    advance = progress if callable(progress) else None
    bar = _progress(console) if progress is True else None
    task = bar.add_task(f"features ({backbone.name}, {dev})", total=n) if bar is not None else None
    # Results of the batch in flight: (indices, host tensor, copy-done event, files in the batch).
    pending: tuple[np.ndarray, torch.Tensor | None, torch.cuda.Event | None, int] | None = None

    def finish(job: tuple[np.ndarray, torch.Tensor | None, torch.cuda.Event | None, int]) -> None:
        ind, host, done, count = job
        if done is not None:
            done.synchronize()  # waits for this batch's copy only, not for the batch launched after it
        f = np.zeros((0, dim), np.float32) if host is None else host.numpy().copy()
        feats.append(f)
        idxs.append(ind)
        if on_batch is not None:
            on_batch(ind, f)
        if bar is not None and task is not None:
            bar.advance(task, count)
        if advance is not None:
            advance(count)

    full_seen = False
    try:
        if bar is not None:
            bar.start()
        with torch.inference_mode(), autocast:
            for loaded in loader:
                batch = ImageBatch(*decoder(loaded)) if decoder is not None else loaded
                skipped.extend(Skipped(path_strs[i], r) for i, r in batch.failed)
                ind = batch.indices.numpy().astype(np.int64, copy=False)
                count = len(ind) + len(batch.failed)
                if batch.images is None:
                    if pending is not None:
                        finish(pending)
                        pending = None
                    finish((ind, None, None, count))
                    continue
                x = batch.images.to(dev, non_blocking=on_cuda)
                if normalize is not None:
                    x = normalize(x)
                m = x.shape[0]
                if on_cuda:
                    # cuDNN autotunes once per input shape: tune for full batches and pad a short batch
                    # (the last one, or one with skipped files) up to that shape instead of re-tuning.
                    if m == batch_size:
                        full_seen = True
                    elif full_seen:
                        x = torch.cat([x, x.new_zeros((batch_size - m, *x.shape[1:]))])
                    torch.backends.cudnn.benchmark = full_seen
                if channels_last and x.ndim == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                out = model(x)
                if isinstance(out, (tuple, list)):  # e.g. Inception's training-style outputs
                    out = out[0]
                out = out[:m].float().reshape(m, -1)
                done: torch.cuda.Event | None = None
                if on_cuda:
                    host = torch.empty(out.shape, dtype=torch.float32, pin_memory=True)
                    host.copy_(out, non_blocking=True)
                    done = torch.cuda.Event()
                    done.record()
                else:
                    host = out
                if pending is not None:  # the GPU now runs this batch while the host handles the last
                    finish(pending)
                pending = (ind, host, done, count)
            if pending is not None:
                finish(pending)
                pending = None
    finally:
        if bar is not None:
            bar.stop()
        if was_training:
            model.train()
        torch.backends.cudnn.benchmark = cudnn_benchmark
    features = np.concatenate(feats, axis=0).astype(np.float32, copy=False)
    indices = np.concatenate(idxs)
    if features.shape[0] > 0 and features.shape[1] != dim:
        raise InputError(
            f"backbone {backbone.name} returned {features.shape[1]}-d features, expected {dim}-d",
            "check the backbone's image_size and weights",
        )
    return Extracted(features=features, indices=indices, skipped=skipped)


def _device_decoder(
    decode: str, dev: torch.device, split: ImageTransform | None, image_hook: ImageHook | None, paths: list[str]
) -> DeviceDecoder | None:
    """The decoder of ``decode="device"`` (and of ``auto`` on a GPU), or None to decode in the workers."""
    if decode not in DECODE_MODES:
        raise InputError(f"unknown decode mode {decode!r}", f"use one of {', '.join(DECODE_MODES)}")
    if decode == "workers" or (decode == "auto" and (dev.type != "cuda" or split is None or image_hook is not None)):
        return None
    if split is None or image_hook is not None:
        raise InputError(
            "decoding on the device needs the standard image transform and no image hook (perturbations run on "
            "Pillow images)",
            "decode in the workers (decode='workers')",
        )
    return DeviceDecoder(split, dev, paths)
