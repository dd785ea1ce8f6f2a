"""Throughput of feature extraction: end to end (decode + transform + model) and model only.

Usage (from the repository root)::

    python benchmarks/embed_throughput.py                    # 2000 synthetic 224×224 JPEGs, --device auto
    python benchmarks/embed_throughput.py --n 64 --device cpu
    python benchmarks/embed_throughput.py --images /path/to/folder --num-workers 8 --batch-size 256

It builds torchvision's ``resnet50`` with random weights (no download) and reports images/s for

(a) ``extract_features`` over the JPEG files: decoding, resizing and cropping in DataLoader workers,
    copying uint8 batches to the device, normalising there and the forward pass (bf16 autocast and
    channels_last on CUDA);
(b) the forward pass alone on tensors already on the device, with the same batch size;
(c) the input pipeline alone: ``extract_features`` with the network replaced by a global average
    pool (decode, transform, transfer to the device, no model).

If (a) is far below (b) the run is input-bound: (c) is then the ceiling, raise ``--num-workers``.
All runs are preceded by a warm-up. The synthetic images are random smooth colour fields saved as
224×224 JPEGs (quality 90); real photos are larger and slower to decode, so use ``--images`` for
numbers about your data.

Needs only torch, torchvision, numpy, pillow and rich (no qdrant packages).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from hierqdrant.vision.backbones import load_backbone  # noqa: E402
from hierqdrant.vision.extract import default_num_workers, extract_features, resolve_device  # noqa: E402
from hierqdrant.vision.images import IMAGE_EXTENSIONS  # noqa: E402


def make_images(folder: Path, n: int, size: int, seed: int = 0) -> list[Path]:
    """``n`` JPEGs of random smooth colour fields: a 14×14 random image upsampled bicubically, plus
    mild pixel noise, so files decode and compress roughly like photos rather than like white noise."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        low = rng.integers(0, 256, size=(14, 14, 3), dtype=np.uint8)
        img = Image.fromarray(low).resize((size, size), Image.Resampling.BICUBIC)
        arr = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, size=(size, size, 3), dtype=np.int16)
        path = folder / f"img_{i:05d}.jpg"
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    cpu = platform.processor() or platform.machine()
    return f"CPU {cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def model_only(model: torch.nn.Module, dev: torch.device, batch: int, size: int, n: int, conv: bool) -> float:
    """Images/s of the forward pass on a device-resident random batch, after 3 warm-up passes."""
    x = torch.randn(batch, 3, size, size, device=dev)
    if dev.type == "cuda" and conv:
        x = x.contiguous(memory_format=torch.channels_last)
    iters = max(3, math.ceil(n / batch))
    cast = (
        torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        if dev.type == "cuda"
        else torch.autocast(device_type="cpu", enabled=False)
    )
    with torch.inference_mode(), cast:
        for _ in range(3):
            model(x)
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(iters):
            model(x)
        _sync(dev)
        dt = time.perf_counter() - t0
    return iters * batch / dt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="number of synthetic images (default 2000)")
    ap.add_argument("--images", type=Path, default=None, help="use the images in this folder instead")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--num-workers", type=int, default=None, help=f"default min(8, cores) = {default_num_workers()}")
    ap.add_argument("--model", default="resnet50", help="torchvision model name (random weights)")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument(
        "--decode", default="auto", choices=("auto", "workers", "device"),
        help="where JPEGs are decoded: auto (on the GPU when there is one), workers (Pillow), device",
    )  # fmt: skip
    ap.add_argument("--keep", type=Path, default=None, help="write the synthetic JPEGs here and keep them")
    args = ap.parse_args(argv)

    dev = resolve_device(args.device)
    workers = default_num_workers() if args.num_workers is None else args.num_workers
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    bb = load_backbone(args.model, "random", image_size=args.image_size)
    print(f"device: {device_name(dev)}  torch {torch.__version__}", flush=True)

    with tempfile.TemporaryDirectory(prefix="hq-embed-bench-") as tmp:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = str(args.keep)
        if args.images is not None:
            paths = list_images(args.images)
            source = str(args.images)
        else:
            t0 = time.perf_counter()
            paths = make_images(Path(tmp), args.n, args.image_size)
            source = f"{len(paths)} synthetic {args.image_size}×{args.image_size} JPEGs"
            print(f"generated {len(paths)} JPEGs in {time.perf_counter() - t0:.1f} s", flush=True)
        if not paths:
            print(f"no images in {args.images}", file=sys.stderr)
            return 2
        # Warm-up: cuDNN autotuning, CUDA context, worker start-up code paths.
        warm = paths[: min(len(paths), 2 * args.batch_size)]
        extract_features(
            warm, bb, device=dev, batch_size=args.batch_size, num_workers=workers, progress=False, decode=args.decode
        )
        _sync(dev)
        t0 = time.perf_counter()
        ex = extract_features(
            paths, bb, device=dev, batch_size=args.batch_size, num_workers=workers, progress=False, decode=args.decode
        )
        _sync(dev)
        e2e = len(ex.indices) / (time.perf_counter() - t0)
        if ex.skipped:
            print(f"skipped {len(ex.skipped)} files, e.g. {ex.skipped[0]}")
        # (c): same loader, same transfer, a model that costs nothing.
        pipe = dataclasses.replace(
            bb, module=torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()), feature_dim=3
        )
        t0 = time.perf_counter()
        px = extract_features(
            paths, pipe, device=dev, batch_size=args.batch_size, num_workers=workers, progress=False, decode=args.decode
        )
        _sync(dev)
        pipe_rate = len(px.indices) / (time.perf_counter() - t0)
    mo = model_only(bb.module, dev, args.batch_size, args.image_size, len(paths), bb.is_conv)

    print()
    print(
        f"{args.model} (random weights), {source}, batch {args.batch_size}, {workers} workers, decode {args.decode}, "
        f"{os.cpu_count()} CPU cores"
    )
    print()
    print("| device | run | images/s |")
    print("| --- | --- | ---: |")
    print(f"| {device_name(dev)} | end to end (decode + transform + model) | {e2e:,.0f} |")
    print(f"| {device_name(dev)} | model only (tensors on device) | {mo:,.0f} |")
    print(f"| {device_name(dev)} | input pipeline only (decode + transform + transfer) | {pipe_rate:,.0f} |")
    print()
    print(f"end to end / model only = {e2e / mo:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
