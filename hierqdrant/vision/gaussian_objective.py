"""``hierqdrant train --objective gaussian``: Gaussian latent classes by splitting (DESIGN.md §1.9).

After Venkataramanan et al., "Gaussian Latent Representations for Uncertainty Estimation using Mahalanobis
Distance in Deep Classifiers" (ICCVW 2023; our own code). The loss on a batch is

    L = CE(head(f(x)), s) + w · max(0, max_{s_p = s} ‖u − u_p‖ − min_{s_n ≠ s} ‖u − u_n‖ + m),  u = f/‖f‖

(cross-entropy on the current **sub-class** labels s plus the batch-hard triplet loss on the penultimate
features f, unit-normalised, margin m = ``triplet_margin``). The normalisation bounds the triplet term's
pull: on the raw features (CIFAR-10, ResNet-20, margin 1) it drove every feature to one point within two
epochs — the loss stuck at m + ln K', the network predicting the majority class.
Every ``split_every`` epochs (at most ``max_splits`` times) the
training images' features are extracted and a sub-class is a split candidate when its class's false-negative
rate on the validation images is above the mean over classes (the reference's criterion), or when its
features fail the Gaussianity check of :mod:`hierqdrant.core.gaussianity` (``axis_ks`` ≥ ``AXIS_KS``).
Each candidate is split x-means style (:func:`hierqdrant.core.subclasses.split_classes`: Gaussian mixtures,
k by BIC; k = 1 keeps it whole). The head gets one output per sub-class — a new sub-class's row starts as
a copy of its parent's (plus a little noise), so its class scores carry over — and training continues on
the sub-class labels. Validation accuracy is the **class** accuracy (a sub-class maps back to its class).

The checkpoint is an ordinary ``hierqdrant train`` checkpoint (``torch.load(weights_only=True)``) whose
final layer has K' rows, plus ``subclass_of`` (K' ints: the class of each row), ``subclasses`` (their
names), ``splits`` (epoch and sub-class count of each split) and, in ``<out>.last``, the training images'
sub-class labels (``subclass_labels``) and the step the learning-rate schedule restarted from, so a killed
run resumes with its current sub-classes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader

from hierqdrant.core.errors import InputError
from hierqdrant.core.faults import fault
from hierqdrant.core.gaussian import Gaussians
from hierqdrant.core.gaussianity import class_gaussianity
from hierqdrant.core.splits import stratified_split
from hierqdrant.core.subclasses import false_negative_rates, split_classes, subclass_names
from hierqdrant.vision import train as base
from hierqdrant.vision.backbones import load_backbone
from hierqdrant.vision.extract import ImageDataset, collate_images, default_num_workers, resolve_device

#: A sub-class whose top principal axes are this far (KS against N(0, 1)) from normal is a split candidate.
AXIS_KS = 0.1


@dataclass
class GaussianConfig:
    """The settings of the Gaussian objective (module docstring): margin 0.5 between unit-normalised
    features, split every 5 epochs, at most 2 splits, up to 4 clusters per split. The reference code's
    config differs, for a 200-epoch GPU run: margin 0.7 (on its embedding as the network gives it),
    re-clustering every 10 epochs, a class split when its false-negative rate is above 0.3, up to 5
    clusters; ours are for budgets of tens of epochs (margin, interval and count are ``train`` flags)."""

    split_every: int = 5
    max_splits: int = 2
    triplet_margin: float = 0.5
    triplet_weight: float = 1.0
    max_k: int = 4
    min_size: int | None = None  # the smallest cluster a split may make (None: split_classes' default)


@dataclass
class GaussianEpochStats(base.EpochStats):
    subclasses: int = 0  # sub-classes (head outputs) at the end of the epoch


@dataclass
class GaussianTrainResult(base.TrainResult):
    subclass_of: list[int] = field(default_factory=list)
    splits: list[dict[str, int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["objective"] = "gaussian"
        out["subclasses"] = len(self.subclass_of)
        out["subclass_of"] = list(self.subclass_of)
        out["splits"] = list(self.splits)
        return out


def batch_hard_triplet(features: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean over anchors with a positive and a negative in the batch of
    ``max(0, max_p ‖f_a − f_p‖ − min_n ‖f_a − f_n‖ + margin)``; 0 when no anchor has both."""
    dist = torch.cdist(features, features)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    pos = same & ~eye
    valid = pos.any(dim=1) & (~same).any(dim=1)
    if not bool(valid.any()):
        return features.sum() * 0.0
    hardest_pos = torch.where(pos, dist, torch.zeros_like(dist)).max(dim=1).values
    hardest_neg = torch.where(~same, dist, torch.full_like(dist, float("inf"))).min(dim=1).values
    return torch.relu(hardest_pos - hardest_neg + margin)[valid].mean()


def _schedule(total_steps: int, offset: int) -> Callable[[int], float]:
    """The cosine schedule of :func:`hierqdrant.vision.train.train`, continued from global step ``offset``."""
    return lambda step: 0.5 * (1 + math.cos(math.pi * min(1.0, (step + offset) / total_steps)))


def _optimizer(net: nn.Module, cfg: base.TrainConfig) -> torch.optim.SGD:
    decay = [p for p in net.parameters() if p.ndim > 1]
    plain = [p for p in net.parameters() if p.ndim <= 1]
    return torch.optim.SGD(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": plain, "weight_decay": 0.0}],
        lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
    )  # fmt: skip


def _grown_head(head: nn.Linear, parent_of_new: np.ndarray, seed: int) -> nn.Linear:
    """One row per new sub-class, copied from its parent sub-class's row plus noise (1 % of the row scale)."""
    out = nn.Linear(head.in_features, int(parent_of_new.size))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        idx = torch.as_tensor(parent_of_new, dtype=torch.long)
        w = head.weight.detach().cpu()[idx]
        noise = torch.randn(w.shape, generator=gen) * (0.01 * float(w.std()) + 1e-6)
        out.weight.copy_(w + noise)
        out.bias.copy_(head.bias.detach().cpu()[idx])
    return out


@torch.no_grad()
def _features(
    net: base._Net,
    loader: DataLoader[Any],
    n: int,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Penultimate features (n, d), predicted sub-classes (n,) and a mask of the rows that decoded."""
    net.eval()
    feats: np.ndarray | None = None
    pred = np.full(n, -1, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    for batch in loader:
        if batch.images is None:
            continue
        f = net.features(normalize(batch.images.to(device))).float()
        rows = batch.indices.numpy()
        if feats is None:
            feats = np.zeros((n, f.shape[1]), dtype=np.float32)
        feats[rows] = f.cpu().numpy()
        pred[rows] = net.head(f).argmax(dim=1).cpu().numpy()
        ok[rows] = True
    return (feats if feats is not None else np.zeros((n, 1), dtype=np.float32)), pred, ok


def train_gaussian(
    source: str | Path,
    out: str | Path,
    config: base.TrainConfig | None = None,
    gaussian: GaussianConfig | None = None,
    *,
    console: Console | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    on_epoch: base.EpochCallback | None = None,
) -> GaussianTrainResult:
    """Train with the Gaussian objective (module docstring); checkpoints and resume as :func:`train`."""
    cfg = replace(config or base.TrainConfig(), objective="gaussian")
    cfg = replace(cfg, augment=base.check_augment(cfg.augment))
    g = gaussian or GaussianConfig()
    say = log or (lambda _m: None)
    out_path = Path(out)
    if g.split_every < 1 or g.max_splits < 0 or not g.triplet_margin >= 0 or g.max_k < 2:
        raise InputError("--split-every must be ≥ 1, --max-splits ≥ 0, --triplet-margin ≥ 0")
    items, class_names = base.training_items(source, cfg)
    k = len(class_names)
    resume = base._read_resume(base.last_path(out_path), cfg)
    if resume is not None and cfg.resume is None and resume.get("gaussian") != asdict(g):
        raise InputError(
            f"{base.last_path(out_path)} holds a run with other Gaussian-objective settings",
            "rerun with its settings to finish it, --resume to continue it with these, or --fresh to start over",
        )
    labels = np.asarray([it.label for it in items])
    train_idx, val_idx = stratified_split(labels, cfg.val_share, cfg.seed, min_per_class=1)
    subclass_of = np.arange(k, dtype=np.int64)
    train_sub = labels[train_idx].astype(np.int64)
    if resume is not None:
        subclass_of = np.asarray(resume.get("subclass_of", subclass_of), dtype=np.int64)
        saved = resume.get("subclass_labels")
        if not isinstance(saved, torch.Tensor) or saved.numel() != train_idx.size:
            raise InputError(f"{base.last_path(out_path)} does not carry this run's sub-classes", "pass --fresh")
        train_sub = saved.numpy().astype(np.int64)

    backbone = load_backbone(cfg.model, cfg.weights, image_size=cfg.image_size, num_classes=int(subclass_of.size))
    if backbone.classifier is None or not isinstance(backbone.classifier, nn.Linear):
        raise InputError(f"backbone {cfg.model} has no linear classifier to train", "pick a network, e.g. resnet18")
    if resume is not None and (resume.get("arch") != backbone.name or resume.get("classes") != class_names):
        raise InputError(
            f"{base.last_path(out_path)} was trained as {resume.get('arch')} on other classes", "pass --fresh"
        )
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    net = base._Net(backbone.module, backbone.classifier)
    if resume is not None:
        base._load_net(net, backbone, resume["state_dict"])
    net.to(device)
    normalize = backbone.transform.normalizer(device)  # type: ignore[attr-defined]

    paths = [it.path for it in items]
    workers = default_num_workers() if cfg.workers is None else cfg.workers
    args: dict[str, Any] = {"batch_size": cfg.batch_size, "num_workers": workers, "collate_fn": collate_images}
    gen = torch.Generator().manual_seed(cfg.seed)
    augment = base.TrainAugment(backbone.image_size, cfg.augment)
    train_loader = DataLoader(
        ImageDataset([paths[i] for i in train_idx], augment, None),
        shuffle=True, drop_last=len(train_idx) > cfg.batch_size, generator=gen, **args,
    )  # fmt: skip
    plain = base.EvalTransform(backbone)
    feat_loader = DataLoader(ImageDataset([paths[i] for i in train_idx], plain, None), **args)
    val_loader = DataLoader(ImageDataset([paths[i] for i in val_idx], plain, None), **args)
    steps = max(1, len(train_loader)) if cfg.max_steps is None else min(cfg.max_steps, len(train_loader))
    total = cfg.epochs * steps

    optimizer = _optimizer(net, cfg)
    offset = 0 if resume is None else int(resume.get("step_offset", 0))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(total, offset))
    start, best_acc, best_epoch = 0, -1.0, 0
    history: list[base.EpochStats] = []
    splits: list[dict[str, int]] = []
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        start, best_acc, best_epoch = int(resume["epoch"]), float(resume["best_val_acc"]), int(resume["best_epoch"])
        history = [GaussianEpochStats(**h) for h in resume.get("history", [])]
        splits = [dict(s) for s in resume.get("splits", [])]
        if best_epoch == start:  # a kill between <out>.last and <out>
            base._save_atomic(base._best_of(resume), out_path)
        say(f"resuming from {base.last_path(out_path)} after epoch {start} of {cfg.epochs} with {subclass_of.size} "
            f"sub-classes of {k} classes; --fresh starts over")  # fmt: skip
        if on_epoch is not None:
            running = (-1.0, 0)
            for h in history:
                running = max(running, (h.val_acc, -h.epoch))
                on_epoch(h, -running[1], True)
    else:
        say(f"training {backbone.name} with the Gaussian objective on {train_idx.size} images of {k} classes "
            f"({val_idx.size} for validation), split every {g.split_every} epochs (at most {g.max_splits} times), "
            f"triplet margin {g.triplet_margin:g}, device {device}")  # fmt: skip
    sub_y = torch.as_tensor(train_sub)
    val_y = labels[val_idx]

    for epoch in range(start + 1, cfg.epochs + 1):
        gen.manual_seed(cfg.seed * 100_003 + epoch)
        torch.manual_seed(cfg.seed * 100_003 + epoch)
        net.train()
        t0 = time.perf_counter()
        seen, loss_sum, correct = 0, 0.0, 0
        cls_of = torch.as_tensor(subclass_of, device=device)
        for step, batch in enumerate(train_loader):
            if step >= steps:
                break
            if batch.images is None:
                continue
            x = normalize(batch.images.to(device))
            y = sub_y[batch.indices].to(device)
            f = net.features(x).float()
            scores = net.head(f)
            loss = nn.functional.cross_entropy(scores, y)
            if g.triplet_weight > 0:
                unit = nn.functional.normalize(f, dim=1)
                loss = loss + g.triplet_weight * batch_hard_triplet(unit, y, g.triplet_margin)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen += int(y.shape[0])
            loss_sum += float(loss.detach()) * int(y.shape[0])
            correct += int((cls_of[scores.argmax(dim=1)] == cls_of[y]).sum())
        _, val_pred, val_ok = _features(net, val_loader, val_idx.size, normalize, device)
        val_cls = subclass_of[np.maximum(val_pred, 0)]
        val_acc = float((val_cls == val_y)[val_ok].mean()) if val_ok.any() else float("nan")

        if g.max_splits > len(splits) and epoch % g.split_every == 0 and epoch < cfg.epochs:
            feats, _, ok = _features(net, feat_loader, train_idx.size, normalize, device)
            fnr = false_negative_rates(val_y[val_ok], val_cls[val_ok], k)
            groups = subclass_of.size
            gauss = Gaussians.fit(feats[ok], train_sub[ok], groups)
            stats = class_gaussianity(feats[ok], train_sub[ok], gauss)
            above = fnr > np.nanmean(fnr)  # the reference's criterion, or a failed Gaussianity check
            flagged = [s for s in range(groups) if above[subclass_of[s]] or stats[s].axis_ks >= AXIS_KS]
            split = split_classes(
                feats[ok], train_sub[ok], subclass_of, candidates=flagged, max_k=g.max_k, min_size=g.min_size,
                seed=cfg.seed,
            )  # fmt: skip
            if split.num_subclasses > groups:
                # the images that did not decode keep a sub-class of their class (the first), never trained on
                parent = np.empty(split.num_subclasses, dtype=np.int64)
                parent[split.labels] = train_sub[ok]
                first = np.searchsorted(split.subclass_of, subclass_of[train_sub])
                train_sub = first.astype(np.int64)
                train_sub[ok] = split.labels
                head = _grown_head(net.head, parent, cfg.seed * 7 + epoch)  # type: ignore[arg-type]
                net.head = head.to(device)
                backbone.classifier = net.head
                subclass_of = split.subclass_of
                sub_y = torch.as_tensor(train_sub)
                offset = epoch * steps  # the schedule continues from the steps done so far
                best_acc = -1.0  # the best checkpoint is one of the current sub-classes (this epoch's at least)
                optimizer = _optimizer(net, cfg)
                scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(total, offset))
            splits.append({"epoch": epoch, "subclasses": int(subclass_of.size), "candidates": len(flagged)})
            say(f"epoch {epoch}: {len(flagged)} split candidates → {subclass_of.size} sub-classes of {k} classes")

        stats_e = GaussianEpochStats(
            epoch=epoch, train_loss=loss_sum / max(seen, 1), train_acc=correct / max(seen, 1), val_acc=val_acc,
            images_per_s=seen / max(time.perf_counter() - t0, 1e-9), seconds=time.perf_counter() - t0,
            lr=float(optimizer.param_groups[0]["lr"]), subclasses=int(subclass_of.size),
        )  # fmt: skip
        history.append(stats_e)
        state = base._checkpoint(backbone, net, class_names, cfg, epoch, optimizer, scheduler, history, None)
        if val_acc > best_acc:
            best_acc, best_epoch = val_acc, epoch
        state.update(
            best_val_acc=best_acc, best_epoch=best_epoch, gaussian=asdict(g), splits=splits, step_offset=offset,
            subclass_of=subclass_of.tolist(), subclasses=subclass_names(class_names, subclass_of),
            subclass_labels=torch.as_tensor(train_sub),
        )  # fmt: skip
        base._save_atomic(state, base.last_path(out_path))
        if best_epoch == epoch:
            fault("after-train-last")
            base._save_atomic({k_: v for k_, v in base._best_of(state).items() if k_ != "subclass_labels"}, out_path)
        if on_epoch is not None:
            on_epoch(stats_e, best_epoch, False)
        else:
            say(f"epoch {epoch}/{cfg.epochs}: loss {stats_e.train_loss:.4f}, val acc {val_acc:.4f}, "
                f"{subclass_of.size} sub-classes")  # fmt: skip
        fault("after-train-epoch")
    return GaussianTrainResult(
        checkpoint=out_path, last_checkpoint=base.last_path(out_path), classes=class_names, best_epoch=best_epoch,
        best_val_acc=best_acc, history=history, device=str(device), resumed_after=start, augment=augment.augment,
        subclass_of=subclass_of.tolist(), splits=splits,
    )  # fmt: skip


def read_subclasses(path: str | Path) -> tuple[list[str], list[int]] | None:
    """The classes and ``subclass_of`` a ``--objective gaussian`` checkpoint carries (None: another file)."""
    p = Path(path).expanduser()
    if not p.is_file():
        return None
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not a checkpoint of ours: no sub-classes
        return None
    if not isinstance(state, dict) or state.get("format") != base.CHECKPOINT_FORMAT or "subclass_of" not in state:
        return None
    return [str(c) for c in state["classes"]], [int(s) for s in state["subclass_of"]]
