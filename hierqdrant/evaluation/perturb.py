"""The robustness perturbations of the paper (§3.3, §4.2), deterministic per (seed, image index).

Three kinds, each with a ``strength`` (default 1):

* ``blur`` — Gaussian blur with a k×k kernel, k = 11 at 224 px, scaled by the image's shorter side and by
  the strength: k = round(11 · min(w, h)/224 · strength), made odd, at least 3. σ follows from k as in
  ``torchvision.transforms.functional.gaussian_blur`` with ``sigma=None`` (and OpenCV's
  ``getGaussianKernel``): σ = 0.3 · ((k − 1) · 0.5 − 1) + 0.8, i.e. σ = 2 for k = 11. The kernel is the
  separable, normalised, truncated Gaussian of exactly k taps, with reflect padding like torchvision.
  It uses no randomness.
* ``saturation`` — a random saturation change like ``ColorJitter(saturation=s)``: a factor
  f ~ U[max(0, 1 − s), 1 + s] (s = strength) applied with ``PIL.ImageEnhance.Color`` (f = 0 gives
  grey, 1 the original). A grey image is unchanged.
* ``occlusion`` — a black square of side round(70 · min(w, h)/224 · strength) (at least 1, at most the
  shorter side) at a uniformly random position fully inside the image.

Images in a mode other than L, RGB or RGBA are converted to RGB first; the alpha band is left as is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance

from hierqdrant.core.errors import InputError

__all__ = ["KINDS", "Perturbation", "PerturbationHook", "parse_perturbation", "perturbation_hook"]

KINDS: tuple[str, ...] = ("blur", "saturation", "occlusion")

REFERENCE_SIZE = 224
BLUR_KERNEL_AT_REFERENCE = 11
OCCLUSION_SIDE_AT_REFERENCE = 70


def _allowed() -> str:
    return ", ".join(KINDS)


@dataclass(frozen=True)
class Perturbation:
    """One perturbation: ``kind`` in {"blur", "saturation", "occlusion"} and its ``strength`` (> 0).

    For blur and occlusion the strength multiplies the kernel size / square side; for saturation it is
    ColorJitter's ``s`` (factor drawn from [max(0, 1 − s), 1 + s]).
    """

    kind: str
    strength: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"unknown perturbation {self.kind!r}", f"use one of: {_allowed()}")
        try:
            strength = float(self.strength)
        except (TypeError, ValueError):
            strength = float("nan")
        if isinstance(self.strength, bool) or not math.isfinite(strength) or strength <= 0:
            raise InputError(
                f"perturbation strength must be a number > 0, got {self.strength!r}",
                f"write it as e.g. {self.kind}:1.5",
            )
        object.__setattr__(self, "strength", strength)

    @property
    def spec(self) -> str:
        """The text form accepted by :func:`parse_perturbation`, e.g. ``"blur:2"``."""
        text = repr(self.strength)
        return f"{self.kind}:{text[:-2] if text.endswith('.0') else text}"

    def __str__(self) -> str:
        return self.spec

    def blur_kernel_size(self, width: int, height: int) -> int:
        """k = round(11 · min(w, h)/224 · strength), raised to the next odd number, at least 3."""
        k = int(round(BLUR_KERNEL_AT_REFERENCE * min(width, height) / REFERENCE_SIZE * self.strength))
        k = max(3, k)
        return k if k % 2 else k + 1

    def occlusion_side(self, width: int, height: int) -> int:
        """side = round(70 · min(w, h)/224 · strength), clipped to [1, min(w, h)]."""
        side = int(round(OCCLUSION_SIDE_AT_REFERENCE * min(width, height) / REFERENCE_SIZE * self.strength))
        return min(max(1, side), min(width, height))

    def apply(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Return a perturbed copy of ``image`` (the input is not modified), drawing from ``rng``."""
        if image.mode not in ("L", "RGB", "RGBA"):
            image = image.convert("RGB")
        if self.kind == "blur":
            return _blur(image, self.blur_kernel_size(*image.size))
        if self.kind == "saturation":
            s = self.strength
            factor = float(rng.uniform(max(0.0, 1.0 - s), 1.0 + s))
            return ImageEnhance.Color(image).enhance(factor)
        return _occlude(image, self.occlusion_side(*image.size), rng)


def gaussian_sigma(kernel_size: int) -> float:
    """σ = 0.3 · ((k − 1) · 0.5 − 1) + 0.8 (torchvision / OpenCV default for a k-tap kernel)."""
    return 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8


def _blur(image: Image.Image, k: int) -> Image.Image:
    sigma = gaussian_sigma(k)
    x = np.arange(k, dtype=np.float64) - (k - 1) / 2
    w = np.exp(-0.5 * (x / sigma) ** 2)
    w /= w.sum()
    arr = np.asarray(image, dtype=np.float32)
    squeeze = arr.ndim == 2
    if squeeze:
        arr = arr[:, :, None]
    if image.mode == "RGBA":
        colour, alpha = arr[:, :, :3], arr[:, :, 3:]
    else:
        colour, alpha = arr, None
    r = k // 2
    h, wd = colour.shape[:2]
    # Separable: rows then columns, each a weighted sum of k shifted views of the padded image.
    pad = np.pad(colour, ((r, r), (0, 0), (0, 0)), mode="reflect")
    tmp = np.zeros_like(colour)
    for i in range(k):
        tmp += np.float32(w[i]) * pad[i : i + h]
    pad = np.pad(tmp, ((0, 0), (r, r), (0, 0)), mode="reflect")
    out = np.zeros_like(colour)
    for i in range(k):
        out += np.float32(w[i]) * pad[:, i : i + wd]
    if alpha is not None:
        out = np.concatenate([out, alpha], axis=2)
    out8 = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return Image.fromarray(out8[:, :, 0] if squeeze else out8)


def _occlude(image: Image.Image, side: int, rng: np.random.Generator) -> Image.Image:
    width, height = image.size
    x0 = int(rng.integers(0, width - side + 1))
    y0 = int(rng.integers(0, height - side + 1))
    out = image.copy()
    black: int | tuple[int, ...] = 0 if image.mode == "L" else (0, 0, 0)
    if image.mode == "RGBA":
        # Keep the alpha of the covered pixels: only the colour goes black.
        arr = np.array(out)
        arr[y0 : y0 + side, x0 : x0 + side, :3] = 0
        return Image.fromarray(arr)
    out.paste(black, (x0, y0, x0 + side, y0 + side))
    return out


def parse_perturbation(spec: str) -> Perturbation:
    """Parse ``"blur"``, ``"blur:2"``, ``"saturation:0.5"``, ``"occlusion:1.5"`` (kind[:strength]).

    A missing strength means 1. Raises :class:`~hierqdrant.core.errors.InputError` naming the allowed kinds.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"empty perturbation spec {spec!r}", f"use kind[:strength] with kind one of: {_allowed()}")
    kind, sep, value = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise InputError(f"unknown perturbation {kind!r} in {spec!r}", f"use one of: {_allowed()} (e.g. blur:2)")
    if not sep:
        return Perturbation(kind)
    try:
        strength = float(value)
    except ValueError:
        raise InputError(
            f"perturbation strength {value.strip()!r} in {spec!r} is not a number",
            f"write it as e.g. {kind}:1.5",
        ) from None
    return Perturbation(kind, strength)


class PerturbationHook:
    """A picklable ``(image, index) -> image`` callable for dataset / DataLoader workers.

    Applies ``perturbation`` with ``np.random.default_rng([seed, index])``, so an image index always gets
    the same perturbation whatever the worker, batch or order.
    """

    def __init__(self, perturbation: Perturbation, seed: int) -> None:
        if int(seed) != seed or seed < 0:
            raise InputError(f"the perturbation seed must be an integer ≥ 0, got {seed!r}")
        self.perturbation = perturbation
        self.seed = int(seed)

    def __call__(self, image: Image.Image, index: int) -> Image.Image:
        if int(index) != index or index < 0:
            raise InputError(f"image index must be an integer ≥ 0, got {index!r}")
        return self.perturbation.apply(image, np.random.default_rng([self.seed, int(index)]))

    def __repr__(self) -> str:
        return f"PerturbationHook({self.perturbation.spec!r}, seed={self.seed})"


def perturbation_hook(p: Perturbation, seed: int) -> PerturbationHook:
    """A picklable hook applying ``p`` to image ``index`` with ``np.random.default_rng([seed, index])``."""
    return PerturbationHook(p, seed)
