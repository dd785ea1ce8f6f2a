"""An offline demo dataset: scikit-learn's bundled handwritten digits written as PNG class folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def write_digits(root: str | Path, test_share: float = 0.2, seed: int = 0) -> tuple[Path, int]:
    """Write the 1,797 8×8 digits as ``root/{train,test}/<digit name>/NNNN.png``; returns (root, images).

    Existing files are left alone, so the folder (and the point ids derived from it) is stable.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    rng = np.random.default_rng(seed)
    is_test = rng.random(len(images)) < test_share
    out = Path(root)
    for i, (img, label) in enumerate(zip(images, digits.target, strict=True)):
        split = "test" if is_test[i] else "train"
        folder = out / split / DIGIT_NAMES[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:04d}.png"
        if not path.exists():
            Image.fromarray(img).save(path)
    return out, len(images)
