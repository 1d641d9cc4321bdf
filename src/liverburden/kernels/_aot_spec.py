"""Which kernel specialisations are compiled ahead of time, at install.

One list serves both sides: ``_aot_build`` (run by ``setup.py``) exports each entry
from the extension module ``liverburden.kernels._aot``, and ``_aot`` checks every
call against the same entry before it hands the arrays to the compiled code.

The set is the ``measure`` and ``margin`` paths on every mask the loaders can
produce: masks reach the kernels as C-contiguous uint8 or uint16
(``measure._labels.as_label_array``), the run table, points and spacing are always
int64 / float64. Anything else (other layouts, a read-only array) goes to the numba
JIT dispatcher as before.

Types are written as numba signature strings; ``parse`` reads them for the guard.
No numba import here: the guard must not pay for it.
"""

from __future__ import annotations

from typing import NamedTuple

#: kernel source files whose bytes make the build stamp (a stale build is not used)
SOURCES = ("_scan.py", "_diameters.py", "_faces.py", "_margin_box.py", "_edt.py", "_jit.py", "_aot_spec.py",
           "_aot_build.py")


class Entry(NamedTuple):
    name: str  # exported symbol in liverburden.kernels._aot
    module: str  # kernel module under liverburden.kernels
    func: str  # the @njit function in it
    args: tuple[str, ...]  # numba type strings, one per positional argument
    ret: str  # numba return type string
    defaults: tuple[object, ...] = ()  # values of trailing arguments a caller may omit


def _scan_words(liver: str, lesion: str) -> Entry:
    return Entry(
        f"scan_runs_words_{liver}_{lesion}", "_scan", "_scan_runs_words",
        (f"{liver}[:,:,::1]", f"{lesion}[:,:,::1]", "u8[:,:,::1]", "u8[:,:,::1]", "i8", "i8", "u1[::1]", "i8[::1]",
         "i8", "i8", "b1", "i8", "u8[::1]", "b1", "i8", "u8[::1]", "b1"),
        "Tuple((i8[:,::1], i8, u1[::1], u1[::1], i8[::1]))",
    )


def _scan_plain(liver: str, lesion: str) -> Entry:
    return Entry(
        f"scan_runs_{liver}_{lesion}", "_scan", "_scan_runs",
        (f"{liver}[:,:,::1]", f"{lesion}[:,:,::1]", "u1[::1]", "i8[::1]", "i8", "i8"),
        "Tuple((i8[:,::1], i8, u1[::1], u1[::1], i8[::1]))",
    )


_MASK = ("u1", "u2")

ENTRIES: tuple[Entry, ...] = (
    *(_scan_words(a, b) for a in _MASK for b in _MASK),
    *(_scan_plain(a, b) for a in _MASK for b in _MASK),
    Entry("connect_runs", "_scan", "_connect_runs", ("i8[:,::1]", "i8[::1]", "i8", "b1"), "Tuple((i8[::1], i8))"),
    Entry("lesion_geometry", "_diameters", "_lesion_geometry",
          ("i8[:,::1]", "i8[::1]", "i8[::1]", "f8[::1]", "f8", "f8"),
          "Tuple((i8[:,::1], f8[:,::1], i8[:,:,:,::1]))"),
    *(Entry(f"run_value_counts_{t}", "_diameters", "_run_value_counts",
            (f"{t}[:,:,::1]", "i8[:,::1]", "i8[::1]", "i8", "i8"), "i8[:,::1]") for t in _MASK),
    *(Entry(f"paint_runs_{t}", "_diameters", "_paint_runs",
            (f"{t}[:,:,::1]", "i8[:,::1]", "i8[::1]", "i8", "i8", "i8"), "none", (0, 0, 0)) for t in ("u1", "u2", "i4")),
    *(Entry(f"face_counts_{t}", "_faces", "_face_counts", (f"{t}[:,:,::1]", "i8"), "i8[:,:,::1]") for t in _MASK),
    # ablation margins (``margin._margin``)
    *(Entry(f"tumor_surface_{t}", "_margin_box", "_tumor_surface", (f"{t}[:,:,::1]", "u1[::1]", "i8[:,::1]"),
            "Tuple((i8[:,::1], b1[::1], i8, i8))") for t in _MASK),
    *(Entry(f"vic_box_{t}", "_margin_box", "_vic_box",
            (f"{t}[:,:,::1]", "u1[::1]", "i8[:,::1]", "i8", "i8", "i8", "i8", "i8", "i8", "f8[::1]", "i8"),
            "i8[::1]") for t in _MASK),
    *(Entry(f"sq_dist_at_{t}", "_margin_box", "_sq_dist_at",
            (f"{t}[:,:,::1]", "u1[::1]", "i8[::1]", "i8[::1]", "b1", "i8[:,::1]", "f8[::1]"), "f8[::1]") for t in _MASK),
    *(Entry(f"nearest_feature_{t}", "_margin_box", "_nearest_feature",
            (f"{t}[:,:,::1]", "u1[::1]", "i8[::1]", "i8[::1]", "b1", "i8[::1]", "f8[::1]", "i8[::1]"), "i8[::1]")
      for t in _MASK),
    *(Entry(f"side_margins_{t}", "_margin_box", "_side_margins",
            (f"{t}[:,:,::1]", "u1[::1]", "b1", "i8[:,::1]", "i8[::1]", "i8[::1]", "f8[::1]"), "Tuple((f8[::1], i8))")
      for t in _MASK),
    Entry("margin_stats", "_margin_box", "_margin_stats", ("f8[::1]", "f8"), "Tuple((i8, f8, f8, f8, i8, i8, i8))"),
)

_DTYPES = {"u1": "uint8", "u2": "uint16", "u8": "uint64", "i4": "int32", "i8": "int64", "f8": "float64", "b1": "bool"}


def parse(t: str) -> tuple[str, str, int]:
    """``"u1[:,:,::1]"`` -> ("array", "uint8", 3); ``"i8"`` -> ("scalar", "int64", 0).

    Only C-contiguous arrays (``::1`` last) are in the spec."""
    if "[" in t:
        base, dims = t.split("[", 1)
        dims = dims.rstrip("]").split(",")
        if dims[-1] != "::1" or any(d != ":" for d in dims[:-1]):
            raise ValueError(f"only C-contiguous arrays are exported, got {t}")
        return "array", _DTYPES[base], len(dims)
    return "scalar", _DTYPES[t], 0


def by_kernel() -> dict[tuple[str, str], list[Entry]]:
    """Entries grouped by (module, function)."""
    out: dict[tuple[str, str], list[Entry]] = {}
    for e in ENTRIES:
        out.setdefault((e.module, e.func), []).append(e)
    return out
