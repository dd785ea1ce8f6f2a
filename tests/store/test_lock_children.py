"""Nothing lost, second pass, item 16: a writer killed with ``kill -9`` while its DataLoader workers live on.

An ``flock`` belongs to the open file description, and ``fork`` shares it: the workers of an ingest that
were forked while it held the collection's lock kept holding it after the ingest itself was killed (until
torch's watchdog ended them, ~5 s later), and a rerun in between was refused naming the dead pid. Forked
children now close their copy of the lock (``os.register_at_fork`` in ``edge_files``): the lock is free the
moment its holder dies, whatever its children do.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hierqdrant.store.engines.edge_files import collection_lock

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")

HOLD_AND_DIE = """
import os, sys, time
from pathlib import Path
from hierqdrant.store.engines.edge_files import collection_lock

with collection_lock(Path(sys.argv[1]), "pics"):
{spawn}
    print(child, flush=True)
    time.sleep(0.5)  # the child is running
    os.kill(os.getpid(), 9)  # kill -9 of the writer alone
"""

FORKED = """
    import multiprocessing
    proc = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
    proc.start()
    child = proc.pid
"""

DATALOADER = """
    import torch
    from torch.utils.data import DataLoader, Dataset

    class Slow(Dataset):
        def __len__(self): return 100
        def __getitem__(self, i):
            time.sleep(0.2)
            return torch.tensor([os.getpid()])

    loader = iter(DataLoader(Slow(), batch_size=1, num_workers=1, persistent_workers=True))
    child = int(next(loader)[0, 0])  # the worker's pid
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").is_file() or Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.mark.parametrize("spawn", [FORKED, DATALOADER], ids=["fork", "dataloader-worker"])
def test_the_lock_is_free_when_its_holder_dies_though_its_children_live(tmp_path: Path, spawn: str) -> None:
    code = HOLD_AND_DIE.format(spawn=textwrap.indent(textwrap.dedent(spawn), "    "))
    # The child keeps the writer's stdout open: read its pid, then wait for the writer only.
    writer = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    child = int(writer.stdout.readline())
    assert writer.wait(timeout=120) == -signal.SIGKILL
    writer.stdout.close()
    try:
        assert _alive(child), "the child ended with its parent: nothing tested"
        with collection_lock(tmp_path, "pics") as first:  # was: busy, "pid <the dead writer>"
            assert first
        assert _alive(child)  # still alive, and the lock was free all the same
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
