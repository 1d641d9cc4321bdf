"""Per-lesion geometry from the run table (numba).

Point convention: every distance is between two voxel centres, in physical
millimetres (index x spacing; the direction matrix is orthonormal, so it does
not change a distance). ``clinical-reference.md`` section 1.

Exactness:
- The longest in-slice diameter (LD) is attained by two vertices of the slice's
  convex hull (a distance is strictly convex along a hull edge), and the hull of
  a slice's voxels is the hull of each row's first and last voxel. So LD is an
  exhaustive maximum over those vertices, computed with integer orientation tests.
- Every vertex of the 3-D hull is a vertex of its own slice's 2-D hull, so the
  3-D (Feret) diameter is an exhaustive maximum over the union of slice hulls.
- The short axis (SA) is a constrained maximum (direction within a tolerance of
  perpendicular to LD); its end points need not be hull vertices, so it is
  searched over every voxel of the slice, pruned by the exact bound
  ``|d| <= |d . u| / cos(tol)`` (u: unit vector perpendicular to LD).
"""

from __future__ import annotations

import math

import numpy as np
from ._jit import njit

from ._scan import RUN_IN_LIVER, RUN_X0, RUN_X1, RUN_Y, RUN_Z

# Layout of the integer statistics table.
S_COUNT = 0
S_IN_LIVER = 1
S_BBOX = 2  # 6 values: min z, y, x, max z, y, x
S_NRUNS = 8
S_SLICE = 9  # slice index of the chosen LD
S_NCOLS = 10
# Layout of the float table.
F_LD = 0
F_SA = 1
F_MAX3D = 2
F_SUM_Z = 3
F_SUM_Y = 4
F_SUM_X = 5
F_NCOLS = 6
# End points: (lesion, which, point, axis); which: 0 LD, 1 SA, 2 max3d.
E_LD = 0
E_SA = 1
E_MAX3D = 2


@njit(cache=True, nogil=True)
def _cross(oy, ox, ay, ax, by, bx):
    return (ay - oy) * (bx - ox) - (ax - ox) * (by - oy)


@njit(cache=True, nogil=True)
def _hull_2d(pts, m, out, out_start):
    """Andrew's monotone chain over ``pts[:m]`` (rows (y, x), sorted by y then x).

    Writes the strictly convex vertices to ``out[out_start:]`` (columns y, x) and
    returns how many. Collinear points are dropped; 1 or 2 points are returned
    as they are.
    """
    if m <= 2:
        for i in range(m):
            out[out_start + i, 0] = pts[i, 0]
            out[out_start + i, 1] = pts[i, 1]
        return m
    h = np.empty((2 * m, 2), dtype=np.int64)
    k = 0
    for i in range(m):
        while k >= 2 and _cross(h[k - 2, 0], h[k - 2, 1], h[k - 1, 0], h[k - 1, 1], pts[i, 0], pts[i, 1]) <= 0:
            k -= 1
        h[k, 0] = pts[i, 0]
        h[k, 1] = pts[i, 1]
        k += 1
    lower = k + 1
    for i in range(m - 2, -1, -1):
        while k >= lower and _cross(h[k - 2, 0], h[k - 2, 1], h[k - 1, 0], h[k - 1, 1], pts[i, 0], pts[i, 1]) <= 0:
            k -= 1
        h[k, 0] = pts[i, 0]
        h[k, 1] = pts[i, 1]
        k += 1
    k -= 1  # the last point repeats the first
    if k < 1:
        k = 1
    for i in range(k):
        out[out_start + i, 0] = h[i, 0]
        out[out_start + i, 1] = h[i, 1]
    return k


@njit(cache=True, nogil=True)
def _lex_less(a0, a1, a2, a3, b0, b1, b2, b3):
    """(a0, a1, a2, a3) < (b0, b1, b2, b3) lexicographically."""
    if a0 != b0:
        return a0 < b0
    if a1 != b1:
        return a1 < b1
    if a2 != b2:
        return a2 < b2
    return a3 < b3


@njit(cache=True, nogil=True)
def _argsort(a):
    """Stable ascending argsort (bottom-up merge sort; equal keys keep index order).

    Hand-written instead of ``np.argsort``: numba's quicksort costs 1-2.5 s of
    compile on first use (``benchmarks/bench_coldstart.py``), this ~0.1 s, at the
    same O(n log n)."""
    n = a.shape[0]
    idx = np.empty(n, dtype=np.int64)
    tmp = np.empty(n, dtype=np.int64)
    for i in range(n):
        idx[i] = i
    width = 1
    while width < n:
        lo = 0
        while lo < n:
            mid = min(lo + width, n)
            hi = min(lo + 2 * width, n)
            i = lo
            j = mid
            k = lo
            while i < mid and j < hi:
                if a[idx[j]] < a[idx[i]]:
                    tmp[k] = idx[j]
                    j += 1
                else:
                    tmp[k] = idx[i]
                    i += 1
                k += 1
            while i < mid:
                tmp[k] = idx[i]
                i += 1
                k += 1
            while j < hi:
                tmp[k] = idx[j]
                j += 1
                k += 1
            lo = hi
        for q in range(n):
            idx[q] = tmp[q]
        width *= 2
    return idx


@njit(cache=True, nogil=True)
def _short_axis(py, px, npx, vy, vx, sy, sx, cos_tol, tie_tol, out):
    """Longest segment between two voxel centres of one slice whose direction is
    within ``acos(cos_tol)`` of perpendicular to (vy, vx) (physical mm).

    ``out`` receives (y1, x1, y2, x2) index end points, smallest first in C order.
    Returns the length in mm, or -1.0 when no pair qualifies.
    """
    norm = math.sqrt(vy * vy + vx * vx)
    uy = -vx / norm
    ux = vy / norm
    t = np.empty(npx, dtype=np.float64)
    for i in range(npx):
        t[i] = py[i] * sy * uy + px[i] * sx * ux
    order = _argsort(t)
    best = -1.0
    cos2 = cos_tol * cos_tol
    tmax = t[order[npx - 1]]
    for a in range(npx):
        i = order[a]
        if best >= 0.0 and (tmax - t[i]) / cos_tol < best - tie_tol:
            break
        for b in range(npx - 1, a, -1):
            j = order[b]
            delta = t[j] - t[i]
            if best >= 0.0 and delta / cos_tol < best - tie_tol:
                break
            dy = (py[j] - py[i]) * sy
            dx = (px[j] - px[i]) * sx
            d2 = dy * dy + dx * dx
            if d2 == 0.0:
                continue
            if delta * delta < d2 * cos2 * (1.0 - 1e-12):
                continue
            d = math.sqrt(d2)
            # end points in C order
            if py[i] < py[j] or (py[i] == py[j] and px[i] < px[j]):
                e0 = py[i]
                e1 = px[i]
                e2 = py[j]
                e3 = px[j]
            else:
                e0 = py[j]
                e1 = px[j]
                e2 = py[i]
                e3 = px[i]
            if d > best + tie_tol or (
                d >= best - tie_tol and _lex_less(e0, e1, e2, e3, out[0], out[1], out[2], out[3])
            ):
                if d > best:
                    best = d
                out[0] = e0
                out[1] = e1
                out[2] = e2
                out[3] = e3
    return best


@njit(cache=True, nogil=True)
def _max3d(hull, hull_z, sl_start, n_slices, sz, sy, sx, tie_tol):
    """Largest distance between two of the slice hull vertices, and its end points.

    Ties (within ``tie_tol`` of the maximum) go to the smallest pair of end
    points in C order (first point, then second), as a whole-set rule that does
    not depend on the visiting order: pass 1 finds the exact maximum, pass 2 the
    smallest end points among the pairs that reach maximum - ``tie_tol``.

    Slice pairs are visited by decreasing upper bound (their slice distance
    and the distance of two discs that hold the slices' vertices) and skipped
    once the bound cannot reach the best length, so most vertex pairs are
    never formed.
    """
    nh = sl_start[n_slices]
    hz = np.empty(nh, dtype=np.float64)
    hy = np.empty(nh, dtype=np.float64)
    hx = np.empty(nh, dtype=np.float64)
    for i in range(nh):
        hz[i] = hull_z[i] * sz
        hy[i] = hull[i, 0] * sy
        hx[i] = hull[i, 1] * sx
    # per slice: z (mm), in-plane centre (mid-box, mm) and radius around it
    occ = np.empty(n_slices, dtype=np.int64)
    no = 0
    for zi in range(n_slices):
        if sl_start[zi + 1] > sl_start[zi]:
            occ[no] = zi
            no += 1
    bz = np.empty(no, dtype=np.float64)
    cy = np.empty(no, dtype=np.float64)
    cx = np.empty(no, dtype=np.float64)
    rad = np.zeros(no, dtype=np.float64)
    for k in range(no):
        h0 = sl_start[occ[k]]
        h1 = sl_start[occ[k] + 1]
        bz[k] = hz[h0]
        y0 = hy[h0]
        y1 = hy[h0]
        x0 = hx[h0]
        x1 = hx[h0]
        for i in range(h0 + 1, h1):
            y0 = min(y0, hy[i])
            y1 = max(y1, hy[i])
            x0 = min(x0, hx[i])
            x1 = max(x1, hx[i])
        cy[k] = 0.5 * (y0 + y1)
        cx[k] = 0.5 * (x0 + x1)
        r2 = 0.0
        for i in range(h0, h1):
            r2 = max(r2, (hy[i] - cy[k]) ** 2 + (hx[i] - cx[k]) ** 2)
        rad[k] = math.sqrt(r2)
    npairs = no * (no + 1) // 2
    ub = np.empty(npairs, dtype=np.float64)
    pa = np.empty(npairs, dtype=np.int64)
    pb = np.empty(npairs, dtype=np.int64)
    q = 0
    for a in range(no):
        for b in range(a, no):
            dz = bz[b] - bz[a]
            # two points in discs (ca, ra), (cb, rb) are at most |ca - cb| + ra + rb apart in plane
            dp = math.sqrt((cy[b] - cy[a]) ** 2 + (cx[b] - cx[a]) ** 2) + rad[a] + rad[b]
            # an upper bound on any vertex pair's squared length, padded by a
            # relative 1e-9 against rounding
            ub[q] = (dz * dz + dp * dp) * (1.0 + 1e-9)
            pa[q] = a
            pb[q] = b
            q += 1
    by_ub = _argsort(-ub)
    # pass 1: the exact maximum of d2
    best2 = -1.0
    for t in range(npairs):
        p = by_ub[t]
        if ub[p] < best2:
            break
        a0 = sl_start[occ[pa[p]]]
        a1 = sl_start[occ[pa[p]] + 1]
        b0 = sl_start[occ[pb[p]]]
        b1 = sl_start[occ[pb[p]] + 1]
        kb = pb[p]
        dzb = bz[kb]
        for i in range(a0, a1):
            zi_ = hz[i]
            yi_ = hy[i]
            xi_ = hx[i]
            # the vertex against the disc of slice b
            dp = math.sqrt((yi_ - cy[kb]) ** 2 + (xi_ - cx[kb]) ** 2) + rad[kb]
            if ((dzb - zi_) ** 2 + dp * dp) * (1.0 + 1e-9) < best2:
                continue
            for j in range(max(b0, i), b1):
                dz = hz[j] - zi_
                dy = hy[j] - yi_
                dx = hx[j] - xi_
                best2 = max(best2, dz * dz + dy * dy + dx * dx)
    best3 = math.sqrt(best2) if best2 >= 0.0 else -1.0
    m0 = np.zeros(3, dtype=np.int64)
    m1 = np.zeros(3, dtype=np.int64)
    if best2 < 0.0:
        return best3, m0, m1
    # pass 2: smallest end points among pairs with d >= best3 - tie_tol
    t_lo = best3 - tie_tol
    lo2 = t_lo * t_lo * (1.0 - 1e-9) if t_lo > 0.0 else -1.0
    found = False
    for t in range(npairs):
        p = by_ub[t]
        if ub[p] < lo2:
            break
        a0 = sl_start[occ[pa[p]]]
        a1 = sl_start[occ[pa[p]] + 1]
        b0 = sl_start[occ[pb[p]]]
        b1 = sl_start[occ[pb[p]] + 1]
        kb = pb[p]
        dzb = bz[kb]
        for i in range(a0, a1):
            dp = math.sqrt((hy[i] - cy[kb]) ** 2 + (hx[i] - cx[kb]) ** 2) + rad[kb]
            if ((dzb - hz[i]) ** 2 + dp * dp) * (1.0 + 1e-9) < lo2:
                continue
            for j in range(max(b0, i), b1):
                dz = hz[j] - hz[i]
                dy = hy[j] - hy[i]
                dx = hx[j] - hx[i]
                d2 = dz * dz + dy * dy + dx * dx
                if d2 < lo2 or math.sqrt(d2) < t_lo:
                    continue
                # C-order end points
                if _lex_less(hull_z[i], hull[i, 0], hull[i, 1], 0, hull_z[j], hull[j, 0], hull[j, 1], 1):
                    p0 = hull_z[i]; p1 = hull[i, 0]; p2 = hull[i, 1]
                    q0 = hull_z[j]; q1 = hull[j, 0]; q2 = hull[j, 1]
                else:
                    p0 = hull_z[j]; p1 = hull[j, 0]; p2 = hull[j, 1]
                    q0 = hull_z[i]; q1 = hull[i, 0]; q2 = hull[i, 1]
                take = not found
                if found:
                    if p0 != m0[0] or p1 != m0[1] or p2 != m0[2]:
                        take = _lex_less(p0, p1, p2, 0, m0[0], m0[1], m0[2], 0)
                    else:
                        take = _lex_less(q0, q1, q2, 0, m1[0], m1[1], m1[2], 0)
                if take:
                    found = True
                    m0[0] = p0; m0[1] = p1; m0[2] = p2
                    m1[0] = q0; m1[1] = q1; m1[2] = q2
    return best3, m0, m1


@njit(cache=True, nogil=True)
def _lesion_geometry(runs, order, comp_start, spacing, cos_tol, tie_tol):
    """Volume counts, bounding box, centroid sums, LD, SA and 3-D diameter per lesion.

    Parameters
    ----------
    runs : run table (raster order), see ``_scan``.
    order : run indices grouped by lesion, raster order inside each lesion.
    comp_start : offsets into ``order``; lesion c owns ``order[comp_start[c]:comp_start[c+1]]``.
    spacing : float64[3], mm per (slice, row, col) step; slices are the LD plane.
    cos_tol : cosine of the SA perpendicularity tolerance.
    tie_tol : LD/SA values within this many mm are ties.

    Returns
    -------
    stats : int64 (n, S_NCOLS); floats : float64 (n, F_NCOLS);
    ends : int64 (n, 3, 2, 3) index end points of LD, SA, max3d (SA: -1 when none).
    """
    n_comp = comp_start.shape[0] - 1
    sz = spacing[0]
    sy = spacing[1]
    sx = spacing[2]
    stats = np.zeros((n_comp, S_NCOLS), dtype=np.int64)
    floats = np.zeros((n_comp, F_NCOLS), dtype=np.float64)
    ends = -np.ones((n_comp, 3, 2, 3), dtype=np.int64)
    for c in range(n_comp):
        r0 = comp_start[c]
        r1 = comp_start[c + 1]
        nr = r1 - r0
        big = 1 << 62
        bz0 = big
        by0 = big
        bx0 = big
        bz1 = -1
        by1 = -1
        bx1 = -1
        count = 0
        inl = 0
        sumz = 0.0
        sumy = 0.0
        sumx = 0.0
        for k in range(r0, r1):
            r = order[k]
            z = runs[r, RUN_Z]
            y = runs[r, RUN_Y]
            x0 = runs[r, RUN_X0]
            x1 = runs[r, RUN_X1]
            m = x1 - x0 + 1
            count += m
            inl += runs[r, RUN_IN_LIVER]
            sumz += z * m
            sumy += y * m
            sumx += 0.5 * (x0 + x1) * m
            bz0 = min(bz0, z)
            bz1 = max(bz1, z)
            by0 = min(by0, y)
            by1 = max(by1, y)
            bx0 = min(bx0, x0)
            bx1 = max(bx1, x1)
        stats[c, S_COUNT] = count
        stats[c, S_IN_LIVER] = inl
        stats[c, S_BBOX + 0] = bz0
        stats[c, S_BBOX + 1] = by0
        stats[c, S_BBOX + 2] = bx0
        stats[c, S_BBOX + 3] = bz1
        stats[c, S_BBOX + 4] = by1
        stats[c, S_BBOX + 5] = bx1
        stats[c, S_NRUNS] = nr
        floats[c, F_SUM_Z] = sumz
        floats[c, F_SUM_Y] = sumy
        floats[c, F_SUM_X] = sumx

        # --- per-slice hulls -------------------------------------------------
        n_slices = bz1 - bz0 + 1
        hull = np.empty((2 * nr + 4, 2), dtype=np.int64)
        hull_z = np.empty(2 * nr + 4, dtype=np.int64)
        sl_start = np.zeros(n_slices + 1, dtype=np.int64)
        sl_max = -np.ones(n_slices, dtype=np.float64)
        pts = np.empty((2 * nr + 4, 2), dtype=np.int64)
        nh = np.int64(0)  # not Literal[int](0): one specialisation of the callees
        k = r0
        while k < r1:
            z = runs[order[k], RUN_Z]
            m = 0
            while k < r1 and runs[order[k], RUN_Z] == z:
                y = runs[order[k], RUN_Y]
                xmin = runs[order[k], RUN_X0]
                xmax = runs[order[k], RUN_X1]
                k += 1
                while k < r1 and runs[order[k], RUN_Z] == z and runs[order[k], RUN_Y] == y:
                    xmax = max(xmax, runs[order[k], RUN_X1])
                    k += 1
                pts[m, 0] = y
                pts[m, 1] = xmin
                m += 1
                if xmax > xmin:
                    pts[m, 0] = y
                    pts[m, 1] = xmax
                    m += 1
            zi = z - bz0
            sl_start[zi] = nh
            nv = _hull_2d(pts, m, hull, nh)
            for i in range(nh, nh + nv):
                hull_z[i] = z
            # max of squared lengths, one sqrt: sqrt is monotone and correctly
            # rounded, so sqrt(max d2) == max sqrt(d2) exactly
            best2 = 0.0
            for i in range(nh, nh + nv):
                for j in range(i + 1, nh + nv):
                    dy = (hull[j, 0] - hull[i, 0]) * sy
                    dx = (hull[j, 1] - hull[i, 1]) * sx
                    best2 = max(best2, dy * dy + dx * dx)
            sl_max[zi] = math.sqrt(best2) if nv > 0 else -1.0
            nh += nv
            sl_start[zi + 1] = nh
        # slices without voxels (a lesion of instance labels can skip slices)
        # keep sl_start monotone
        for zi in range(1, n_slices + 1):
            if sl_start[zi] < sl_start[zi - 1]:
                sl_start[zi] = sl_start[zi - 1]

        gmax = -1.0
        for zi in range(n_slices):
            if sl_max[zi] > gmax:
                gmax = sl_max[zi]

        # --- LD with tie-breaking: largest SA, lowest slice, smallest end points
        best_ld = -1.0
        best_sa = -2.0
        best_z = -1
        bl = np.empty(4, dtype=np.int64)  # LD end points (y1, x1, y2, x2)
        bs = -np.ones(4, dtype=np.int64)  # SA end points
        sa_out = np.empty(4, dtype=np.int64)
        for zi in range(n_slices):
            if sl_max[zi] < gmax - tie_tol:
                continue
            z = bz0 + zi
            # the slice's voxels, for SA
            npx = np.int64(0)  # not Literal[int](0): one specialisation of the callees
            for kk in range(r0, r1):
                r = order[kk]
                if runs[r, RUN_Z] == z:
                    npx += runs[r, RUN_X1] - runs[r, RUN_X0] + 1
            py = np.empty(npx, dtype=np.int64)
            px = np.empty(npx, dtype=np.int64)
            q = 0
            for kk in range(r0, r1):
                r = order[kk]
                if runs[r, RUN_Z] == z:
                    for x in range(runs[r, RUN_X0], runs[r, RUN_X1] + 1):
                        py[q] = runs[r, RUN_Y]
                        px[q] = x
                        q += 1
            h0 = sl_start[zi]
            h1 = sl_start[zi + 1]
            for i in range(h0, h1):
                for j in range(i, h1):
                    if j == i and h1 - h0 > 1:
                        continue
                    dy = (hull[j, 0] - hull[i, 0]) * sy
                    dx = (hull[j, 1] - hull[i, 1]) * sx
                    d = math.sqrt(dy * dy + dx * dx)
                    if d < gmax - tie_tol:
                        continue
                    if hull[i, 0] < hull[j, 0] or (hull[i, 0] == hull[j, 0] and hull[i, 1] <= hull[j, 1]):
                        e0 = hull[i, 0]
                        e1 = hull[i, 1]
                        e2 = hull[j, 0]
                        e3 = hull[j, 1]
                    else:
                        e0 = hull[j, 0]
                        e1 = hull[j, 1]
                        e2 = hull[i, 0]
                        e3 = hull[i, 1]
                    if d > 0.0:
                        for q in range(4):  # a loop, not a slice assignment (compile time)
                            sa_out[q] = -1
                        sa = _short_axis(py, px, npx, dy, dx, sy, sx, cos_tol, tie_tol, sa_out)
                    else:
                        sa = -1.0
                        for q in range(4):  # a loop, not a slice assignment (compile time)
                            sa_out[q] = -1
                    better = False
                    if best_z < 0:
                        better = True
                    elif sa > best_sa + tie_tol:
                        better = True
                    elif sa >= best_sa - tie_tol:
                        if z < best_z:
                            better = True
                        elif z == best_z and _lex_less(e0, e1, e2, e3, bl[0], bl[1], bl[2], bl[3]):
                            better = True
                    if better:
                        best_ld = d
                        best_sa = sa
                        best_z = z
                        bl[0] = e0
                        bl[1] = e1
                        bl[2] = e2
                        bl[3] = e3
                        for q in range(4):
                            bs[q] = sa_out[q]
        floats[c, F_LD] = best_ld
        floats[c, F_SA] = best_sa if best_sa > 0.0 else 0.0
        stats[c, S_SLICE] = best_z
        ends[c, E_LD, 0, 0] = best_z
        ends[c, E_LD, 0, 1] = bl[0]
        ends[c, E_LD, 0, 2] = bl[1]
        ends[c, E_LD, 1, 0] = best_z
        ends[c, E_LD, 1, 1] = bl[2]
        ends[c, E_LD, 1, 2] = bl[3]
        if best_sa > 0.0:
            ends[c, E_SA, 0, 0] = best_z
            ends[c, E_SA, 0, 1] = bs[0]
            ends[c, E_SA, 0, 2] = bs[1]
            ends[c, E_SA, 1, 0] = best_z
            ends[c, E_SA, 1, 1] = bs[2]
            ends[c, E_SA, 1, 2] = bs[3]

        # --- 3-D diameter over the union of slice hull vertices -------------
        best3, m0, m1 = _max3d(hull, hull_z, sl_start, n_slices, sz, sy, sx, tie_tol)
        floats[c, F_MAX3D] = best3
        for a in range(3):
            ends[c, E_MAX3D, 0, a] = m0[a]
            ends[c, E_MAX3D, 1, a] = m1[a]
    return stats, floats, ends


@njit(cache=True, nogil=True)
def _run_value_counts(values, runs, run_comp, n_comp, n_values):
    """Histogram of ``values`` (a 3-D label array) over each lesion's voxels.

    Values at or above ``n_values`` are counted in the last bin.
    """
    out = np.zeros((n_comp, n_values), dtype=np.int64)
    for r in range(runs.shape[0]):
        c = run_comp[r]
        if c < 0:
            continue
        z = runs[r, RUN_Z]
        y = runs[r, RUN_Y]
        for x in range(runs[r, RUN_X0], runs[r, RUN_X1] + 1):
            v = values[z, y, x]
            if v >= n_values - 1 or v < 0:
                v = n_values - 1
            out[c, v] += 1
    return out


@njit(cache=True, nogil=True)
def _paint_runs(out, runs, run_label, z0=0, y0=0, x0=0):
    """Write ``run_label[r]`` into ``out`` over every voxel of run r (label 0
    skips); ``out`` may be a crop whose voxel [0,0,0] is (z0, y0, x0)."""
    for r in range(runs.shape[0]):
        lab = run_label[r]
        if lab == 0:
            continue
        z = runs[r, RUN_Z] - z0
        y = runs[r, RUN_Y] - y0
        for x in range(runs[r, RUN_X0], runs[r, RUN_X1] + 1):
            out[z, y, x - x0] = lab
