"""``hierqdrant train``: train the classifier whose features the hierarchy is learned from."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from rich.table import Table

from .choices import DeviceName
from .common import EXIT_OK, EXIT_PARTIAL, console, err_console, handle_errors, print_json


class ObjectiveName(str, Enum):
    ce = "ce"
    semantic = "semantic"


@handle_errors
def train_command(
    dataset: Path = typer.Argument(..., help="Labelled images: an ImageFolder, train/ + test/ folders or CUB."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Checkpoint to write (best epoch; '<out>.last' holds the latest)."
    ),
    model: str = typer.Option("resnet50", "--model", "-m", help="Backbone: torchvision name or cifar_resnet20…110."),
    weights: str | None = typer.Option(
        None, "--weights", "-w", help="Start from these weights (file or torchvision name)."
    ),
    epochs: int = typer.Option(30, "--epochs", help="Total epochs (with --resume: continue up to this many)."),
    batch_size: int = typer.Option(128, "--batch-size", help="Images per step."),
    lr: float = typer.Option(0.05, "--lr", help="Peak learning rate of SGD (momentum 0.9, cosine schedule)."),
    weight_decay: float = typer.Option(5e-4, "--weight-decay", help="L2 weight decay (not on biases and norms)."),
    val_share: float = typer.Option(0.2, "--val-share", help="Share of each class held out for validation."),
    image_size: int | None = typer.Option(None, "--image-size", help="Input size (default: the backbone's)."),
    objective: ObjectiveName = typer.Option(
        ObjectiveName.ce, "--objective", help="ce (a classifier) or semantic (Barz & Denzler class embeddings)."
    ),
    taxonomy: Path | None = typer.Option(None, "--taxonomy", help="Class tree for --objective semantic."),
    resume: bool = typer.Option(False, "--resume", help="Continue from '<out>.last'."),
    device: DeviceName = typer.Option(DeviceName("auto"), "--device", help="auto, cuda or cpu."),
    workers: int | None = typer.Option(None, "--workers", help="DataLoader worker processes."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split, the initialisation and the shuffling."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
) -> None:
    """Train a classifier (or a semantic-embedding network) with the paper's recipe; keep the best epoch."""
    from hierqdrant.vision.train import TrainConfig, train

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
        resume=resume,
    )
    show = not as_json
    log = (lambda msg: err_console.print(f"[dim]{msg}[/]")) if show else None
    result = train(dataset, out, config, console=err_console, progress=show, log=log)
    if as_json:
        print_json(result.to_dict())
    else:
        table = Table(title=f"training → {out}")
        for column in ("epoch", "loss", "train acc", "val acc", "images/s", "seconds"):
            table.add_column(column, justify="right")
        for e in result.history:
            style = "bold" if e.epoch == result.best_epoch else ""
            table.add_row(
                str(e.epoch),
                f"{e.train_loss:.4f}",
                f"{e.train_acc:.4f}",
                f"{e.val_acc:.4f}",
                f"{e.images_per_s:,.0f}",
                f"{e.seconds:.1f}",
                style=style,
            )
        console.print(table)
        console.print(f"best: epoch {result.best_epoch}, validation accuracy {result.best_val_acc:.4f} → {out}")
        console.print(f"[dim]next: hierqdrant ingest {dataset} --collection NAME --model {model} --weights {out}[/]")
        for path, reason in result.skipped:
            err_console.print(f"[yellow]skipped[/] {path}: {reason}", highlight=False)
    raise typer.Exit(EXIT_PARTIAL if result.skipped else EXIT_OK)
