"""Feature extraction as a Ray Data pipeline: the same embedding as :func:`extract_features`, spread over actors.

``ingest --backend ray`` (``pip install "hierqdrant[ray]"``) embeds with :func:`extract_features_ray`:

    ray.data.from_items([{index, path}, …])
      → map_batches(_Embedder, compute=ActorPoolStrategy(size=concurrency), num_gpus=1 | num_cpus=1)
      → iter_batches() on the driver: features in input order, skipped files with their reasons

Each actor holds one backbone, rebuilt from the extractor's description by
:func:`~hierqdrant.vision.extractor.extractor_from_description` — the function queries use, so the network,
its weights (a local file is checked by its sha256) and its preprocessing are the ones the collection
records — and embeds every batch it is given with :func:`~hierqdrant.vision.extract.extract_features`
itself: the same decoding, transform, device handling and corrupt-file reports as the default path, so the
vectors agree with it to float rounding. Nothing here copies that code; a batch's bad files come back as rows
with a reason and no feature.

Where the cluster has GPUs (and ``device`` is not ``cpu``) each actor takes one GPU and decodes with
DataLoader workers beside it (``num_workers``, default min(8, cores)); otherwise each actor takes one CPU and
decodes in its own process, and there are as many actors as CPUs unless ``concurrency`` says otherwise.
A local checkpoint file (``--weights FILE``) and the torch hub cache must be readable at the same path on
every node, as must the images.

Ray is imported inside the functions, so ``hierqdrant`` imports without it. An existing Ray connection
(``ray.init`` done by the caller, e.g. a test or a notebook on a cluster) is used as it is; otherwise a local
instance (or the cluster named by ``RAY_ADDRESS``) is started and shut down again afterwards. Ray moves
batches between processes with its own serialisation; nothing of ours is written to a file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hierqdrant.core.errors import HierqdrantError, InputError
from hierqdrant.vision.extract import BatchCallback, Extracted, _progress, extract_features
from hierqdrant.vision.sources import Skipped

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["RAY_INSTALL", "extract_features_ray", "require_ray"]

#: The one-line fix when Ray is missing.
RAY_INSTALL = 'pip install "hierqdrant[ray]"'


def require_ray() -> Any:
    """The ``ray`` module with Ray Data, or a one-line :class:`InputError` saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the extra installs ray[data]; plain ray lacks pandas/pyarrow)
    except ImportError as exc:
        raise InputError(f"--backend ray needs Ray Data, which is not installed ({exc})", RAY_INSTALL) from exc
    return ray


class _Embedder:
    """A Ray Data actor: one backbone, rebuilt once, embedding batches of ``{index, path}`` rows."""

    def __init__(
        self, description: Mapping[str, Any], weights: str | None, device: str, batch_size: int, num_workers: int | None
    ) -> None:
        from hierqdrant.vision.extractor import extractor_from_description

        self.dim = int(description.get("feature_dim") or 0)
        self.device = device
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.error: HierqdrantError | None = None
        try:
            self.backbone = extractor_from_description(description, weights)
        except HierqdrantError as exc:
            self.error = exc  # reported with the first batch (see __call__)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # A user error (a weights file missing on this node, a device it lacks) goes back as data: Ray would
        # turn it into a traceback without the exception, and the CLI owes the user one line.
        if self.error is not None:
            return _error_rows(batch, self.error, self.dim)
        paths = [str(p) for p in batch["path"]]
        try:
            out = extract_features(
                paths,
                self.backbone,
                device=self.device,
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                progress=False,
            )
        except HierqdrantError as exc:
            return _error_rows(batch, exc, self.dim)
        # One row out per row in, so the driver can count progress and report every bad file; a bad
        # file's row has ok=False, its reason and a zero feature (never stored).
        n = len(paths)
        features = np.zeros((n, int(self.backbone.feature_dim)), np.float32)
        features[out.indices] = out.features
        ok = np.zeros(n, bool)
        ok[out.indices] = True
        reasons = np.full(n, "", dtype=object)
        where = {p: j for j, p in enumerate(paths)}
        for skip in out.skipped:
            reasons[where[skip.path]] = skip.reason
        return {
            "index": np.asarray(batch["index"], np.int64),
            "ok": ok,
            "reason": reasons,
            "feature": features,
            "error": np.full(n, "", dtype=object),
        }


def _error_rows(batch: dict[str, np.ndarray], exc: HierqdrantError, dim: int) -> dict[str, np.ndarray]:
    """The batch's rows, none embedded, carrying the error (JSON ``[class, problem, fix]``) for the driver."""
    n = len(batch["index"])
    return {
        "index": np.asarray(batch["index"], np.int64),
        "ok": np.zeros(n, bool),
        "reason": np.full(n, "", dtype=object),
        "feature": np.zeros((n, dim), np.float32),  # the same column shape as every other batch
        "error": np.full(n, json.dumps([type(exc).__name__, exc.problem, exc.fix]), dtype=object),
    }


def _raise_error(text: str) -> None:
    """Raise the actor's error again on the driver, as the same hierqdrant error class where it is one."""
    from hierqdrant.core import errors

    kind, problem, fix = json.loads(text)
    cls = getattr(errors, str(kind), None)
    if not (isinstance(cls, type) and issubclass(cls, HierqdrantError)):
        cls = InputError
    raise cls(str(problem), None if fix is None else str(fix))


@contextmanager
def _connected(ray: Any) -> Iterator[None]:
    """Use the caller's Ray connection, else start one (local, or ``RAY_ADDRESS``) and shut it down after."""
    if ray.is_initialized():
        yield
        return
    ray.init(logging_level=logging.WARNING, log_to_driver=False, include_dashboard=False)
    try:
        yield
    finally:
        ray.shutdown()


def _local_file(weights: str | None) -> str | None:
    """``weights`` as an absolute path when it is a local file; else ``None``, and the actors rebuild from the
    description alone (a torchvision weights name, ``random``, or a file recorded in ``weights_path``)."""
    if weights is None or not Path(weights).expanduser().is_file():
        return None
    return str(Path(weights).expanduser().resolve())


def _placement(ray: Any, device: str, concurrency: int | None) -> tuple[str, dict[str, float], int]:
    """(the actors' torch device, their Ray resources, how many): a GPU each where the cluster has GPUs
    and ``device`` allows, else a CPU each."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
    spec = device.strip().lower() or "auto"
    if spec.startswith("cuda") and gpus == 0:
        raise InputError(f"device {device!r} requested but the Ray cluster has no GPU", "use --device cpu or auto")
    if spec not in ("auto", "cpu") and not spec.startswith("cuda"):
        raise InputError(f"--backend ray embeds on cpu or cuda, not {device!r}", "use --device auto, cpu or cuda")
    if concurrency is not None and concurrency < 1:
        raise InputError(f"the Ray concurrency must be >= 1, got {concurrency}", "pass e.g. --ray-concurrency 4")
    if gpus > 0 and spec != "cpu":
        # Ray sets CUDA_VISIBLE_DEVICES per actor: its one GPU is always cuda:0 inside it.
        return "cuda", {"num_gpus": 1}, concurrency or gpus
    return "cpu", {"num_cpus": 1}, concurrency or max(1, cpus)


def extract_features_ray(
    paths: Sequence[str | Path],
    description: Mapping[str, Any],
    weights: str | None = None,
    *,
    device: str = "auto",
    batch_size: int = 256,
    num_workers: int | None = None,
    concurrency: int | None = None,
    on_batch: BatchCallback | None = None,
    progress: bool | Callable[[int], None] = True,
    console: Console | None = None,
) -> Extracted:
    """:func:`~hierqdrant.vision.extract.extract_features` of ``paths`` by a pool of Ray actors.

    ``description``: the extractor's description (``describe(backbone, weights)``), rebuilt in every actor
    with ``weights`` when it is a local weights file (as for queries; else the description's own).
    ``batch_size``: images per actor call and per forward pass. ``num_workers``: DataLoader workers inside a
    GPU actor (default min(8, cores)); CPU actors decode in their own process unless it is given.
    ``concurrency``: how many actors (default: one per GPU, else one per CPU of the cluster). ``on_batch``
    and ``progress`` as for ``extract_features``; batches arrive in completion order, and the result is in
    input order (``indices`` ascending).
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}", "pass e.g. --batch-size 256")
    if num_workers is not None and num_workers < 0:
        raise InputError(f"num_workers must be >= 0, got {num_workers}", "pass 0 to decode in the actor's process")
    dim = int(description.get("feature_dim") or 0)
    n = len(paths)
    if n == 0:
        return Extracted(np.zeros((0, dim), np.float32), np.zeros(0, np.int64), [])
    ray = require_ray()
    path_strs = [str(p) for p in paths]
    # Actors need not share the driver's working directory: they get absolute paths, the report keeps ours.
    absolute = [str(Path(p).resolve()) for p in path_strs]
    weights = _local_file(weights)
    with _connected(ray):
        actor_device, resources, actors = _placement(ray, device, concurrency)
        workers = num_workers if num_workers is not None else (None if actor_device == "cuda" else 0)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # ours (or the caller's counter) reports progress
        items = [{"index": i, "path": p} for i, p in enumerate(absolute)]
        dataset = ray.data.from_items(items).map_batches(
            _Embedder,
            fn_constructor_kwargs={
                "description": dict(description),
                "weights": weights,
                "device": actor_device,
                "batch_size": batch_size,
                "num_workers": workers,
            },
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=min(actors, -(-n // batch_size))),
            **resources,
        )
        return _collect(dataset, path_strs, dim, on_batch, progress, console, actor_device)


def _collect(
    dataset: Any,
    paths: list[str],
    dim: int,
    on_batch: BatchCallback | None,
    progress: bool | Callable[[int], None],
    console: Console | None,
    actor_device: str,
) -> Extracted:
    """Stream the actors' batches to the driver: features, skipped files, progress and ``on_batch``."""
    n = len(paths)
    features = np.zeros((n, dim), np.float32)
    ok = np.zeros(n, bool)
    skipped: list[Skipped] = []
    advance = progress if callable(progress) else None
    bar = _progress(console) if progress is True else None
    task = bar.add_task(f"features (ray, {actor_device} actors)", total=n) if bar is not None else None
    try:
        if bar is not None:
            bar.start()
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            failed = [str(e) for e in batch["error"] if e]
            if failed:
                _raise_error(failed[0])
            index = np.asarray(batch["index"], np.int64)
            good = np.asarray(batch["ok"], bool)
            feats = np.asarray(batch["feature"], np.float32).reshape(len(index), -1)
            features[index[good]] = feats[good]
            ok[index[good]] = True
            bad = zip(index[~good], batch["reason"][~good], strict=True)
            skipped.extend(Skipped(paths[int(i)], str(r)) for i, r in bad)
            if on_batch is not None:
                on_batch(index[good], feats[good])
            if bar is not None and task is not None:
                bar.advance(task, len(index))
            if advance is not None:
                advance(len(index))
    finally:
        if bar is not None:
            bar.stop()
    indices = np.flatnonzero(ok).astype(np.int64)
    position = {p: i for i, p in enumerate(paths)}
    skipped.sort(key=lambda s: position[s.path])  # input order, as the default path reports them
    return Extracted(features=features[indices], indices=indices, skipped=skipped)
