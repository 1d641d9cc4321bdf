"""Exact Euclidean distance transform with anisotropic spacing (numba).

Felzenszwalb & Huttenlocher's lower envelope of parabolas, one axis at a time
(Theory of Computing 8, 2012). Distances are between voxel centres, in mm.
"""

from __future__ import annotations

import numpy as np
from ._jit import njit

INF = 1e20


@njit(cache=True, nogil=True)
def _edt_1d(f, n, s, d, v, zz):
    """Squared distance transform of one line: d[i] = min_j ((i-j) s)^2 + f[j].

    Entries of ``f`` at or above ``INF`` are not features; a line without any
    feature stays ``INF``.
    """
    s2 = s * s
    k = -1
    sv = 0.0
    for q in range(n):
        if f[q] >= INF:
            continue
        if k == -1:
            k = 0
            v[0] = q
            zz[0] = -INF
            zz[1] = INF
            continue
        while True:
            p = v[k]
            sv = ((f[q] + s2 * q * q) - (f[p] + s2 * p * p)) / (2.0 * s2 * (q - p))
            if sv <= zz[k]:
                k -= 1  # stops at k = 0 since zz[0] = -INF
            else:
                break
        k += 1
        v[k] = q
        zz[k] = sv
        zz[k + 1] = INF
    if k == -1:
        for i in range(n):
            d[i] = INF
        return
    k = 0
    for q in range(n):
        while zz[k + 1] < q:
            k += 1
        p = v[k]
        d[q] = s2 * (q - p) * (q - p) + f[p]


@njit(cache=True, nogil=True)
def _sq_edt(feature, spacing):
    """Squared distance (mm²) from every voxel centre to the nearest ``feature`` voxel centre.

    ``INF`` where the array holds no feature voxel.
    """
    nz, ny, nx = feature.shape
    out = np.empty((nz, ny, nx), dtype=np.float64)
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                out[z, y, x] = 0.0 if feature[z, y, x] else INF
    m = max(nz, ny, nx)
    f = np.empty(m, dtype=np.float64)
    d = np.empty(m, dtype=np.float64)
    v = np.empty(m, dtype=np.int64)
    zz = np.empty(m + 1, dtype=np.float64)
    # axis 2
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                f[x] = out[z, y, x]
            _edt_1d(f, nx, spacing[2], d, v, zz)
            for x in range(nx):
                out[z, y, x] = d[x]
    # axis 1
    for z in range(nz):
        for x in range(nx):
            for y in range(ny):
                f[y] = out[z, y, x]
            _edt_1d(f, ny, spacing[1], d, v, zz)
            for y in range(ny):
                out[z, y, x] = d[y]
    # axis 0
    for y in range(ny):
        for x in range(nx):
            for z in range(nz):
                f[z] = out[z, y, x]
            _edt_1d(f, nz, spacing[0], d, v, zz)
            for z in range(nz):
                out[z, y, x] = d[z]
    return out
