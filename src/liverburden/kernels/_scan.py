"""Run-length scan of the label volumes (numba).

One pass over the liver and lesion arrays, slice range by slice range, that
counts liver voxels and records every lesion run (a maximal stretch of equal
non-zero lesion value along the column axis). Everything downstream works on
the runs, which are a few thousand where the volume has ~1e8 voxels.

Kernels take arrays and scalars and return arrays; no I/O, no Python objects.
"""

from __future__ import annotations

import numpy as np
from ._jit import njit

# Columns of the run table.
RUN_Z = 0  # slice index
RUN_Y = 1  # row index
RUN_X0 = 2  # first column of the run (inclusive)
RUN_X1 = 3  # last column of the run (inclusive)
RUN_VALUE = 4  # lesion value after the lesion look-up table
RUN_IN_LIVER = 5  # voxels of the run that are liver voxels
RUN_NCOLS = 6

_BLOCK = 64  # columns OR-reduced before a scalar look at the voxels


@njit(cache=True, nogil=True)
def _grow(runs: np.ndarray, n: int) -> np.ndarray:
    out = np.empty((runs.shape[0] * 2 + 64, runs.shape[1]), dtype=runs.dtype)
    # element loop, not ``out[:n] = runs[:n]``: numba's 2-D slice assignment costs
    # ~2.5 s of compile on first use (benchmarks/bench_coldstart.py)
    for i in range(n):
        for j in range(runs.shape[1]):
            out[i, j] = runs[i, j]
    return out


@njit(cache=True, nogil=True)
def _extend_bbox(bbox, z, y, x_first, x_last):
    """Grow the (min z, y, x, max z, y, x) box by a row stretch of liver voxels."""
    bbox[0] = min(bbox[0], z)
    bbox[3] = max(bbox[3], z)
    bbox[1] = min(bbox[1], y)
    bbox[4] = max(bbox[4], y)
    bbox[2] = min(bbox[2], x_first)
    bbox[5] = max(bbox[5], x_last)


@njit(cache=True, nogil=True)
def _add_run(runs, n, z, y, x0, x1, v, inl):
    """Add the lesion stretch x0..x1 (inclusive) of value v on row (z, y), ``inl``
    of its voxels in the liver: extend the previous run when it ends just before
    x0 on the same row with the same value, else start a run."""
    if (
        n > 0
        and runs[n - 1, RUN_Z] == z
        and runs[n - 1, RUN_Y] == y
        and runs[n - 1, RUN_X1] == x0 - 1
        and runs[n - 1, RUN_VALUE] == v
    ):
        runs[n - 1, RUN_X1] = x1
        runs[n - 1, RUN_IN_LIVER] += inl
        return runs, n
    if n == runs.shape[0]:
        runs = _grow(runs, n)
    runs[n, RUN_Z] = z
    runs[n, RUN_Y] = y
    runs[n, RUN_X0] = x0
    runs[n, RUN_X1] = x1
    runs[n, RUN_VALUE] = v
    runs[n, RUN_IN_LIVER] = inl
    return runs, n + 1


@njit(cache=True, nogil=True)
def _scan_runs(liver, lesion, liver_lut, lesion_lut, z0, z1):
    """Scan slices ``z0 .. z1-1`` of two (slice, row, col) label arrays.

    Parameters
    ----------
    liver, lesion : 3-D unsigned integer arrays of one shape, C-contiguous.
    liver_lut : uint8 array indexed by liver value; 1 where the value is liver.
        Its length covers every value of the dtype.
    lesion_lut : int64 array indexed by lesion value; the value a lesion voxel
        takes in the run table, 0 where the value is not lesion.
    z0, z1 : slice range.

    Returns
    -------
    runs : int64 (n_runs, RUN_NCOLS) table in raster order.
    liver_count : number of liver voxels in the range.
    liver_seen : uint8 flag per liver value that occurred (non-zero values).
    lesion_seen : uint8 flag per lesion value that occurred (non-zero values).
    liver_bbox : int64[6] min/max of (slice, row, col) over liver voxels,
        (big, -1) when there is none.
    """
    nz, ny, nx = liver.shape
    runs = np.empty((1024, RUN_NCOLS), dtype=np.int64)
    n = np.int64(0)  # not Literal[int](0): one specialisation of the callees, not two
    liver_count = 0
    liver_seen = np.zeros(liver_lut.shape[0], dtype=np.uint8)
    lesion_seen = np.zeros(lesion_lut.shape[0], dtype=np.uint8)
    big = nz + ny + nx + 1
    bbox = np.array([big, big, big, -1, -1, -1], dtype=np.int64)
    for z in range(z0, z1):
        for y in range(ny):
            lrow = liver[z, y]
            erow = lesion[z, y]
            for xb in range(0, nx, _BLOCK):
                xe = min(xb + _BLOCK, nx)
                la = 0
                ea = 0
                for x in range(xb, xe):
                    la |= lrow[x]
                    ea |= erow[x]
                if la != 0:
                    for x in range(xb, xe):
                        v = lrow[x]
                        if v != 0:
                            liver_seen[v] = 1
                            if liver_lut[v]:
                                liver_count += 1
                                _extend_bbox(bbox, z, y, x, x)
                if ea != 0:
                    for x in range(xb, xe):
                        raw = erow[x]
                        if raw == 0:
                            continue
                        lesion_seen[raw] = 1
                        v = lesion_lut[raw]
                        if v == 0:
                            continue
                        runs, n = _add_run(runs, n, z, y, x, x, v, 1 if liver_lut[lrow[x]] else 0)
    return runs[:n].copy(), liver_count, liver_seen, lesion_seen, bbox


@njit(cache=True, nogil=True)
def _find(parent, i):
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:
        nxt = parent[i]
        parent[i] = root
        i = nxt
    return root


@njit(cache=True, nogil=True)
def _union(parent, a, b):
    ra = _find(parent, a)
    rb = _find(parent, b)
    if ra == rb:
        return
    # keep the smaller index as root: the root is then the first run in raster order
    if ra < rb:
        parent[rb] = ra
    else:
        parent[ra] = rb


@njit(cache=True, nogil=True)
def _connect_runs(runs, shape_zy, connectivity, by_value):
    """Label the connected components of the runs.

    Parameters
    ----------
    runs : run table from :func:`_scan_runs`, raster order.
    shape_zy : (n_slices, n_rows).
    connectivity : 6, 18 or 26 (3-D voxel neighbourhood).
    by_value : when True only runs of equal value connect (instance labels);
        when False any two lesion runs connect (binary mask).

    Returns
    -------
    comp : int64 per run, component number 0..n_comp-1, numbered in raster
        order of each component's first voxel.
    n_comp : number of components.
    """
    n = runs.shape[0]
    nz = shape_zy[0]
    ny = shape_zy[1]
    parent = np.arange(n)
    # index of the first run of each (slice,row), and one past the last
    row_start = np.zeros(nz * ny + 1, dtype=np.int64)
    for i in range(n):
        row_start[runs[i, RUN_Z] * ny + runs[i, RUN_Y] + 1] += 1
    for k in range(nz * ny):
        row_start[k + 1] += row_start[k]
    for i in range(n):
        z = runs[i, RUN_Z]
        y = runs[i, RUN_Y]
        x0 = runs[i, RUN_X0]
        x1 = runs[i, RUN_X1]
        v = runs[i, RUN_VALUE]
        # a touching run of another value on the same row (binary reading only)
        if (
            not by_value
            and i > 0
            and runs[i - 1, RUN_Z] == z
            and runs[i - 1, RUN_Y] == y
            and runs[i - 1, RUN_X1] == x0 - 1
        ):
            _union(parent, i, i - 1)
        # neighbour rows already visited: (z, y-1) and (z-1, y-1..y+1)
        for nb in range(4):
            if nb == 0:
                zz = z
                yy = y - 1
            else:
                zz = z - 1
                yy = y + nb - 2
            if zz < 0 or yy < 0 or yy >= ny:
                continue
            dy = yy - y
            dz = zz - z
            nonzero_axes = (1 if dy != 0 else 0) + (1 if dz != 0 else 0)
            if connectivity == 6:
                if nonzero_axes > 1:
                    continue
                slack = 0
            elif connectivity == 18:
                if nonzero_axes > 1:
                    slack = 0  # an edge neighbour; a corner step is not 18-connected
                else:
                    slack = 1
            else:
                slack = 1
            k = zz * ny + yy
            for j in range(row_start[k], row_start[k + 1]):
                if runs[j, RUN_X0] > x1 + slack:
                    break
                if runs[j, RUN_X1] < x0 - slack:
                    continue
                if by_value and runs[j, RUN_VALUE] != v:
                    continue
                _union(parent, i, j)
    comp = np.empty(n, dtype=np.int64)
    root_id = -np.ones(n, dtype=np.int64)
    n_comp = 0
    for i in range(n):
        r = _find(parent, i)
        if root_id[r] < 0:
            root_id[r] = n_comp
            n_comp += 1
        comp[i] = root_id[r]
    return comp, n_comp


@njit(cache=True, nogil=True)
def _lanes_nonzero(x, itemsize):
    """Word ``x`` with the lowest bit of each ``itemsize``-byte lane set where
    that lane (one voxel) is non-zero, every other bit clear."""
    if itemsize == 1:
        x |= x >> np.uint64(4)
        x |= x >> np.uint64(2)
        x |= x >> np.uint64(1)
        return x & np.uint64(0x0101010101010101)
    if itemsize == 2:
        x |= x >> np.uint64(8)
        x |= x >> np.uint64(4)
        x |= x >> np.uint64(2)
        x |= x >> np.uint64(1)
        return x & np.uint64(0x0001000100010001)
    if itemsize == 4:
        x |= x >> np.uint64(16)
        x |= x >> np.uint64(8)
        x |= x >> np.uint64(4)
        x |= x >> np.uint64(2)
        x |= x >> np.uint64(1)
        return x & np.uint64(0x0000000100000001)
    return np.uint64(1) if x != np.uint64(0) else np.uint64(0)


@njit(cache=True, nogil=True)
def _lanes_eq(x, pat, itemsize):
    """Lowest bit of each lane set where the lane of ``x`` equals that of ``pat``."""
    if itemsize == 1:
        lsb = np.uint64(0x0101010101010101)
    elif itemsize == 2:
        lsb = np.uint64(0x0001000100010001)
    elif itemsize == 4:
        lsb = np.uint64(0x0000000100000001)
    else:
        lsb = np.uint64(1)
    return _lanes_nonzero(x ^ pat, itemsize) ^ lsb


@njit(cache=True, nogil=True)
def _lanes_match(x, pats, itemsize):
    """Lowest bit of each lane set where the lane equals one of the values in
    ``pats``: a tuple of 4 words, each a value in every lane (fewer values are
    padded by repeating one, which the OR absorbs: no branch, so loops over
    words vectorise)."""
    return (_lanes_eq(x, pats[0], itemsize) | _lanes_eq(x, pats[1], itemsize)
            | _lanes_eq(x, pats[2], itemsize) | _lanes_eq(x, pats[3], itemsize))


@njit(cache=True, nogil=True)
def _liver_word(x, mode, pats, itemsize):
    """The word itself (mode 1: non-zero = liver) or its liver-lane mask (mode 2)."""
    if mode == 1:
        return x
    return _lanes_match(x, pats, itemsize)


@njit(cache=True, nogil=True)
def _lesion_word(x, mode, pats, itemsize):
    """The word itself (mode 0: every non-zero value is looked at) or its
    lesion-lane mask (mode 2)."""
    if mode == 2:
        return _lanes_match(x, pats, itemsize)
    return x


@njit(cache=True, nogil=True)
def _lane_sum(acc, itemsize):
    """Sum of the ``itemsize``-byte lanes of ``acc`` (each lane < 2**(8*itemsize-1))."""
    if itemsize == 1:
        m = np.uint64(0x00FF00FF00FF00FF)
        acc = (acc & m) + ((acc >> np.uint64(8)) & m)
        return (acc * np.uint64(0x0001000100010001)) >> np.uint64(48)
    if itemsize == 2:
        return (acc * np.uint64(0x0001000100010001)) >> np.uint64(48)
    if itemsize == 4:
        return (acc & np.uint64(0xFFFFFFFF)) + (acc >> np.uint64(32))
    return acc


@njit(cache=True, nogil=True)
def _scan_runs_words(liver, lesion, l64, e64, vpw_l, vpw_e, liver_lut, lesion_lut, z0, z1, has_liver=True,
                     liver_mode=0, pats=None, need_seen=True, lesion_mode=0, pats_e=None, need_lesion_seen=True):
    """:func:`_scan_runs` with each row first tested as uint64 words.

    ``l64``/``e64`` are the same memory as ``liver``/``lesion`` viewed as
    (slice, row, words) uint64 arrays; ``vpw_l``/``vpw_e`` are voxels per word
    (8 / itemsize). The word OR over a row vectorises, so empty rows (most of
    a CT volume) cost a memory read; only rows with a non-zero word are looked
    at further, while they are in cache. Lesion voxels are taken a run at a
    time (a stretch of one raw value), not voxel by voxel.

    ``liver_mode`` says how liver voxels are counted:

    0. voxel by voxel through ``liver_lut`` (any value set; ``liver_seen`` full);
    1. every non-zero value is liver: a word at a time, each word's non-zero
       voxels become one bit per lane, summed lane-wise; ``liver_seen`` is
       left empty;
    2. the liver is a few values (``pats``: each value repeated in every lane of
       a word, at most 4): a word at a time, one bit per lane equal to a liver
       value. With ``need_seen`` a row holding a non-zero value that is not
       liver marks its values in ``liver_seen`` (liver values in rows without
       one are not marked: the caller only asks which non-liver values occur).

    In modes 1/2 the liver's column range is tracked from the words outside the
    range so far and the two edge words, so its bounding box needs no per-voxel
    work.

    ``lesion_mode`` 2: the lesion is a few values (``pats_e``), e.g. the 2 of a
    LiTS label map passed as both masks; rows and words without a lane equal to
    one are skipped at word level, and ``lesion_seen`` is as ``liver_seen`` in
    liver mode 2 (non-lesion values only with ``need_lesion_seen``). Outputs
    otherwise equal :func:`_scan_runs`.
    """
    nz, ny, nx = liver.shape
    nwl = l64.shape[2]
    nwe = e64.shape[2]
    # itemsizes from the array types: compile-time constants, so the lane
    # helpers' branches fold away and the word loops vectorise
    isz = liver.itemsize
    isz_e = lesion.itemsize
    # the value patterns as 4 scalars (padded by the dispatcher)
    pt = (pats[0], pats[1], pats[2], pats[3])
    pte = (pats_e[0], pats_e[1], pats_e[2], pats_e[3])
    chunk_e = 127 if isz_e == 1 else nwe
    sh_e = 0  # log2(vpw_e)
    while (1 << sh_e) < vpw_e:
        sh_e += 1
    runs = np.empty((1024, RUN_NCOLS), dtype=np.int64)
    n = np.int64(0)  # not Literal[int](0): one specialisation of the callees, not two
    liver_count = 0
    liver_seen = np.zeros(liver_lut.shape[0], dtype=np.uint8)
    lesion_seen = np.zeros(lesion_lut.shape[0], dtype=np.uint8)
    big = nz + ny + nx + 1
    bbox = np.array([big, big, big, -1, -1, -1], dtype=np.int64)
    # liver_mode 1/2: word range [bw0, bw1] and voxel columns [bx0, bx1] of the liver so far
    bw0 = nwl
    bw1 = -1
    bx0 = nx
    bx1 = -1
    zero = np.uint64(0)
    # lanes hold < 2**(8*itemsize-1) before a lane sum (uint8: 127 words)
    chunk = 127 if isz == 1 else nwl
    for z in range(z0, z1):
        for y in range(ny):
            lw = l64[z, y]
            ew = e64[z, y]
            la = zero
            if has_liver:
                for w in range(nwl):
                    la |= lw[w]
            ea = zero
            for w in range(nwe):
                ea |= ew[w]
            if la == zero and ea == zero:
                continue
            lrow = liver[z, y]
            erow = lesion[z, y]
            if la != zero:
                if liver_mode != 0:
                    # words outside the columns seen so far: only when one holds a
                    # liver voxel does the column range grow (rare after the first rows)
                    pre = zero
                    suf = zero
                    if liver_mode == 1:
                        for w in range(0, bw0):
                            pre |= lw[w]
                        for w in range(bw1 + 1, nwl):
                            suf |= lw[w]
                    else:
                        for w in range(0, bw0):
                            pre |= _lanes_match(lw[w], pt, isz)
                        for w in range(bw1 + 1, nwl):
                            suf |= _lanes_match(lw[w], pt, isz)
                    if pre != zero:
                        w = 0
                        while _liver_word(lw[w], liver_mode, pt, isz) == zero:
                            w += 1
                        bw0 = w
                    if suf != zero:
                        w = nwl - 1
                        while _liver_word(lw[w], liver_mode, pt, isz) == zero:
                            w -= 1
                        bw1 = w
                    cnt = 0
                    if liver_mode == 1:
                        for c0 in range(bw0, bw1 + 1, chunk):
                            acc = zero
                            for w in range(c0, min(bw1 + 1, c0 + chunk)):
                                acc += _lanes_nonzero(lw[w], isz)
                            cnt += _lane_sum(acc, isz)
                    else:
                        for c0 in range(bw0, bw1 + 1, chunk):
                            acc = zero
                            for w in range(c0, min(bw1 + 1, c0 + chunk)):
                                acc += _lanes_match(lw[w], pt, isz)
                            cnt += _lane_sum(acc, isz)
                        if need_seen:
                            # a non-zero value that is not liver: record which (the caller
                            # reports them); rows of liver values only skip this
                            nzc = 0
                            for c0 in range(0, nwl, chunk):
                                acc = zero
                                for w in range(c0, min(nwl, c0 + chunk)):
                                    acc += _lanes_nonzero(lw[w], isz)
                                nzc += _lane_sum(acc, isz)
                            if nzc > cnt:
                                for x in range(nx):
                                    if lrow[x] != 0:
                                        liver_seen[lrow[x]] = 1
                    if cnt:
                        liver_count += cnt
                        bbox[0] = min(bbox[0], z)
                        bbox[3] = max(bbox[3], z)
                        bbox[1] = min(bbox[1], y)
                        bbox[4] = max(bbox[4], y)
                        # the first / last voxel in the edge words
                        off = bx0 - bw0 * vpw_l  # lanes of word bw0 before bx0 (vpw_l when unset)
                        if pre != zero or (off > 0 and (_liver_word(lw[bw0], liver_mode, pt, isz)
                                                        & ((np.uint64(1) << np.uint64(8 * isz * off)) - np.uint64(1))) != zero):
                            for x in range(bw0 * vpw_l, bw0 * vpw_l + min(off, vpw_l) if pre == zero else (bw0 + 1) * vpw_l):
                                if liver_lut[lrow[x]]:
                                    bx0 = x
                                    break
                        off = bx1 - bw1 * vpw_l + 1  # lanes of word bw1 up to bx1
                        if suf != zero or (off < vpw_l and (_liver_word(lw[bw1], liver_mode, pt, isz)
                                                            >> np.uint64(8 * isz * off)) != zero):
                            for x in range((bw1 + 1) * vpw_l - 1, (bw1 * vpw_l + off - 1) if suf == zero else bw1 * vpw_l - 1, -1):
                                if liver_lut[lrow[x]]:
                                    bx1 = x
                                    break
                else:
                    w0 = 0
                    while lw[w0] == zero:
                        w0 += 1
                    w1 = nwl - 1
                    while lw[w1] == zero:
                        w1 -= 1
                    xf = -1
                    xl = -1
                    cnt = 0
                    for x in range(w0 * vpw_l, min(nx, (w1 + 1) * vpw_l)):
                        v = lrow[x]
                        if v != 0:
                            liver_seen[v] = 1
                            if liver_lut[v]:
                                cnt += 1
                                if xf < 0:
                                    xf = x
                                xl = x
                    if cnt:
                        liver_count += cnt
                        _extend_bbox(bbox, z, y, xf, xl)
            if ea != zero and lesion_mode == 2:
                # from here on only lanes of lesion values count (a label map's
                # liver rows hold no lesion: skipped at the cost of the word test)
                em = zero
                for w in range(nwe):
                    em |= _lanes_match(ew[w], pte, isz_e)
                if need_lesion_seen:
                    nzc = 0
                    mc = 0
                    for c0 in range(0, nwe, chunk_e):
                        acc = zero
                        acm = zero
                        for w in range(c0, min(nwe, c0 + chunk_e)):
                            acc += _lanes_nonzero(ew[w], isz_e)
                            acm += _lanes_match(ew[w], pte, isz_e)
                        nzc += _lane_sum(acc, isz_e)
                        mc += _lane_sum(acm, isz_e)
                    if nzc > mc:
                        for x in range(nx):
                            if erow[x] != 0:
                                lesion_seen[erow[x]] = 1
                ea = em
            if ea != zero:
                w0 = 0
                while _lesion_word(ew[w0], lesion_mode, pte, isz_e) == zero:
                    w0 += 1
                w1 = nwe - 1
                while _lesion_word(ew[w1], lesion_mode, pte, isz_e) == zero:
                    w1 -= 1
                x = w0 * vpw_e
                xb = min(nx, (w1 + 1) * vpw_e)
                while x < xb:
                    if (x & (vpw_e - 1)) == 0 and _lesion_word(ew[x >> sh_e], lesion_mode, pte, isz_e) == zero:
                        x += vpw_e
                        continue
                    raw = erow[x]
                    if raw == 0 or (lesion_mode == 2 and lesion_lut[raw] == 0):
                        x += 1
                        continue
                    x2 = x + 1
                    while x2 < xb and erow[x2] == raw:
                        x2 += 1
                    lesion_seen[raw] = 1
                    v = lesion_lut[raw]
                    if v != 0:
                        inl = 0
                        if liver_mode == 1:
                            for k in range(x, x2):
                                inl += lrow[k] != 0
                        else:
                            for k in range(x, x2):
                                inl += liver_lut[lrow[k]] != 0
                        runs, n = _add_run(runs, n, z, y, x, x2 - 1, v, inl)
                    x = x2
    if liver_mode != 0 and liver_count > 0:
        bbox[2] = bx0
        bbox[5] = bx1
    return runs[:n].copy(), liver_count, liver_seen, lesion_seen, bbox


def _lane_patterns(values: np.ndarray, itemsize: int) -> np.ndarray:
    """Each value repeated in every ``itemsize``-byte lane of a uint64 word; four
    words, fewer values padded by repeating the first."""
    lanes = 8 // itemsize
    vals = [int(v) for v in values] or [0]
    vals = (vals + [vals[0]] * 4)[:4]
    return np.array([v * sum(1 << (8 * itemsize * k) for k in range(lanes)) for v in vals], dtype=np.uint64)


def _check_lut(a: np.ndarray, lut: np.ndarray, what: str) -> None:
    """The kernels index ``lut`` (and the seen-values table of the same length) by
    voxel value without bounds checks: a table shorter than the values would be a
    write outside the array. uint8/uint16 masks need the full 256/65536 entries."""
    if a.dtype in (np.uint8, np.uint16):
        need = 1 << (8 * a.itemsize)
        if lut.shape[0] < need:
            raise ValueError(f"{what} value table has {lut.shape[0]} entries; a {a.dtype} mask needs {need}")
    elif a.size and (a.min() < 0 or a.max() >= lut.shape[0]):
        raise ValueError(f"{what} values {a.min()}..{a.max()} fall outside the value table (0..{lut.shape[0] - 1})")


def scan_runs(liver: np.ndarray | None, lesion: np.ndarray, liver_lut: np.ndarray, lesion_lut: np.ndarray,
              z0: int, z1: int, need_liver_seen: bool = True, need_lesion_seen: bool = True):
    """Dispatch to the word-tested scan when both rows are whole uint64 words.

    ``liver=None`` scans the lesion array alone (no liver counts). Without
    ``need_liver_seen`` / ``need_lesion_seen`` the caller does not ask which
    non-liver / non-lesion values occur.
    """
    has_liver = liver is not None
    if liver is None:
        liver = lesion  # stands in for the liver: its table must cover the lesion's values
        liver_lut = np.zeros(lesion_lut.shape[0], dtype=np.uint8)
    _check_lut(lesion, lesion_lut, "lesion")
    _check_lut(liver, liver_lut, "liver")
    nx = liver.shape[2]
    if (
        liver.flags.c_contiguous
        and lesion.flags.c_contiguous
        and (nx * liver.itemsize) % 8 == 0
        and (nx * lesion.itemsize) % 8 == 0
        and liver.size > 0
    ):
        nz, ny = liver.shape[:2]
        l64 = liver.reshape(-1).view(np.uint64).reshape(nz, ny, -1)
        e64 = lesion.reshape(-1).view(np.uint64).reshape(nz, ny, -1)
        mode = 0
        pats = np.zeros(4, dtype=np.uint64)
        if has_liver and liver_lut[0] == 0:
            vals = np.flatnonzero(liver_lut)
            if vals.size == liver_lut.size - 1:
                mode = 1
            elif 0 < vals.size <= 4 and liver.itemsize <= 4:
                mode = 2
                pats = _lane_patterns(vals, liver.itemsize)
        emode = 0
        pats_e = np.zeros(4, dtype=np.uint64)
        evals = np.flatnonzero(lesion_lut)
        if lesion_lut[0] == 0 and 0 < evals.size <= 4 and evals.size < lesion_lut.size - 1 and lesion.itemsize <= 4:
            emode = 2
            pats_e = _lane_patterns(evals, lesion.itemsize)
        return _scan_runs_words_t(liver, lesion, l64, e64, 8 // liver.itemsize, 8 // lesion.itemsize,
                                liver_lut, lesion_lut, z0, z1, has_liver, mode, pats, need_liver_seen,
                                emode, pats_e, need_lesion_seen)
    return _scan_runs_t(liver, lesion, liver_lut, lesion_lut, z0, z1)


# The install's compiled build where a call fits it, else these JIT dispatchers (``_tiered``).
from ._tiered import tiered as _wrap  # noqa: E402

_scan_runs_words_t = _wrap(_scan_runs_words)
_scan_runs_t = _wrap(_scan_runs)
