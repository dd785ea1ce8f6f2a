"""Where images are embedded and networks trained: the device names (no torch import here).

:func:`hierqdrant.vision.extract.resolve_device` turns ``auto`` into ``cuda`` when a GPU is visible,
else ``cpu``; it also accepts ``cuda:N`` and a :class:`torch.device`. :data:`Backend` names where ingest
runs the embedding.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["Backend", "Device"]

Device = Literal["auto", "cuda", "cpu"]
#: How ingest runs the embedding: in this process (``local``) or in a pool of Ray actors (``ray``,
#: :mod:`hierqdrant.vision.ray_extract`, ``pip install "hierqdrant[ray]"``).
Backend = Literal["local", "ray"]
