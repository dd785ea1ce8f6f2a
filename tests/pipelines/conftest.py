"""Child processes for the lifecycle tests: ``hierqdrant …`` commands run in forked children of a warm
fork server (:mod:`tests.pipelines.forkserver`), and the checks on what they leave in the store."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hierqdrant.store.collection import iter_points, point_id
from hierqdrant.store.engines import EdgeEngine
from tests.cli.test_cli_ingest import make_folder

ROOT = Path(__file__).resolve().parents[2]
TEMPORARY = re.compile(r"\.(tmp|del)-[0-9a-f]{32}$")  # a temporary file or folder of a write


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.stdout.strip().splitlines()[-1])


class ForkServer:
    """Runs ``hierqdrant`` commands in forked child processes (several at once when asked)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.pipelines.forkserver"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline()
        assert ready.startswith('{"ready"'), ready
        self.count = 0

    def run(self, *commands: list[str], env: dict[str, str | None] | None = None) -> list[Run]:
        """Run the commands at the same time, each in its own child; their results in order."""
        jobs = []
        for argv in commands:
            self.count += 1
            out, err = self.workdir / f"{self.count}.out", self.workdir / f"{self.count}.err"
            jobs.append({"argv": argv, "env": env or {}, "stdout": str(out), "stderr": str(err)})
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"jobs": jobs}) + "\n")
        self.proc.stdin.flush()
        codes = json.loads(self.proc.stdout.readline())["codes"]
        return [
            Run(code, Path(job["stdout"]).read_text(), Path(job["stderr"]).read_text())
            for code, job in zip(codes, jobs, strict=True)
        ]

    def one(self, argv: list[str], env: dict[str, str | None] | None = None) -> Run:
        return self.run(argv, env=env)[0]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="session")
def children(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer]:
    server = ForkServer(tmp_path_factory.mktemp("children"))
    yield server
    server.close()


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """18 tiny labelled images in 3 classes (read only: tests copy nothing into it)."""
    return make_folder(tmp_path_factory.mktemp("imgs"), classes=3, per_class=6, size=8)


def ingest_argv(source: Path, store: Path, *extra: str, collection: str = "pics") -> list[str]:
    """A small ingest: batches of 4 images, a cache part per batch, upserts of 5 points."""
    return ["ingest", str(source), "-c", collection, "--model", "pixels", "--image-size", "8", "--device", "cpu",
            "--workers", "0", "--batch-size", "4", "--upsert-batch", "5", "--data-dir", str(store),
            "--threshold", "0.2", "--json", "--quiet", *extra]


SMALL_PARTS = {"HIERQDRANT_CACHE_FLUSH_ROWS": "4"}


def keys_of(source: Path) -> list[str]:
    return sorted(p.relative_to(source).as_posix() for p in source.rglob("*.png"))


def check_store(store: Path, keys: list[str], collection: str = "pics") -> dict[str, Any]:
    """The collection holds exactly the points of ``keys`` (unique ids), is complete, and no temporary
    file or folder is left anywhere under the store; returns its info dict."""
    leftovers = [p for p in store.rglob("*") if TEMPORARY.search(p.name)]
    assert not leftovers, leftovers
    folders = sorted(p.name for p in (store / collection).iterdir())
    assert len(folders) == 3 and folders[0] == "collection.json" and folders[1].startswith("model-"), folders
    engine = EdgeEngine(store)
    try:
        info = engine.read_info(collection)
        assert info is not None and info["state"] == "complete"
        assert engine.count(collection) == len(keys)
        ids = [i for batch, _, _ in iter_points(engine, collection, with_vectors=False) for i in batch]
    finally:
        engine.close()
    assert len(ids) == len(set(ids)) == len(keys)
    assert set(ids) == {point_id(collection, k) for k in keys}
    return info
