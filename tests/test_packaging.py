"""The wheel is what users run: it must hold every module and data file of the source tree.

The other tests import the source tree, which hides a package missing from the wheel (``hierqdrant.reports``
once was: ``pip install . && hierqdrant demo`` crashed while every test passed). Here the wheel is built from a
copy of the project's own files (a stale ``build/`` in the checkout could otherwise supply a deleted module)
and its file list is compared with the source tree: every ``.py`` and every data file under each package
folder (``py.typed`` and whatever else a module reads at run time) must be in it, and so must the
``hierqdrant`` console script. ``.ci/run`` then installs that wheel into a fresh venv and runs the README's
main command from an empty folder.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.test_architecture import ROOT, SOURCE_TREES

#: What the build needs besides the packages (pyproject reads the README as the long description).
PROJECT_FILES = ("pyproject.toml", "README.md")


def source_files() -> set[str]:
    """Every file of every package folder, as its path inside the wheel (``hierqdrant_cli/…`` for ``cli/``)."""
    out: set[str] = set()
    for name, folder in SOURCE_TREES.items():
        for path in folder.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in {".pyc", ".pyo"}:
                out.add(f"{name}/{path.relative_to(folder).as_posix()}")
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    copy = tmp_path_factory.mktemp("project")
    for name in PROJECT_FILES:
        shutil.copy2(ROOT / name, copy / name)
    for folder in {f.name for f in SOURCE_TREES.values()}:
        shutil.copytree(ROOT / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    # --no-build-isolation: the build uses this environment's setuptools (the test extra pins a recent one),
    # so the test needs no network
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(copy)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"building the wheel failed:\n{done.stdout}\n{done.stderr}"
    (built,) = out.glob("hierqdrant-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_holds_every_module_and_data_file_of_the_source_tree(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    missing = sorted(source_files() - names)
    assert not missing, f"the wheel lacks {len(missing)} file(s) of the source tree: {missing[:20]}"
    packages = {n.rsplit("/", 1)[0] for n in names if n.endswith("/__init__.py")}
    assert {"hierqdrant", "hierqdrant/reports", "hierqdrant_cli"} <= packages  # the ones that have gone missing


def test_the_wheel_installs_the_console_script(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "hierqdrant = hierqdrant_cli:main" in text
    assert "hierqdrant_cli/__init__.py" in wheel.namelist()
