"""Per-tumor box kernels of the ablation margin (numba).

The margin needs the zone's distance transform only AT THE TUMOR SURFACE
VOXELS. ``_sq_dist_at`` computes exactly those values with the separable exact
EDT of :mod:`._edt` (same axis order, same 1-D kernel, same floating-point
expressions, so the values are bit-identical to ``_sq_edt(feature)`` read at
the points), but restricted to what the points need:

* axis 2 (columns): a two-sided scan per row gives the distance, in voxels, to
  the nearest voxel of the other class (one table serves both feature sets:
  zone and not-zone); the lower envelope of parabolas on a 0 / INF line is the
  squared distance to the nearest feature, so no parabolas are needed here;
* axis 1 (rows): only the (slice, column) lines whose column holds a query point;
* axis 0 (slices): only the (row, column) lines that hold a query point.

Kernels take arrays and scalars and return arrays; no Python objects.
"""

from __future__ import annotations

import numpy as np
from ._jit import njit

from ._edt import INF, _edt_1d

_NONE = np.int64(1) << np.int64(40)  # "no voxel of the other class in this row"


@njit(cache=True, nogil=True)
def _tumor_surface(z_u, zone_lut, truns):
    """One tumor from its runs (global coordinates; columns z, y, x0, x1).

    Returns ``(surf, inside, n_tumor, n_covered)``: the surface voxels (tumor
    voxels with a 6-neighbour outside the tumor; outside the array counts as
    outside) in C order, global indices, (n, 3); whether each is a zone voxel
    (``zone_lut[z_u] != 0``); the tumor's voxel count and how many are zone voxels.
    Reads the zone only at the tumor's voxels.
    """
    lo0 = truns[0, 0]
    lo1 = truns[0, 1]
    lo2 = truns[0, 2]
    hi0 = lo0
    hi1 = lo1
    hi2 = truns[0, 3]
    for r in range(truns.shape[0]):
        lo0 = min(lo0, truns[r, 0])
        hi0 = max(hi0, truns[r, 0])
        lo1 = min(lo1, truns[r, 1])
        hi1 = max(hi1, truns[r, 1])
        lo2 = min(lo2, truns[r, 2])
        hi2 = max(hi2, truns[r, 3])
    # the tumor's bounding box with a border of one empty voxel
    tb = np.zeros((hi0 - lo0 + 3, hi1 - lo1 + 3, hi2 - lo2 + 3), dtype=np.uint8)
    n_t = 0
    n_cov = 0
    for r in range(truns.shape[0]):
        z = truns[r, 0]
        y = truns[r, 1]
        row = z_u[z, y]
        for x in range(truns[r, 2], truns[r, 3] + 1):
            if tb[z - lo0 + 1, y - lo1 + 1, x - lo2 + 1] == 0:
                tb[z - lo0 + 1, y - lo1 + 1, x - lo2 + 1] = 1
                n_t += 1
                n_cov += zone_lut[row[x]] != 0
    cap = 1024
    surf = np.empty((cap, 3), dtype=np.int64)
    inside = np.empty(cap, dtype=np.bool_)
    n = 0
    for z in range(1, tb.shape[0] - 1):
        for y in range(1, tb.shape[1] - 1):
            for x in range(1, tb.shape[2] - 1):
                if not tb[z, y, x]:
                    continue
                if (
                    tb[z - 1, y, x] and tb[z + 1, y, x] and tb[z, y - 1, x] and tb[z, y + 1, x]
                    and tb[z, y, x - 1] and tb[z, y, x + 1]
                ):
                    continue
                if n == cap:
                    cap *= 2
                    s2 = np.empty((cap, 3), dtype=np.int64)
                    s2[:n] = surf[:n]
                    surf = s2
                    i2 = np.empty(cap, dtype=np.bool_)
                    i2[:n] = inside[:n]
                    inside = i2
                gz = z - 1 + lo0
                gy = y - 1 + lo1
                gx = x - 1 + lo2
                surf[n, 0] = gz
                surf[n, 1] = gy
                surf[n, 2] = gx
                inside[n] = zone_lut[z_u[gz, gy, gx]] != 0
                n += 1
    return surf[:n].copy(), inside[:n].copy(), n_t, n_cov


@njit(cache=True, nogil=True)
def _vic_box(z_u, zone_lut, truns, lo0, lo1, lo2, n0, n1, n2, spacing, kmax):
    """VIC counts in the box ``[lo, lo + n)``: ``out[k]`` = voxels outside the zone
    within k mm of the tumor (squared EDT of the tumor ``<= k*k + 1e-9``), k = 0..kmax.

    The separable EDT of :func:`._edt._sq_edt`, with everything beyond kmax mm
    dropped: rows and slices without a tumor voxel stay empty, and a partial
    squared distance above ``kmax^2 + 1e-9`` is no feature for the next axis
    (every term is non-negative, so it cannot come back under the limit).
    """
    lim = kmax * kmax + 1e-9
    s2 = spacing[2] * spacing[2]
    g = np.full((n0, n1, n2), INF, dtype=np.float64)
    row_t = np.zeros((n0, n1), dtype=np.uint8)
    slice_t = np.zeros(n0, dtype=np.uint8)
    for r in range(truns.shape[0]):
        z = truns[r, 0] - lo0
        y = truns[r, 1] - lo1
        row_t[z, y] = 1
        slice_t[z] = 1
        for x in range(truns[r, 2] - lo2, truns[r, 3] - lo2 + 1):
            g[z, y, x] = 0.0
    # axis 2: distance along the row to the nearest tumor voxel
    for z in range(n0):
        if not slice_t[z]:
            continue
        for y in range(n1):
            if not row_t[z, y]:
                continue
            last = -_NONE
            for x in range(n2):
                if g[z, y, x] == 0.0:
                    last = x
                else:
                    g[z, y, x] = np.float64(x - last)  # voxels, for now
            nxt = _NONE + n2
            for x in range(n2 - 1, -1, -1):
                if g[z, y, x] == 0.0:
                    nxt = x
                    continue
                a = np.int64(g[z, y, x])
                if nxt - x < a:
                    a = nxt - x
                v = s2 * a * a + 0.0
                g[z, y, x] = v if v <= lim else INF
    m = max(n0, n1, n2)
    f = np.empty(m, dtype=np.float64)
    d = np.empty(m, dtype=np.float64)
    v = np.empty(m, dtype=np.int64)
    zz = np.empty(m + 1, dtype=np.float64)
    # axis 1
    for z in range(n0):
        if not slice_t[z]:
            continue
        for x in range(n2):
            for y in range(n1):
                f[y] = g[z, y, x]
            _edt_1d(f, n1, spacing[1], d, v, zz)
            for y in range(n1):
                g[z, y, x] = d[y] if d[y] <= lim else INF
    # axis 0, then the count outside the zone
    hist = np.zeros(kmax + 1, dtype=np.int64)
    for y in range(n1):
        for x in range(n2):
            any_f = False
            for z in range(n0):
                f[z] = g[z, y, x]
                any_f |= f[z] < INF
            if not any_f:
                continue
            _edt_1d(f, n0, spacing[0], d, v, zz)
            for z in range(n0):
                dv = d[z]
                if dv > lim or zone_lut[z_u[lo0 + z, lo1 + y, lo2 + x]] != 0:
                    continue
                k = 0
                while not (dv <= k * k + 1e-9):
                    k += 1
                hist[k] += 1
    out = np.empty(kmax + 1, dtype=np.int64)
    acc = 0
    for k in range(kmax + 1):
        acc += hist[k]
        out[k] = acc
    return out


@njit(cache=True, nogil=True)
def _envelope_at(f, n, s, qs, q0, q1, out, v, zz):
    """``out[i] = min_j ((qs[i] - j) s)^2 + f[j]`` for ``i in [q0, q1)`` (ascending
    positions): the lower envelope of :func:`._edt._edt_1d`, built and read with
    the same expressions, so the values are bit-identical to it.

    Two shortcuts that leave every value unchanged: a position with ``f == 0`` is
    a feature (0.0; no other parabola reaches 0 there), and the parabolas strictly
    inside a run of zeros are not built (for every position outside the run, the
    run's nearer end is strictly closer, and no later parabola can pop a zero
    parabola, so the envelope outside the run is the same).
    Returns False when the line holds no feature (``out`` is then ``INF``)."""
    s2 = s * s
    k = -1
    sv = 0.0
    for q in range(n):
        fq = f[q]
        if fq >= INF:
            continue
        if fq == 0.0 and q > 0 and q < n - 1 and f[q - 1] == 0.0 and f[q + 1] == 0.0:
            continue
        if k == -1:
            k = 0
            v[0] = q
            zz[0] = -INF
            zz[1] = INF
            continue
        while True:
            p = v[k]
            sv = ((fq + s2 * q * q) - (f[p] + s2 * p * p)) / (2.0 * s2 * (q - p))
            if sv <= zz[k]:
                k -= 1  # stops at k = 0 since zz[0] = -INF
            else:
                break
        k += 1
        v[k] = q
        zz[k] = sv
        zz[k + 1] = INF
    if k == -1:
        for i in range(q0, q1):
            out[i] = INF
        return False
    k = 0
    for i in range(q0, q1):
        q = qs[i]
        if f[q] == 0.0:
            out[i] = 0.0
            continue
        while zz[k + 1] < q:
            k += 1
        p = v[k]
        out[i] = s2 * (q - p) * (q - p) + f[p]
    return True


@njit(cache=True, nogil=True)
def _sq_dist_at(arr, lut, lo, shape, feat_value, pts, spacing):
    """Squared distance (mm²) from each point ``pts[i]`` (global indices, (n, 3),
    C order, inside the box) to the nearest voxel centre of the box
    ``[lo, lo + shape)`` whose class ``lut[arr] != 0`` equals ``feat_value``.

    Bit-identical to ``_sq_edt(feature of the box)`` read at the points (same axis
    order, same expressions);
    ``INF`` where the box holds no feature voxel. Work: one scan of the rows, the
    (slice, column) lines of the points' columns, the (row, column) lines of the points.
    """
    n0 = shape[0]
    n1 = shape[1]
    n2 = shape[2]
    lo0 = lo[0]
    lo1 = lo[1]
    lo2 = lo[2]
    npt = pts.shape[0]
    res = np.empty(npt, dtype=np.float64)
    if npt == 0:
        return res
    # the points' (row, column) lines, numbered in order of first appearance
    col = np.full((n1, n2), -1, dtype=np.int64)
    xi_of = np.full(n2, -1, dtype=np.int64)
    ncol = 0
    nxn = 0
    for i in range(npt):
        y = pts[i, 1] - lo1
        x = pts[i, 2] - lo2
        if col[y, x] < 0:
            col[y, x] = ncol
            ncol += 1
            xi_of[x] = 0
    for x in range(n2):  # the needed columns, ascending
        if xi_of[x] >= 0:
            xi_of[x] = nxn
            nxn += 1
    xs = np.empty(nxn, dtype=np.int64)
    for x in range(n2):
        if xi_of[x] >= 0:
            xs[xi_of[x]] = x
    # per needed column x: its lines' rows (ascending) and line numbers
    xstart = np.zeros(nxn + 1, dtype=np.int64)
    for y in range(n1):
        for x in range(n2):
            if col[y, x] >= 0:
                xstart[xi_of[x] + 1] += 1
    for j in range(nxn):
        xstart[j + 1] += xstart[j]
    ys = np.empty(ncol, dtype=np.int64)
    cs = np.empty(ncol, dtype=np.int64)
    fill = xstart[:-1].copy()
    for y in range(n1):
        for x in range(n2):
            c = col[y, x]
            if c >= 0:
                j = xi_of[x]
                ys[fill[j]] = y
                cs[fill[j]] = c
                fill[j] += 1
    # per line: its points (ascending slice, as the points are in C order)
    cstart = np.zeros(ncol + 1, dtype=np.int64)
    for i in range(npt):
        cstart[col[pts[i, 1] - lo1, pts[i, 2] - lo2] + 1] += 1
    for c in range(ncol):
        cstart[c + 1] += cstart[c]
    pz = np.empty(npt, dtype=np.int64)
    pi = np.empty(npt, dtype=np.int64)
    fill = cstart[:-1].copy()
    for i in range(npt):
        c = col[pts[i, 1] - lo1, pts[i, 2] - lo2]
        pz[fill[c]] = pts[i, 0] - lo0
        pi[fill[c]] = i
        fill[c] += 1

    g = np.empty((ncol, n0), dtype=np.float64)
    S = np.empty((nxn, n1), dtype=np.float64)
    m = max(n0, n1, n2)
    v = np.empty(m, dtype=np.int64)
    zz = np.empty(m + 1, dtype=np.float64)
    out = np.empty(max(ncol, npt), dtype=np.float64)
    rowd = np.empty(nxn, dtype=np.int64)
    s2 = spacing[2] * spacing[2]
    for z in range(n0):
        # axis 2: per row, the distance in voxels from each needed column to the
        # nearest feature voxel of the row, read from the nearest feature left of the
        # first needed column up to the first feature right of the last one
        for y in range(n1):
            row = arr[lo0 + z, lo1 + y, lo2:lo2 + n2]
            last = -_NONE
            for x in range(xs[0], -1, -1):
                if (lut[row[x]] != 0) == feat_value:
                    last = x
                    break
            j = 0  # next needed column
            pend = 0  # first needed column still without a feature on its right
            for x in range(xs[0], n2):
                isf = (lut[row[x]] != 0) == feat_value
                if isf:
                    while pend < j:
                        if x - xs[pend] < rowd[pend]:
                            rowd[pend] = x - xs[pend]
                        pend += 1
                    last = x
                if j < nxn and xs[j] == x:
                    rowd[j] = x - last
                    j += 1
                    if isf:
                        pend = j
                if j == nxn and pend == nxn:
                    break
            for j in range(nxn):
                a = rowd[j]
                # as _edt_1d writes it for the nearest feature p: s2 * (q - p) * (q - p) + f[p]
                S[j, y] = INF if a >= _NONE else s2 * a * a + 0.0
        # axis 1: the needed columns' lines of this slice, read at the points' rows
        for j in range(nxn):
            _envelope_at(S[j], n1, spacing[1], ys, xstart[j], xstart[j + 1], out, v, zz)
            for k in range(xstart[j], xstart[j + 1]):
                g[cs[k], z] = out[k]
    # axis 0: the points' lines, read at the points' slices
    for c in range(ncol):
        _envelope_at(g[c], n0, spacing[0], pz, cstart[c], cstart[c + 1], out, v, zz)
        for k in range(cstart[c], cstart[c + 1]):
            res[pi[k]] = out[k]
    return res


@njit(cache=True, nogil=True)
def _nearest_feature(arr, lut, lo, hi, feat_value, p, spacing, reach):
    """The voxel of the box ``[lo, hi]`` (inclusive) nearest to ``p`` (global
    indices) whose class ``lut[arr] != 0`` equals ``feat_value``, searched within
    ``p +- reach`` (per axis); the first in C order among equally near ones, with
    the distance written as ``np.sum(((f - p) * spacing) ** 2)``. (-1, -1, -1) if none."""
    best = np.inf
    bz = -1
    by = -1
    bx = -1
    for z in range(max(p[0] - reach[0], lo[0]), min(p[0] + reach[0], hi[0]) + 1):
        dz = (z - p[0]) * spacing[0]
        for y in range(max(p[1] - reach[1], lo[1]), min(p[1] + reach[1], hi[1]) + 1):
            dy = (y - p[1]) * spacing[1]
            row = arr[z, y]
            for x in range(max(p[2] - reach[2], lo[2]), min(p[2] + reach[2], hi[2]) + 1):
                if (lut[row[x]] != 0) != feat_value:
                    continue
                dx = (x - p[2]) * spacing[2]
                d2 = dz**2 + dy**2 + dx**2
                if d2 < best:
                    best = d2
                    bz = z
                    by = y
                    bx = x
    return np.array([bz, by, bx], dtype=np.int64)


@njit(cache=True, nogil=True)
def _walk_box(arr, lut, feat_value, pts, lo, hi, spacing):
    """A box that holds, for every point, the ball of radius U(p) around it, where
    U(p) is the distance from p (global indices) to the nearest voxel of class
    ``feat_value`` (``lut[arr] != 0``) straight along one of the six axis
    directions, looked for inside ``[lo, hi]`` (inclusive). U(p) bounds the
    point's Euclidean distance to that class from above, so the squared EDT of
    the returned box, read at the points, is exact.

    Returns ``(blo, bhi, ok)``; ``ok`` False when some point has no such voxel
    on its six axis lines within ``[lo, hi]`` (the box is then ``[lo, hi]``).
    """
    blo = np.empty(3, dtype=np.int64)
    bhi = np.empty(3, dtype=np.int64)
    for a in range(3):
        blo[a] = hi[a]
        bhi[a] = lo[a]
    for i in range(pts.shape[0]):
        pz = pts[i, 0]
        py = pts[i, 1]
        px = pts[i, 2]
        best = np.inf
        # axis 2 (contiguous)
        row = arr[pz, py]
        for x in range(px, hi[2] + 1):
            dd = (x - px) * spacing[2]
            if dd >= best:
                break
            if (lut[row[x]] != 0) == feat_value:
                best = dd
                break
        for x in range(px - 1, lo[2] - 1, -1):
            dd = (px - x) * spacing[2]
            if dd >= best:
                break
            if (lut[row[x]] != 0) == feat_value:
                best = dd
                break
        for y in range(py + 1, hi[1] + 1):
            dd = (y - py) * spacing[1]
            if dd >= best:
                break
            if (lut[arr[pz, y, px]] != 0) == feat_value:
                best = dd
                break
        for y in range(py - 1, lo[1] - 1, -1):
            dd = (py - y) * spacing[1]
            if dd >= best:
                break
            if (lut[arr[pz, y, px]] != 0) == feat_value:
                best = dd
                break
        for z in range(pz + 1, hi[0] + 1):
            dd = (z - pz) * spacing[0]
            if dd >= best:
                break
            if (lut[arr[z, py, px]] != 0) == feat_value:
                best = dd
                break
        for z in range(pz - 1, lo[0] - 1, -1):
            dd = (pz - z) * spacing[0]
            if dd >= best:
                break
            if (lut[arr[z, py, px]] != 0) == feat_value:
                best = dd
                break
        if best == np.inf:
            for a in range(3):
                blo[a] = lo[a]
                bhi[a] = hi[a]
            return blo, bhi, False
        for a in range(3):
            # every voxel centre of the ball, with a voxel to spare (so that the exactness
            # test on the computed distance cannot fail by a rounding)
            k = np.int64(np.floor(best / spacing[a])) + 2
            blo[a] = max(min(blo[a], pts[i, a] - k), lo[a])
            bhi[a] = min(max(bhi[a], pts[i, a] + k), hi[a])
    return blo, bhi, True


@njit(cache=True, nogil=True)
def _side_margins(arr, lut, feat_value, pts, lo, hi, spacing):
    """Distance (mm) from each point to the nearest voxel of class ``feat_value``
    (``lut[arr] != 0``) within the box ``[lo, hi]`` (inclusive), computed over
    :func:`_walk_box`'s box only.

    Returns ``(m, status)``: status 0 when every value is exact (the ball of radius
    m around each point lies inside the box used, or that box meets the array edge
    on that side), 1 when that box holds no voxel of the class, 2 when some value
    is not proven exact (a larger ``[lo, hi]`` is needed).
    """
    blo, bhi, _ = _walk_box(arr, lut, feat_value, pts, lo, hi, spacing)
    shp = np.empty(3, dtype=np.int64)
    for a in range(3):
        shp[a] = bhi[a] - blo[a] + 1
    v = _sq_dist_at(arr, lut, blo, shp, feat_value, pts, spacing)
    m = np.empty(pts.shape[0], dtype=np.float64)
    status = 0
    for i in range(pts.shape[0]):
        if v[i] >= INF:
            return m, 1
        m[i] = np.sqrt(v[i])
        for a in range(3):
            reach = m[i] / spacing[a]
            if pts[i, a] - reach < blo[a] and blo[a] > 0:
                status = 2
            if pts[i, a] + reach > bhi[a] and bhi[a] < arr.shape[a] - 1:
                status = 2
    return m, status


@njit(cache=True, nogil=True)
def _lerp(a, b, t):
    """numpy's ``_lerp`` (percentile, method 'linear'), same operations."""
    diff_b_a = b - a
    if t >= 0.5:
        return b - diff_b_a * (1 - t)
    return a + diff_b_a * t


@njit(cache=True, nogil=True)
def _margin_stats(m, thr):
    """Statistics of the surface margins ``m`` (n > 0), as numpy computes them:
    ``(argmin (first), q25, q50, q75, n_below_0, n_0_to_thr, n_at_least_thr)``,
    the quartiles as ``np.percentile(m, [25, 50, 75])`` (method 'linear')."""
    n = m.shape[0]
    k = 0
    n_neg = 0
    n_mid = 0
    n_hi = 0
    for i in range(n):
        if m[i] < m[k]:
            k = i
        if m[i] < 0:
            n_neg += 1
        elif m[i] < thr:
            n_mid += 1
        if m[i] >= thr:
            n_hi += 1
    srt = np.sort(m)
    qs = np.empty(3, dtype=np.float64)
    for j in range(3):
        q = (j + 1) * 25 / 100  # np.true_divide(q, 100)
        vi = (n - 1) * q
        if vi >= n - 1:
            qs[j] = _lerp(srt[n - 1], srt[n - 1], vi + 1.0)
            continue
        prev = np.floor(vi)
        ip = np.int64(prev)
        qs[j] = _lerp(srt[ip], srt[ip + 1], vi - prev)
    return k, qs[0], qs[1], qs[2], n_neg, n_mid, n_hi
