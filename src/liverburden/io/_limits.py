"""Input limits checked from headers, before a voxel is read (``[limits]`` in the config).

A 74-byte ``.nii.gz`` may declare 32767^3 voxels and a DICOM slice 65535 x 65535;
reading their pixels first ends in a MemoryError or a crash inside a C++ reader.
Every reader asks :func:`check_voxels` with the size the header declares first.
The limit in force is the one of the run's configuration (:func:`limit_scope`).
"""

from __future__ import annotations

import contextlib
import os
import stat
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from .._exceptions import InputError

#: the default of ``limits.max_voxels`` (the packaged default.toml says the same)
DEFAULT_MAX_VOXELS = 1_000_000_000
_MAX_VOXELS: ContextVar[int] = ContextVar("liverburden_max_voxels", default=DEFAULT_MAX_VOXELS)


@contextlib.contextmanager
def limit_scope(config: Mapping[str, Any] | None) -> Iterator[None]:
    """Readers within use ``config["limits"]``."""
    lim = (config or {}).get("limits") or {}
    token = _MAX_VOXELS.set(int(lim.get("max_voxels", DEFAULT_MAX_VOXELS)))
    try:
        yield
    finally:
        _MAX_VOXELS.reset(token)


def check_voxels(path: Path | str, size_zyx: Sequence[int], what: str) -> None:
    """Raise :class:`InputError` when a declared size (slice, row, col) exceeds the limit."""
    n = 1
    for d in size_zyx:
        n *= max(int(d), 0)
    limit = _MAX_VOXELS.get()
    if n > limit:
        shown = " x ".join(str(int(d)) for d in size_zyx)
        raise InputError(f"{safe_path(path)}: {what} declares {shown} (slice, row, col) = {n} voxels, above "
                         f"limits.max_voxels = {limit}; refused before reading its pixels")


def safe_path(path: Path | str) -> str:
    """A path as printable text: undecodable bytes shown escaped (\\xff), never raised on."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def check_path_text(path: Path | str, what: str) -> None:
    """A path that is not valid UTF-8 cannot be passed to SimpleITK (it aborts the process
    with a C++ exception): refuse it with the path escaped."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{safe_path(path)}: {what} path is not valid UTF-8; rename the file") from None


def is_regular_file(path: Path | str) -> bool:
    """A regular file (not a FIFO, socket or device, which would block or never end)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False
