"""Permission tests that also run as root.

``chmod 000`` does not stop root from reading a file, and CI runs as root, so a test that only checks
``os.access`` would skip there for ever. :func:`run_unprivileged` runs the step in a forked child that
has dropped to the ``nobody`` user (uid/gid 65534), where the permission bits apply; as any other user
it simply runs the step in this process. :func:`shared_tmp` gives a folder that user can reach (pytest's
own ``tmp_path`` lies under a 0700 folder of root's).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

NOBODY = 65534


def is_root() -> bool:
    return os.geteuid() == 0


@contextmanager
def shared_tmp() -> Iterator[Path]:
    """A fresh folder under the system temp dir that every user may enter (0755), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="hq-perm-"))
    try:
        folder.chmod(0o755)
        yield folder
    finally:
        for p in [folder, *folder.rglob("*")]:  # give back what a test took away, so it can be removed
            if not p.is_symlink():
                p.chmod(0o755)
        shutil.rmtree(folder)


def run_unprivileged(step: Callable[[], Any]) -> Any:
    """``step()``'s JSON-able result, computed without root's right to read anything.

    As root: in a forked child that dropped to ``nobody``; the result (or the exception's type name and
    message, as an AssertionError) comes back as JSON through a pipe — never pickle. The step catches
    the error it expects and returns what the test checks.
    """
    if not is_root():
        return step()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, run the step, report, exit without running the parent's cleanup
        os.close(read)
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            answer = {"ok": step()}
        except BaseException as e:  # every outcome goes back to the parent
            answer = {"error": f"{type(e).__name__}: {e}"}
        with os.fdopen(write, "w") as out:
            json.dump(answer, out, default=str)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as inp:
        answer = json.loads(inp.read() or '{"error": "the child gave no answer"}')
    os.waitpid(pid, 0)
    if "error" in answer:
        raise AssertionError(f"as user nobody the step failed: {answer['error']}")
    return answer["ok"]
