"""numba measurement core: run-length scan, components, diameters.

Private kernels (``_``-prefixed) take arrays, spacing and scalars and return
numbers or arrays. :mod:`liverburden.measure` validates inputs and calls them.
"""

from ._cache import configure as _configure_cache

_configure_cache()  # before any @njit(cache=True) below picks its cache locator

from ._diameters import (  # noqa: E402
    E_LD,
    E_MAX3D,
    E_SA,
    F_LD,
    F_MAX3D,
    F_SA,
    F_SUM_X,
    F_SUM_Y,
    F_SUM_Z,
    S_BBOX,
    S_COUNT,
    S_IN_LIVER,
    S_SLICE,
    _lesion_geometry,
    _paint_runs,
    _run_value_counts,
)
from ._faces import _face_counts, shared_face_area_mm2
from ._scan import RUN_IN_LIVER, RUN_VALUE, RUN_X0, RUN_X1, RUN_Y, RUN_Z, _connect_runs, _scan_runs, scan_runs
from ._tiered import tiered as _wrap

# Callers get the install's ahead-of-time build where a call fits it exactly, the
# numba JIT dispatcher otherwise (``_tiered``, README "Cold start"); ``.jit`` is the
# dispatcher itself.
_lesion_geometry = _wrap(_lesion_geometry)
_paint_runs = _wrap(_paint_runs)
_run_value_counts = _wrap(_run_value_counts)
_face_counts = _wrap(_face_counts)
_connect_runs = _wrap(_connect_runs)
_scan_runs = _wrap(_scan_runs)

__all__ = [
    "E_LD", "E_MAX3D", "E_SA", "F_LD", "F_MAX3D", "F_SA", "F_SUM_X", "F_SUM_Y", "F_SUM_Z",
    "RUN_IN_LIVER", "RUN_VALUE", "RUN_X0", "RUN_X1", "RUN_Y", "RUN_Z",
    "S_BBOX", "S_COUNT", "S_IN_LIVER", "S_SLICE",
    "_connect_runs", "_face_counts", "shared_face_area_mm2", "_lesion_geometry", "_paint_runs", "_run_value_counts", "_scan_runs",
    "scan_runs",
]
