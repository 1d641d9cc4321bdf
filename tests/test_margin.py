"""Ablation margins on one grid (``margins_arrays``, ``clinical-reference.md`` section 4).

Two oracles:

* analytic shapes (concentric and offset spheres, ellipsoids) whose signed margin
  is known in closed form: the point convention reads the margin between voxel
  centres, so the result lies within half a voxel diagonal of the analytic value;
* a slow obvious reference built on ``scipy.ndimage.distance_transform_edt`` over
  the whole array (no boxes, no run tables), compared to 1e-9 for every number:
  surface = tumor & ~binary_erosion(tumor, 6-connectivity, border_value=0);
  signed = where(zone, edt(zone), -edt(~zone)) with ``sampling=spacing``;
  VIC_k = count(edt(~tumor) <= k & ~zone) x voxel volume (ties at exactly k mm
  counted in, to 1e-9).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from liverburden import GeometryError, MaskError
from liverburden.margin import Classification, margins_arrays

SIX = ndimage.generate_binary_structure(3, 1)


# --------------------------------------------------------------------------- helpers
def centres_mm(shape, spacing):
    """Voxel centres in mm (index x spacing), (slice, row, col) order, origin 0."""
    return np.indices(shape).transpose(1, 2, 3, 0) * np.asarray(spacing, dtype=float)


def ellipsoid(shape, spacing, centre_mm, radii_mm):
    p = centres_mm(shape, spacing)
    r = np.broadcast_to(np.asarray(radii_mm, dtype=float), (3,))
    return np.sum(((p - np.asarray(centre_mm, dtype=float)) / r) ** 2, axis=-1) <= 1.0


def ball(shape, spacing, centre_mm, radius_mm):
    return ellipsoid(shape, spacing, centre_mm, radius_mm)


def half_diag(spacing) -> float:
    return 0.5 * float(np.linalg.norm(spacing))


def reference(tumor: np.ndarray, zone: np.ndarray, spacing, *, threshold=5.0, vic_max=10):
    """Slow obvious margins of one tumor (boolean mask) against a zone (boolean mask)."""
    sp = np.asarray(spacing, dtype=float)
    t = np.asarray(tumor, dtype=bool)
    z = np.asarray(zone, dtype=bool)
    surf = t & ~ndimage.binary_erosion(t, SIX, border_value=0)
    sd = np.where(z, ndimage.distance_transform_edt(z, sampling=sp), -ndimage.distance_transform_edt(~z, sampling=sp))
    idx = np.argwhere(surf)  # C order, as the margins are listed
    m = sd[surf]
    k = int(np.argmin(m))
    dt = ndimage.distance_transform_edt(~t, sampling=sp)
    vml = float(np.prod(sp)) / 1000.0
    return {
        "surface": idx,
        "margins": m,
        "min": float(m[k]),
        "min_index": tuple(int(v) for v in idx[k]),
        "quartiles": tuple(float(v) for v in np.percentile(m, [25, 50, 75])),
        "fractions": {
            "below_0": float(np.mean(m < 0)),
            "from_0_to_threshold": float(np.mean((m >= 0) & (m < threshold))),
            "at_least_threshold": float(np.mean(m >= threshold)),
        },
        "coverage": 100.0 * np.count_nonzero(t & z) / np.count_nonzero(t),
        "voxels": int(np.count_nonzero(t)),
        # "dilated by k mm" includes voxels at exactly k mm; 1e-9 absorbs the rounding of
        # such ties (e.g. 9.6^2 + 2.8^2 = 100 reads 100.00000000000003 in floating point)
        "vic": {str(kk): float(np.count_nonzero((dt <= kk + 1e-9) & ~z)) * vml for kk in range(vic_max + 1)},
        "volume_ml": float(np.count_nonzero(t)) * vml,
    }


def assert_matches(tm, ref, *, vic=True, tag=""):
    assert tm.voxel_count == ref["voxels"], tag
    assert tm.surface_voxels == len(ref["margins"]), tag
    np.testing.assert_allclose(tm.surface_margins_mm, ref["margins"], rtol=0, atol=1e-9, err_msg=tag)
    assert tm.min_margin_mm == pytest.approx(ref["min"], abs=1e-9), tag
    assert tm.min_margin_index == ref["min_index"], tag
    assert tm.margin_quartiles_mm == pytest.approx(ref["quartiles"], abs=1e-9), tag
    for key, v in ref["fractions"].items():
        assert tm.surface_fraction[key] == pytest.approx(v, abs=1e-12), (tag, key)
    assert tm.coverage_pct == pytest.approx(ref["coverage"], abs=1e-9), tag
    assert tm.volume_ml == pytest.approx(ref["volume_ml"], rel=1e-12), tag
    if vic:
        assert set(tm.vic_ml) == set(ref["vic"]), tag
        for key, v in ref["vic"].items():
            assert tm.vic_ml[key] == pytest.approx(v, rel=1e-12, abs=1e-12), (tag, "VIC", key)


def expected_class(ref, threshold=5.0):
    if ref["coverage"] < 100.0:
        return Classification.A2
    return Classification.A0 if ref["min"] >= threshold else Classification.A1


def rotation(deg, axis):
    k = np.asarray(axis, dtype=float)
    k /= np.linalg.norm(k)
    th = math.radians(deg)
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(th) * kx + (1.0 - math.cos(th)) * (kx @ kx)


SPACINGS = {
    "iso": (1.0, 1.0, 1.0),
    "ct": (1.25, 0.78, 0.78),
    "thick": (2.5, 0.8, 0.7),
    "mixed": (0.9, 1.3, 0.7),
}


# --------------------------------------------------------------------------- analytic cases
@pytest.mark.parametrize("sp_name", list(SPACINGS))
@pytest.mark.parametrize("rt, rz", [(6.0, 13.0), (8.0, 11.0), (5.0, 9.5)])
def test_concentric_spheres(sp_name, rt, rz):
    sp = SPACINGS[sp_name]
    ext = 2 * rz + 12.0
    shape = tuple(int(math.ceil(ext / s)) for s in sp)
    c = np.array([(n - 1) * s / 2.0 for n, s in zip(shape, sp)]) + np.array([0.13, -0.21, 0.07])
    t = ball(shape, sp, c, rt)
    z = ball(shape, sp, c, rz)
    res = margins_arrays(t.astype(np.uint8), z.astype(np.uint8), sp)
    assert len(res.tumors) == 1
    tm = res.tumors[0]
    want = rz - rt
    assert abs(tm.min_margin_mm - want) <= half_diag(sp), (tm.min_margin_mm, want, half_diag(sp))
    # between voxel centres the margin cannot be below the analytic one (tumor inside, zone outside)
    assert tm.min_margin_mm >= want - 1e-9
    assert tm.coverage_pct == 100.0
    assert tm.classification == (Classification.A0 if tm.min_margin_mm >= 5.0 else Classification.A1)
    assert_matches(tm, reference(t, z, sp))


@pytest.mark.parametrize("sp_name", ["ct", "thick", "mixed"])
@pytest.mark.parametrize(
    "offset, rt, rz",
    [
        ((2.0, 1.0, -1.5), 6.0, 15.0),   # A0: 15 - 6 - 2.69 = 6.3
        ((0.0, 3.0, 2.0), 7.0, 13.0),    # A1: 13 - 7 - 3.61 = 2.4
        ((4.0, -5.0, 3.0), 7.0, 12.0),   # A2: 12 - 7 - 7.07 = -2.07 (partly outside)
        ((0.0, 0.0, 9.0), 6.0, 12.0),    # A2: -3
    ],
)
def test_offset_spheres(sp_name, offset, rt, rz):
    sp = SPACINGS[sp_name]
    ext = 2 * rz + 2 * max(abs(v) for v in offset) + 2 * rt + 8.0
    shape = tuple(int(math.ceil(ext / s)) for s in sp)
    cz = np.array([(n - 1) * s / 2.0 for n, s in zip(shape, sp)])
    ct = cz + np.asarray(offset)
    t = ball(shape, sp, ct, rt)
    z = ball(shape, sp, cz, rz)
    res = margins_arrays(t, z, sp)
    tm = res.tumors[0]
    want = rz - rt - float(np.linalg.norm(offset))
    assert abs(tm.min_margin_mm - want) <= half_diag(sp), (tm.min_margin_mm, want)
    ref = reference(t, z, sp)
    assert_matches(tm, ref)
    if want >= 5.0 + half_diag(sp):
        assert tm.classification == Classification.A0
    elif 0 + half_diag(sp) < want < 5.0 - half_diag(sp):
        assert tm.classification == Classification.A1
    elif want < -half_diag(sp):
        assert tm.classification == Classification.A2
        assert tm.min_margin_mm < 0
        assert tm.coverage_pct < 100.0
        assert tm.surface_fraction["below_0"] > 0
        assert tm.vic_ml["0"] > 0
    assert tm.classification == expected_class(ref)


@pytest.mark.parametrize("sp_name", ["ct", "thick"])
@pytest.mark.parametrize(
    "tumor_radii, zone_radii, want, cls",
    [
        # ellipsoidal tumor in a spherical zone: gap = R - largest semi-axis
        ((6.0, 9.0, 5.0), (13.5, 13.5, 13.5), 4.5, Classification.A1),
        # spherical tumor in an ellipsoidal zone: gap = smallest semi-axis - r
        ((5.0, 5.0, 5.0), (14.0, 12.0, 16.0), 7.0, Classification.A0),
    ],
)
def test_ellipsoids(sp_name, tumor_radii, zone_radii, want, cls):
    """Concentric sphere/ellipsoid pairs, whose gap is closed-form (the nearest point of an
    ellipsoid's surface to its centre lies at its smallest semi-axis, the farthest at its largest)."""
    sp = SPACINGS[sp_name]
    ext = 2 * np.asarray(zone_radii) + 8.0
    shape = tuple(int(math.ceil(e / s)) for e, s in zip(ext, sp))
    c = np.array([(n - 1) * s / 2.0 for n, s in zip(shape, sp)]) + 0.11
    t = ellipsoid(shape, sp, c, tumor_radii)
    z = ellipsoid(shape, sp, c, zone_radii)
    tm = margins_arrays(t, z, sp).tumors[0]
    assert want - 1e-9 <= tm.min_margin_mm <= want + half_diag(sp), (tm.min_margin_mm, want)
    assert tm.classification == cls
    assert_matches(tm, reference(t, z, sp))


def test_thresholds_5_and_10():
    """One tumor with a ~7 mm margin: A0 at 5 mm, A1 at 10 mm (colorectal) via config."""
    sp = SPACINGS["ct"]
    shape = (40, 64, 64)
    c = np.array([(n - 1) * s / 2 for n, s in zip(shape, sp)])
    t = ball(shape, sp, c, 6.0)
    z = ball(shape, sp, c, 13.0)
    r5 = margins_arrays(t, z, sp)
    r10 = margins_arrays(t, z, sp, config={"margin": {"threshold_mm": 10}})
    m = r5.tumors[0].min_margin_mm
    assert 7.0 <= m <= 7.0 + half_diag(sp)
    assert r5.threshold_mm == 5.0 and r10.threshold_mm == 10.0
    assert r5.tumors[0].classification == Classification.A0
    assert r10.tumors[0].classification == Classification.A1
    assert r10.tumors[0].min_margin_mm == m
    assert r10.tumors[0].surface_fraction["threshold_mm"] == 10.0
    ref10 = reference(t, z, sp, threshold=10.0)
    assert_matches(r10.tumors[0], ref10)
    assert r5.tumors[0].surface_fraction["at_least_threshold"] == 1.0
    assert r10.tumors[0].surface_fraction["from_0_to_threshold"] == 1.0


def test_oblique_direction_same_margins():
    """Margins live in index space with spacing; the direction only turns the LPS outputs."""
    sp = SPACINGS["mixed"]
    shape = (44, 34, 60)
    c = np.array([(n - 1) * s / 2 for n, s in zip(shape, sp)])
    t = ball(shape, sp, c + [1.5, -1.0, 2.0], 6.0) | ball(shape, sp, c + [-8.0, 6.0, -10.0], 3.0)
    z = ellipsoid(shape, sp, c, (14.0, 12.0, 16.0))
    base = margins_arrays(t, z, sp)
    D = rotation(23.0, (1.0, 2.0, -0.5)) @ np.eye(3)[:, [2, 0, 1]]
    org = np.array([-120.5, 33.25, 410.0])
    obl = margins_arrays(t, z, sp, direction=D, origin_mm=org)
    assert len(base.tumors) == len(obl.tumors) == 2
    for a, b in zip(base.tumors, obl.tumors):
        assert a.id == b.id
        assert b.min_margin_mm == a.min_margin_mm
        assert b.margin_quartiles_mm == a.margin_quartiles_mm
        assert b.surface_fraction == a.surface_fraction
        assert b.vic_ml == a.vic_ml
        assert b.classification == a.classification
        assert b.min_margin_index == a.min_margin_index
        want_pt = org + D @ (np.asarray(b.min_margin_index) * np.asarray(sp))
        np.testing.assert_allclose(b.min_margin_point_mm, want_pt, atol=1e-9)
        np.testing.assert_allclose(b.min_margin_direction, D @ np.asarray(a.min_margin_direction), atol=1e-12)


def test_min_margin_direction_points_at_the_nearest_zone_boundary_voxel():
    """From the minimal-margin point, |margin| along the reported direction lands on a voxel
    centre on the other side of the zone boundary (outside the zone for a positive margin)."""
    sp = SPACINGS["thick"]
    shape = (24, 70, 70)
    D = rotation(17.0, (0.3, -1.0, 0.4)) @ np.eye(3)[:, ::-1]
    org = np.array([10.0, -20.0, 30.0])
    c = np.array([(n - 1) * s / 2 for n, s in zip(shape, sp)])
    for off, rt, rz in (((0.0, 2.0, 1.0), 5.0, 14.0), ((0.0, 0.0, 10.0), 6.0, 12.0)):
        t = ball(shape, sp, c + off, rt)
        z = ball(shape, sp, c, rz)
        tm = margins_arrays(t, z, sp, direction=D, origin_mm=org).tumors[0]
        step_lps = abs(tm.min_margin_mm) * np.asarray(tm.min_margin_direction)
        step_idx = (D.T @ step_lps) / np.asarray(sp)
        tgt = np.asarray(tm.min_margin_index) + step_idx
        np.testing.assert_allclose(tgt, np.round(tgt), atol=1e-6)
        tgt = tuple(int(v) for v in np.round(tgt))
        assert bool(z[tgt]) == (tm.min_margin_mm < 0)
        assert t[tm.min_margin_index]


# --------------------------------------------------------------------------- exact cross-check
def random_case(seed, shape=(30, 46, 50)):
    rng = np.random.default_rng(seed)
    sp = np.round(rng.uniform(0.6, 2.6, 3), 3)
    ext = np.asarray(shape) * sp
    c = ext / 2
    # zone: union of two ellipsoids; tumors: three blobs near it, some poking out
    z = ellipsoid(shape, sp, c + rng.uniform(-3, 3, 3), rng.uniform(0.25, 0.35, 3) * ext)
    z |= ellipsoid(shape, sp, c + rng.uniform(-6, 6, 3), rng.uniform(0.15, 0.25, 3) * ext)
    f = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    blobs = (f > np.quantile(f, 0.985)) & ellipsoid(shape, sp, c, 0.45 * ext)
    lab, n = ndimage.label(blobs, ndimage.generate_binary_structure(3, 3))
    return sp, z, lab, n


@pytest.mark.parametrize("seed", range(6))
def test_random_blobs_against_scipy_reference(seed):
    sp, z, lab, n = random_case(seed)
    assert n >= 2
    res = margins_arrays(lab > 0, z, sp)  # binary: components (26-connectivity) are the tumors
    assert [t.id for t in res.tumors] == list(range(1, n + 1))
    for tm in res.tumors:
        t = lab == tm.id  # ndimage.label numbers components in C order of their first voxel too
        ref = reference(t, z, sp)
        assert_matches(tm, ref, tag=f"seed {seed} tumor {tm.id}")
        assert tm.classification == expected_class(ref), f"seed {seed} tumor {tm.id}"


def test_instance_labels_against_reference():
    sp, z, lab, n = random_case(11)
    inst = np.zeros_like(lab, dtype=np.uint16)
    ids = [7, 3, 250, 40, 9, 12, 5, 6, 100, 101, 102, 103][:n]
    for k in range(1, n + 1):
        inst[lab == k] = ids[k - 1]
    res = margins_arrays(inst, z, sp)
    assert sorted(t.id for t in res.tumors) == sorted(ids)
    for tm in res.tumors:
        assert_matches(tm, reference(inst == tm.id, z, sp), tag=f"tumor {tm.id}")


def test_instance_with_two_components_is_one_tumor():
    sp = SPACINGS["ct"]
    shape = (40, 70, 70)
    c = np.array([(n - 1) * s / 2 for n, s in zip(shape, sp)])
    z = ball(shape, sp, c, 18.0)
    t = np.zeros(shape, np.uint8)
    t[ball(shape, sp, c + [0, 0, -6], 3.0)] = 4
    t[ball(shape, sp, c + [0, 0, 9], 3.0)] = 4
    t[ball(shape, sp, c + [0, 9, 0], 2.5)] = 2  # a second value: the mask holds instances
    res = margins_arrays(t, z, sp)
    assert sorted(tm.id for tm in res.tumors) == [2, 4]
    four = next(tm for tm in res.tumors if tm.id == 4)
    assert four.components == 2
    assert any("4 has 2 components" in w for w in res.warnings)
    for tm in res.tumors:
        assert_matches(tm, reference(t == tm.id, z, sp), tag=f"tumor {tm.id}")


def test_vic_matches_reference_and_is_monotone():
    sp = SPACINGS["ct"]
    shape = (36, 64, 64)
    c = np.array([(n - 1) * s / 2 for n, s in zip(shape, sp)])
    t = ball(shape, sp, c + [0, 2, 0], 7.0)
    z = ball(shape, sp, c, 11.0)
    tm = margins_arrays(t, z, sp).tumors[0]
    ref = reference(t, z, sp)
    assert_matches(tm, ref)
    v = [tm.vic_ml[str(k)] for k in range(11)]
    assert v == sorted(v) and v[0] == 0.0 and v[-1] > 0
    # without VIC: same margins, VIC_0 only
    nv = margins_arrays(t, z, sp, vic=False).tumors[0]
    assert nv.min_margin_mm == tm.min_margin_mm and nv.surface_fraction == tm.surface_fraction
    assert nv.vic_ml == {"0": 0.0}


def test_large_zone_box_doubling_is_exact():
    """A 2 mm tumor centred in a 60 mm zone: the margin (~29 mm) lies far beyond the first box."""
    sp = (1.25, 0.78, 0.78)
    shape = (60, 96, 96)
    c = np.array([(n - 1) * s / 2 for n, s in zip(shape, sp)])
    t = ball(shape, sp, c, 1.0)
    z = ball(shape, sp, c, 30.0)
    for vic in (True, False):
        tm = margins_arrays(t, z, sp, vic=vic).tumors[0]
        ref = reference(t, z, sp)
        assert_matches(tm, ref, vic=vic)
        assert abs(tm.min_margin_mm - 29.0) <= half_diag(sp)
        assert tm.classification == Classification.A0


def test_zone_far_outside_tumor_exact():
    """Tumor entirely outside a distant zone: negative margins from far away (box doubling
    on the outside branch), coverage 0, A2."""
    sp = (2.0, 0.9, 0.9)
    shape = (30, 90, 90)
    t = ball(shape, sp, (30.0, 20.0, 20.0), 4.0)
    z = ball(shape, sp, (30.0, 60.0, 62.0), 8.0)
    tm = margins_arrays(t, z, sp).tumors[0]
    ref = reference(t, z, sp)
    assert_matches(tm, ref)
    want = 8.0 - 4.0 - float(np.hypot(40.0, 42.0))
    assert abs(tm.min_margin_mm - want) <= half_diag(sp)
    assert tm.coverage_pct == 0.0 and tm.classification == Classification.A2
    assert tm.surface_fraction["below_0"] == 1.0


@pytest.mark.parametrize("where", ["low", "high"])
def test_tumor_touching_array_edge(where):
    """Voxels on the array edge are surface (outside the array counts as outside)."""
    sp = SPACINGS["thick"]
    shape = (16, 60, 60)
    zc = 0.0 if where == "low" else (shape[0] - 1) * sp[0]
    c = np.array([zc, 24.0, 21.0])
    t = ball(shape, sp, c, 6.0)
    z = ball(shape, sp, c, 16.0)
    tm = margins_arrays(t, z, sp).tumors[0]
    ref = reference(t, z, sp)
    assert_matches(tm, ref)
    edge = 0 if where == "low" else shape[0] - 1
    assert any(i[0] == edge for i in ref["surface"])


def test_zone_touching_array_edge():
    """The zone is cut by the array edge: only voxel centres in the array count."""
    sp = SPACINGS["ct"]
    shape = (20, 60, 60)
    t = ball(shape, sp, (8.0, 22.0, 22.0), 4.0)
    z = ball(shape, sp, (3.0, 23.0, 23.0), 14.0)
    tm = margins_arrays(t, z, sp).tumors[0]
    assert_matches(tm, reference(t, z, sp))


def test_subcapsular_exclusion_against_reference():
    sp = SPACINGS["ct"]
    shape = (40, 80, 80)
    c = np.array([(n - 1) * s / 2 for n, s in zip(shape, sp)])
    liver = ball(shape, sp, c, 26.0)
    t = ball(shape, sp, c + [0, 0, 19.0], 5.0)  # 2 mm under the capsule
    z = ball(shape, sp, c + [0, 0, 19.0], 11.0)
    res = margins_arrays(t, z, sp, liver=liver, config={"margin": {"subcapsular_exclusion_mm": 3.0}})
    tm = res.tumors[0]
    ref = reference(t, z, sp)
    d_cap = ndimage.distance_transform_edt(liver, sampling=sp)[ref["surface"][:, 0], ref["surface"][:, 1], ref["surface"][:, 2]]
    excl = d_cap <= 3.0
    assert 0 < excl.sum() < len(excl)
    kept = ref["margins"][~excl]
    assert tm.subcapsular["exclusion_mm"] == 3.0
    assert tm.subcapsular["excluded_surface_fraction"] == pytest.approx(excl.mean(), abs=1e-12)
    assert tm.subcapsular["excluded_min_margin_mm"] == pytest.approx(ref["margins"][excl].min(), abs=1e-9)
    assert tm.min_margin_mm == pytest.approx(kept.min(), abs=1e-9)
    assert tm.margin_quartiles_mm == pytest.approx(tuple(np.percentile(kept, [25, 50, 75])), abs=1e-9)
    assert tm.surface_fraction["below_0"] == pytest.approx(np.mean(kept < 0), abs=1e-12)
    # off by default: liver given, nothing excluded
    plain = margins_arrays(t, z, sp, liver=liver).tumors[0]
    assert plain.subcapsular is None and plain.min_margin_mm == ref["min"]


def test_segment_of_min_margin_point():
    sp = SPACINGS["ct"]
    shape = (30, 60, 60)
    c = np.array([(n - 1) * s / 2 for n, s in zip(shape, sp)])
    t = ball(shape, sp, c + [0, 0, 3.0], 5.0)
    z = ball(shape, sp, c, 12.0)
    seg = np.zeros(shape, np.uint8)
    seg[:, :, : shape[2] // 2] = 7
    seg[:, :, shape[2] // 2 :] = 8
    tm = margins_arrays(t, z, sp, segments=seg).tumors[0]
    assert tm.min_margin_segment == str(int(seg[tm.min_margin_index]))
    assert tm.min_margin_segment == "8"  # the tumor is pushed towards +col


# --------------------------------------------------------------------------- uncertainty, classify
def test_uncertainty_formula_and_flag():
    sp = (2.5, 0.8, 0.7)
    shape = (24, 70, 70)
    c = np.array([(n - 1) * s / 2 for n, s in zip(shape, sp)])
    t = ball(shape, sp, c, 6.0)
    z = ball(shape, sp, c, 12.0)
    d = margins_arrays(t, z, sp).tumors[0]
    assert d.uncertainty_mm == pytest.approx(math.sqrt(2.0**2 + (0.5 * 2.5) ** 2), abs=1e-12)
    r = margins_arrays(t, z, sp, registration_error_mm=0.4).tumors[0]
    assert r.uncertainty_mm == pytest.approx(math.sqrt(0.4**2 + 1.25**2), abs=1e-12)
    m = r.min_margin_mm
    assert 6.0 <= m <= 6.0 + half_diag(sp)
    # |m - 5| vs uncertainty decides the flag, with the same margin
    assert d.uncertain == (abs(m - 5.0) <= d.uncertainty_mm)
    assert r.uncertain == (abs(m - 5.0) <= r.uncertainty_mm)
    big = margins_arrays(t, z, sp, registration_error_mm=5.0).tumors[0]
    assert big.uncertain and big.classification == d.classification
    cfg = margins_arrays(t, z, sp, config={"margin": {"default_registration_error_mm": 0.0}}).tumors[0]
    assert cfg.uncertainty_mm == pytest.approx(1.25, abs=1e-12)


def test_uncertain_near_zero_margin():
    sp = SPACINGS["ct"]
    shape = (30, 60, 60)
    c = np.array([(n - 1) * s / 2 for n, s in zip(shape, sp)])
    t = ball(shape, sp, c + [0, 0, 5.0], 6.0)
    z = ball(shape, sp, c, 11.5)  # margin ~0.5 mm
    tm = margins_arrays(t, z, sp, registration_error_mm=0.5).tumors[0]
    assert abs(tm.min_margin_mm) <= tm.uncertainty_mm
    assert tm.uncertain


def test_classify_false_gives_none():
    sp = SPACINGS["ct"]
    shape = (30, 60, 60)
    c = np.array([(n - 1) * s / 2 for n, s in zip(shape, sp)])
    t = ball(shape, sp, c, 5.0)
    z = ball(shape, sp, c, 12.0)
    a = margins_arrays(t, z, sp).tumors[0]
    b = margins_arrays(t, z, sp, classify=False).tumors[0]
    assert a.classification == Classification.A0
    assert b.classification is None and b.uncertain is False
    assert b.to_dict()["classification"] is None
    assert b.min_margin_mm == a.min_margin_mm and b.vic_ml == a.vic_ml


def test_to_dict_is_json_ready():
    import json

    sp = SPACINGS["ct"]
    shape = (30, 60, 60)
    c = np.array([(n - 1) * s / 2 for n, s in zip(shape, sp)])
    res = margins_arrays(ball(shape, sp, c, 5.0), ball(shape, sp, c, 9.0), sp)
    d = json.loads(json.dumps(res.to_dict()))
    t = d["tumors"][0]
    assert t["classification"] == "A1"
    assert set(t["surface_fraction"]) == {"below_0", "from_0_to_threshold", "at_least_threshold", "threshold_mm"}
    assert set(t["vic_ml"]) == {str(k) for k in range(11)}


def test_top_level_export():
    import liverburden

    assert liverburden.margins_arrays is margins_arrays


# --------------------------------------------------------------------------- bad input
def test_empty_tumor_is_mask_error():
    z = np.zeros((10, 10, 10), np.uint8)
    z[3:7, 3:7, 3:7] = 1
    with pytest.raises(MaskError, match="tumor"):
        margins_arrays(np.zeros_like(z), z, (1, 1, 1))


def test_empty_zone_is_mask_error():
    t = np.zeros((10, 10, 10), np.uint8)
    t[3:7, 3:7, 3:7] = 1
    with pytest.raises(MaskError, match="zone"):
        margins_arrays(t, np.zeros_like(t), (1, 1, 1))


def test_shape_mismatch_is_geometry_error():
    with pytest.raises(GeometryError):
        margins_arrays(np.ones((4, 4, 4)), np.ones((4, 4, 5)), (1, 1, 1))


def test_zone_covering_whole_array_is_a_clear_error():
    z = np.ones((10, 12, 14), np.uint8)
    t = np.zeros_like(z)
    t[4:6, 5:7, 6:8] = 1
    with pytest.raises((MaskError, GeometryError)):
        margins_arrays(t, z, (1.0, 1.0, 1.0))


def test_box_doubling_path_is_taken(monkeypatch):
    """The 29 mm margin of the small tumor in the big zone needs more than the first box."""
    from liverburden.margin import _margin

    calls = []
    orig = _margin._one_tumor

    def spy(*a, **k):
        r = orig(*a, **k)
        calls.append(r is None)
        return r

    monkeypatch.setattr(_margin, "_one_tumor", spy)
    sp = (1.25, 0.78, 0.78)
    shape = (60, 96, 96)
    c = np.array([(n - 1) * s / 2 for n, s in zip(shape, sp)])
    tm = margins_arrays(ball(shape, sp, c, 1.0), ball(shape, sp, c, 30.0), sp).tumors[0]
    assert calls[0] is True and calls[-1] is False and len(calls) >= 2
    assert abs(tm.min_margin_mm - 29.0) <= half_diag(sp)
