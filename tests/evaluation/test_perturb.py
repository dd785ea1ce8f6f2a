"""Robustness perturbations: parsing, sizes scaled with the image, effects, determinism."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from PIL import Image

from hierqdrant.core.errors import InputError
from hierqdrant.evaluation import perturb
from hierqdrant.evaluation.perturb import Perturbation, parse_perturbation, perturbation_hook


def checkerboard(size: int = 224, cell: int = 8) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size]
    board = (((yy // cell) + (xx // cell)) % 2 * 255).astype(np.uint8)
    return Image.fromarray(np.stack([board] * 3, axis=2))


def colourful(size: int = 64) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8))


def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# ----------------------------------------------------------------------------------------------- parse


@pytest.mark.parametrize(
    ("spec", "kind", "strength"),
    [
        ("blur", "blur", 1.0),
        ("blur:2", "blur", 2.0),
        ("saturation:0.5", "saturation", 0.5),
        ("occlusion:1.5", "occlusion", 1.5),
        (" Blur : 3 ", "blur", 3.0),
    ],
)
def test_parse(spec: str, kind: str, strength: float) -> None:
    assert parse_perturbation(spec) == Perturbation(kind, strength)


def test_spec_round_trips() -> None:
    for spec in ("blur:2", "saturation:0.5", "occlusion:1.5"):
        assert parse_perturbation(spec).spec == spec
        assert parse_perturbation(parse_perturbation(spec).spec) == parse_perturbation(spec)


@pytest.mark.parametrize("spec", ["rotate", "", "blur:x", "blur:-1", "occlusion:0", "blur:nan"])
def test_parse_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(InputError):
        parse_perturbation(spec)


def test_unknown_kind_names_the_allowed_kinds() -> None:
    with pytest.raises(InputError, match="blur, saturation, occlusion"):
        parse_perturbation("jpeg:2")


# ------------------------------------------------------------------------------------------------ blur


def test_blur_kernel_scales_with_image_and_strength() -> None:
    p = Perturbation("blur")
    assert p.blur_kernel_size(224, 224) == 11
    assert p.blur_kernel_size(448, 300) == 15  # shorter side 300: round(14.7) = 15
    assert p.blur_kernel_size(448, 448) == 23  # 22 → odd
    assert p.blur_kernel_size(32, 32) == 3  # round(1.57) = 2 → at least 3
    assert Perturbation("blur", 2).blur_kernel_size(224, 224) == 23
    assert perturb.gaussian_sigma(11) == pytest.approx(2.0)  # 0.3·((11−1)·0.5 − 1) + 0.8


def test_blur_changes_a_checkerboard_but_keeps_its_mean() -> None:
    img = checkerboard()
    out = Perturbation("blur").apply(img, rng())
    a, b = np.asarray(img, dtype=float), np.asarray(out, dtype=float)
    assert out.size == img.size and out.mode == img.mode
    assert np.abs(a - b).mean() > 50
    assert abs(a.mean() - b.mean()) < 2
    assert b.std() < 0.5 * a.std()


def test_blur_matches_torchvision_gaussian_blur() -> None:
    tf = pytest.importorskip("torchvision.transforms.functional")
    img = colourful(40)
    ours = np.asarray(Perturbation("blur", 224 / 40).apply(img, rng()), dtype=int)  # k = 11
    theirs = np.asarray(tf.gaussian_blur(img, [11, 11]), dtype=int)
    assert np.abs(ours - theirs).max() <= 1


def test_blur_grey_and_rgba_images() -> None:
    grey = checkerboard().convert("L")
    assert Perturbation("blur").apply(grey, rng()).mode == "L"
    rgba = checkerboard().convert("RGBA")
    out = Perturbation("blur").apply(rgba, rng())
    assert out.mode == "RGBA" and np.all(np.asarray(out)[:, :, 3] == 255)


# ------------------------------------------------------------------------------------------ saturation


def test_saturation_of_a_grey_image_does_nothing() -> None:
    grey = Image.fromarray(np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))).convert("RGB")
    for seed in range(5):
        out = Perturbation("saturation").apply(grey, np.random.default_rng(seed))
        assert np.array_equal(np.asarray(out), np.asarray(grey))


def test_saturation_changes_a_coloured_image() -> None:
    img = colourful()
    out = Perturbation("saturation").apply(img, rng())
    assert not np.array_equal(np.asarray(out), np.asarray(img))


# ------------------------------------------------------------------------------------------- occlusion


@pytest.mark.parametrize(("size", "strength", "side"), [(224, 1.0, 70), (448, 1.0, 140), (224, 1.5, 105)])
def test_occlusion_draws_a_black_square_of_the_expected_size(size: int, strength: float, side: int) -> None:
    img = Image.new("RGB", (size, size), (255, 255, 255))
    out = np.asarray(Perturbation("occlusion", strength).apply(img, rng()))
    black = np.all(out == 0, axis=2)
    ys, xs = np.nonzero(black)
    assert black.sum() == side * side
    assert ys.max() - ys.min() + 1 == side and xs.max() - xs.min() + 1 == side
    assert np.all(out[~black] == 255)


def test_occlusion_square_follows_the_shorter_side_and_stays_inside() -> None:
    img = Image.new("RGB", (300, 112), (200, 200, 200))  # shorter side 112 → side 35
    for seed in range(20):
        out = np.asarray(Perturbation("occlusion").apply(img, np.random.default_rng(seed)))
        assert np.all(out == 0, axis=2).sum() == 35 * 35
    assert Perturbation("occlusion", 10).occlusion_side(300, 112) == 112


def test_apply_does_not_modify_the_input() -> None:
    img = checkerboard(64)
    before = np.asarray(img).copy()
    for kind in perturb.KINDS:
        Perturbation(kind).apply(img, rng())
    assert np.array_equal(np.asarray(img), before)


# ------------------------------------------------------------------------------------------------ hook


def test_hook_is_deterministic_by_seed_and_index() -> None:
    img = Image.new("RGB", (224, 224), (255, 255, 255))
    hook = perturbation_hook(Perturbation("occlusion"), seed=3)
    first = [np.asarray(hook(img, i)) for i in (5, 6)]
    # another order, another instance: the same image per index
    again = perturbation_hook(Perturbation("occlusion"), seed=3)
    assert np.array_equal(np.asarray(again(img, 6)), first[1])
    assert np.array_equal(np.asarray(again(img, 5)), first[0])
    assert np.array_equal(np.asarray(hook(img, 5)), first[0])
    assert not np.array_equal(first[0], first[1])
    other_seed = perturbation_hook(Perturbation("occlusion"), seed=4)
    assert not np.array_equal(np.asarray(other_seed(img, 5)), first[0])


def test_hook_copies_and_is_module_level() -> None:
    hook = perturbation_hook(parse_perturbation("saturation:0.8"), seed=1)
    cls = type(hook)
    # DataLoader workers pickle the hook by reference to its class: it must be importable by name.
    assert cls.__module__ == "hierqdrant.evaluation.perturb" and getattr(perturb, cls.__qualname__) is cls
    clone = copy.deepcopy(hook)
    img = colourful()
    assert np.array_equal(np.asarray(clone(img, 9)), np.asarray(hook(img, 9)))


def test_hook_rejects_bad_seed_and_index() -> None:
    with pytest.raises(InputError):
        perturbation_hook(Perturbation("blur"), seed=-1)
    with pytest.raises(InputError):
        perturbation_hook(Perturbation("blur"), seed=0)(colourful(8), -3)
