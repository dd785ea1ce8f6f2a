"""The feature extractor a model was fitted with, rebuilt so queries go through the same pixels."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hierqdrant.core.errors import InputError

if TYPE_CHECKING:
    from hierqdrant.vision import Backbone


def is_random_init(description: Mapping[str, Any] | None) -> bool:
    """True when the described extractor is a randomly initialised network (``--weights random``),
    whose features carry no learned meaning: summaries, JSON and ``info`` should flag it.

    Reads ``random_init`` and, for descriptions stored before that key existed, ``weights_kind``
    (``"random"``: then ``weights`` was ``None``; no kind and no weights also meant a random init).
    """
    if not description or not has_image_extractor(description) or description.get("name") == "pixels":
        return False
    kind = description.get("weights_kind")
    return bool(description.get("random_init")) or kind == "random" or (kind is None and not description.get("weights"))


def has_image_extractor(description: Mapping[str, Any] | None) -> bool:
    # "qdrant-vector": a model attached to an application's own vectors (hierqdrant attach), no image network
    return bool(description) and description.get("name") not in (None, "features-file", "qdrant-vector")  # type: ignore[union-attr]


def extractor_from_description(description: Mapping[str, Any], weights: str | None = None) -> Backbone:
    """The backbone described in a model's manifest.

    A local weights file is looked for at ``weights`` or, failing that, where it was at fit time
    (``weights_path``); its sha256 must match.
    """
    from hierqdrant.vision import backbone_from_description

    if not has_image_extractor(description):
        raise InputError(
            "this model was fitted on a features file, not on images",
            "query with feature vectors (a .npz) or re-ingest from images",
        )
    path = weights
    hint = description.get("weights_path")
    if path is None and hint and Path(str(hint)).is_file():
        path = str(hint)
    return backbone_from_description(description, weights_path=path)


def describe(backbone: Backbone, weights: str | None) -> dict[str, Any]:
    """``backbone.description()`` plus where a local weights file lives (a hint for later queries)."""
    desc = backbone.description()
    if desc.get("weights_kind") == "file" and weights is not None:
        desc["weights_path"] = str(Path(weights).resolve())
    return desc


def same_extractor(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal up to where the weights file lives (its hash is compared)."""
    return identity(a) == identity(b)


def identity(description: Mapping[str, Any]) -> dict[str, Any]:
    """What makes two extractors the same: everything but the weights file's location. A random
    init is written as older models stored it (``weights`` None, no ``random_init``), so a collection
    embedded before ``--weights random`` existed matches the same fixed-seed network now, and feature
    caches keyed by this keep their key."""
    out = {k: v for k, v in description.items() if k != "weights_path"}
    if is_random_init(out):
        out.pop("random_init", None)
        out["weights"] = None
    return out
