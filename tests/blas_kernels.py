"""The OpenBLAS kernels NumPy and SciPy run on, and another one this CPU supports.

Other kernels give other last bits of a fit; nothing may depend on them. CI runs the fitting tests a second
time under another kernel, and a test resumes an ingest under another kernel than the one it was killed under.

    python -m tests.blas_kernels current   # the kernel(s) in use now, e.g. "Haswell"
    python -m tests.blas_kernels other     # an OPENBLAS_CORETYPE this CPU supports whose kernel differs

CI's second run exports ``HIERQDRANT_EXPECT_BLAS_KERNEL`` and tests/conftest.py checks, through threadpoolctl,
that every loaded OpenBLAS really runs it, so the check cannot pass by running the same kernel twice.
"""

from __future__ import annotations

import sys

import numpy  # noqa: F401 — loads the BLAS libraries threadpoolctl inspects
import scipy.linalg  # noqa: F401
from threadpoolctl import threadpool_info

# OpenBLAS core types, newest first, each with the CPU flag it needs (Prescott runs on any x86_64)
CORE_TYPES = (("SkylakeX", "avx512f"), ("Haswell", "avx2"), ("Sandybridge", "avx"), ("Prescott", "sse3"))


def kernels() -> set[str]:
    return {str(i.get("architecture")) for i in threadpool_info() if i.get("internal_api") == "openblas"}


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def other_core_type() -> str | None:
    """An ``OPENBLAS_CORETYPE`` this CPU supports whose kernel is not the one in use (None: there is none)."""
    now = {k.lower() for k in kernels()}
    flags = cpu_flags()
    for name, flag in CORE_TYPES:
        if flag in flags and name.lower() not in now:
            return name
    return None


def main(what: str) -> int:
    now = kernels()
    if not now:
        print("no OpenBLAS loaded by numpy/scipy", file=sys.stderr)
        return 1
    if what == "current":
        print(",".join(sorted(now)))
        return 0
    other = other_core_type()
    if other is None:
        print(f"no other OpenBLAS kernel for this CPU than {sorted(now)}", file=sys.stderr)
        return 1
    print(other)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "current"))
