"""``hierqdrant embed``: image folder → features .npz (the interchange format of the other commands)."""

from __future__ import annotations

from pathlib import Path

import typer

from hierqdrant.core.errors import InputError

from .choices import DeviceName
from .common import EXIT_OK, EXIT_PARTIAL, WEIGHTS_HELP, console, err_console, handle_errors, print_json, shown
from .eval_shared import log_line, print_warnings, progress_bar


@handle_errors
def embed_command(
    source: Path = typer.Argument(
        ..., help="An ImageFolder, train/test folders, a CUB folder or an unlabelled folder."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Features .npz to write (features, labels, classes, paths, splits)."
    ),
    model: str = typer.Option(
        "resnet50", "--model", "-m", help="Backbone (torchvision name, cifar_resnet20…110, pixels)."
    ),
    weights: str | None = typer.Option(None, "--weights", "-w", help=WEIGHTS_HELP),
    image_size: int | None = typer.Option(None, "--image-size", help="Override the backbone's input size."),
    device: DeviceName = typer.Option(DeviceName("auto"), "--device", help="auto, cuda or cpu."),
    batch_size: int = typer.Option(128, "--batch-size", help="Images per batch."),
    workers: int | None = typer.Option(None, "--workers", help="DataLoader worker processes."),
    head: bool = typer.Option(
        False,
        "--head",
        help="Use the final layer's output instead of the penultimate features (class scores, or the class "
        "embedding of a `train --objective semantic` checkpoint: the semantic-embedding baseline).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
) -> None:
    """Embed a dataset's images with a backbone's penultimate layer and save them as a features .npz."""
    import contextlib
    import time

    import numpy as np

    from hierqdrant.core.features import FeatureSet
    from hierqdrant.pipelines.ingest import extractor_warnings
    from hierqdrant.vision import discover, extract_features, load_backbone
    from hierqdrant.vision.backbones import with_head

    if out.suffix.lower() != ".npz":
        raise InputError(f"--out {out} must end in .npz")
    found = discover(source)
    backbone = load_backbone(model, weights, image_size=image_size)
    if head:
        backbone = with_head(backbone)
    started = time.perf_counter()
    # progress on stderr, also with --json: a bar on a terminal, else one line when done
    log_line(f"embedding {len(found.items)} images of {source} with {backbone.name}")
    bar = contextlib.nullcontext() if err_console.is_terminal else progress_bar(len(found.items), "embedding")
    with bar as counter:
        got = extract_features(
            [item.path for item in found.items],
            backbone,
            device=device.value,
            batch_size=batch_size,
            num_workers=workers,
            progress=True if counter is None else counter,
            console=err_console,
        )
    seconds = time.perf_counter() - started
    items = [found.items[i] for i in got.indices]
    labelled = bool(items) and all(item.label is not None for item in items)
    FeatureSet(
        features=got.features,
        labels=np.asarray([item.label for item in items]) if labelled else None,
        classes=list(found.class_names) or None,
        paths=[item.key for item in items],
        splits=[item.split or "" for item in items] if any(item.split for item in items) else None,
    ).save(out)
    skipped = [*found.problems, *got.skipped]
    warnings = extractor_warnings(backbone.description())
    summary = {
        "out": str(out),
        "images": len(items),
        "dims": int(got.features.shape[1]) if got.features.ndim == 2 else 0,
        "classes": len(found.class_names),
        "skipped": [{"path": s.path, "reason": s.reason} for s in skipped],
        "seconds": round(seconds, 2),
        "images_per_s": round(len(items) / seconds, 1) if seconds > 0 else None,
        "extractor": backbone.description(),
        "warnings": warnings,
    }
    if as_json:
        print_warnings(warnings, to_stderr=True)
        print_json(summary)
    else:
        console.print(f"wrote {len(items)} × {summary['dims']} features to {out} ({summary['images_per_s']} images/s)")
        for s in skipped:
            err_console.print(f"[yellow]skipped[/] {shown(s.path)}: {shown(s.reason)}", highlight=False)
        print_warnings(warnings)
    raise typer.Exit(EXIT_PARTIAL if skipped else EXIT_OK)
