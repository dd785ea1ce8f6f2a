"""Backbones: CIFAR ResNets, checkpoints, torchvision models (offline), the pixels extractor.

Covers hierqdrant.vision.backbones and the modules it builds on: checkpoints, torchvision_weights,
preprocessing.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from hierqdrant.core.errors import InputError, ModelMismatchError, NotFoundError
from hierqdrant.vision import backbones, torchvision_weights
from hierqdrant.vision.backbones import available_backbones, backbone_from_description, load_backbone
from hierqdrant.vision.checkpoints import file_sha256, read_checkpoint
from hierqdrant.vision.cifar_resnet import CifarResNet, cifar_resnet20, cifar_resnet56
from hierqdrant.vision.extractor import describe, identity, is_random_init, same_extractor
from hierqdrant.vision.preprocessing import ImageTransform


def _save_akamaster_style(model: CifarResNet, path: Path) -> Path:
    """The layout of the published CIFAR checkpoints: DataParallel prefix under 'state_dict'."""
    sd = {f"module.{k}": v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"best_prec1": 91.0, "state_dict": sd}, path)
    return path


def _trained_like(model: CifarResNet, seed: int = 1) -> CifarResNet:
    """Non-trivial BN statistics so that a wrong load would change the output."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    model.eval()
    return model


# ---------------------------------------------------------------------------------------------- CIFAR


def test_cifar_resnet_architecture() -> None:
    # Parameter counts of He et al. (2016), Table 6: 0.27M (ResNet-20), 0.85M (ResNet-56).
    assert sum(p.numel() for p in cifar_resnet20().parameters()) == 269_722
    assert sum(p.numel() for p in cifar_resnet56().parameters()) == 853_018
    m = cifar_resnet20().eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        f = m.forward_features(x)
        assert f.shape == (3, 64)
        torch.testing.assert_close(m(x), m.linear(f))
    # Option-A shortcut: no parameters, subsample ×2 and zero-pad 16 → 32 channels (8 each side).
    sc = m.layer2[0].get_submodule("shortcut")
    assert sum(p.numel() for p in sc.parameters()) == 0
    y = sc(torch.ones(1, 16, 8, 8))
    assert y.shape == (1, 32, 4, 4)
    assert y[0, :8].abs().sum() == 0 and y[0, 24:].abs().sum() == 0 and (y[0, 8:24] == 1).all()
    assert set(m.state_dict()) >= {"conv1.weight", "layer3.2.bn2.running_var", "linear.bias"}
    with pytest.raises(ValueError):
        CifarResNet(depth=21)


def test_cifar_random_init_features_and_determinism() -> None:
    bb = load_backbone("cifar_resnet20", weights="random")
    assert (bb.feature_dim, bb.image_size, bb.weights_kind, bb.num_classes) == (64, 32, "random", 10)
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        f = bb.module(x)
    assert f.shape == (5, 64)
    assert bb.classifier is not None and bb.logits(x).shape == (5, 10)
    again = load_backbone("cifar_resnet20", weights="random")  # fixed seed: same weights
    with torch.no_grad():
        torch.testing.assert_close(again.module(x), f)
    assert not bb.module.training


def test_cifar_checkpoint_with_module_prefix_loads_strictly(tmp_path: Path) -> None:
    ref = _trained_like(cifar_resnet20(), seed=3)
    path = _save_akamaster_style(ref, tmp_path / "resnet20-test.th")
    bb = load_backbone("cifar_resnet20", str(path))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(bb.module(x), ref.forward_features(x))
        torch.testing.assert_close(bb.logits(x), ref(x))
    desc = bb.description()
    json.dumps(desc)
    assert desc["weights"] == "resnet20-test.th"  # file name only, no directory
    assert desc["weights_sha256"] == file_sha256(path)
    assert (desc["image_size"], desc["feature_dim"], desc["name"]) == (32, 64, "cifar_resnet20")
    assert desc["mean"] == [0.485, 0.456, 0.406] and desc["std"] == [0.229, 0.224, 0.225]


def test_cifar_checkpoint_num_classes_read_from_file(tmp_path: Path) -> None:
    path = _save_akamaster_style(CifarResNet(20, num_classes=100), tmp_path / "c100.th")
    bb = load_backbone("cifar_resnet20", str(path))
    assert bb.num_classes == 100
    fresh = load_backbone("cifar_resnet20", str(path), num_classes=7)  # new head for fine-tuning
    assert fresh.num_classes == 7 and fresh.classifier is not None
    assert fresh.classifier.weight.shape == (7, 64)


def test_checkpoint_of_another_architecture(tmp_path: Path) -> None:
    path = _save_akamaster_style(cifar_resnet20(), tmp_path / "r20.th")
    with pytest.raises(InputError) as err:
        load_backbone("cifar_resnet32", str(path))
    msg = str(err.value)
    assert "does not fit cifar_resnet32" in msg and "missing keys" in msg and "layer1.3." in msg
    torch.save(torchvision.models.resnet18(num_classes=5).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(InputError) as err:
        load_backbone("cifar_resnet20", str(tmp_path / "r18.pth"))
    assert "unexpected keys" in str(err.value) or "shape mismatch" in str(err.value)


def test_cifar_rejects_weights_names() -> None:
    with pytest.raises(InputError, match="local checkpoint"):
        load_backbone("cifar_resnet56", "IMAGENET1K_V1")


# ----------------------------------------------------------------------------------------- checkpoints


def test_read_checkpoint_formats(tmp_path: Path) -> None:
    sd = {"a.weight": torch.ones(2), "b.bias": torch.zeros(1)}
    torch.save(sd, tmp_path / "plain.pt")
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, tmp_path / "m.pt")
    torch.save({"state_dict": {f"_orig_mod.{k}": v for k, v in sd.items()}}, tmp_path / "s.pt")
    for name in ("plain.pt", "m.pt", "s.pt"):
        assert sorted(read_checkpoint(tmp_path / name)) == ["a.weight", "b.bias"]
    with pytest.raises(NotFoundError, match="--weights"):
        read_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(tmp_path / "junk.pt")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pt")
    with pytest.raises(InputError, match="not a state_dict"):
        read_checkpoint(tmp_path / "meta.pt")


def test_pickled_module_is_refused(tmp_path: Path) -> None:
    torch.save(torch.nn.Linear(2, 2), tmp_path / "full.pt")  # a pickled nn.Module, not a state_dict
    with pytest.raises(InputError, match="weights-only"):
        read_checkpoint(tmp_path / "full.pt")


# ----------------------------------------------------------------------------------------- torchvision


def test_torchvision_random_init_cuts_the_final_linear() -> None:
    bb = load_backbone("resnet18", weights="random", image_size=64)
    assert (bb.feature_dim, bb.image_size, bb.num_classes, bb.weights_kind) == (512, 64, 1000, "random")
    assert isinstance(bb.module.fc, torch.nn.Identity)
    torch.manual_seed(backbones.RANDOM_INIT_SEED)
    ref = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert bb.module(x).shape == (2, 512)
        torch.testing.assert_close(bb.logits(x), ref(x))  # classifier(module(x)) == the original net
    t = bb.transform(Image.new("RGB", (100, 50), (255, 0, 0)))
    assert t.shape == (3, 64, 64)
    torch.testing.assert_close(t[0, 0, 0], torch.tensor((1.0 - 0.485) / 0.229))


def test_image_transform_split_is_exact() -> None:
    """workers: resize + crop to uint8; device: (x / 255 − mean) / std — bit-identical to the whole."""
    tf = load_backbone("resnet18", weights="random", image_size=48).transform
    assert isinstance(tf, ImageTransform)
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8))
    u8 = tf.to_uint8(img)
    assert u8.dtype == torch.uint8 and u8.shape == (3, 48, 48)
    assert torch.equal(tf.normalize(u8[None])[0], tf(img))


def test_torchvision_sequential_head() -> None:
    bb = load_backbone("mobilenet_v3_small", weights="random", num_classes=4)
    assert isinstance(bb.module.get_submodule("classifier.3"), torch.nn.Identity)
    assert bb.feature_dim == 1024 and bb.num_classes == 4 and bb.image_size == 224
    with torch.no_grad():
        assert bb.module(torch.randn(1, 3, 64, 64)).shape == (1, 1024)


def test_torchvision_local_checkpoint_reads_num_classes(tmp_path: Path) -> None:
    ref = torchvision.models.resnet18(num_classes=7).eval()
    torch.save({"model": {f"module.{k}": v for k, v in ref.state_dict().items()}}, tmp_path / "ft.pth")
    bb = load_backbone("resnet18", str(tmp_path / "ft.pth"), image_size=32)
    assert bb.num_classes == 7 and bb.weights == "ft.pth" and bb.weights_kind == "file"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(bb.logits(x), ref(x))
    with pytest.raises(InputError, match="does not fit resnet34"):
        load_backbone("resnet34", str(tmp_path / "ft.pth"))


def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """No network: the host probe fails; a real download attempt would be recorded."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    calls: list[str] = []

    def no_connection(*args: Any, **kwargs: Any) -> socket.socket:
        raise OSError(101, "Network is unreachable")

    def no_download(url: str, *args: Any, **kwargs: Any) -> None:
        calls.append(url)
        raise OSError("download attempted in a test")

    monkeypatch.setattr(torchvision_weights.socket, "create_connection", no_connection)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return calls


def test_torchvision_weights_name_offline_fails_fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = _offline(monkeypatch, tmp_path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / "resnet18-f37072fd.pth"
    for spec in ("IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1", "DEFAULT", None, "  "):
        with pytest.raises(InputError) as err:
            load_backbone("resnet18", spec)
        msg = str(err.value)
        assert msg.startswith("resnet18's ImageNet weights (IMAGENET1K_V1) are not in the cache") and "\n" not in msg
        assert f"checkpoints/{cached.name})" in msg and "cannot be downloaded: no network" in msg
        assert "--weights FILE" in msg and "--weights random" in msg
    assert calls == []


def test_torchvision_download_failure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = _offline(monkeypatch, tmp_path)

    class _Sock:
        def close(self) -> None:
            pass

    monkeypatch.setattr(torchvision_weights.socket, "create_connection", lambda *a, **k: _Sock())
    with pytest.raises(InputError) as err:
        load_backbone("resnet18", "IMAGENET1K_V1")
    assert "--weights FILE" in str(err.value) and len(calls) == 1


def test_torchvision_bad_weights_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _offline(monkeypatch, tmp_path)
    with pytest.raises(InputError, match="not for resnet18"):
        load_backbone("resnet18", "ResNet50_Weights.IMAGENET1K_V2")
    with pytest.raises(InputError, match="no weights named"):
        load_backbone("resnet18", "IMAGENET9K_V9")


def test_torchvision_weights_from_hub_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A file already in the torch-hub cache is used offline, loaded with weights_only=True."""
    _offline(monkeypatch, tmp_path)
    enum = torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(5)
    ref = torchvision.models.mobilenet_v3_small().eval()
    torch.save(ref.state_dict(), cache / Path(enum.url).name)
    bb = load_backbone("mobilenet_v3_small", "DEFAULT")
    assert "get_state_dict" not in type(enum).__dict__  # the temporary hook is removed
    desc = bb.description()
    assert desc["weights"] == "DEFAULT" and desc["weights_kind"] == "torchvision"
    assert desc["weights_resolved"] == "MobileNet_V3_Small_Weights.IMAGENET1K_V1"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(bb.logits(x), ref(x))
    again = backbone_from_description(desc)
    with torch.no_grad():
        torch.testing.assert_close(again.module(x), bb.module(x))


def test_no_weights_means_the_pretrained_ones(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without weights a torchvision model loads its default ImageNet weights (from the cache, offline);
    random initialisation happens only when asked for, and its description says so."""
    _offline(monkeypatch, tmp_path)
    enum = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT
    cache = torchvision_weights.cache_file(enum)
    assert cache == Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
    cache.parent.mkdir(parents=True)
    torch.manual_seed(7)
    ref = torchvision.models.mobilenet_v3_small().eval()
    torch.save(ref.state_dict(), cache)
    bb = load_backbone("mobilenet_v3_small")
    desc = describe(bb, None)
    assert (desc["weights"], desc["weights_kind"]) == ("DEFAULT", "torchvision")
    assert desc["weights_resolved"] == "MobileNet_V3_Small_Weights.IMAGENET1K_V1"
    assert "random_init" not in desc and "seed" not in desc and not is_random_init(desc)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(bb.logits(x), ref(x))
    rnd = load_backbone("mobilenet_v3_small", " Random ")
    rdesc = describe(rnd, "random")
    assert (rdesc["weights"], rdesc["weights_kind"], rdesc["random_init"], rdesc["seed"]) == (
        "random", "random", True, backbones.RANDOM_INIT_SEED,
    )
    assert is_random_init(rdesc) and is_random_init(json.loads(json.dumps(rdesc)))
    assert not is_random_init(describe(load_backbone("pixels"), None)) and not is_random_init(None)
    assert not is_random_init({"name": "features-file", "weights_kind": "random"})


def test_cifar_without_weights_refuses_in_one_line() -> None:
    with pytest.raises(InputError) as err:
        load_backbone("cifar_resnet56")
    msg = str(err.value)
    assert "no published weights" in msg and "--weights FILE" in msg and "--weights random" in msg
    assert "\n" not in msg


def test_random_description_of_an_older_model_still_loads() -> None:
    """Models stored before ``--weights random`` existed described a random init as weights=None."""
    new = load_backbone("cifar_resnet20", "random").description()
    old = {k: v for k, v in new.items() if k != "random_init"} | {"weights": None}
    older = {k: v for k, v in old.items() if k not in ("weights_kind", "seed")}  # no kind at all
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = load_backbone("cifar_resnet20", "random").module(x)
        for desc in (new, old, older):
            assert is_random_init(desc)
            rebuilt = backbone_from_description(json.loads(json.dumps(desc)))
            assert rebuilt.weights_kind == "random" and rebuilt.description()["random_init"] is True
            torch.testing.assert_close(rebuilt.module(x), want)
    assert same_extractor(old, new) and identity(old) == identity(new)
    assert not same_extractor(new, {**new, "seed": 1})


def test_unknown_and_unsupported_names() -> None:
    with pytest.raises(InputError, match="unknown backbone"):
        load_backbone("resnet9000")
    with pytest.raises(InputError, match="no linear classifier"):
        load_backbone("squeezenet1_0")
    names = available_backbones()
    assert names[:2] == ["pixels", "cifar_resnet20"] and "resnet50" in names and "vit_b_16" in names
    assert "squeezenet1_0" not in names
    with pytest.raises(InputError):
        load_backbone("resnet18", image_size=0)


# ---------------------------------------------------------------------------------------------- pixels


def test_pixels_backbone() -> None:
    bb = load_backbone("pixels")
    assert (bb.feature_dim, bb.image_size, bb.classifier) == (64, 8, None)
    arr = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).astype(np.uint8)
    t = bb.transform(Image.fromarray(arr).convert("RGB"))
    assert t.shape == (1, 8, 8)
    with torch.no_grad():
        f = bb.module(t.unsqueeze(0))
    assert f.shape == (1, 64)
    np.testing.assert_allclose(f.numpy()[0], arr.reshape(-1) / 255.0, rtol=0, atol=1e-7)
    small = load_backbone("pixels", image_size=4)
    assert small.feature_dim == 16 and small.transform(Image.new("RGB", (30, 10))).shape == (1, 4, 4)
    with pytest.raises(InputError):
        load_backbone("pixels", "some.pt")


# ---------------------------------------------------------------------------------------- descriptions


def test_description_roundtrip(tmp_path: Path) -> None:
    path = _save_akamaster_style(_trained_like(cifar_resnet20(), 2), tmp_path / "w.th")
    bb = load_backbone("cifar_resnet20", str(path))
    desc = json.loads(json.dumps(bb.description()))
    with pytest.raises(InputError, match="--weights PATH"):
        backbone_from_description(desc)
    again = backbone_from_description(desc, str(path))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again.module(x), bb.module(x))
    other = _save_akamaster_style(_trained_like(cifar_resnet20(), 9), tmp_path / "other.th")
    with pytest.raises(ModelMismatchError):
        backbone_from_description(desc, str(other))
    rnd = load_backbone("cifar_resnet20", weights="random")
    rebuilt = backbone_from_description(json.loads(json.dumps(rnd.description())))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.module(x), rnd.module(x))
    px = backbone_from_description(load_backbone("pixels", image_size=5).description())
    assert px.feature_dim == 25


def test_torchvision_description_with_a_local_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Offline, a local file stands in for torchvision weights only when its sha256 has the published prefix."""
    _offline(monkeypatch, tmp_path)
    enum = torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1
    prefix = torchvision_weights.hash_prefix(enum.url)
    assert prefix is not None and prefix in Path(enum.url).name
    assert torchvision_weights.hash_prefix("https://example.org/weights.pth") is None
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), tmp_path / "not-the-published.pth")
    desc = {
        "name": "mobilenet_v3_small",
        "weights": "DEFAULT",
        "weights_kind": "torchvision",
        "weights_resolved": str(enum),
        "image_size": 224,
        "feature_dim": 1024,
        "num_classes": 1000,
    }
    with pytest.raises(ModelMismatchError, match="not the file of the torchvision weights"):
        backbone_from_description(desc, str(tmp_path / "not-the-published.pth"))
