"""The command line's choices, one enum per library ``Literal`` (Typer needs an ``Enum`` to offer them).

Every enum is built from the ``Literal`` that the library checks against (``typing.get_args``), so a
choice added to the library shows up in every command that offers it. Member names are the values
with ``-`` as ``_`` (and ``_`` appended where a value would shadow a ``str`` method, e.g. ``split``).
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Any, get_args

from hierqdrant.core.build import Builder
from hierqdrant.core.settings import LeafFrom, QueryClassifier
from hierqdrant.evaluation.tuning import Protocol
from hierqdrant.store.policy import Strategy
from hierqdrant.vision.devices import Device

__all__ = [
    "BuilderName",
    "DeviceName",
    "LeafFromName",
    "ProtocolName",
    "QueryClassifierName",
    "StrategyName",
    "choices",
]


def _member(value: str) -> str:
    name = value.replace("-", "_")
    return f"{name}_" if hasattr(str, name) else name


def choices(name: str, literal: Any) -> type[Enum]:
    """A ``str`` enum named ``name`` whose values are the strings of ``literal``, in its order."""
    return Enum(name, [(_member(v), v) for v in get_args(literal)], type=str, module=__name__)  # type: ignore[return-value]


if TYPE_CHECKING:  # to the type checker each choice is an Enum whose ``.value`` is the chosen string
    BuilderName = Enum
    DeviceName = Enum
    LeafFromName = Enum
    ProtocolName = Enum
    QueryClassifierName = Enum
    StrategyName = Enum
else:
    BuilderName = choices("BuilderName", Builder)
    DeviceName = choices("DeviceName", Device)
    LeafFromName = choices("LeafFromName", LeafFrom)
    ProtocolName = choices("ProtocolName", Protocol)
    QueryClassifierName = choices("QueryClassifierName", QueryClassifier)
    StrategyName = choices("StrategyName", Strategy)
