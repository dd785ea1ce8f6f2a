"""Training cost: `hierqdrant.vision.train` on an image folder for a few epochs; images/s and accuracy.

    python benchmarks/train_throughput.py --data ../shared/datasets/cifar10 --model resnet18 --image-size 32 --epochs 2
    python benchmarks/train_throughput.py --model cifar_resnet20 --epochs 3 --device cpu     # the CPU measurement

--data defaults to $HIERQDRANT_SHARED/datasets/cifar10 (HIERQDRANT_SHARED defaults to ../shared).
Validation accuracy is on the held-out 20 % of the training images; --test also scores the test split.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = Path(os.environ.get("HIERQDRANT_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
    parser.add_argument("--data", type=Path, default=shared / "datasets" / "cifar10")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--test", action="store_true", help="also report accuracy on the test split")
    args = parser.parse_args()

    import torch

    from hierqdrant.vision.train import TrainConfig, train

    out = args.out or Path(tempfile.mkdtemp()) / "ckpt.pt"
    cfg = TrainConfig(
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        image_size=args.image_size,
        device=args.device,
        workers=args.workers,
    )
    started = time.perf_counter()
    result = train(args.data, out, cfg, progress=False, log=print)
    wall = time.perf_counter() - started
    device = result.device
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or "cpu"
    print(f"\nmachine: {name}, torch {torch.__version__}, {os.cpu_count()} CPUs; data {args.data}")
    print(
        f"model {args.model}, image size {args.image_size or 'default'}, batch {args.batch_size}, "
        f"lr {args.lr}, {args.epochs} epochs, wall {wall:.1f} s (incl. start-up and validation)"
    )
    print("| epoch | train loss | train acc | val acc | train images/s | epoch s |")
    print("|---|---|---|---|---|---|")
    for e in result.history:
        print(
            f"| {e.epoch} | {e.train_loss:.3f} | {e.train_acc:.3f} | {e.val_acc:.3f} | {e.images_per_s:,.0f} | "
            f"{e.seconds:.1f} |"
        )
    if args.test:
        from hierqdrant.vision import discover, extract_features, load_backbone

        found = discover(args.data)
        test = [it for it in found.items if it.split == "test"]
        bb = load_backbone(args.model, str(out), image_size=args.image_size)
        got = extract_features(
            [it.path for it in test], bb, device=args.device, progress=False, batch_size=args.batch_size
        )
        with torch.no_grad():
            logits = bb.classifier(torch.as_tensor(got.features)).argmax(1).numpy()  # type: ignore[misc]
        labels = [test[i].label for i in got.indices]
        acc = float((logits == labels).mean())
        print(f"test accuracy ({len(labels)} images): {acc:.4f}")
    print(json.dumps({"best_val_acc": result.best_val_acc, "device": device, "wall_s": round(wall, 1)}))


if __name__ == "__main__":
    main()
