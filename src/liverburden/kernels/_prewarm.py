"""Compile two kernels in a second process while this one compiles the others.

On an empty kernel cache, ``measure`` spends ~16 s compiling, one kernel after the
other, on one core. The kernels with one fixed signature (whatever the masks'
dtypes: the runs table and spacing are always int64/float64) can be compiled
ahead, by explicit signature, in a child process that writes them to the same
cache: ``_lesion_geometry`` (the diameters, ~7 s) and ``_connect_runs`` (~1.6 s).
Meanwhile this process loads the study and compiles the mask scan (~6 s, its
types depend on the mask dtypes). :func:`wait` is called right before the first
of the two is needed; numba then loads them from the cache instead of compiling.

Only the command line starts a child (``liverburden measure``); library calls
never spawn processes. Nothing starts when the cache already holds both, on one
core, or with ``LIVERBURDEN_NO_PREWARM=1``. If the child fails or is slow (5 min),
this process simply compiles them itself: the numbers never depend on it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

__all__ = ["start", "wait"]

_child: dict[str, Any] = {"proc": None}


def _targets() -> list[tuple[Any, tuple]]:
    from numba import types

    from . import _diameters, _scan

    A = types.Array
    i64_2, i64_1, f64_1 = A(types.int64, 2, "C"), A(types.int64, 1, "C"), A(types.float64, 1, "C")
    return [
        (_diameters._lesion_geometry, (i64_2, i64_1, i64_1, f64_1, types.float64, types.float64)),
        (_scan._connect_runs, (i64_2, i64_1, types.int64, types.boolean)),
    ]


def _cached(dispatcher: Any, sig: tuple) -> bool:
    """Whether the on-disk cache index lists ``sig`` for this kernel's current code.

    Reads the index only (a small pickle): loading the compiled object here would
    be paid a second time when the kernel is first called."""
    import hashlib

    try:
        index = dispatcher._cache._cache_file._load_index()  # {} when missing or stale
        code = hashlib.sha256(dispatcher.py_func.__code__.co_code).hexdigest()
        return any(key[0] == sig and key[2][0] == code for key in index)
    except Exception:  # numba internals changed: assume cached, start nothing
        return True


def start() -> bool:
    """Start the child if it would help; returns whether one was started."""
    if _child["proc"] is not None or os.environ.get("LIVERBURDEN_NO_PREWARM") == "1" or (os.cpu_count() or 1) < 2:
        return False
    from ._cache import configure

    configure()  # the child must use this process's cache directory (exported when chosen per user)
    from ._tiered import status

    if status()["aot"]:  # the install's compiled build covers these kernels: nothing to compile
        return False
    if all(_cached(d, s) for d, s in _targets()):
        return False
    try:
        _child["proc"] = subprocess.Popen(
            [sys.executable, "-m", "liverburden.kernels._prewarm"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    except OSError:
        return False
    return True


def wait(timeout_s: float = 300.0) -> None:
    """Wait for the child (if any) to finish writing its kernels to the cache."""
    proc = _child["proc"]
    if proc is None:
        return
    _child["proc"] = None
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _main() -> int:
    for dispatcher, sig in _targets():
        dispatcher.compile(sig)
    return 0


if __name__ == "__main__":  # pragma: no cover - run as a child process
    sys.exit(_main())
