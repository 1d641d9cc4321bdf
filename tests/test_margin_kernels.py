"""The per-tumor margin kernels (``liverburden.kernels._margin_box``) against slow
obvious references: ``scipy.ndimage.distance_transform_edt`` / ``binary_erosion`` /
``np.percentile``, and the full-box exact EDT ``_sq_edt`` they restrict (whose
values they must reproduce bit for bit over the same box)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from liverburden.kernels._edt import INF, _edt_1d, _sq_edt
from liverburden.kernels._margin_box import (
    _envelope_at,
    _margin_stats,
    _nearest_feature,
    _side_margins,
    _sq_dist_at,
    _tumor_surface,
    _vic_box,
    _walk_box,
)

SIX = ndimage.generate_binary_structure(3, 1)
NONZERO = np.r_[0, np.ones(255)].astype(np.uint8)


def random_mask(rng, shape, kind):
    if kind == 0:  # salt and pepper: many runs, ties and isolated voxels
        return rng.random(shape) < rng.uniform(0.02, 0.98)
    if kind == 1:  # smooth blobs
        return ndimage.gaussian_filter(rng.standard_normal(shape), 1.5) > rng.uniform(-0.2, 0.2)
    m = np.zeros(shape, bool)  # one box, possibly touching the edges
    m[tuple(slice(int(rng.integers(0, s)), int(rng.integers(0, s)) + 1) for s in shape)] = True
    return m


def random_spacing(rng, i):
    if i % 7 == 0:
        return np.array([1.0, 1.0, 1.0])  # many exact ties
    if i % 7 == 1:
        return np.array([1.25, 0.78, 0.78])
    return rng.uniform(0.3, 3.0, 3)


def runs_of(mask):
    """(z, y, x0, x1) runs of a boolean mask, in C order (the run table's columns)."""
    out = []
    for z, y in zip(*np.nonzero(mask.any(axis=2))):
        row = np.r_[False, mask[z, y], False].astype(np.int8)
        d = np.diff(row)
        for a, b in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)):
            out.append((z, y, a, b - 1, 1, 0))
    return np.array(out, dtype=np.int64).reshape(-1, 6)


# --------------------------------------------------------------------------- 1-D envelope
def test_envelope_at_is_edt_1d_bit_for_bit():
    rng = np.random.default_rng(1)
    for i in range(3000):
        n = int(rng.integers(1, 40))
        f = rng.choice([0.0, 0.0, 0.0, INF, 1.0, 2.5, 0.6084, 9.0], n) * rng.choice([1.0, rng.uniform(0.5, 3)])
        f[f > 1e19] = INF
        if i % 5 == 0:
            f[:] = INF  # no feature at all
        s = float(rng.choice([1.0, 0.78, 1.25, rng.uniform(0.3, 3.0)]))
        d = np.empty(n)
        v = np.empty(n, np.int64)
        zz = np.empty(n + 1)
        _edt_1d(f.copy(), n, s, d, v, zz)
        qs = np.flatnonzero(rng.random(n) < 0.5)
        out = np.full(n, -1.0)
        ok = _envelope_at(f, n, s, qs, 0, len(qs), out, v, zz)
        assert ok == bool(np.any(f < INF))
        np.testing.assert_array_equal(out[: len(qs)], d[qs])


# --------------------------------------------------------------------------- restricted EDT
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_sq_dist_at_is_the_box_edt_bit_for_bit_and_scipy_exact(dtype):
    rng = np.random.default_rng(2)
    worst = 0.0
    for i in range(300):
        shape = tuple(int(v) for v in rng.integers(1, 24, 3))
        sp = random_spacing(rng, i)
        m = random_mask(rng, shape, i % 3)
        # labels 0..4, zone = {2, 3} (a list spec) or every non-zero value
        arr = (m * rng.integers(1, 5, shape)).astype(dtype)
        if i % 2:
            lut = np.zeros(256 if dtype == np.uint8 else 65536, np.uint8)
            lut[[2, 3]] = 1
        else:
            lut = np.zeros(256 if dtype == np.uint8 else 65536, np.uint8)
            lut[1:] = 1
        cls = lut[arr] != 0
        lo = np.array([int(rng.integers(0, s)) for s in shape])
        hi = np.array([int(rng.integers(lo_, s)) for lo_, s in zip(lo, shape)])
        box = tuple(slice(a, b + 1) for a, b in zip(lo, hi))
        for feat_value in (True, False):
            feat = cls[box] if feat_value else ~cls[box]
            pts = np.argwhere(rng.random(feat.shape) < rng.uniform(0.05, 1.0))
            got = _sq_dist_at(arr, lut, lo, hi - lo + 1, feat_value, pts + lo, sp)
            np.testing.assert_array_equal(got, _sq_edt(feat, sp)[tuple(pts.T)], err_msg=f"case {i}")
            if feat.any() and len(pts):
                ref = ndimage.distance_transform_edt(~feat, sampling=sp)[tuple(pts.T)]
                worst = max(worst, float(np.max(np.abs(np.sqrt(got) - ref))))
            elif len(pts):
                assert np.all(got >= INF)
    assert worst <= 1e-9


# --------------------------------------------------------------------------- walk box, side margins
def test_walk_box_gives_exact_distances():
    """Over the walk box, the restricted EDT equals scipy's exact EDT over the whole
    search box at every point (U bounds the distance from above)."""
    rng = np.random.default_rng(3)
    seen_smaller = 0
    for i in range(200):
        shape = tuple(int(v) for v in rng.integers(4, 28, 3))
        sp = random_spacing(rng, i)
        cls = random_mask(rng, shape, 1 if i % 2 else 0)
        arr = cls.astype(np.uint8)
        lo = np.zeros(3, np.int64)
        hi = np.array(shape) - 1
        for feat_value in (True, False):
            feat = cls if feat_value else ~cls
            if not feat.any():
                continue
            pts = np.argwhere(~feat & (rng.random(shape) < (0.3 if i % 4 < 2 else 0.005)))
            if not len(pts):
                continue
            blo, bhi, ok = _walk_box(arr, NONZERO, feat_value, pts, lo, hi, sp)
            ref = ndimage.distance_transform_edt(~feat, sampling=sp)[tuple(pts.T)]
            if ok:
                got = np.sqrt(_sq_dist_at(arr, NONZERO, blo, bhi - blo + 1, feat_value, pts, sp))
                np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)
                seen_smaller += int(np.prod(bhi - blo + 1) < np.prod(shape))
            else:
                np.testing.assert_array_equal(blo, lo)
                np.testing.assert_array_equal(bhi, hi)
    assert seen_smaller > 20  # the walk box is usually smaller than the search box


def test_side_margins_status():
    sp = np.array([1.25, 0.78, 0.78])
    shape = (40, 60, 60)
    zi = np.indices(shape).transpose(1, 2, 3, 0) * sp
    c = (np.array(shape) - 1) * sp / 2
    zone = (np.sum((zi - c) ** 2, axis=-1) <= 15.0**2).astype(np.uint8)
    p = np.array([[20, 30, 30]])  # the centre: ~15 mm from the zone boundary
    lo_big, hi_big = np.zeros(3, np.int64), np.array(shape) - 1
    m, st = _side_margins(zone, NONZERO, False, p, lo_big, hi_big, sp)
    ref = ndimage.distance_transform_edt(zone, sampling=sp)[20, 30, 30]
    assert st == 0 and abs(m[0] - ref) <= 1e-9
    # a search box of 4 voxels around the point holds no voxel outside the zone: status 1
    m, st = _side_margins(zone, NONZERO, False, p, p[0] - 4, p[0] + 4, sp)
    assert st == 1
    # a search box reaching the boundary along the column axis only: a value, not proven exact
    lo, hi = np.array([17, 27, 0]), np.array([23, 33, 59])
    m, st = _side_margins(zone, NONZERO, False, p, lo, hi, sp)
    assert st == 2 and m[0] >= ref - 1e-9
    # the box meeting the array edge counts as exact on that side
    edge = np.zeros((3, 5, 9), np.uint8)
    edge[:, :, :4] = 1
    m, st = _side_margins(edge, NONZERO, False, np.array([[1, 2, 0]]), np.zeros(3, np.int64),
                          np.array([2, 4, 8]), np.ones(3))
    assert st == 0 and m[0] == 4.0


# --------------------------------------------------------------------------- tumor surface
def test_tumor_surface_against_scipy():
    rng = np.random.default_rng(4)
    for i in range(120):
        shape = tuple(int(v) for v in rng.integers(1, 20, 3))
        t = random_mask(rng, shape, i % 3)
        if not t.any():
            continue
        zone = random_mask(rng, shape, (i + 1) % 3)
        z_u = (zone * rng.integers(1, 4, shape)).astype(np.uint8)
        lut = np.zeros(256, np.uint8)
        lut[[1, 3]] = 1  # zone: labels 1 and 3
        zc = lut[z_u] != 0
        surf, inside, n_t, n_cov = _tumor_surface(z_u, lut, runs_of(t))
        ref = np.argwhere(t & ~ndimage.binary_erosion(t, SIX, border_value=0))  # C order
        np.testing.assert_array_equal(surf, ref)
        np.testing.assert_array_equal(inside, zc[tuple(ref.T)])
        assert n_t == np.count_nonzero(t) and n_cov == np.count_nonzero(t & zc)


# --------------------------------------------------------------------------- statistics
def test_margin_stats_equal_numpy():
    rng = np.random.default_rng(5)
    for i in range(2000):
        n = int(rng.integers(1, 60)) if i % 3 else int(rng.integers(1, 5))
        if i % 4 == 0:
            m = rng.choice([-1.5, -0.78, 0.78, 1.0, 5.0, 7.3], n)  # ties, values at the threshold
        else:
            m = rng.normal(2.0, 4.0, n)
        thr = float(rng.choice([5.0, 10.0, 1.0]))
        k, q25, q50, q75, n_neg, n_mid, n_hi = _margin_stats(m, thr)
        assert k == int(np.argmin(m))
        q = np.percentile(m, [25, 50, 75])
        assert (q25, q50, q75) == (q[0], q[1], q[2])
        assert n_neg / n == float(np.mean(m < 0))
        assert n_mid / n == float(np.mean((m >= 0) & (m < thr)))
        assert n_hi / n == float(np.mean(m >= thr))


def test_nearest_feature_is_first_in_c_order():
    """Same voxel as argwhere + argmin of the squared distances over the box (ties: first in C order)."""
    rng = np.random.default_rng(6)
    for i in range(300):
        shape = tuple(int(v) for v in rng.integers(2, 16, 3))
        sp = random_spacing(rng, i)
        cls = random_mask(rng, shape, i % 2)
        arr = cls.astype(np.uint8)
        lo = np.array([int(rng.integers(0, s)) for s in shape])
        hi = np.array([int(rng.integers(lo_, s)) for lo_, s in zip(lo, shape)])
        box = tuple(slice(a, b + 1) for a, b in zip(lo, hi))
        p = np.array([int(rng.integers(a, b + 1)) for a, b in zip(lo, hi)])
        for feat_value in (True, False):
            feat = cls[box] if feat_value else ~cls[box]
            fi = np.argwhere(feat) + lo
            if not len(fi):
                continue
            d2 = np.sum(((fi - p[None, :]) * sp[None, :]) ** 2, axis=1)
            want = fi[int(np.argmin(d2))]
            reach = np.ceil(np.sqrt(d2.min()) / sp).astype(np.int64) + 1
            got = _nearest_feature(arr, NONZERO, lo, hi, feat_value, p, sp, reach)
            np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------- VIC
def test_vic_box_against_scipy():
    rng = np.random.default_rng(7)
    for i in range(12):
        sp = random_spacing(rng, i)
        shape = tuple(int(v) for v in np.ceil(np.array([40.0, 40.0, 40.0]) / sp))
        c = (np.array(shape) - 1) * sp / 2
        g = np.indices(shape).transpose(1, 2, 3, 0) * sp
        t = np.sum((g - c) ** 2, axis=-1) <= rng.uniform(3, 7) ** 2
        z = np.sum((g - c - rng.uniform(-3, 3, 3)) ** 2, axis=-1) <= rng.uniform(5, 11) ** 2
        counts = _vic_box(z.astype(np.uint8), NONZERO, runs_of(t), 0, 0, 0, *shape, sp, 10)
        dt = ndimage.distance_transform_edt(~t, sampling=sp)
        want = [np.count_nonzero((dt <= k + 1e-9) & ~z) for k in range(11)]
        assert list(counts) == want


@pytest.mark.parametrize("s", [0.857, 0.78, 1.25, 0.7, 1.599, 1.803, 3.0])
def test_side_margins_exact_when_the_ball_just_fits_the_walk_box(s):
    """The walk box is sized from the axis distance itself: a margin of exactly n voxels
    along an axis must still pass the exactness test (no rounding at the box edge)."""
    sp = np.array([s, 1.1, 0.9])
    for n in range(1, 7):
        zone = np.zeros((20, 9, 9), np.uint8)
        zone[: 10 - n] = 1  # the nearest zone voxel is n slices below the point
        p = np.array([[9, 4, 4]])
        m, st = _side_margins(zone, NONZERO, True, p, np.zeros(3, np.int64), np.array([19, 8, 8]), sp)
        ref = ndimage.distance_transform_edt(zone == 0, sampling=sp)[9, 4, 4]
        assert st == 0 and abs(m[0] - ref) <= 1e-9, (s, n)


# --------------------------------------------------------------------------- API: input dtypes
def _two_tumors(sp, shape):
    g = np.indices(shape).transpose(1, 2, 3, 0) * np.asarray(sp)
    c = (np.array(shape) - 1) * np.asarray(sp) / 2
    d = lambda off: np.sqrt(np.sum((g - c - np.asarray(off)) ** 2, axis=-1))  # noqa: E731
    liver = d((0, 0, 0)) <= 24.0
    t = (d((0, 0, 18.0)) <= 4.5) | (d((0, -9.0, -8.0)) <= 3.5)
    zone = (d((0, 0, 18.5)) <= 9.0) | (d((0.5, -9.0, -8.0)) <= 8.0)
    return liver, t, zone


def test_liver_and_zone_dtypes_give_the_same_margins():
    """The liver (any dtype, non-zero is liver) and a labelled uint16 zone with a value
    list are read in place; results equal those of boolean masks."""
    from liverburden.margin import margins_arrays

    sp = (1.25, 0.78, 0.78)
    shape = (40, 72, 72)
    liver, t, zone = _two_tumors(sp, shape)
    cfg = {"margin": {"subcapsular_exclusion_mm": 3.0}}
    want = margins_arrays(t, zone, sp, liver=liver, config=cfg).to_dict()
    assert any(tm["subcapsular"]["excluded_surface_fraction"] > 0 for tm in want["tumors"])
    for lv in (liver.astype(np.uint8) * 3, liver.astype(np.int64) * 7, liver.astype(np.float32),
               np.asfortranarray(liver), liver.astype(np.uint16) * 300):
        got = margins_arrays(t, zone, sp, liver=lv, config=cfg).to_dict()
        assert got == want, lv.dtype
    # zone labels {2, 700} of a uint16 map; 5 is not zone
    zl = np.where(zone, np.where(np.indices(shape)[2] % 2 == 0, 2, 700), 0).astype(np.uint16)
    zl[(zl == 0) & (np.indices(shape)[0] % 3 == 0)] = 5
    got = margins_arrays(t, zl, sp, liver=liver, config={**cfg, "labels": {"zone": [2, 700]}}).to_dict()
    assert got["tumors"] == want["tumors"]
