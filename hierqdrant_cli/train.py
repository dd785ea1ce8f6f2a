"""``hierqdrant train``: train the classifier whose features the hierarchy is learned from."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from .choices import DeviceName
from .common import (
    EXIT_OK,
    EXIT_PARTIAL,
    WEIGHTS_HELP,
    check_at_least,
    console,
    err_console,
    handle_errors,
    print_json,
    shown,
)

if TYPE_CHECKING:
    from hierqdrant.vision.train import EpochStats, TrainResult


class ObjectiveName(str, Enum):
    ce = "ce"
    semantic = "semantic"
    gaussian = "gaussian"


@handle_errors
def train_command(
    dataset: Path = typer.Argument(..., help="Labelled images: an ImageFolder, train/ + test/ folders or CUB."),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="Checkpoint to write (best epoch; '<out>.last' holds the latest, and the same command run again"
        " continues from it).",
    ),
    model: str = typer.Option("resnet50", "--model", "-m", help="Backbone: torchvision name or cifar_resnet20…110."),
    weights: str | None = typer.Option(None, "--weights", "-w", help=WEIGHTS_HELP),
    epochs: int = typer.Option(30, "--epochs", help="Total epochs (a resumed run continues up to this many)."),
    batch_size: int = typer.Option(128, "--batch-size", help="Images per step."),
    lr: float = typer.Option(0.05, "--lr", help="Peak learning rate of SGD (momentum 0.9, cosine schedule)."),
    weight_decay: float = typer.Option(5e-4, "--weight-decay", help="L2 weight decay (not on biases and norms)."),
    val_share: float = typer.Option(0.2, "--val-share", help="Share of each class held out for validation."),
    image_size: int | None = typer.Option(None, "--image-size", help="Input size (default: the backbone's)."),
    objective: ObjectiveName = typer.Option(
        ObjectiveName.ce,
        "--objective",
        help="ce (a classifier), semantic (Barz & Denzler class embeddings) or gaussian (CE + triplet loss; every"
        " --split-every epochs, classes whose features are not one Gaussian are split into sub-classes).",
    ),
    split_every: int = typer.Option(5, "--split-every", help="--objective gaussian: epochs between splits."),
    max_splits: int = typer.Option(2, "--max-splits", help="--objective gaussian: the most splits (0: none)."),
    triplet_margin: float = typer.Option(
        0.5, "--triplet-margin", help="--objective gaussian: triplet loss margin (between unit-normalised features)."
    ),
    taxonomy: Path | None = typer.Option(None, "--taxonomy", help="Class tree for --objective semantic."),
    augment: str | None = typer.Option(
        None,
        "--augment",
        help="flip, crop and/or rotate (comma-separated), or none. Default: crop + flip for images of 64 px and"
        " less, flip + rotation ±30° above (the paper's recipe). Flipping is wrong for characters and text.",
        show_default=False,
    ),
    resume: bool | None = typer.Option(
        None,
        "--resume/--fresh",
        help="--resume: continue '<out>.last' even with other settings; --fresh: start over. Default: continue"
        " '<out>.last' when it is a run of the same settings, else start.",
        show_default=False,
    ),
    device: DeviceName = typer.Option(DeviceName("auto"), "--device", help="auto, cuda or cpu."),
    workers: int | None = typer.Option(None, "--workers", help="DataLoader worker processes."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split, the initialisation and the shuffling."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
) -> None:
    """Train a classifier (or a semantic-embedding network) with the paper's recipe; keep the best epoch.

    Interrupted (Ctrl-C, a kill), the same command run again resumes after the last complete epoch.
    """
    from hierqdrant.core.errors import InputError
    from hierqdrant.vision.train import TrainConfig, check_augment, train

    # the options first, before the images are read and the network is built
    check_at_least(1, epochs=epochs, batch_size=batch_size, image_size=image_size)
    check_at_least(0, workers=workers)
    if not (lr > 0 and weight_decay >= 0):
        raise InputError(f"--lr {lr} must be > 0 and --weight-decay {weight_decay} ≥ 0", "e.g. --lr 0.05")
    if not 0 < val_share < 1:
        raise InputError(f"--val-share {val_share} must be between 0 and 1", "e.g. --val-share 0.2")
    augment = check_augment(augment)
    check_at_least(1, split_every=split_every)
    check_at_least(0, max_splits=max_splits)
    if not triplet_margin >= 0:
        raise InputError(f"--triplet-margin {triplet_margin} must be ≥ 0", "e.g. --triplet-margin 1")

    config = TrainConfig(
        model=model,
        weights=weights,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        val_share=val_share,
        image_size=image_size,
        device=device.value,
        workers=workers,
        seed=seed,
        objective=objective.value,
        taxonomy=str(taxonomy) if taxonomy else None,
        augment=augment,
        resume=resume,
    )
    # Each epoch as it ends: a row on stdout for people; under --json a line on stderr (stdout stays one JSON
    # document). The bar within an epoch only on a terminal.
    log = lambda msg: err_console.print(f"[dim]{shown(msg)}[/]", highlight=False, soft_wrap=True)  # noqa: E731
    rows = None if as_json else EpochRows()
    result: TrainResult
    if objective is ObjectiveName.gaussian:
        from hierqdrant.vision.gaussian_objective import GaussianConfig, train_gaussian

        gauss = GaussianConfig(split_every=split_every, max_splits=max_splits, triplet_margin=triplet_margin)
        result = train_gaussian(dataset, out, config, gauss, console=err_console, progress=err_console.is_terminal,
                                log=log, on_epoch=rows)  # fmt: skip
    else:
        result = train(dataset, out, config, console=err_console, progress=err_console.is_terminal, log=log,
                       on_epoch=rows)  # fmt: skip
    if as_json:
        print_json(result.to_dict())
    else:
        if result.resumed_after:
            console.print(f"resumed after epoch {result.resumed_after} from {result.last_checkpoint}")
        console.print(f"best: epoch {result.best_epoch}, validation accuracy {result.best_val_acc:.4f} → {out}")
        subclass_of = getattr(result, "subclass_of", None)
        if subclass_of is not None:
            console.print(f"{len(subclass_of)} sub-classes of {len(result.classes)} classes (ingest makes them leaves)")
        console.print(f"[dim]next: hierqdrant ingest {dataset} --collection NAME --model {model} --weights {out}[/]")
        for path, reason in result.skipped:
            err_console.print(f"[yellow]skipped[/] {shown(path)}: {shown(reason)}", highlight=False)
    raise typer.Exit(EXIT_PARTIAL if result.skipped else EXIT_OK)


class EpochRows:
    """The epochs table, printed a row at a time as each epoch ends (resumed ones dim; the best so far bold)."""

    COLUMNS = (("epoch", 5), ("loss", 8), ("train acc", 9), ("val acc", 8), ("images/s", 9), ("seconds", 8))

    def __init__(self) -> None:
        self.started = False

    def __call__(self, stats: EpochStats, best_epoch: int, resumed: bool) -> None:
        # --objective gaussian: one more column, the sub-classes (head outputs) after the epoch's split
        sub = getattr(stats, "subclasses", None)
        columns = self.COLUMNS + ((("sub-classes", 11),) if sub is not None else ())
        if not self.started:
            console.print("  ".join(f"{name:>{width}}" for name, width in columns), style="bold", highlight=False)
            self.started = True
        values = (
            str(stats.epoch),
            f"{stats.train_loss:.4f}",
            f"{stats.train_acc:.4f}",
            f"{stats.val_acc:.4f}",
            f"{stats.images_per_s:,.0f}",
            f"{stats.seconds:.1f}",
        ) + ((str(sub),) if sub is not None else ())
        line = "  ".join(f"{v:>{width}}" for v, (_, width) in zip(values, columns, strict=True))
        note = "  (resumed)" if resumed else ("  best" if best_epoch == stats.epoch else "")
        console.print(line + note, style="dim" if resumed else None, highlight=False)
