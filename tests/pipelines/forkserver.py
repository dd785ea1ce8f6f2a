"""A fork server for the fault-injection tests: ``python -m tests.pipelines.forkserver``.

Starting ``python -m hierqdrant`` costs seconds of imports (torch, qdrant-client, scikit-learn) before the
first line of an ingest runs; the fault matrix needs dozens of runs. This server pays the imports once,
then runs each requested command in a *forked child process* through the very entry point of
``python -m hierqdrant`` (:func:`hierqdrant_cli.main`): a separate process with its own pid, file
descriptors and locks, which ``HIERQDRANT_FAULT`` ends with ``os._exit`` exactly as it would end a fresh
``python -m hierqdrant``. Nothing runs in the server itself before it forks (no thread pool, no shard).

Protocol (one JSON object per line): ``{"jobs": [{"argv": [...], "env": {...}, "stdout": path, "stderr":
path}, ...]}`` forks every job at once (so two jobs run concurrently) and answers ``{"codes": [...]}`` with
each child's exit status (``-N`` for a signal) once all have ended.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any


def _warm_up() -> None:
    """Import what ``hierqdrant ingest`` / ``info`` / ``query`` import, without running anything."""
    import sklearn.covariance  # noqa: F401
    import sklearn.decomposition  # noqa: F401

    import hierqdrant.pipelines.ingest  # noqa: F401
    import hierqdrant.store.search  # noqa: F401
    import hierqdrant.vision.backbones  # noqa: F401
    import hierqdrant.vision.extract  # noqa: F401
    import hierqdrant_cli  # noqa: F401


def _child(job: dict[str, Any]) -> None:
    code = 1
    try:
        for key, value in job.get("env", {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = str(value)
        for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        sys.argv = ["hierqdrant", *job["argv"]]
        from hierqdrant_cli import main

        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()  # what `python -m hierqdrant` prints for an uncaught error (exit 1)
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def serve() -> None:
    _warm_up()
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pids = []
        for job in request["jobs"]:
            pid = os.fork()
            if pid == 0:
                _child(job)
            pids.append(pid)
        codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
        print(json.dumps({"codes": codes}), flush=True)


if __name__ == "__main__":
    serve()
