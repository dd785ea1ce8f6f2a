"""Where images are embedded and networks trained: the device names (no torch import here).

:func:`hierqdrant.vision.extract.resolve_device` turns ``auto`` into ``cuda`` when a GPU is visible,
else ``cpu``; it also accepts ``cuda:N`` and a :class:`torch.device`.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["Device"]

Device = Literal["auto", "cuda", "cpu"]
