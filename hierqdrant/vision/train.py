"""Train the classifier the method needs (the paper's recipe), or the semantic-embedding baseline.

Recipe (Venkataramanan et al. 2023, §4): SGD with momentum 0.9 and weight decay, a cosine learning-rate
schedule; random horizontal flip and rotation ±30° at 224 px (random crop with padding + flip for
images of 64 px and less); 80/20 split of the training images for validation, keeping the best
checkpoint. Bf16 autocast on CUDA. ``TrainConfig.augment`` picks the augmentation instead (``"none"``,
or some of ``crop``, ``flip``, ``rotate``): flipping is wrong for characters and text.

``objective="semantic"`` trains the network to map an image onto its class embedding φ_y (Barz & Denzler,
WACV 2019): unit vectors whose dot products equal the tree similarity ``φ_i·φ_j = 1 − h(LCA(i, j))/H``;
loss ``1 − cos(f(x), φ_y)``, prediction ``argmax_c cos(f(x), φ_c)``.

Checkpoints hold only tensors, numbers, strings, lists and dicts, so ``torch.load(..., weights_only=True)``
reads them, and they are written to a temporary file and renamed (a kill never leaves a broken file).
``<out>`` keeps the best epoch (what ``ingest --weights`` loads); ``<out>.last`` the latest, written first.

Resume: the same command run again continues after the last complete epoch (``TrainConfig.resume=None``,
the default) when ``<out>.last`` is a run of the same settings; ``resume=True`` continues it even with other
settings (a longer ``epochs``, say), ``resume=False`` starts over. A kill between the two writes of an epoch
is repaired on resume: ``<out>`` is rewritten from ``<out>.last`` when that epoch was the best.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader

from hierqdrant.core.errors import InputError
from hierqdrant.core.faults import fault
from hierqdrant.core.fileio import atomic_writer
from hierqdrant.core.hierarchy import Hierarchy
from hierqdrant.core.splits import stratified_split
from hierqdrant.vision.backbones import Backbone, load_backbone
from hierqdrant.vision.extract import ImageBatch, ImageDataset, collate_images, default_num_workers, resolve_device
from hierqdrant.vision.images import ImageDecodeError, load_rgb
from hierqdrant.vision.sources import ImageItem, discover

CHECKPOINT_FORMAT = "hierqdrant.checkpoint"
Objective = Literal["ce", "semantic", "gaussian"]


def class_embeddings(tree: Hierarchy) -> np.ndarray:
    """(K, K) unit class embeddings with ``φ_i·φ_j = 1 − h(LCA(i, j))/H`` (Barz & Denzler 2019).

    The similarity is a sum of rank-one blocks, ``S = Σ_{v ≠ root} w_v b_v b_vᵀ`` with ``b_v`` the
    indicator of the classes below v and ``w_v = (h(parent(v)) − h(v))/H`` (the weights along a leaf's
    path sum to 1, and along two leaves' shared path to ``1 − h(LCA)/H``). So ``Φ = B·diag(√w)`` is an
    exact embedding; an SVD brings it to K dimensions with the same Gram matrix.
    """
    k = tree.num_leaves
    h = float(max(tree.tree_height, 1))
    nodes = [v for v in range(tree.num_nodes) if v != tree.root]
    b = np.zeros((k, len(nodes)))
    weights = np.zeros(len(nodes))
    for col, v in enumerate(nodes):
        b[tree.leaves_under(v), col] = 1.0
        weights[col] = (tree.height[tree.parent[v]] - tree.height[v]) / h
    phi = b * np.sqrt(weights)
    u, sing, _ = np.linalg.svd(phi, full_matrices=False)
    return (u * sing)[:, :k]


AUGMENTS = ("crop", "flip", "rotate")  # in the order they are applied


def check_augment(value: str | None) -> str | None:
    """``"flip,crop"`` → ``"crop,flip"`` (sorted, unique), ``"none"`` → ``"none"``, ``None`` → ``None`` (the
    recipe's default for the image size, :func:`default_augment`); anything else is a one-line error."""
    if value is None:
        return None
    parts = {p.strip().lower() for p in value.split(",") if p.strip()}
    if parts == {"none"}:
        return "none"
    if not parts or not parts <= set(AUGMENTS):
        raise InputError(
            f"--augment {value!r} is not a list of augmentations",
            f"use some of {', '.join(AUGMENTS)} (comma-separated), or none",
        )
    return ",".join(a for a in AUGMENTS if a in parts)


def default_augment(image_size: int) -> str:
    """The paper's recipe: crop (padding 1/8) + flip for images of 64 px and less, flip + rotation above."""
    return "crop,flip" if image_size <= 64 else "flip,rotate"


class TrainAugment:
    """The training augmentation → uint8 CHW: ``augment`` (see :func:`check_augment`; default
    :func:`default_augment`) — random crop (padding 1/8), horizontal flip, rotation ±``rotation``°.

    Module-level so DataLoader workers can pickle it; normalisation happens on the device.
    """

    def __init__(self, image_size: int, augment: str | None = None, rotation: float = 30.0) -> None:
        import torchvision.transforms as T

        self.image_size = image_size
        chosen = check_augment(augment) or default_augment(image_size)
        self.augment = chosen
        kinds = set(chosen.split(","))
        base = [T.Resize(image_size), T.CenterCrop(image_size)]
        aug: list[Any] = []
        if "crop" in kinds:
            aug.append(T.RandomCrop(image_size, padding=max(1, image_size // 8)))
        if "flip" in kinds:
            aug.append(T.RandomHorizontalFlip())
        if "rotate" in kinds:
            aug.append(T.RandomRotation(rotation))
        self._pipeline = T.Compose([*base, *aug])

    def __call__(self, img: Image.Image) -> torch.Tensor:
        from torchvision.transforms.functional import pil_to_tensor

        return pil_to_tensor(self._pipeline(img))


class EvalTransform:
    """The backbone's deterministic geometry → uint8 CHW (normalised on the device)."""

    def __init__(self, backbone: Backbone) -> None:
        self._transform = backbone.transform

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return self._transform.to_uint8(img)  # type: ignore[attr-defined]


@dataclass
class TrainConfig:
    model: str = "resnet50"
    weights: str | None = None
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    val_share: float = 0.2
    image_size: int | None = None
    device: str = "auto"
    workers: int | None = None
    seed: int = 0
    objective: Objective = "ce"
    taxonomy: str | None = None
    augment: str | None = None  # "none", or some of crop, flip, rotate; None: the recipe's (default_augment)
    resume: bool | None = None  # None: continue <out>.last when it is this run; True: continue it; False: start over
    max_steps: int | None = None  # stop each epoch early (smoke tests)


# The settings that make two runs the same run: a rerun with all of them equal continues where the last stopped.
RUN_SETTINGS = (
    "model", "weights", "batch_size", "lr", "momentum", "weight_decay", "val_share", "image_size", "seed",
    "objective", "taxonomy", "max_steps", "augment",
)  # fmt: skip


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    train_acc: float
    val_acc: float
    images_per_s: float
    seconds: float
    lr: float


@dataclass
class TrainResult:
    checkpoint: Path
    last_checkpoint: Path
    classes: list[str]
    best_epoch: int
    best_val_acc: float
    history: list[EpochStats] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    device: str = "cpu"
    resumed_after: int = 0  # the last complete epoch found in <out>.last (0: a new run)
    augment: str = ""  # the augmentation used, e.g. "crop,flip" or "none"

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": str(self.checkpoint),
            "last_checkpoint": str(self.last_checkpoint),
            "classes": len(self.classes),
            "best_epoch": self.best_epoch,
            "best_val_acc": self.best_val_acc,
            "epochs": [asdict(e) for e in self.history],
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "device": self.device,
            "resumed_after": self.resumed_after,
            "augment": self.augment,
        }


#: ``on_epoch(stats, best_epoch, resumed)`` of :func:`train`.
EpochCallback = Callable[[EpochStats, int, bool], None]


def last_path(out: Path) -> Path:
    return out.with_name(out.name + ".last")


def _check_classes(items: list[ImageItem], class_names: list[str]) -> None:
    """Before training: ≥ 2 classes, and one image of every class decodes."""
    if len(class_names) < 2:
        raise InputError(f"training needs at least 2 classes, found {len(class_names)}", "add class subfolders")
    by_class: dict[int, list[ImageItem]] = {}
    for item in items:
        if item.label is not None:
            by_class.setdefault(item.label, []).append(item)
    for c, name in enumerate(class_names):
        for item in by_class.get(c, []):
            try:
                load_rgb(item.path)
                break
            except ImageDecodeError:
                continue
        else:
            raise InputError(f"class {name!r} has no usable image", "add readable images or remove the class folder")


def training_items(source: str | Path, cfg: TrainConfig) -> tuple[list[ImageItem], list[str]]:
    """The labelled non-test images of ``source`` and its class names, after checking ``cfg``'s numbers
    (both objectives train on these)."""
    if cfg.epochs < 1 or cfg.batch_size < 1 or not (0.0 < cfg.val_share < 1.0) or cfg.lr <= 0:
        raise InputError("epochs and batch size must be ≥ 1, lr > 0 and the validation share in (0, 1)")
    found = discover(source)
    items = [it for it in found.items if it.label is not None and it.split != "test"]
    if not items:
        raise InputError(f"{source} has no labelled training images", "use class subfolders of images")
    class_names = list(found.class_names)
    _check_classes(items, class_names)
    return items, class_names


def _read_resume(path: Path, cfg: TrainConfig) -> dict[str, Any] | None:
    """The state to continue from: ``None`` for a new run (``resume=False``, or no ``<out>.last`` when the
    choice is automatic), else ``<out>.last`` — refused when unreadable, or, automatically, of other settings."""
    if cfg.resume is False:
        return None
    if not path.is_file():
        if cfg.resume is None:
            return None
        raise InputError(f"nothing to resume: {path} does not exist", "drop --resume to start a new run")
    fresh = "pass --fresh to start over" if cfg.resume is None else "drop --resume"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise InputError(f"{path} is not a readable checkpoint ({type(exc).__name__})", fresh) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path} is not a hierqdrant training checkpoint", fresh)
    if cfg.resume is None:
        before, now = dict(state.get("config") or {}), asdict(cfg)
        size = state.get("image_size")
        if isinstance(size, int):  # the recipe's default is the same run as naming it
            before["augment"] = before.get("augment") or default_augment(size)
            now["augment"] = now["augment"] or default_augment(size)
        changed = [f"{k} {before.get(k)!r} → {now[k]!r}" for k in RUN_SETTINGS if before.get(k) != now[k]]
        if changed:
            raise InputError(
                f"{path} holds a run with other settings ({'; '.join(changed[:3])})",
                "rerun with its settings to finish it, --resume to continue it with these, or --fresh to start over",
            )
    return state


def _save_atomic(obj: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as fh:
        torch.save(obj, fh)


class _Net(nn.Module):
    def __init__(self, features: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train(
    source: str | Path,
    out: str | Path,
    config: TrainConfig | None = None,
    *,
    console: Console | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Train ``config.model`` on the labelled images of ``source`` and write the best checkpoint to ``out``.

    ``on_epoch(stats, best_epoch, resumed)`` is called as each epoch ends (its checkpoints written), and
    first for the epochs of a resumed run (``resumed=True``); without it each epoch is one ``log`` line.
    """
    cfg = config or TrainConfig()
    cfg = replace(cfg, augment=check_augment(cfg.augment))
    say = log or (lambda _m: None)
    out_path = Path(out)
    items, class_names = training_items(source, cfg)
    resume_state = _read_resume(last_path(out_path), cfg)

    tree: Hierarchy | None = None
    embed_matrix: torch.Tensor | None = None
    if cfg.objective == "semantic":
        if cfg.taxonomy is None:
            raise InputError("the semantic objective needs a taxonomy", "pass --taxonomy FILE")
        tree = Hierarchy.read(cfg.taxonomy, class_names=class_names)
        embed_matrix = torch.tensor(class_embeddings(tree), dtype=torch.float32)
    elif cfg.objective == "gaussian":  # its own loop, which grows the head
        raise InputError("the gaussian objective trains elsewhere", "use vision.gaussian_objective.train_gaussian")
    elif cfg.objective != "ce":
        raise InputError(f"unknown objective {cfg.objective!r}", "use ce, semantic or gaussian")
    outputs = len(class_names) if embed_matrix is None else int(embed_matrix.shape[1])
    backbone = load_backbone(cfg.model, cfg.weights, image_size=cfg.image_size, num_classes=outputs)
    if backbone.classifier is None:
        raise InputError(f"backbone {cfg.model} has no classifier to train", "pick a network, e.g. resnet18")
    if resume_state is not None:
        fresh = "pass --fresh to start over" if cfg.resume is None else "drop --resume"
        if resume_state.get("arch") != backbone.name or resume_state.get("classes") != class_names:
            raise InputError(
                f"{last_path(out_path)} was trained as {resume_state.get('arch')} on other classes",
                f"resume with the same --model and dataset, or {fresh}",
            )
        missing, unexpected = _net_state_keys(backbone, resume_state["state_dict"])
        if missing or unexpected:
            raise InputError(f"{last_path(out_path)} does not fit {backbone.name}", fresh)

    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    net = _Net(backbone.module, backbone.classifier)
    if resume_state is not None:
        _load_net(net, backbone, resume_state["state_dict"])
    net.to(device)
    if device.type == "cuda" and backbone.is_conv:
        net = net.to(memory_format=torch.channels_last)
    normalize = backbone.transform.normalizer(device)  # type: ignore[attr-defined]

    labels = np.asarray([it.label for it in items])
    # Stratified: round(val_share · n_c) images of each class to validation, at least one left to train on.
    train_idx, val_idx = stratified_split(labels, cfg.val_share, cfg.seed, min_per_class=1)
    paths = [it.path for it in items]
    workers = default_num_workers() if cfg.workers is None else cfg.workers
    loader_args: dict[str, Any] = {
        "batch_size": cfg.batch_size,
        "num_workers": workers,
        "collate_fn": collate_images,
        "pin_memory": device.type == "cuda",
        "persistent_workers": workers > 0,
    }
    gen = torch.Generator().manual_seed(cfg.seed)
    augment = TrainAugment(backbone.image_size, cfg.augment)
    train_loader = DataLoader(
        ImageDataset([paths[i] for i in train_idx], augment, None),
        shuffle=True,
        drop_last=len(train_idx) > cfg.batch_size,
        generator=gen,
        **loader_args,
    )
    val_loader = DataLoader(ImageDataset([paths[i] for i in val_idx], EvalTransform(backbone), None), **loader_args)
    train_y = torch.as_tensor(labels[train_idx])
    val_y = torch.as_tensor(labels[val_idx])

    params_decay = [p for n, p in net.named_parameters() if p.ndim > 1]
    params_plain = [p for n, p in net.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD(
        [{"params": params_decay, "weight_decay": cfg.weight_decay}, {"params": params_plain, "weight_decay": 0.0}],
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=True,
    )
    steps_per_epoch = max(1, len(train_loader)) if cfg.max_steps is None else min(cfg.max_steps, len(train_loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(1.0, step / (cfg.epochs * steps_per_epoch))))
    )
    start_epoch, best_acc, best_epoch = 0, -1.0, 0
    history: list[EpochStats] = []
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        start_epoch = int(resume_state["epoch"])
        best_acc, best_epoch = float(resume_state["best_val_acc"]), int(resume_state["best_epoch"])
        history = [EpochStats(**h) for h in resume_state.get("history", [])]
        if best_epoch == start_epoch:  # a kill may have come between writing <out>.last and <out>: redo <out>
            _save_atomic(_best_of(resume_state), out_path)
        say(
            f"resuming from {last_path(out_path)} after epoch {start_epoch} of {cfg.epochs} (best validation "
            f"accuracy {best_acc:.4f} at epoch {best_epoch}); --fresh starts over"
        )
        if on_epoch is not None:
            running = -1.0, 0
            for h in history:
                running = max(running, (h.val_acc, -h.epoch))
                on_epoch(h, -running[1], True)
    else:
        say(
            f"training {backbone.name} on {train_idx.size} images of {len(class_names)} classes "
            f"({val_idx.size} for validation), augmentation: {augment.augment}, device {device}"
        )
    if start_epoch >= cfg.epochs:
        say(f"already trained for {start_epoch} epochs (--epochs {cfg.epochs}); --fresh starts over")
    target = embed_matrix.to(device) if embed_matrix is not None else None
    skipped: dict[str, str] = {}

    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        # Each epoch's shuffle and augmentation follow from (seed, epoch) alone, so a resumed run trains as an
        # uninterrupted one would (exactly so in the main process, --workers 0).
        gen.manual_seed(cfg.seed * 100_003 + epoch)
        torch.manual_seed(cfg.seed * 100_003 + epoch)
        net.train()
        t0 = time.perf_counter()
        seen, loss_sum, correct = 0, 0.0, 0
        bar = _progress(console, progress, f"epoch {epoch}/{cfg.epochs}", steps_per_epoch)
        with bar:
            task = bar.add_task("train", total=steps_per_epoch, info="")
            for step, batch in enumerate(train_loader):
                if step >= steps_per_epoch:
                    break
                _note_failures(batch, train_idx, paths, skipped)
                if batch.images is None:
                    continue
                x = normalize(batch.images.to(device, non_blocking=True))
                if device.type == "cuda" and backbone.is_conv:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = train_y[batch.indices].to(device, non_blocking=True)
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    scores = net(x)
                loss, pred = _loss_and_prediction(scores.float(), y, target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                n = int(y.shape[0])
                seen += n
                loss_sum += float(loss.detach()) * n
                correct += int((pred == y).sum())
                rate = seen / max(time.perf_counter() - t0, 1e-9)
                bar.update(
                    task, advance=1, info=f"loss {loss_sum / seen:.3f} acc {correct / seen:.3f} {rate:,.0f} img/s"
                )
        train_seconds = time.perf_counter() - t0
        val_acc = _evaluate(net, val_loader, val_y, normalize, device, backbone.is_conv, target)
        stats = EpochStats(
            epoch=epoch,
            train_loss=loss_sum / max(seen, 1),
            train_acc=correct / max(seen, 1),
            val_acc=val_acc,
            images_per_s=seen / max(train_seconds, 1e-9),
            seconds=time.perf_counter() - t0,
            lr=float(scheduler.get_last_lr()[0]),
        )
        history.append(stats)
        state = _checkpoint(backbone, net, class_names, cfg, epoch, optimizer, scheduler, history, embed_matrix)
        if val_acc > best_acc:
            best_acc, best_epoch = val_acc, epoch
        state["best_val_acc"], state["best_epoch"] = best_acc, best_epoch
        # <out>.last first: a kill before <out> is written is repaired on resume (see _best_of)
        _save_atomic(state, last_path(out_path))
        if best_epoch == epoch:
            fault("after-train-last")
            _save_atomic(_best_of(state), out_path)
        if on_epoch is not None:
            on_epoch(stats, best_epoch, False)
        else:
            say(
                f"epoch {epoch}/{cfg.epochs}: loss {stats.train_loss:.4f}, train acc {stats.train_acc:.4f}, "
                f"val acc {val_acc:.4f}, {stats.images_per_s:,.0f} images/s, {stats.seconds:.1f} s"
                + (" (best)" if best_epoch == epoch else "")
            )
        fault("after-train-epoch")
    return TrainResult(
        checkpoint=out_path,
        last_checkpoint=last_path(out_path),
        classes=class_names,
        best_epoch=best_epoch,
        best_val_acc=best_acc,
        history=history,
        skipped=sorted(skipped.items()),
        device=str(device),
        resumed_after=start_epoch,
        augment=augment.augment,
    )


def _best_of(state: dict[str, Any]) -> dict[str, Any]:
    """The best-epoch checkpoint ``<out>``: the epoch's state without the optimizer and the scheduler."""
    return {k: v for k, v in state.items() if k not in ("optimizer", "scheduler")}


def _loss_and_prediction(
    out: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if target is None:
        return nn.functional.cross_entropy(out, y), out.argmax(dim=1)
    cos = nn.functional.normalize(out, dim=1) @ target.T  # (N, K) cosine to every class embedding
    return (1.0 - cos.gather(1, y[:, None])).mean(), cos.argmax(dim=1)


@torch.no_grad()
def _evaluate(
    net: nn.Module,
    loader: DataLoader[Any],
    labels: torch.Tensor,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    channels_last: bool,
    target: torch.Tensor | None,
) -> float:
    net.eval()
    correct = total = 0
    for batch in loader:
        if batch.images is None:
            continue
        x = normalize(batch.images.to(device, non_blocking=True))
        if device.type == "cuda" and channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            scores = net(x)
        y = labels[batch.indices].to(device)
        _, pred = _loss_and_prediction(scores.float(), y, target)
        correct += int((pred == y).sum())
        total += int(y.shape[0])
    return correct / total if total else float("nan")


def _note_failures(batch: ImageBatch, subset: np.ndarray, paths: list[Path], skipped: dict[str, str]) -> None:
    for i, reason in batch.failed:
        skipped[str(paths[int(subset[i])])] = reason


def _net_state_keys(backbone: Backbone, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    expected = set(backbone.full_state_dict())
    return sorted(expected - set(state)), sorted(set(state) - expected)


def _load_net(net: _Net, backbone: Backbone, state: dict[str, torch.Tensor]) -> None:
    head = f"{backbone.head_name}."
    net.features.load_state_dict({k: v for k, v in state.items() if not k.startswith(head)})
    net.head.load_state_dict({k[len(head) :]: v for k, v in state.items() if k.startswith(head)})


def _checkpoint(
    backbone: Backbone,
    net: _Net,
    class_names: list[str],
    cfg: TrainConfig,
    epoch: int,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    history: list[EpochStats],
    embed_matrix: torch.Tensor | None,
) -> dict[str, Any]:
    state = {k: v.detach().cpu() for k, v in backbone.full_state_dict().items()}
    out: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "arch": backbone.name,
        "classes": class_names,
        "num_classes": len(class_names),
        "image_size": backbone.image_size,
        "objective": cfg.objective,
        "epoch": epoch,
        "state_dict": state,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "history": [asdict(h) for h in history],
        "config": {k: v for k, v in asdict(cfg).items() if isinstance(v, (int, float, str, bool, type(None)))},
    }
    if embed_matrix is not None:
        out["class_embeddings"] = embed_matrix.cpu()
    return out


def _progress(console: Console | None, enabled: bool, title: str, total: int) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn(title),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=True,
    )
