"""Issue 15: the Gaussian objective (CE + triplet + class splitting) against cross-entropy at the same budget.

Task "two": CIFAR-10 relabelled vehicle (airplane, automobile, ship, truck) / animal (the other six); the
ten classes are hidden. Task "ten": the ten classes. Per seed and objective: train ``cifar_resnet20`` from
random weights on a per-class subset (stratified 80/20 validation split inside ``train``), embed the training
subset (database) and a test subset (queries), then report

* the sub-classes: for ``gaussian`` the checkpoint's (training images assigned by the head within their
  class), for ``ce`` the same x-means split applied to its features (``ingest --split-classes``); their match
  with the hidden classes (adjusted Rand index, purity = share of images in their sub-class's majority class);
* the Gaussianity statistic (median over classes of ``ks`` and ``axis_ks``, hierqdrant.core.gaussianity) of
  the classes and of the sub-classes;
* leaf accuracy of the per-class (``mahalanobis``) Gaussians on the queries, with class leaves and with
  sub-class leaves (a sub-class counts as its class);
* map@10 / map@r (queries vs database, relevance by class) of cosine on the raw features and of overlap
  (library defaults: t 0.3, α 3, tied query leaf, label leaves) with class leaves and with sub-class leaves;
* test accuracy of the network (argmax of the head, sub-class → class).

Budget flags: ``--train-per-class``, ``--test-per-class``, ``--epochs``, ``--seeds``. Data:
``--data`` or ``$HIERQDRANT_SHARED/datasets/cifar10`` (default ``/work/shared``): ImageFolder ``train/``,
``test/``. Features are cached under ``--work``; ``--analyse-only`` recomputes the numbers from them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

VEHICLES = {"airplane", "automobile", "ship", "truck"}


def _subset(data: Path, split: str, per_class: int, seed: int) -> list[tuple[Path, str]]:
    rng = np.random.default_rng(seed)
    out = []
    for folder in sorted(p for p in (data / split).iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.jpg")) + sorted(folder.glob("*.png"))
        take = rng.choice(len(files), size=min(per_class, len(files)), replace=False)
        out += [(files[i], folder.name) for i in sorted(take)]
    return out


def _folder(root: Path, items: list[tuple[Path, str]], task: str) -> None:
    """Symlinks ``root/<label>/<hidden class>_<name>``; label = vehicle/animal (two) or the class (ten)."""
    for path, cls in items:
        label = ("vehicle" if cls in VEHICLES else "animal") if task == "two" else cls
        link = root / label / f"{cls}_{path.name}"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(path.resolve())


def _embed(checkpoint: Path, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features and head scores of ``paths``."""
    import torch

    from hierqdrant.vision import load_backbone
    from hierqdrant.vision.extract import extract_features

    bb = load_backbone("cifar_resnet20", str(checkpoint))
    got = extract_features(paths, bb, device="cpu", num_workers=0, progress=False)
    assert got.features.shape[0] == len(paths), got.skipped
    head = bb.classifier
    with torch.no_grad():
        scores = head(torch.as_tensor(got.features, dtype=torch.float32)).numpy()  # type: ignore[misc]
    return got.features.astype(np.float64), scores


def _train(task_dir: Path, ck: Path, objective: str, args: argparse.Namespace, seed: int) -> float:
    from hierqdrant.vision.gaussian_objective import GaussianConfig, train_gaussian
    from hierqdrant.vision.train import TrainConfig, train

    cfg = TrainConfig(model="cifar_resnet20", weights="random", epochs=args.epochs, batch_size=128, lr=0.05,
                      image_size=32, device="cpu", workers=0, seed=seed, resume=None)  # fmt: skip
    t0 = time.perf_counter()
    if objective == "gaussian":
        g = GaussianConfig(split_every=args.split_every, max_splits=args.max_splits)
        train_gaussian(task_dir / "train", ck, cfg, g, progress=False, log=lambda m: print("  ", m, flush=True))
    else:
        train(task_dir / "train", ck, cfg, progress=False, log=lambda m: print("  ", m, flush=True))
    return time.perf_counter() - t0


def _rank(qz: np.ndarray, dz: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray:
    from hierqdrant.core.model import unit_rows

    dist = 1.0 - unit_rows(qz) @ unit_rows(dz).T
    if extra is not None:
        dist = dist + extra
    return np.argsort(dist, axis=1, kind="stable")


def _maps(order: np.ndarray, db_y: np.ndarray, q_y: np.ndarray, k: int) -> dict[str, float]:
    from hierqdrant.evaluation.metrics import map_at_k, map_at_r

    ret = db_y[order]
    counts = np.bincount(db_y, minlength=k)
    return {"map@10": map_at_k(ret, q_y, 10), "map@r": map_at_r(ret, q_y, counts)}


def analyse(cache: Path, k: int) -> dict[str, Any]:
    from sklearn.metrics import adjusted_rand_score

    from hierqdrant.core.gaussian import Gaussians
    from hierqdrant.core.gaussianity import class_gaussianity
    from hierqdrant.core.model import HierarchyModel
    from hierqdrant.core.subclasses import compact, split_classes

    c = np.load(cache, allow_pickle=False)
    dx, dy, dh, ds = c["db_x"], c["db_y"], c["db_hidden"], c["db_scores"]
    qx, qy, qs = c["q_x"], c["q_y"], c["q_scores"]
    subclass_of = c["subclass_of"]
    out: dict[str, Any] = {"test_acc": float((subclass_of[qs.argmax(axis=1)] == qy).mean())}
    if subclass_of.size > k:  # gaussian: the head's sub-classes, each image's within its known class
        allowed = subclass_of[None, :] == dy[:, None]
        kept = compact(np.where(allowed, ds, -np.inf).argmax(axis=1), subclass_of)
        sub, subclass_of = kept.labels, kept.subclass_of
    else:  # ce: split its features as ingest --split-classes does
        split = split_classes(dx, dy, np.arange(k))
        sub, subclass_of = split.labels, split.subclass_of
    out["subclasses"] = int(subclass_of.size)
    out["ari_hidden"] = float(adjusted_rand_score(dh, sub))
    maj = [np.bincount(dh[sub == s]).max() for s in range(subclass_of.size) if (sub == s).any()]
    out["purity_hidden"] = float(np.sum(maj) / dh.size)
    base = HierarchyModel.fit(dx, dy)  # class leaves (library defaults)
    zd, zq = base.transform(dx), base.transform(qx)
    for name, labels, n in (("class", dy, k), ("sub", sub, subclass_of.size)):
        g = Gaussians.fit(zd, labels, n)
        st = class_gaussianity(zd, labels, g)
        out[f"ks_{name}"] = float(np.nanmedian([s.ks for s in st]))
        out[f"axis_ks_{name}"] = float(np.nanmedian([s.axis_ks for s in st]))
        leaf = g.mahalanobis_squared(zq).argmin(axis=1)
        out[f"maha_acc_{name}"] = float(((subclass_of[leaf] if name == "sub" else leaf) == qy).mean())
    out["cosine-raw"] = _maps(_rank(qx, dx), dy, qy, k)
    q_leaf = base.assign(zq, projected=True)
    lca = base.lca_height_matrix()[q_leaf[:, None], dy[None, :]] / max(base.tree_height, 1)
    out["overlap-class"] = _maps(_rank(zq, zd, base.alpha * lca), dy, qy, k)
    try:
        names = [str(i) for i in range(k)]
        subm = HierarchyModel.fit(dx, sub, class_names=names, subclass_of=subclass_of)
    except TypeError:
        return out  # a hierqdrant without sub-class leaves
    d_leaf = subm.database_leaves(dx, dy)
    q_leaf = subm.assign(qx)
    lca = subm.lca_height_matrix()[q_leaf[:, None], d_leaf[None, :]] / max(subm.tree_height, 1)
    out["overlap-sub"] = _maps(_rank(subm.transform(qx), subm.transform(dx), subm.alpha * lca), dy, qy, k)
    out["overlap-sub_height"] = subm.tree_height
    return out


def summarise(paths: list[Path]) -> str:
    """A markdown table: mean ± std over seeds per task and objective (std with one seed: —)."""
    rows = [r for p in paths for r in json.loads(p.read_text())]
    keys = ["test_acc", "subclasses", "ari_hidden", "purity_hidden", "ks_class", "axis_ks_class", "ks_sub",
            "axis_ks_sub", "maha_acc_class", "maha_acc_sub", "cosine-raw map@10", "cosine-raw map@r",
            "overlap-class map@10", "overlap-class map@r", "overlap-sub map@10", "overlap-sub map@r"]  # fmt: skip

    def value(r: dict[str, Any], key: str) -> float:
        if " " in key:
            method, metric = key.split(" ")
            return float(r.get(method, {}).get(metric, float("nan")))
        return float(r.get(key, float("nan")))

    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["objective"]), []).append(r)
    lines = ["| task | objective | seeds | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 3)]
    for (task, objective), rs in sorted(groups.items()):
        cells = []
        for key in keys:
            v = np.asarray([value(r, key) for r in rs])
            std = f" ± {v.std(ddof=1):.3f}" if v.size > 1 else ""
            cells.append(f"{v.mean():.3f}{std}" if np.isfinite(v).all() else "—")
        seeds = ",".join(str(r["seed"]) for r in rs)
        lines.append(f"| {task} | {objective} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = Path(os.environ.get("HIERQDRANT_SHARED", "/work/shared"))
    ap.add_argument("--data", type=Path, default=shared / "datasets" / "cifar10")
    ap.add_argument("--work", type=Path, default=Path("/tmp/hq_gaussian_bench"))
    ap.add_argument("--tasks", default="two,ten")
    ap.add_argument("--objectives", default="ce,gaussian")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--train-per-class", type=int, default=500)
    ap.add_argument("--test-per-class", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--split-every", type=int, default=2)
    ap.add_argument("--max-splits", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--analyse-only", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="JSON of every run")
    ap.add_argument("--summarise", type=Path, nargs="*", help="print mean ± std of these --out files and stop")
    args = ap.parse_args()
    if args.summarise:
        print(summarise(args.summarise))
        return 0
    import torch

    torch.set_num_threads(args.threads)
    if not (args.data / "train").is_dir():
        print(f"no CIFAR-10 ImageFolder at {args.data} (pass --data or set HIERQDRANT_SHARED)", file=sys.stderr)
        return 2
    results: list[dict[str, Any]] = []
    for task in args.tasks.split(","):
        k = 2 if task == "two" else 10
        for seed in [int(s) for s in args.seeds.split(",")]:
            tr = _subset(args.data, "train", args.train_per_class, 1000 + seed)
            te = _subset(args.data, "test", args.test_per_class, 2000 + seed)
            task_dir = args.work / f"{task}-s{seed}"
            _folder(task_dir / "train", tr, task)
            names = sorted({("vehicle" if c in VEHICLES else "animal") if task == "two" else c for _, c in tr})
            hidden = sorted({c for _, c in tr})
            label = {n: i for i, n in enumerate(names)}

            def to_label(c: str, label: dict[str, int] = label, task: str = task) -> int:
                return label[("vehicle" if c in VEHICLES else "animal") if task == "two" else c]

            for objective in args.objectives.split(","):
                ck = task_dir / f"{objective}.pt"
                cache = task_dir / f"{objective}.features.npz"
                seconds = None
                if not args.analyse_only:
                    print(f"[{time.strftime('%H:%M:%S')}] {task} seed {seed} {objective}: training", flush=True)
                    seconds = _train(task_dir, ck, objective, args, seed)
                    dx, ds = _embed(ck, [p for p, _ in tr])
                    qx, qs = _embed(ck, [p for p, _ in te])
                    state = torch.load(ck, map_location="cpu", weights_only=True)
                    np.savez(
                        cache, db_x=dx, db_scores=ds, q_x=qx, q_scores=qs,
                        db_y=np.asarray([to_label(c) for _, c in tr]), q_y=np.asarray([to_label(c) for _, c in te]),
                        db_hidden=np.asarray([hidden.index(c) for _, c in tr]),
                        subclass_of=np.asarray(state.get("subclass_of", list(range(k)))),
                    )  # fmt: skip
                row = {"task": task, "seed": seed, "objective": objective, "train_seconds": seconds}
                row.update(analyse(cache, k))
                print(json.dumps(row), flush=True)
                results.append(row)
                if args.out:
                    args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
