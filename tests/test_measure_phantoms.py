"""measure_arrays on analytic phantoms (house-style point 7: first oracle) and
every validation branch (point 8).

Truths come from geometry, not from the code: voxel counts of boxes, diagonals,
sphere and ellipsoid diameters, rules of ``conventions.md`` ("Arrays, axes,
geometry", "Lesions", "Diameters") and ``clinical-reference.md`` sections 1-2.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

import naive
import phantoms as ph
from liverburden import ConfigError, GeometryError, InputError, MaskError, measure_arrays
from liverburden.geometry import ld_axis

#: An abdominal CT voxel in (slice, row, col) order: 1.25 mm slices, 0.78 mm pixels.
SP_CT = (1.25, 0.78, 0.78)


def measure(liver, lesions, spacing, **kw):
    return measure_arrays(liver, lesions, spacing, **kw)


def lps(index, spacing, direction=None, origin=None):
    return ph.index_to_lps(index, spacing, direction, origin)


def check_points(les, spacing, direction=None, origin=None, axis=None):
    """End points and centroid: LPS = origin + D @ (index * spacing); lengths match."""
    for mm, idx, length in (
        (les.ld_endpoints_mm, les.ld_endpoints_index, les.ld_mm),
        (les.sa_endpoints_mm, les.sa_endpoints_index, les.sa_mm),
    ):
        if idx is None:
            assert mm is None and length == 0.0
            continue
        for p_mm, p_idx in zip(mm, idx):
            np.testing.assert_allclose(p_mm, lps(p_idx, spacing, direction, origin), atol=1e-9)
        assert math.dist(*mm) == pytest.approx(length, abs=1e-9)
        if axis is not None:  # both in the LD slice
            assert idx[0][axis] == idx[1][axis] == les.slice_index
    assert math.dist(*les.max3d_endpoints_mm) == pytest.approx(les.max3d_mm, abs=1e-9)
    np.testing.assert_allclose(les.centroid_mm, lps(les.centroid_index, spacing, direction, origin), atol=1e-9)


# --------------------------------------------------------------------------- axes


def test_ld_axis_of_the_reference_directions():
    assert ld_axis(np.eye(3)) == naive.ld_axis(None) == 2
    assert ld_axis(ph.AXIAL) == naive.ld_axis(ph.AXIAL) == 0
    assert ld_axis(ph.SAGITTAL) == naive.ld_axis(ph.SAGITTAL) == 1


# --------------------------------------------------------------------------- box


@pytest.mark.parametrize("direction", [ph.AXIAL, None, ph.SAGITTAL], ids=["axial", "identity", "sagittal"])
def test_box_lesion_is_exact(direction):
    shape, sp = (10, 12, 16), (2.5, 0.7, 0.9)
    lo, hi = np.array([3, 3, 4]), np.array([7, 9, 13])  # extent 4 x 6 x 9 voxels
    les = ph.box_index(shape, lo, hi)
    r = measure(ph.liver_around(les), les, sp, direction=direction)
    (L,) = r.lesions
    ext = hi - lo
    axis = naive.ld_axis(direction)
    inplane = [a for a in range(3) if a != axis]
    span = (ext - 1) * np.asarray(sp)  # centre-to-centre extents
    assert r.ld_axis == axis
    assert L.id == 1 and L.components == 1 and L.location == "liver"
    assert L.voxel_count == int(np.prod(ext)) == 216
    assert L.volume_ml == pytest.approx(np.prod(ext) * np.prod(sp) / 1000.0, rel=1e-12)
    assert L.max3d_mm == pytest.approx(math.sqrt((span**2).sum()), abs=1e-9)
    assert L.ld_mm == pytest.approx(math.hypot(*span[inplane]), abs=1e-9)
    assert L.bbox_index_min == tuple(lo) and L.bbox_index_max == tuple(hi - 1)
    np.testing.assert_allclose(L.centroid_index, (lo + hi - 1) / 2.0, atol=1e-12)
    # every slice ties on LD and SA: the lowest slice wins, then the diagonal
    # whose first end point is smallest in C order (conventions.md "Diameters")
    assert L.slice_index == lo[axis]
    p, q = lo.copy(), hi - 1
    q[axis] = lo[axis]
    assert L.ld_endpoints_index == (tuple(p), tuple(q))
    # SA: against the exhaustive search (no closed form for a lattice rectangle)
    ref = naive.measure_lesion(les, sp, axis)
    assert L.sa_mm == pytest.approx(ref["sa_mm"], abs=1e-9)
    assert L.sa_endpoints_index == ref["sa_endpoints_index"]
    check_points(L, sp, direction, axis=axis)


def test_box_in_physical_space_with_origin():
    """A box given in LPS mm on an axial grid with an origin: counts and lengths."""
    shape, sp, origin = (9, 21, 21), SP_CT, (-40.0, 12.5, 100.0)
    # x in [-35, -28] mm, y in [15, 20] mm, z in [102, 106] mm
    les = ph.box(shape, sp, (-35.0, 15.0, 102.0), (-28.0, 20.0, 106.0), direction=ph.AXIAL, origin=origin)
    r = measure(ph.liver_around(les, 1), les, sp, direction=ph.AXIAL, origin_mm=origin)
    (L,) = r.lesions
    # voxel centres: x = -40 + 0.78 i, y = 12.5 + 0.78 j, z = 100 + 1.25 k
    nx = sum(-35 <= -40 + 0.78 * i <= -28 for i in range(21))
    ny = sum(15 <= 12.5 + 0.78 * j <= 20 for j in range(21))
    nz = sum(102 <= 100 + 1.25 * k <= 106 for k in range(9))
    assert L.voxel_count == nx * ny * nz
    assert L.ld_mm == pytest.approx(math.hypot((nx - 1) * 0.78, (ny - 1) * 0.78), abs=1e-9)
    assert L.max3d_mm == pytest.approx(math.sqrt(((nx - 1) * 0.78) ** 2 + ((ny - 1) * 0.78) ** 2
                                                 + ((nz - 1) * 1.25) ** 2), abs=1e-9)
    check_points(L, sp, ph.AXIAL, origin, axis=0)
    # every end point lies in the LPS box
    for p in L.ld_endpoints_mm + L.max3d_endpoints_mm:
        assert -35 - 1e-9 <= p[0] <= -28 + 1e-9 and 15 - 1e-9 <= p[1] <= 20 + 1e-9 and 102 - 1e-9 <= p[2] <= 106 + 1e-9


# --------------------------------------------------------------------------- sphere


def test_sphere_anisotropic_spacing():
    shape, r_mm = (17, 25, 25), 7.0
    c = ph.grid_centre(shape, SP_CT, ph.AXIAL) + np.array([0.21, -0.13, 0.37])  # off the lattice
    les = ph.sphere(shape, SP_CT, c, r_mm, ph.AXIAL)
    res = measure(ph.liver_around(les, 1), les, SP_CT, direction=ph.AXIAL)
    (L,) = res.lesions
    vox_ml = np.prod(SP_CT) / 1000.0
    sphere_ml = 4.0 / 3.0 * math.pi * r_mm**3 / 1000.0
    assert L.volume_ml == pytest.approx(les.sum() * vox_ml, rel=1e-12)
    # Voxelisation error. Rigorous: every voxel whose centre is inside lies in the
    # ball of radius r + h, and the voxels cover the ball of radius r - h
    # (h = half the voxel diagonal), so the count sits between those volumes.
    # Statistical: the count is an unbiased estimate of the volume over random
    # sub-voxel offsets (lattice points in a randomly translated body); at this
    # size its relative s.d. is 0.45 % (measured over 200 offsets, max 1.1 %),
    # so 3 % is over 6 s.d. for one sphere.
    h = 0.5 * math.sqrt(sum(s * s for s in SP_CT))
    assert (r_mm - h) ** 3 / r_mm**3 * sphere_ml <= L.volume_ml <= (r_mm + h) ** 3 / r_mm**3 * sphere_ml
    assert L.volume_ml == pytest.approx(sphere_ml, rel=0.03)
    # Diameters between voxel centres inside the ball: at most 2r; at least
    # 2r minus one voxel at each end.
    lo = 2 * r_mm - 2 * max(SP_CT)
    assert lo <= L.ld_mm <= 2 * r_mm
    assert lo <= L.max3d_mm <= 2 * r_mm
    assert L.ld_mm <= L.max3d_mm
    assert lo <= L.sa_mm <= L.ld_mm
    check_points(L, SP_CT, ph.AXIAL, axis=0)


def test_sphere_volume_is_unbiased_over_offsets():
    """The mean over 16 random sub-voxel offsets: s.d. of the mean ~0.11 %, so
    0.6 % (over 5 s.d.) tests that voxel volume and spacing order are right."""
    shape, r_mm = (17, 25, 25), 7.0
    rng = np.random.default_rng(7)
    sphere_ml = 4.0 / 3.0 * math.pi * r_mm**3 / 1000.0
    vols = []
    for _ in range(16):
        c = ph.grid_centre(shape, SP_CT, ph.AXIAL) + rng.uniform(-0.5, 0.5, 3) * np.array([0.78, 0.78, 1.25])
        les = ph.sphere(shape, SP_CT, c, r_mm, ph.AXIAL)
        (L,) = measure(ph.liver_around(les, 1), les, SP_CT, direction=ph.AXIAL).lesions
        vols.append(L.volume_ml)
    assert np.mean(vols) == pytest.approx(sphere_ml, rel=0.006)


# --------------------------------------------------------------------------- ellipsoid


def test_ellipsoid_rotated_in_plane():
    a, b, c = 12.0, 6.0, 4.0
    shape = (11, 37, 37)
    rot = ph.rotation((0, 0, 1), 30.0)  # about S-I: in the axial plane
    centre = ph.grid_centre(shape, SP_CT, ph.AXIAL) + np.array([0.1, 0.2, 0.3])
    les = ph.ellipsoid(shape, SP_CT, centre, (a, b, c), rot, ph.AXIAL)
    (L,) = measure(ph.liver_around(les, 1), les, SP_CT, direction=ph.AXIAL).lesions
    pix = math.hypot(0.78, 0.78)
    assert 2 * a - 2 * pix <= L.ld_mm <= 2 * a
    assert L.ld_mm <= L.max3d_mm <= 2 * a
    # LD runs along the long axis, 30 degrees from x in the x-y plane
    v = np.subtract(*L.ld_endpoints_mm[::-1])
    assert v[2] == pytest.approx(0.0, abs=1e-9)
    angle = math.degrees(math.atan2(v[1], v[0])) % 180.0
    assert angle == pytest.approx(30.0, abs=4.0)
    # SA: about the minor diameter. A central chord within 15 degrees of the
    # minor axis is at most 2 / sqrt(cos^2 15 / b^2 + sin^2 15 / a^2) = 12.31 mm.
    assert 2 * b - 2 * pix <= L.sa_mm <= 12.32
    sa_v = np.subtract(*L.sa_endpoints_mm[::-1])
    cos = abs(sa_v @ v) / (np.linalg.norm(sa_v) * np.linalg.norm(v))
    assert math.degrees(math.acos(cos)) >= 80.0 - 1e-9
    check_points(L, SP_CT, ph.AXIAL, axis=0)


# --------------------------------------------------------------------------- directions


def _generic_lesion(shape=(13, 31, 29)):
    """An ellipsoid at a generic angle: a unique LD, SA and max 3-D pair."""
    rot = ph.rotation((1, 2, 3), 37.0)
    centre = ph.grid_centre(shape, SP_CT, ph.AXIAL) + np.array([0.11, -0.23, 0.17])
    les = ph.ellipsoid(shape, SP_CT, centre, (9.0, 5.0, 3.5), rot, ph.AXIAL)
    return les, ph.liver_around(les, 1)


@pytest.mark.parametrize("deg, axis", [(4.0, 0), (-7.0, 0), (50.0, 1)])
def test_oblique_direction(deg, axis):
    """A rotated grid (same array): lengths are invariant, the LD slices follow
    the axis closest to S-I, points follow origin + D @ (index * spacing)."""
    les, liver = _generic_lesion()
    base = measure(liver, les, SP_CT, direction=ph.AXIAL)
    d = ph.rotation((1, 0, 0), deg) @ ph.AXIAL
    origin = (12.0, -30.5, 250.25)
    r = measure(liver, les, SP_CT, direction=d, origin_mm=origin)
    (L,), (B,) = r.lesions, base.lesions
    assert r.ld_axis == axis == naive.ld_axis(d)
    assert L.voxel_count == B.voxel_count and L.volume_ml == B.volume_ml
    assert L.max3d_mm == pytest.approx(B.max3d_mm, abs=1e-9)
    ref = naive.measure_lesion(les, SP_CT, axis)
    assert L.ld_mm == pytest.approx(ref["ld_mm"], abs=1e-9)
    assert L.sa_mm == pytest.approx(ref["sa_mm"], abs=1e-9)
    assert L.slice_index == ref["slice_index"]
    assert L.ld_endpoints_index == ref["ld_endpoints_index"]
    if axis == 0:
        assert (L.ld_mm, L.sa_mm, L.ld_endpoints_index) == (B.ld_mm, B.sa_mm, B.ld_endpoints_index)
    check_points(L, SP_CT, d, origin, axis=axis)


@pytest.mark.parametrize(
    "perm, flip",
    [((0, 1, 2), (True, False, True)), ((2, 0, 1), (False, False, False)), ((1, 2, 0), (True, True, False)),
     ((2, 1, 0), (False, True, False))],
)
def test_same_grid_in_another_axis_order(perm, flip):
    """The identical physical voxels stored permuted/flipped (sagittal-like when
    S-I is not axis 0): every length and every LPS end point is unchanged."""
    les, liver = _generic_lesion()
    origin = np.array([5.0, -7.0, 11.0])
    base = measure(liver, les, SP_CT, direction=ph.AXIAL, origin_mm=origin)
    les2, sp2, d2, o2 = ph.permuted_grid(les, SP_CT, ph.AXIAL, origin, perm, flip)
    liver2 = ph.permuted_grid(liver, SP_CT, ph.AXIAL, origin, perm, flip)[0]
    r = measure(liver2, les2, sp2, direction=d2, origin_mm=o2)
    (L,), (B,) = r.lesions, base.lesions
    axis = list(perm).index(0)  # where the S-I axis went
    assert r.ld_axis == axis == ld_axis(d2)
    assert L.voxel_count == B.voxel_count
    assert L.volume_ml == pytest.approx(B.volume_ml, rel=1e-12)
    for k in ("ld_mm", "sa_mm", "max3d_mm"):
        assert getattr(L, k) == pytest.approx(getattr(B, k), abs=1e-9), k
    for k in ("ld_endpoints_mm", "sa_endpoints_mm", "max3d_endpoints_mm"):
        got = sorted(getattr(L, k))
        want = sorted(getattr(B, k))
        np.testing.assert_allclose(got, want, atol=1e-9, err_msg=k)
    np.testing.assert_allclose(L.centroid_mm, B.centroid_mm, atol=1e-9)
    check_points(L, sp2, d2, o2, axis=axis)
    # the LD slice index counts along the new slice axis
    assert L.slice_index == L.ld_endpoints_index[0][axis]


# --------------------------------------------------------------------------- liver burden


def _burden_case():
    """Liver box rows 4..25, cols 4..19 on an axial grid; lesions straddle col 20."""
    shape = (8, 40, 40)
    liver = ph.box_index(shape, (1, 4, 4), (7, 26, 20))
    les = np.zeros(shape, dtype=np.uint8)
    les[2:5, 5:8, 6:10] = 1  # A: 36 voxels, all in the liver
    les[2:5, 10:12, 14:24] = 1  # B: cols 14..23, 6 of 10 inside -> 60 %, hepatic
    les[2:5, 14:16, 16:24] = 1  # C: cols 16..23, 4 of 8 inside -> exactly 50 %, hepatic
    les[2:5, 18:20, 19:27] = 1  # D: cols 19..26, 1 of 8 inside -> 12.5 %, extrahepatic
    les[2:5, 30:33, 30:34] = 1  # E: outside the liver, extrahepatic
    return liver, les


def test_involvement_and_hepatic_rule():
    liver, les = _burden_case()
    sp = (2.0, 0.8, 0.8)
    r = measure(liver, les, sp, direction=ph.AXIAL)
    vox = np.prod(sp) / 1000.0
    ids = [L.id for L in r.lesions]
    assert ids == [1, 2, 3, 4, 5]  # raster order of first voxel: A, B, C, D, E
    A, B, C, D, E = r.lesions
    assert [L.location for L in r.lesions] == ["liver", "liver", "liver", "extrahepatic", "extrahepatic"]
    assert [L.voxels_outside_liver for L in r.lesions] == [0, 24, 24, 42, 36]
    assert [L.liver_fraction for L in r.lesions] == [1.0, 0.6, 0.5, 0.125, 0.0]
    liver_vox = int(liver.sum())
    tumor_vox = 36 + 60 + 48
    tlv_vox = liver_vox + 24 + 24  # liver mask union hepatic lesion voxels
    assert r.liver.mask_volume_ml == pytest.approx(liver_vox * vox, rel=1e-12)
    assert r.liver.volume_ml == pytest.approx(tlv_vox * vox, rel=1e-12)
    assert r.liver.tumor_volume_ml == pytest.approx(tumor_vox * vox, rel=1e-12)
    assert r.liver.functional_volume_ml == pytest.approx((tlv_vox - tumor_vox) * vox, rel=1e-12)
    assert r.liver.involvement_pct == pytest.approx(100.0 * tumor_vox / tlv_vox, rel=1e-12)
    assert not r.liver.truncated and r.liver.truncated_edges == ()
    sod = r.sum_diameters
    assert sod["all_mm"] == pytest.approx(sum(L.ld_mm for L in r.lesions), abs=1e-9)
    assert sod["hepatic_mm"] == pytest.approx(A.ld_mm + B.ld_mm + C.ld_mm, abs=1e-9)
    assert sod["extrahepatic_mm"] == pytest.approx(D.ld_mm + E.ld_mm, abs=1e-9)
    assert "lesion 2: 24 voxel(s) lie outside the liver mask" in r.warnings
    assert "lesion 3: 24 voxel(s) lie outside the liver mask" in r.warnings
    # the naive burden agrees
    ref = naive.measure(liver, les, sp, ph.AXIAL)
    assert r.liver.involvement_pct == pytest.approx(ref["involvement_pct"], abs=1e-9)
    assert r.liver.volume_ml == pytest.approx(ref["tlv_ml"], abs=1e-12)
    json.dumps(r.to_dict())


def test_hepatic_fraction_is_configurable():
    liver, les = _burden_case()
    r = measure(liver, les, (2.0, 0.8, 0.8), direction=ph.AXIAL, config={"lesions": {"hepatic_fraction": 0.7}})
    assert [L.location for L in r.lesions] == ["liver", "extrahepatic", "extrahepatic", "extrahepatic", "extrahepatic"]
    assert r.liver.volume_ml == pytest.approx(r.liver.mask_volume_ml, rel=1e-12)


def test_empty_lesion_mask_is_a_complete_response():
    liver = ph.interior_liver((6, 8, 9))
    r = measure(liver, np.zeros(liver.shape, np.uint8), (2.0, 0.7, 0.7))
    assert r.lesions == () and r.lesion_count == 0
    assert r.liver.involvement_pct == 0.0 and r.liver.tumor_volume_ml == 0.0
    assert r.liver.volume_ml == pytest.approx(liver.sum() * 2.0 * 0.49 / 1000.0, rel=1e-12)
    assert r.sum_diameters["all_mm"] == 0.0 and r.sum_diameters["recist_mm"] == 0.0
    assert r.sum_diameters["hepatic_mm"] == 0.0
    assert r.recist_target_ids == ()
    assert not r.label_array().any() and r.label_array().shape == liver.shape
    json.dumps(r.to_dict())


# --------------------------------------------------------------------------- lesion identity


def test_instance_labels_keep_their_values():
    shape = (8, 12, 14)
    les = np.zeros(shape, dtype=np.uint8)
    les[2:4, 2:5, 2:5] = 3
    les[2:4, 7:9, 2:4] = 7
    les[5:7, 7:9, 9:12] = 7  # a second, separate component of instance 7
    liver = ph.interior_liver(shape)
    r = measure(liver, les, (1.0, 1.0, 1.0))
    assert r.lesion_mode == "instances"
    assert [L.id for L in r.lesions] == [3, 7]
    assert [L.components for L in r.lesions] == [1, 2]
    assert [L.voxel_count for L in r.lesions] == [18, 8 + 12]
    assert "instance 7 has 2 components" in r.warnings
    assert not any("instance 3" in w for w in r.warnings)
    np.testing.assert_array_equal(r.label_array(), les)
    # an instance spanning two components is still measured as one lesion
    ref = naive.measure_lesion(les == 7, (1.0, 1.0, 1.0), 2)
    assert r.lesions[1].max3d_mm == pytest.approx(ref["max3d_mm"], abs=1e-9)
    assert r.lesions[1].ld_mm == pytest.approx(ref["ld_mm"], abs=1e-9)


@pytest.mark.parametrize(
    "radius, shift, expected",
    [(2.3, 3, {6: 2, 18: 2, 26: 1}), (3.0, 4, {6: 2, 18: 1, 26: 1})],
    ids=["corner-touch", "edge-touch"],
)
@pytest.mark.parametrize("connectivity", [6, 18, 26])
def test_touching_spheres_and_connectivity(radius, shift, expected, connectivity):
    shape = (16, 16, 16)
    a = ph.sphere(shape, (1, 1, 1), (4, 4, 4), radius)
    b = ph.sphere(shape, (1, 1, 1), (4 + shift,) * 3, radius)
    assert not (a & b).any()
    les = (a | b).astype(np.uint8)
    assert naive.count_components(les, connectivity) == expected[connectivity]  # the phantom is what it claims
    r = measure(ph.interior_liver(shape), les, (1, 1, 1), config={"lesions": {"connectivity": connectivity}})
    assert len(r.lesions) == expected[connectivity]
    assert sum(L.voxel_count for L in r.lesions) == les.sum()
    np.testing.assert_array_equal(r.label_array(), naive.label_components(les, connectivity))


@pytest.mark.parametrize("direction", [None, ph.AXIAL, ph.SAGITTAL], ids=["identity", "axial", "sagittal"])
@pytest.mark.parametrize("connectivity", [6, 26])
def test_label_array_reproduces_components(direction, connectivity):
    rng = np.random.default_rng(3)
    les = rng.random((7, 9, 11)) < 0.3
    r = measure(np.ones(les.shape, np.uint8), les, (1.5, 0.8, 0.9), direction=direction,
                config={"lesions": {"connectivity": connectivity}})
    lab = r.label_array()
    assert lab.shape == les.shape
    np.testing.assert_array_equal(lab, naive.label_components(les, connectivity))
    assert [L.id for L in r.lesions] == list(range(1, lab.max() + 1))
    for L in r.lesions:
        assert L.voxel_count == int((lab == L.id).sum())


def test_min_lesion_volume_drops_small_components():
    shape = (6, 10, 12)
    les = np.zeros(shape, np.uint8)
    les[1, 1, 1] = 1  # 1 voxel, 0.002 mL at 2 mm^3 per voxel
    les[2:5, 3:6, 3:6] = 1  # 27 voxels
    les[2, 8, 10] = 1
    sp = (2.0, 1.0, 1.0)
    r = measure(np.ones(shape, np.uint8), les, sp, config={"lesions": {"min_lesion_volume_ml": 0.01}})
    assert [(L.id, L.voxel_count) for L in r.lesions] == [(1, 27)]
    assert "2 component(s) below min_lesion_volume_ml = 0.01 mL were not counted as lesions" in r.warnings
    lab = r.label_array()
    assert lab[1, 1, 1] == 0 and lab[2, 8, 10] == 0 and (lab == 1).sum() == 27


def test_segments_majority():
    shape = (6, 8, 10)
    liver = ph.interior_liver(shape)
    seg = np.zeros(shape, np.uint8)
    seg[:, :, :5] = 2
    seg[:, :, 5:] = 3
    les = np.zeros(shape, np.uint8)
    les[2, 3, 2:8] = 1  # 3 voxels in segment 2, 3 in 3; plus 2 more in 3
    les[3, 3, 5:7] = 1
    r = measure(liver, les, (1, 1, 1), direction=ph.AXIAL, segments=seg)
    (L,) = r.lesions
    assert L.segment_voxels == {"2": 3, "3": 5}
    assert L.segment == "3"


def test_flags_follow_the_thresholds():
    liver, les = _burden_case()
    r = measure(liver, les, (2.0, 0.8, 0.8), direction=ph.AXIAL)
    by_key = {f["config_key"]: f for f in r.flags}
    inv = r.liver.involvement_pct
    fav = by_key["thresholds.involvement_favourable_pct"]
    milan = by_key["thresholds.involvement_milan_pct"]
    sod = by_key["thresholds.remnant_sod_high_mm"]
    assert (fav["threshold"], fav["value"], fav["met"]) == (25.0, inv, inv < 25.0)
    assert (milan["threshold"], milan["value"], milan["met"]) == (50.0, inv, inv < 50.0)
    assert sod["value"] == r.sum_diameters["all_mm"] and sod["met"] is (r.sum_diameters["all_mm"] > 50.0)
    assert all(f["reliable"] for f in r.flags)
    r2 = measure(liver, les, (2.0, 0.8, 0.8), direction=ph.AXIAL,
                 config={"thresholds": {"involvement_favourable_pct": 1.0, "remnant_sod_high_mm": 1e6}})
    by_key = {f["config_key"]: f for f in r2.flags}
    assert by_key["thresholds.involvement_favourable_pct"]["met"] is (inv < 1.0)
    assert by_key["thresholds.remnant_sod_high_mm"]["met"] is False


def test_segment_extra_names():
    """{"9": "4b"} splits segment IV: value 4 is then "4a"."""
    shape = (6, 8, 10)
    seg = np.zeros(shape, np.uint8)
    seg[:, :, :5] = 4
    seg[:, :, 5:] = 9
    les = np.zeros(shape, np.uint8)
    les[2, 3, 3:9] = 1  # 2 voxels in 4a, 4 in 4b
    r = measure(ph.interior_liver(shape), les, (1, 1, 1), segments=seg, config={"segments": {"extra": {"9": "4b"}}})
    (L,) = r.lesions
    assert L.segment_voxels == {"4a": 2, "4b": 4} and L.segment == "4b"


# --------------------------------------------------------------------------- RECIST 1.1


def _recist_case():
    """Line lesions on an axial grid (in-plane spacing 1 mm): a line of n voxels
    has LD = n - 1 mm exactly."""
    shape = (5, 30, 40)
    liver = ph.box_index(shape, (1, 1, 1), (4, 20, 39))
    les = np.zeros(shape, np.uint8)
    lengths = {}
    for row, n in ((2, 16), (4, 31), (6, 21), (8, 13), (10, 12)):  # LD 15, 30, 20, 12, 11
        les[2, row, 2 : 2 + n] = 1
        lengths[row] = n - 1
    les[2, 25, 2:17] = 1  # extrahepatic, LD 14
    return liver, les


@pytest.mark.parametrize("slice_mm, min_ld", [(6.0, 12.0), (2.0, 10.0)])
def test_recist_targets_and_measurability(slice_mm, min_ld):
    liver, les = _recist_case()
    r = measure(liver, les, (slice_mm, 1.0, 1.0), direction=ph.AXIAL)
    lds = {L.id: L.ld_mm for L in r.lesions}
    assert lds == {1: 15.0, 2: 30.0, 3: 20.0, 4: 12.0, 5: 11.0, 6: 14.0}
    assert r.lesions[5].location == "extrahepatic"
    assert r.sum_diameters["recist_min_measurable_ld_mm"] == min_ld
    measurable = {L.id for L in r.lesions if L.recist_measurable}
    # LD >= max(10 mm, 2 x slice spacing): 12 mm is measurable at 6 mm slices (equality), 11 mm is not
    assert measurable == ({1, 2, 3, 4, 6} if min_ld == 12.0 else {1, 2, 3, 4, 5, 6})
    # at most 2 per organ, largest LD first: liver 30, 20; extrahepatic 14
    assert r.recist_target_ids == (2, 3, 6)
    assert {L.id for L in r.lesions if L.recist_target} == {2, 3, 6}
    assert r.sum_diameters["recist_mm"] == pytest.approx(30 + 20 + 14)
    assert r.sum_diameters["all_mm"] == pytest.approx(15 + 30 + 20 + 12 + 11 + 14)
    ref_measurable, ref_targets = naive.recist_targets(
        [(L.id, L.ld_mm, L.location) for L in r.lesions], slice_mm
    )
    assert measurable == ref_measurable and list(r.recist_target_ids) == ref_targets


@pytest.mark.parametrize(
    "recist, targets",
    [({"max_targets_total": 2}, (2, 3)), ({"max_targets_per_organ": 1}, (2, 6)),
     ({"min_measurable_ld_mm": 16.0}, (2, 3))],
)
def test_recist_limits_are_configuration(recist, targets):
    liver, les = _recist_case()
    r = measure(liver, les, (2.0, 1.0, 1.0), direction=ph.AXIAL, config={"recist": recist})
    assert r.recist_target_ids == targets


# --------------------------------------------------------------------------- truncation


@pytest.mark.parametrize(
    "lo, hi, edges",
    [((0, 2, 2), (5, 8, 9), ("first slice",)), ((1, 2, 2), (5, 8, 10), ("last column",)),
     ((0, 0, 2), (6, 8, 9), ("first slice", "last slice", "first row")), ((1, 1, 1), (5, 7, 9), ())],
)
def test_truncated_liver(lo, hi, edges):
    shape = (6, 10, 10)
    liver = ph.box_index(shape, lo, hi)
    les = np.zeros(shape, np.uint8)
    les[2:4, 3:5, 3:5] = 1
    r = measure(liver, les, (2.0, 0.8, 0.8), direction=ph.AXIAL)
    assert r.liver.truncated is bool(edges)
    assert r.liver.truncated_edges == edges
    involvement_flags = [f for f in r.flags if f["quantity"] == "involvement_pct"]
    assert involvement_flags and all(f["reliable"] is (not edges) for f in involvement_flags)
    trunc_warnings = [w for w in r.warnings if "truncated" in w]
    if edges:
        assert len(trunc_warnings) == 1 and all(e in trunc_warnings[0] for e in edges)
        assert r.to_dict()["liver"]["reliable"] is False
    else:
        assert not trunc_warnings


def test_truncation_edges_are_named_by_input_axis():
    """With a sagittal grid the S-I axis is array axis 1, but edges keep the
    input array's names (axis 0 = slice)."""
    shape = (6, 10, 10)
    liver = ph.box_index(shape, (0, 2, 2), (5, 8, 8))
    les = np.zeros(shape, np.uint8)
    les[2:4, 3:5, 3:5] = 1
    r = measure(liver, les, (1.0, 1.0, 1.0), direction=ph.SAGITTAL)
    assert r.ld_axis == 1 and r.liver.truncated_edges == ("first slice",)


# --------------------------------------------------------------------------- invariance of the input form


def _blob_case():
    rng = np.random.default_rng(11)
    from scipy import ndimage

    f = ndimage.gaussian_filter(rng.standard_normal((16, 18, 20)), 1.3)
    les = f > np.quantile(f, 0.88)
    liver = ph.interior_liver(les.shape)
    return liver, les


@pytest.mark.parametrize("threads", [2, 3, 16])
def test_threads_give_identical_results(threads):
    liver, les = _blob_case()
    kw = dict(direction=ph.AXIAL, config={"lesions": {"connectivity": 18}})
    one = measure(liver, les, SP_CT, threads=1, **kw)
    many = measure(liver, les, SP_CT, threads=threads, **kw)
    assert len(one.lesions) > 5
    assert many.to_dict() == one.to_dict()
    np.testing.assert_array_equal(many.label_array(), one.label_array())


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [bool, np.uint8, np.uint16, np.int32, np.float32])
def test_dtype_and_memory_order_do_not_matter(dtype, order):
    liver, les = _blob_case()
    ref = measure(liver.astype(np.uint8), les.astype(np.uint8), SP_CT, direction=ph.SAGITTAL)
    lv = np.asarray(liver.astype(dtype), order=order)
    ls = np.asarray(les.astype(dtype), order=order)
    assert lv.flags[f"{order}_CONTIGUOUS"]
    r = measure(lv, ls, SP_CT, direction=ph.SAGITTAL)
    assert r.to_dict() == ref.to_dict()
    np.testing.assert_array_equal(r.label_array(), ref.label_array())


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float32, np.float64])
def test_instance_labels_in_wide_dtypes(dtype):
    shape = (6, 8, 10)
    les = np.zeros(shape, dtype)
    les[1:3, 1:3, 1:3] = 300
    les[3:5, 4:7, 5:9] = 1000
    r = measure(np.ones(shape, np.uint8), les, (1, 1, 1))
    assert [L.id for L in r.lesions] == [300, 1000]
    np.testing.assert_array_equal(r.label_array(), les.astype(np.int64))


# --------------------------------------------------------------------------- validation (house style point 8)


def _ok_inputs():
    shape = (6, 7, 8)
    liver = ph.interior_liver(shape).astype(np.uint8)
    les = np.zeros(shape, np.uint8)
    les[2:4, 2:4, 2:4] = 1
    return liver, les


def test_valid_inputs_pass():
    liver, les = _ok_inputs()
    assert measure(liver, les, (1, 1, 1)).lesion_count == 1


# (id, change of the valid inputs, exception, message pattern): one field changed at a time
VALIDATION = [
    ("2d", lambda lv, ls: dict(liver=lv[0], lesions=ls[0]), GeometryError, r"must be 3-D"),
    ("shape", lambda lv, ls: dict(lesions=ls[:-1]),
     GeometryError, r"liver shape \(6, 7, 8\) differs from lesion shape \(5, 7, 8\)"),
    ("segment-shape", lambda lv, ls: dict(segments=ls[:, :-1]),
     GeometryError, r"segment map shape .* differs from liver shape"),
    ("remnant-shape", lambda lv, ls: dict(segments=lv, remnant=lv[:-1]),
     GeometryError, r"remnant mask shape .* differs from liver shape"),
    ("resect-without-segments", lambda lv, ls: dict(resect="5,6,7,8"), InputError, r"FLR plan .* needs a segment map"),
    ("remnant-without-segments", lambda lv, ls: dict(remnant=lv), InputError, r"FLR plan .* needs a segment map"),
    ("resect-and-remnant", lambda lv, ls: dict(segments=lv, resect="5", remnant=lv),
     InputError, r"either a resection plan or a remnant mask"),
    ("spacing-0", lambda lv, ls: dict(spacing_mm=(1.0, 0.0, 1.0)),
     GeometryError, r"spacing must be positive and finite"),
    ("spacing-nan", lambda lv, ls: dict(spacing_mm=(1.0, 1.0, np.nan)),
     GeometryError, r"spacing must be positive and finite"),
    ("spacing-negative", lambda lv, ls: dict(spacing_mm=(-1.0, 1.0, 1.0)),
     GeometryError, r"spacing must be positive and finite"),
    ("spacing-inf", lambda lv, ls: dict(spacing_mm=(1.0, np.inf, 1.0)),
     GeometryError, r"spacing must be positive and finite"),
    ("spacing-2", lambda lv, ls: dict(spacing_mm=(1.0, 1.0)), GeometryError, r"spacing_mm must be 3 numbers"),
    ("spacing-4", lambda lv, ls: dict(spacing_mm=(1.0, 1.0, 1.0, 1.0)), GeometryError, r"spacing_mm must be 3 numbers"),
    ("spacing-str", lambda lv, ls: dict(spacing_mm="abc"), GeometryError, r"spacing_mm must be 3 numbers"),
    ("origin-nan", lambda lv, ls: dict(origin_mm=(0.0, np.nan, 0.0)), GeometryError, r"origin is not finite"),
    ("origin-2", lambda lv, ls: dict(origin_mm=(0.0, 0.0)), GeometryError, r"origin_mm must be 3 numbers"),
    ("direction-2x2", lambda lv, ls: dict(direction=np.eye(2)), GeometryError, r"direction must be a 3x3 matrix"),
    ("direction-str", lambda lv, ls: dict(direction="abc"),
     GeometryError, r"direction must be a 3x3 matrix of numbers"),
    ("direction-sheared", lambda lv, ls: dict(direction=[[1, 0, 0], [0, 1, 0.1], [0, 0, 1]]),
     GeometryError, r"not orthonormal"),
    ("direction-scaled", lambda lv, ls: dict(direction=2 * np.eye(3)), GeometryError, r"not orthonormal"),
    ("direction-nan", lambda lv, ls: dict(direction=np.full((3, 3), np.nan)), GeometryError, r"non-finite"),
    ("empty-liver", lambda lv, ls: dict(liver=np.zeros_like(lv)), MaskError, r"^liver mask is empty$"),
    ("liver-label-5", lambda lv, ls: dict(config={"labels": {"liver": [5]}}),
     MaskError, r"liver mask: values \[1\] are not configured liver labels \[5\]"),
    ("liver-label-5-empty", lambda lv, ls: dict(config={"labels": {"liver": [5], "other_liver_values": "ignore"}}),
     MaskError, r"liver mask is empty \(no voxel with a value in \[5\]\)"),
    ("lesion-label-2", lambda lv, ls: dict(config={"labels": {"lesion": [2]}}),
     MaskError, r"lesion mask: values \[1\] are not configured lesion labels \[2\]"),
    ("float-0.5", lambda lv, ls: dict(lesions=ls * 0.5), MaskError, r"lesion mask: mask has non-integer values"),
    ("float-nan", lambda lv, ls: dict(liver=lv * np.nan), MaskError, r"liver mask: mask has NaN or infinite values"),
    ("negative", lambda lv, ls: dict(lesions=ls.astype(np.int16) - 1),
     MaskError, r"lesion mask: mask has negative label -1"),
    ("above-65535", lambda lv, ls: dict(liver=lv.astype(np.int32) * 70000),
     MaskError, r"label 70000 is above the largest supported label 65535"),
    ("complex", lambda lv, ls: dict(liver=lv.astype(np.complex128)),
     MaskError, r"dtype complex128; expected integer labels"),
    ("segment-float", lambda lv, ls: dict(segments=ls.astype(np.float32) + 0.25),
     MaskError, r"segment map: mask has non-integer values"),
    ("size-0", lambda lv, ls: dict(liver=np.zeros((0, 7, 8), np.int32), lesions=np.zeros((0, 7, 8), np.int32)),
     MaskError, r"mask is empty \(size 0\)"),
    ("connectivity-5", lambda lv, ls: dict(config={"lesions": {"connectivity": 5}}),
     ConfigError, r"lesions\.connectivity"),
    ("unknown-key", lambda lv, ls: dict(config={"lesions": {"connectivty": 6}}),
     ConfigError, r"unknown key 'connectivty'"),
    ("unknown-section", lambda lv, ls: dict(config={"lesion": {"connectivity": 6}}),
     ConfigError, r"unknown key 'lesion'"),
    ("not-a-table", lambda lv, ls: dict(config={"lesions": 6}), ConfigError, r"'lesions' must be a table"),
    ("lesion-mode", lambda lv, ls: dict(config={"labels": {"lesion_mode": "components"}}),
     ConfigError, r"labels\.lesion_mode"),
    ("sa-tolerance", lambda lv, ls: dict(config={"diameters": {"sa_perpendicular_tolerance_deg": 50}}),
     ConfigError, r"diameters\.sa_perpendicular_tolerance_deg"),
    ("favourable-above-milan", lambda lv, ls: dict(config={"thresholds": {"involvement_favourable_pct": 60}}),
     ConfigError, r"involvement_favourable_pct must not exceed involvement_milan_pct"),
    ("config-path", lambda lv, ls: dict(config="/nonexistent/liverburden.toml"), ConfigError, r"config file not found"),
]


@pytest.mark.parametrize("change, exc, match", [pytest.param(*c[1:], id=c[0]) for c in VALIDATION])
def test_validation(change, exc, match):
    liver, les = _ok_inputs()
    kw = dict(liver=liver, lesions=les, spacing_mm=(1.0, 1.0, 1.0))
    kw.update(change(liver, les))
    with pytest.raises(exc, match=match):
        measure_arrays(**kw)


def test_label_config_accepts_configured_values():
    liver, les = _ok_inputs()
    r = measure(liver * 5, les * 2, (1, 1, 1), config={"labels": {"liver": [5], "lesion": [2]}})
    assert r.lesion_count == 1 and r.lesions[0].id == 1
    lv = liver * 5
    lv[0, 0, 0] = 3  # another organ in a multi-label map
    r = measure(lv, les, (1, 1, 1), config={"labels": {"liver": [5], "other_liver_values": "ignore"}})
    assert r.liver.mask_volume_ml == pytest.approx(liver.sum() / 1000.0)


def test_float16_mask_measures_without_warnings():
    """Regression: the label range check once compared a float16 maximum with
    65535, which numpy casts to float16 (inf) with an overflow RuntimeWarning."""
    liver, les = _ok_inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = measure(liver.astype(np.float16), les.astype(np.float16), (1, 1, 1))
    assert r.lesion_count == 1
