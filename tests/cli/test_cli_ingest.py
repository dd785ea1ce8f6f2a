"""`hierqdrant ingest | query | info | embed | demo` end to end on small generated image folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from hierqdrant_cli import app

runner = CliRunner()


def _pattern(cls: int, i: int, size: int = 24) -> np.ndarray:
    """Grayscale-distinct classes: class c is a horizontal, vertical or diagonal ramp, with noise."""
    rng = np.random.default_rng(1000 * cls + i)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = [xx, yy, (xx + yy) / 2, 1 - xx][cls % 4]
    # Coarse noise survives downsampling, so every image differs from its class mates.
    coarse = np.kron(rng.normal(0, 25, (4, 4)), np.ones((size // 4, size // 4)))
    img = np.clip(base * 180 + 40 + coarse + rng.normal(0, 8, (size, size)), 0, 255)
    return np.repeat(img[:, :, None], 3, axis=2).astype(np.uint8)


def make_folder(root: Path, classes: int = 3, per_class: int = 8, size: int = 24) -> Path:
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(_pattern(c, i, size)).save(folder / f"{i:03d}.png")
    return root


def add_bad_files(root: Path) -> dict[str, str]:
    """Every bad-input case of the issue; returns {relative path: 'skipped' | 'converted'}."""
    out: dict[str, str] = {}
    good = root / "class0" / "000.png"
    jpeg = root / "class0" / "truncated.jpg"
    Image.open(good).convert("RGB").save(jpeg, quality=90)
    jpeg.write_bytes(jpeg.read_bytes()[: len(jpeg.read_bytes()) // 2])
    out["class0/truncated.jpg"] = "skipped"
    (root / "class1" / "notes.jpg").write_text("this is not an image\n")
    out["class1/notes.jpg"] = "skipped"
    Image.new("RGB", (1, 1), (120, 10, 10)).save(root / "class1" / "tiny.png")
    out["class1/tiny.png"] = "skipped"
    Image.fromarray(_pattern(2, 50)[:, :, 0]).save(root / "class2" / "gray.png")
    out["class2/gray.png"] = "converted"
    Image.fromarray(_pattern(2, 51)).convert("CMYK").save(root / "class2" / "cmyk.jpg")
    out["class2/cmyk.jpg"] = "converted"
    sixteen = (_pattern(0, 52)[:, :, 0].astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(sixteen).save(root / "class0" / "deep16.png")
    out["class0/deep16.png"] = "converted"
    loop = root / "class1" / "loop.png"
    os.symlink(loop, loop)
    out["class1/loop.png"] = "skipped"
    (root / "empty_class").mkdir()
    secret = root / "class2" / "secret.png"
    Image.fromarray(_pattern(2, 53)).save(secret)
    secret.chmod(0)
    out["class2/secret.png"] = "converted" if os.access(secret, os.R_OK) else "skipped"  # root reads anyway
    return out


def invoke(*args: str) -> tuple[int, dict | None, str]:
    result = runner.invoke(app, list(args))
    data = None
    if "--json" in args and result.stdout.strip():
        data = json.loads(result.stdout.strip().splitlines()[-1])
    return result.exit_code, data, result.output


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


def ingest_args(source: Path, store: Path, *extra: str) -> list[str]:
    return ["ingest", str(source), "-c", "pics", "--model", "pixels", "--image-size", "8", "--device", "cpu",
            "--workers", "0", "--data-dir", str(store), "--threshold", "0.2", "--json", *extra]


def test_ingest_skips_bad_files_and_rerun_adds_nothing(tmp_path: Path, store: Path) -> None:
    src = make_folder(tmp_path / "imgs")
    bad = add_bad_files(src)
    code, summary, output = invoke(*ingest_args(src, store))
    assert code == 1, output  # partial: something was skipped
    assert summary is not None
    reasons = {s["path"]: s["reason"] for s in summary["skipped"]}
    for rel, fate in bad.items():
        hit = [p for p in reasons if p.endswith(rel)]
        assert bool(hit) == (fate == "skipped"), (rel, reasons)
    assert any("empty_class" in p for p in reasons)
    converted = sum(1 for fate in bad.values() if fate == "converted")
    assert summary["ingested"] == 3 * 8 + converted
    assert summary["collection"] == "pics" and summary["model_id"]

    code2, again, _ = invoke(*ingest_args(src, store))
    assert code2 == 1 and again is not None
    assert again["ingested"] == summary["ingested"]
    assert again["embedded"] == 0 and again["reused_from_cache"] == summary["ingested"]
    assert again["model_id"] == summary["model_id"]
    _, info, _ = invoke("info", "--data-dir", str(store), "--json")
    assert info is not None
    assert info["collections"][0]["points"] == summary["ingested"]  # no duplicates


def test_query_json_explain_filter_and_collection_choice(tmp_path: Path, store: Path) -> None:
    src = make_folder(tmp_path / "imgs")
    assert invoke(*ingest_args(src, store))[0] == 0
    query_img = src / "class1" / "003.png"
    code, out, output = invoke("query", str(query_img), "-k", "5", "--data-dir", str(store), "--json", "--explain")
    assert code == 0, output
    assert out is not None
    hits = out["queries"][0]["hits"]
    assert len(hits) == 5
    assert hits[0]["payload"]["path"] == "class1/003.png"  # the image itself is stored
    assert [h["distance"] for h in hits] == sorted(h["distance"] for h in hits)
    assert all("explanation" in h for h in hits)
    code, out, _ = invoke("query", str(query_img), "-k", "3", "--data-dir", str(store), "--json",
                          "--filter", "hq.label=class2", "--strategy", "exact")
    assert code == 0 and out is not None
    assert {h["payload"]["hq"]["label"] for h in out["queries"][0]["hits"]} == {"class2"}
    # Human output mentions the labels and paths.
    code, _, text = invoke("query", str(query_img), "-k", "2", "--data-dir", str(store), "--explain")
    assert code == 0 and "class1" in text
    # Two collections: the query must name one.
    assert invoke(*[a if a != "pics" else "pics2" for a in ingest_args(src, store)])[0] == 0
    code, _, text = invoke("query", str(query_img), "--data-dir", str(store))
    assert code == 2 and "several collections" in text and "Traceback" not in text


def test_query_with_other_dimensions_and_mismatched_backbone_are_refused(tmp_path: Path, store: Path) -> None:
    src = make_folder(tmp_path / "imgs")
    code, first, _ = invoke(*ingest_args(src, store))
    assert code == 0 and first is not None
    np.savez(tmp_path / "q.npz", features=np.ones((2, 5)))
    code, _, text = invoke("query", str(tmp_path / "q.npz"), "-c", "pics", "--data-dir", str(store))
    assert code == 2 and "dims" in text and "Traceback" not in text
    code, _, text = invoke(*ingest_args(src, store)[:-1], "--model", "cifar_resnet20", "--weights", "random")
    assert code == 2 and "embedded with pixels" in text
    _, info, _ = invoke("info", "--data-dir", str(store), "--json")
    assert info is not None and info["collections"][0]["points"] == first["ingested"]


def test_unlabelled_folder_needs_a_model(tmp_path: Path, store: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    for i in range(4):
        Image.fromarray(_pattern(i % 3, 90 + i)).save(loose / f"u{i}.png")
    code, _, text = invoke(*ingest_args(loose, store))
    assert code == 2 and "no labelled images" in text
    src = make_folder(tmp_path / "imgs")
    assert invoke(*ingest_args(src, store))[0] == 0
    # Without --model the collection's own extractor embeds the new images.
    code, out, text = invoke("ingest", str(loose), "-c", "pics", "--device", "cpu", "--workers", "0",
                             "--data-dir", str(store), "--json")
    assert code == 0, text
    assert out is not None and out["ingested"] == 4 and out["fitted"] is False


def test_train_test_layout_records_the_split_and_features_npz_source(tmp_path: Path, store: Path) -> None:
    root = tmp_path / "tt"
    make_folder(root / "train", per_class=6)
    make_folder(root / "test", per_class=2)
    code, out, text = invoke(*ingest_args(root, store))
    assert code == 0, text
    assert out is not None and out["splits"] == {"train": 18, "test": 6}
    code, res, _ = invoke("query", str(root / "test" / "class0" / "000.png"), "-k", "30", "--data-dir", str(store),
                          "--json", "--filter", "hq.split=test")
    assert code == 0 and res is not None and len(res["queries"][0]["hits"]) == 6
    # embed → .npz → ingest that file as a source of its own.
    feats = tmp_path / "f.npz"
    code, emb, text = invoke("embed", str(root), "-o", str(feats), "--model", "pixels", "--image-size", "8",
                             "--device", "cpu", "--workers", "0", "--json")
    assert code == 0, text
    assert emb is not None and emb["images"] == 24
    code, out, text = invoke("ingest", str(feats), "-c", "fromnpz", "--data-dir", str(store), "--json")
    assert code == 0, text
    assert out is not None and out["ingested"] == 24 and out["splits"] == {"train": 18, "test": 6}


def test_unreachable_server_is_one_line(tmp_path: Path) -> None:
    code, _, text = invoke("info", "--url", "http://127.0.0.1:9")
    assert code == 2
    assert "cannot reach Qdrant" in text and "Traceback" not in text


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path: Path, store: Path) -> None:
    src = make_folder(tmp_path / "imgs", classes=3, per_class=200, size=32)
    args = [sys.executable, "-m", "hierqdrant", *ingest_args(src, store)]
    args[args.index("pixels") : args.index("pixels") + 1] = ["cifar_resnet20", "--weights", "random"]
    args = [a for a in args if a not in ("--image-size", "8")]
    env = {**os.environ, "HIERQDRANT_CACHE_FLUSH_ROWS": "16"}
    args[args.index("--json") :] = ["--json", "--batch-size", "16"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cache = store / "cache" / "pics"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if any(cache.rglob("part-*.npz")):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the ingest finished before it could be killed")
    assert proc.returncode == -signal.SIGKILL
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["ingested"] == 600
    assert summary["reused_from_cache"] > 0 and summary["embedded"] < 600
    assert summary["reused_from_cache"] + summary["embedded"] == 600
    _, info, _ = invoke("info", "--data-dir", str(store), "--json")
    assert info is not None and info["collections"][0]["points"] == 600


@pytest.mark.slow
def test_demo_runs(tmp_path: Path) -> None:
    code, out, text = invoke("demo", "--workdir", str(tmp_path / "digits"), "--data-dir", str(tmp_path / "s"), "--json")
    assert code == 0, text
    assert out is not None and out["images"] == 1797 and out["queries"] > 100
    assert out["scores"]["hierarchical"]["map@10"] > 0.9
    assert out["certificate_rate"] == 1.0


def test_ingest_tune_stores_the_chosen_t_and_alpha(tmp_path: Path, store: Path) -> None:
    src = make_folder(tmp_path / "imgs", classes=4, per_class=10)
    code, out, text = invoke(*ingest_args(src, store), "--tune")
    assert code == 0, text
    assert out is not None
    from hierqdrant.store.collection import read_collection_model
    from hierqdrant.store.engines import EdgeEngine

    engine = EdgeEngine(store)
    model, _ = read_collection_model(engine, "pics")
    engine.close()
    tuning = model.info["tuning"]
    assert model.model_id == out["model_id"]
    assert model.alpha == tuning["best_alpha"] and model.threshold == tuning["best_threshold"]
