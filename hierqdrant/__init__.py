"""hierqdrant — rank image-retrieval results in Qdrant by visual and semantic similarity together.

``D(q, x) = cosine distance + α · height(LCA(leaf_q, leaf_x)) / H`` over a class hierarchy learned from
the overlap of class Gaussians (Venkataramanan et al., ICVS 2023).

Heavy parts are imported lazily so ``import hierqdrant`` stays cheap and pulls in neither Qdrant nor torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Hierarchy": "hierqdrant.core.hierarchy",
    "HierarchyModel": "hierqdrant.core.model",
    "FeatureSet": "hierqdrant.core.features",
    "HierarchicalSearcher": "hierqdrant.store.search",
    "AsyncHierarchicalSearcher": "hierqdrant.store.async_search",
    "SearchHit": "hierqdrant.store.search",
    "connect": "hierqdrant.store.engines",
    "HierqdrantError": "hierqdrant.core.errors",
    "attach": "hierqdrant.pipelines.attach",
    "detach": "hierqdrant.pipelines.attach",
    "hq_payload_for": "hierqdrant.store.collection",
}

__all__ = [
    "AsyncHierarchicalSearcher",
    "FeatureSet",
    "HierarchicalSearcher",
    "Hierarchy",
    "HierarchyModel",
    "HierqdrantError",
    "SearchHit",
    "__version__",
    "attach",
    "connect",
    "detach",
    "hq_payload_for",
]

if TYPE_CHECKING:
    from hierqdrant.core.errors import HierqdrantError
    from hierqdrant.core.features import FeatureSet
    from hierqdrant.core.hierarchy import Hierarchy
    from hierqdrant.core.model import HierarchyModel
    from hierqdrant.pipelines.attach import attach, detach
    from hierqdrant.store.async_search import AsyncHierarchicalSearcher
    from hierqdrant.store.collection import hq_payload_for
    from hierqdrant.store.engines import connect
    from hierqdrant.store.search import HierarchicalSearcher, SearchHit


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hierqdrant' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
