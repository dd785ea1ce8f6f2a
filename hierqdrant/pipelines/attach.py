"""Attach hierqdrant to an application's existing collection, keep it annotated, detach it (DESIGN.md §2.7).

``attach`` reads the points' own vectors under one name and their label field, fits the model exactly like
``ingest`` does (:class:`~hierqdrant.core.settings.FitSettings`, or ``tune``; classes = the field's values,
sorted), stores it with the collection, creates the payload indexes and writes each point's ``hq`` payload
with ``set_payload`` under that one key — never another payload field, never a vector. Cosine vectors only:
Qdrant stores them unit-normalised, so the model is fitted on unit vectors and queries are normalised too.

Lifecycle (as ``ingest``'s, §2.6): on the embedded engine the run holds the collection's writer lock; the
first write marks the collection ``incomplete`` (a first attach: the model is stored with that state), the
last marks it ``complete``. A run stopped at any moment is completed by running it again, which annotates
only what is missing: points whose ``hq.model`` is not the stored model's id. The same rule makes
``--update`` (points the application added since) cheap, and ``--refit`` (a new model id) re-annotate all.
``detach`` removes the ``hq`` key, its payload indexes and the model — nothing else. ``dry_run`` computes
and reports everything and writes nothing.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models
from rich.console import Console

from hierqdrant.core.errors import InputError, NotFoundError
from hierqdrant.core.faults import fault
from hierqdrant.core.model import HierarchyModel, unit_rows
from hierqdrant.core.settings import FitSettings
from hierqdrant.store.collection import (
    ATTACHED_EXTRACTOR,
    DEFAULT_PAYLOAD_KEY,
    attached_info,
    check_intact,
    check_payload_key,
    collection_state,
    hq_payload_for,
    is_attached,
    read_collection_model,
    require_collection,
    set_state,
    writing,
)
from hierqdrant.store.engines import Engine, as_engine
from hierqdrant.store.engines.vectors import (
    VectorSpec,
    create_payload_index,
    delete_model,
    delete_payload_key,
    drop_payload_index,
    payload_indexes,
    scroll_vectors,
    vector_config,
)

__all__ = ["AttachOptions", "AttachResult", "DetachResult", "attach", "detach", "index_fields"]


@dataclass
class AttachOptions(FitSettings):
    """What ``hierqdrant attach`` takes besides the collection: the vector and the label field, how to fit
    (the :class:`FitSettings` it extends: builder, threshold, alpha, taxonomy, pca, covariance, leaf_from),
    whether to tune t and α instead, and what to do (first attach / ``update`` / ``refit`` / ``dry_run``)."""

    vector: str | None = None  # default: the stored one, else the collection's only vector
    label_key: str | None = None  # default: the stored one; needed to fit
    payload_key: str | None = None  # default: the stored one, else "hq"
    tune: bool = False
    tune_metric: str = "map@r"
    update: bool = False  # annotate what is missing with the stored model; never fit
    refit: bool = False  # fit again and re-annotate every point (a new model id)
    dry_run: bool = False
    batch_size: int = 1024
    wait: bool = False  # wait for another process writing the collection instead of failing
    progress: bool = False


@dataclass
class AttachResult:
    """What an attach did (or, with ``dry_run``, would do)."""

    collection: str
    mode: str  # attach (first fit), refit, update, resume (a plain attach again)
    dry_run: bool
    vector: str
    label_key: str
    payload_key: str
    fitted: bool
    model_id: str
    previous_model_id: str | None
    points: int
    labelled: int  # points the model was fitted on (0 when not fitted)
    annotated: int  # points whose hq payload was written (would be)
    current: int  # points that already had the current hq payload
    predicted_without_label: int  # annotated points without a usable label (their leaf is predicted)
    without_vector: int  # points without the vector: left without hq
    unseen_labels: dict[str, int]  # label values that are not classes of the model → points
    indexes: list[str]  # the payload indexes attach makes sure of (would make)
    state: str | None
    seconds: float
    model: HierarchyModel = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        m = self.model
        return {
            "collection": self.collection,
            "mode": self.mode,
            "dry_run": self.dry_run,
            "vector": self.vector,
            "label_key": self.label_key,
            "payload_key": self.payload_key,
            "fitted": self.fitted,
            "model_id": self.model_id,
            "previous_model_id": self.previous_model_id,
            "points": self.points,
            "labelled": self.labelled,
            "annotated": self.annotated,
            "current": self.current,
            "predicted_without_label": self.predicted_without_label,
            "without_vector": self.without_vector,
            "unseen_labels": dict(sorted(self.unseen_labels.items())),
            "classes": m.num_classes,
            "height": m.tree_height,
            "levels": m.hierarchy.num_levels,
            "alpha": m.alpha,
            "indexes": list(self.indexes),
            "state": self.state,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class DetachResult:
    collection: str
    dry_run: bool
    payload_key: str
    model_id: str | None
    points: int  # points that carried the payload key
    indexes: list[str]  # our payload indexes that were there
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "seconds": round(self.seconds, 3)}


def index_fields(payload_key: str) -> list[tuple[str, str]]:
    """The payload indexes of the plugin, as ``ingest`` makes them: ``(field, type)``."""
    key = payload_key
    return [(f"{key}.ancestors", "integer"), (f"{key}.leaf", "integer"), (f"{key}.model", "keyword")]


# ---------------------------------------------------------------------------------------------------------
# attach


def attach(
    client: Engine | QdrantClient,
    collection: str,
    options: AttachOptions | None = None,
    *,
    console: Console | None = None,
    log: Callable[[str], None] | None = None,
    **settings: Any,
) -> AttachResult:
    """Attach to ``collection``: ``attach(client, "shop", vector="image", label_key="category")``.

    ``settings`` override fields of ``options`` (:class:`AttachOptions`). Refuses Dot / Euclid / Manhattan
    vectors, a collection of our own (made by ``ingest``) and points that already use the payload key.
    """
    try:
        opts = dataclasses.replace(options or AttachOptions(), **settings)
    except TypeError as e:
        names = ", ".join(f.name for f in dataclasses.fields(AttachOptions))
        raise InputError(f"attach: {e}", f"options are {names}") from None
    if opts.update and opts.refit:
        raise InputError("--update and --refit exclude each other", "update annotates with the stored model")
    engine = as_engine(client)
    say = log or (lambda _msg: None)
    started = time.perf_counter()
    if opts.payload_key is not None:
        check_payload_key(opts.payload_key)

    def waiting(pid: int | None) -> None:
        say(f"collection {collection!r} is being written by another process (pid {pid or '?'}); waiting for it")

    lock: AbstractContextManager[None] = (
        nullcontext() if opts.dry_run else writing(engine, collection, wait=opts.wait, on_wait=waiting)
    )
    with lock:
        return _attach(engine, collection, opts, console, say, started)


@dataclass
class _Plan:
    mode: str
    vector: str
    spec: VectorSpec
    label_key: str
    info: dict[str, Any] | None
    key: str  # the payload key: given, else the stored one, else "hq"


def _plan(engine: Engine, collection: str, opts: AttachOptions) -> _Plan:
    """Check everything that can be checked before reading the points; decide the mode."""
    check_intact(engine, collection)
    require_collection(engine, collection)
    info = engine.read_info(collection)
    key = check_payload_key(opts.payload_key or str((info or {}).get("payload_key") or DEFAULT_PAYLOAD_KEY))
    if info is not None and not is_attached(info):
        raise InputError(
            f"collection {collection!r} was built by hierqdrant ingest: it is hierarchical already",
            "search it as it is; attach is for an application's own collections",
        )
    if info is None:
        if opts.update:
            raise NotFoundError(
                f"collection {collection!r} is not attached: there is no model to update with",
                f"attach it first: hierqdrant attach {collection} --vector NAME --label-key FIELD",
            )
        used = engine.count(collection, _has(key))
        if used:
            raise InputError(
                f"{used} points of collection {collection!r} already have a payload field {key!r} of their own",
                "choose another --payload-key (the plugin writes only under that key)",
            )
        mode = "attach"
    else:
        stored = {
            "vector": info.get("vector"),
            "label key": info.get("label_key"),
            "payload key": info.get("payload_key") or DEFAULT_PAYLOAD_KEY,
        }
        given = {"vector": opts.vector, "label key": opts.label_key, "payload key": opts.payload_key}
        for what, value in given.items():
            if value is not None and value != stored[what] and not (opts.refit and what != "payload key"):
                raise InputError(
                    f"collection {collection!r} is attached with {what} {stored[what]!r}, not {value!r}",
                    "omit it (the stored one is used), or detach first (hierqdrant detach) to attach under another"
                    if what == "payload key"
                    else "omit it, refit with it (--refit), or detach first (hierqdrant detach)",
                )
        mode = "refit" if opts.refit else "update" if opts.update else "resume"
    config = vector_config(engine, collection)
    vector = opts.vector if opts.vector is not None else (info or {}).get("vector")
    if vector is None:
        if len(config) != 1:
            raise InputError(
                f"collection {collection!r} has several vectors ({', '.join(sorted(config))})",
                "choose the one to attach to with --vector NAME",
            )
        vector = next(iter(config))
    spec = config.get(str(vector))
    if spec is None:
        names = ", ".join(repr(n) if n else "one unnamed vector" for n in sorted(config))
        raise InputError(f"collection {collection!r} has no vector {vector!r} (it has {names})", "pick one of those")
    if spec.distance != "Cosine":
        raise InputError(
            f"vector {vector!r} of collection {collection!r} uses {spec.distance} distance; hierqdrant attaches to "
            "Cosine vectors only (D needs a cosine)",
            "attach to a Cosine vector of the collection, or add one (e.g. the same embedding as Cosine)",
        )
    label_key = opts.label_key if opts.label_key is not None else (info or {}).get("label_key")
    if not label_key:
        raise InputError("attach needs the payload field that holds the points' classes", "pass --label-key FIELD")
    if label_key == key or str(label_key).startswith(key + "."):
        raise InputError(
            f"the label field {label_key!r} lies under the plugin's key {key!r}", "use a field of the application's"
        )
    return _Plan(mode, str(vector), spec, str(label_key), info, key)


def _attach(
    engine: Engine,
    collection: str,
    opts: AttachOptions,
    console: Console | None,
    say: Callable[[str], None],
    started: float,
) -> AttachResult:
    plan = _plan(engine, collection, opts)
    key = plan.key
    previous = plan.info.get("model_id") if plan.info else None
    fitting = plan.mode in ("attach", "refit")
    labelled = 0
    with _progress(console, opts.progress) as bar:
        if fitting:
            model, labelled = _fit(engine, collection, plan, opts, bar, say)
        else:
            model = read_collection_model(engine, collection)[0]
            say(f"annotating with the stored model {model.model_id} (hierqdrant attach --refit fits again)")
        fields = [f for f, _ in index_fields(key)]
        if not opts.dry_run:  # the first write: the collection is incomplete from here on
            if fitting:
                engine.write_model(
                    collection, model.to_files(), attached_info(model, key, plan.vector, plan.label_key, "incomplete")
                )
            else:
                set_state(engine, collection, "incomplete")
            fault("after-attach-model")
            for f, kind in index_fields(key):
                create_payload_index(engine, collection, f, kind)  # type: ignore[arg-type]
        unseen = _unseen_current(engine, collection, plan, model, key)
        current = engine.count(collection, models.Filter(must=[_model_is(key, model.model_id)]))
        tally = _annotate(engine, collection, plan, model, opts, bar)
        for label, n in tally.unseen.items():
            unseen[label] = unseen.get(label, 0) + n
        if not opts.dry_run:
            if tally.annotated:
                engine.optimize(collection)  # set_payload moved the points out of their indexed segments
            fault("before-complete")
            set_state(engine, collection, "complete")  # the last write
    points = engine.count(collection)
    state = None if opts.dry_run and plan.info is None else collection_state(engine.read_info(collection))
    if unseen:
        say(f"labels that are not classes of the model: {', '.join(sorted(unseen))} (hierqdrant attach --refit)")
    return AttachResult(
        collection=collection,
        mode=plan.mode,
        dry_run=opts.dry_run,
        vector=plan.vector,
        label_key=plan.label_key,
        payload_key=key,
        fitted=fitting,
        model_id=model.model_id,
        previous_model_id=previous,
        points=points,
        labelled=labelled,
        annotated=tally.annotated,
        current=current,
        predicted_without_label=tally.predicted,
        without_vector=tally.without_vector,
        unseen_labels=unseen,
        indexes=fields,
        state=state,
        seconds=time.perf_counter() - started,
        model=model,
    )


def _fit(
    engine: Engine, collection: str, plan: _Plan, opts: AttachOptions, bar: Any, say: Callable[[str], None]
) -> tuple[HierarchyModel, int]:
    """Read the labelled points' vectors and fit the model on them (unit-normalised), as ``ingest`` does."""
    labelled_filter = models.Filter(must_not=[_is_empty(plan.label_key)])
    task = bar.add_task("reading", total=engine.count(collection, labelled_filter))
    rows: list[np.ndarray] = []
    names: list[str] = []
    for batch in scroll_vectors(
        engine, collection, plan.vector, filter=labelled_filter, batch_size=opts.batch_size,
        with_payload=[plan.label_key],
    ):  # fmt: skip
        for r in batch:
            label = label_of(r.payload, plan.label_key)
            if label is not None and r.vector is not None and np.any(r.vector):
                rows.append(r.vector)
                names.append(label)
        bar.advance(task, len(batch))
    if not rows:
        raise InputError(
            f"no point of collection {collection!r} has both a {plan.vector!r} vector and a {plan.label_key!r} value",
            "check --vector and --label-key (a dotted key reads a nested field)",
        )
    class_names = sorted(set(names))
    index = {c: i for i, c in enumerate(class_names)}
    x = unit_rows(np.stack(rows).astype(np.float64))
    y = np.asarray([index[n] for n in names])
    extractor = {"name": ATTACHED_EXTRACTOR, "vector": plan.vector, "distance": "Cosine", "feature_dim": plan.spec.size,
                 "label_key": plan.label_key, "preprocess": "l2-normalise"}  # fmt: skip
    say(f"fitting PCA, class Gaussians and the {opts.builder} hierarchy on {len(rows)} labelled points "
        f"({len(class_names)} classes)")  # fmt: skip
    if opts.tune:
        from hierqdrant.evaluation.tuning import TuneSettings, tune

        tuned = tune(x, y, class_names, fit=opts, settings=TuneSettings(metric=opts.tune_metric), extractor=extractor)
        say(f"tuned on a validation split: {tuned.best_classifier} query leaf, PCA {tuned.best_dims} dims, "
            f"t={tuned.best_threshold}, α={tuned.best_alpha} "
            f"({opts.tune_metric} {tuned.best_score:.4f}; cosine {tuned.cosine_score:.4f})")  # fmt: skip
        return tuned.model, len(rows)
    return opts.fit_model(x, y, class_names=class_names, extractor=extractor), len(rows)


@dataclass
class _Tally:
    annotated: int = 0
    predicted: int = 0
    without_vector: int = 0
    unseen: dict[str, int] = field(default_factory=dict)


def _annotate(
    engine: Engine, collection: str, plan: _Plan, model: HierarchyModel, opts: AttachOptions, bar: Any
) -> _Tally:
    """Write ``hq`` on every point whose ``hq.model`` is not the model's id (missing included), in batches."""
    key = plan.key
    todo = models.Filter(must_not=[_model_is(key, model.model_id)])
    task = bar.add_task("annotating", total=engine.count(collection, todo))
    tally = _Tally()
    classes = set(model.class_names)
    for batch in scroll_vectors(
        engine, collection, plan.vector, filter=todo, batch_size=opts.batch_size, with_payload=[plan.label_key]
    ):
        usable = [r for r in batch if r.vector is not None and np.any(r.vector)]
        tally.without_vector += len(batch) - len(usable)
        if usable:
            labels = [label_of(r.payload, plan.label_key) for r in usable]
            for label in labels:
                if label is None:
                    tally.predicted += 1
                elif label not in classes:
                    tally.unseen[label] = tally.unseen.get(label, 0) + 1
            x = np.stack([r.vector for r in usable if r.vector is not None])
            values = [p[key] for p in hq_payload_for(model, x, labels, payload_key=key, leaf_from=opts.leaf_from)]
            if not opts.dry_run:
                engine.set_payload(collection, [r.id for r in usable], values, key=key, batch_size=opts.batch_size)
                fault("after-annotate-batch")
            tally.annotated += len(usable)
        bar.advance(task, len(batch))
    return tally


def _unseen_current(engine: Engine, collection: str, plan: _Plan, model: HierarchyModel, key: str) -> dict[str, int]:
    """Labels of already annotated points that are not classes (such points carry no ``hq.label``)."""
    if plan.mode in ("attach", "refit"):
        return {}
    f = models.Filter(
        must=[_model_is(key, model.model_id), _is_empty(f"{key}.label")], must_not=[_is_empty(plan.label_key)]
    )
    out: dict[str, int] = {}
    for batch in engine.scroll(collection, with_vectors=False, filter=f):
        for r in batch:
            label = label_of(r.payload, plan.label_key)
            if label is not None and label not in model.class_names:
                out[label] = out.get(label, 0) + 1
    return out


# ---------------------------------------------------------------------------------------------------------
# detach


def detach(
    client: Engine | QdrantClient, collection: str, *, dry_run: bool = False, wait: bool = False
) -> DetachResult:
    """Remove what attach added to ``collection``: every point's payload key, its payload indexes and the
    stored model with its info dict. The application's vectors, payload fields, indexes and collection
    metadata stay as they are. A run stopped midway is completed by running it again."""
    started = time.perf_counter()
    engine = as_engine(client)
    require_collection(engine, collection)
    info = engine.read_info(collection)
    if info is None:
        raise NotFoundError(f"collection {collection!r} is not attached (it has no hierqdrant model)", "nothing to do")
    if not is_attached(info):
        raise InputError(
            f"collection {collection!r} was built by hierqdrant ingest: its vectors are the model's own",
            "delete the whole collection instead, if that is what you want",
        )
    key = check_payload_key(str(info.get("payload_key") or DEFAULT_PAYLOAD_KEY))
    fields = [f for f, _ in index_fields(key)]
    lock: AbstractContextManager[None] = nullcontext() if dry_run else writing(engine, collection, wait=wait)
    with lock:
        points = engine.count(collection, _has(key))
        present = sorted(set(fields) & set(payload_indexes(engine, collection)))
        if not dry_run:
            set_state(engine, collection, "incomplete")  # a detach stopped midway shows, and is rerun
            delete_payload_key(engine, collection, key)
            for f in fields:
                drop_payload_index(engine, collection, f)
            if points:
                engine.optimize(collection)
            fault("before-model-delete")
            delete_model(engine, collection)  # the last write: until here, a rerun finds the info
    return DetachResult(
        collection=collection,
        dry_run=dry_run,
        payload_key=key,
        model_id=info.get("model_id"),
        points=points,
        indexes=present,
        seconds=time.perf_counter() - started,
    )


# ---------------------------------------------------------------------------------------------------------
# helpers


def label_of(payload: Mapping[str, Any], label_key: str) -> str | None:
    """The class name in ``payload[label_key]`` (a dotted key reads nested objects): a string or a whole
    number; anything else (missing, null, a list, an object, a bool) is no label."""
    value: Any = payload
    for part in label_key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            value = None
            break
        value = value[part]
    if value is None and label_key in payload:  # a top-level key with a dot in its name
        value = payload[label_key]
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        return None
    return str(value)


def _is_empty(key: str) -> models.IsEmptyCondition:
    return models.IsEmptyCondition(is_empty=models.PayloadField(key=key))


def _has(key: str) -> models.Filter:
    return models.Filter(must_not=[_is_empty(key)])


def _model_is(key: str, model_id: str) -> models.FieldCondition:
    return models.FieldCondition(key=f"{key}.model", match=models.MatchValue(value=model_id))


class _NoBar:
    def add_task(self, *_: Any, **__: Any) -> int:
        return 0

    def advance(self, *_: Any) -> None:
        """Nothing to draw: progress is off."""


def _progress(console: Console | None, show: bool) -> AbstractContextManager[Any]:
    if not show:
        return nullcontext(_NoBar())
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("points"),
               TimeRemainingColumn()]  # fmt: skip
    return Progress(*columns, console=console, transient=True)
