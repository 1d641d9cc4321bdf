"""measure_arrays against the slow obvious reference (``tests/naive.py``) and
an independent library (SimpleITK): house-style point 7, second and third oracles.

Random blobs with fixed seeds, every connectivity, anisotropic and isotropic
spacing (isotropic spacing makes many exact ties, which exercises the tie rules
of ``conventions.md`` "Diameters"), and three directions so that the LD slice
axis is array axis 0, 1 and 2 in turn.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

import naive
import phantoms as ph
from liverburden import measure_arrays

DIRECTIONS = {"identity": None, "axial": ph.AXIAL, "sagittal": ph.SAGITTAL}
SPACINGS = {"iso": (1.0, 1.0, 1.0), "thick": (2.5, 0.75, 0.75), "mixed": (0.7, 0.9, 1.3)}
SHAPE = (24, 32, 32)


def blobs(seed: int, shape=SHAPE, sigma: float = 1.5, quantile: float = 0.88) -> np.ndarray:
    """Smoothed noise above a quantile: dozens of blobs of 1 .. ~1000 voxels."""
    rng = np.random.default_rng(seed)
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return f > np.quantile(f, quantile)


def unordered(pair):
    return sorted(tuple(p) for p in pair)


def compare(result, ref, direction, spacing, *, origin=None):
    """Lesion by lesion: ids, counts, lengths to 1e-9, end points where defined."""
    assert result.ld_axis == ref["ld_axis"]
    assert [L.id for L in result.lesions] == [g["id"] for g in ref["lesions"]]
    for L, g in zip(result.lesions, ref["lesions"]):
        tag = f"lesion {L.id}"
        assert L.voxel_count == g["voxel_count"], tag
        assert L.components == g["components"], tag
        assert L.location == g["location"] and L.voxels_outside_liver == g["voxels_outside_liver"], tag
        assert L.volume_ml == pytest.approx(g["volume_ml"], rel=1e-12), tag
        assert L.ld_mm == pytest.approx(g["ld_mm"], abs=1e-9), tag
        assert L.sa_mm == pytest.approx(g["sa_mm"], abs=1e-9), tag
        assert L.max3d_mm == pytest.approx(g["max3d_mm"], abs=1e-9), tag
        assert L.slice_index == g["slice_index"], tag
        # the LD tie rule is fully specified, so its end points always match
        assert L.ld_endpoints_index == g["ld_endpoints_index"], tag
        # SA / max-3D ties are not specified: compare where the pair is unique
        if g["sa_endpoints_index"] is None:
            assert L.sa_endpoints_index is None, tag
        elif g["sa_unique"]:
            assert L.sa_endpoints_index == g["sa_endpoints_index"], tag
        if g["max3d_unique"]:
            want = [tuple(ph.index_to_lps(p, spacing, direction, origin)) for p in g["max3d_endpoints_index"]]
            np.testing.assert_allclose(unordered(L.max3d_endpoints_mm), unordered(want), atol=1e-9, err_msg=tag)
        assert L.bbox_index_min == g["bbox_index_min"] and L.bbox_index_max == g["bbox_index_max"], tag
        np.testing.assert_allclose(L.centroid_index, g["centroid_index"], atol=1e-9, err_msg=tag)
    assert result.liver.involvement_pct == pytest.approx(ref["involvement_pct"], abs=1e-9)
    assert result.liver.volume_ml == pytest.approx(ref["tlv_ml"], rel=1e-12)
    assert result.liver.tumor_volume_ml == pytest.approx(ref["tumor_ml"], rel=1e-12, abs=1e-15)


# --------------------------------------------------------------------------- naive


@pytest.mark.parametrize("spacing", SPACINGS.values(), ids=SPACINGS.keys())
@pytest.mark.parametrize("direction", DIRECTIONS.values(), ids=DIRECTIONS.keys())
@pytest.mark.parametrize("connectivity", [6, 18, 26])
@pytest.mark.parametrize("seed", [0, 1])
def test_binary_blobs_match_naive(seed, connectivity, direction, spacing):
    les = blobs(seed).astype(np.uint8)
    liver = np.zeros(SHAPE, np.uint8)
    liver[2:-2, 3:-3, 1:-1] = 1  # some blobs straddle the liver edge
    r = measure_arrays(liver, les, spacing, direction, config={"lesions": {"connectivity": connectivity}})
    ref = naive.measure(liver, les, spacing, direction, connectivity=connectivity)
    assert len(ref["lesions"]) > 20
    compare(r, ref, direction, spacing)
    np.testing.assert_array_equal(r.label_array(), naive.label_components(les, connectivity))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0)], ids=["iso", "double-z"])
@pytest.mark.parametrize("seed", [4, 5, 6])
def test_max3d_tie_rule_matches_naive(seed, spacing):
    """With the slice axis first (axial direction) the kernel's scan order is the
    input's C order, so the max-3D tie rule (smallest end points among the pairs
    within the tie tolerance of the maximum) must pick the naive's pair also when
    many pairs tie: isotropic and integer-ratio spacings, boxes and blobs."""
    les = blobs(seed, sigma=2.0).astype(np.uint8)
    les[1:4, 1:6, 1:8] = 1  # a box: four diagonals of equal length
    les[0, :, :] = 0
    liver = np.ones(SHAPE, np.uint8)
    r = measure_arrays(liver, les, spacing, ph.AXIAL)
    ref = naive.measure(liver, les, spacing, ph.AXIAL)
    assert r.ld_axis == 0
    assert [L.id for L in r.lesions] == [g["id"] for g in ref["lesions"]]
    ties = 0
    for L, g in zip(r.lesions, ref["lesions"]):
        ties += not g["max3d_unique"]
        want = [tuple(ph.index_to_lps(p, spacing, ph.AXIAL, None)) for p in g["max3d_endpoints_index"]]
        np.testing.assert_allclose(L.max3d_endpoints_mm, want, atol=1e-9, err_msg=f"lesion {L.id}")
        assert L.max3d_mm == pytest.approx(g["max3d_mm"], abs=1e-9)
    assert ties >= 2  # the case this test is for (the box always ties)


@pytest.mark.parametrize("connectivity", [6, 18, 26])
@pytest.mark.parametrize("seed", [2, 3])
def test_instance_blobs_match_naive(seed, connectivity):
    """Instance labels: random values, two components sharing a value, and
    instances that touch each other (runs of different values in one row)."""
    rng = np.random.default_rng(100 + seed)
    m = blobs(seed)
    lab = naive.label_components(m, 6)
    values = rng.integers(1, 400, size=lab.max() + 1)  # repeats merge components
    values[0] = 0
    inst = values[lab].astype(np.uint16)
    inst[m & (np.arange(SHAPE[2]) % 7 == 0)] = 401  # cuts through blobs: touching instances
    liver = np.zeros(SHAPE, np.uint8)
    liver[2:-2, 3:-3, 1:-1] = 1
    spacing, direction = (0.9, 0.7, 1.3), ph.SAGITTAL
    cfg = {"lesions": {"connectivity": connectivity}}
    r = measure_arrays(liver, inst, spacing, direction, config=cfg, threads=3)
    ref = naive.measure(liver, inst, spacing, direction, connectivity=connectivity)
    assert r.lesion_mode == "instances"
    compare(r, ref, direction, spacing)
    np.testing.assert_array_equal(r.label_array(), inst)
    multi = [g for g in ref["lesions"] if g["components"] > 1]
    assert multi
    for g in multi:
        assert f"instance {g['id']} has {g['components']} components" in r.warnings
    # the same mask read as binary: components across values
    rb = measure_arrays(liver, inst, spacing, direction, config={**cfg, "labels": {"lesion_mode": "binary"}})
    refb = naive.measure(liver, inst, spacing, direction, connectivity=connectivity, mode="binary")
    compare(rb, refb, direction, spacing)
    np.testing.assert_array_equal(rb.label_array(), naive.label_components(inst, connectivity))


@pytest.mark.parametrize("connectivity", [6, 18, 26])
def test_wide_rows_match_naive(connectivity):
    """Rows longer than the scan's 64-column blocks, random sparse voxels, many
    threads: runs and components that cross block boundaries."""
    rng = np.random.default_rng(connectivity)
    shape = (5, 9, 150)
    les = rng.random(shape) < 0.35
    liver = (rng.random(shape) < 0.7).astype(np.uint8)
    spacing = (2.0, 0.7, 0.7)
    r = measure_arrays(liver, les, spacing, ph.AXIAL, config={"lesions": {"connectivity": connectivity}}, threads=4)
    ref = naive.measure(liver, les, spacing, ph.AXIAL, connectivity=connectivity)
    compare(r, ref, ph.AXIAL, spacing)
    np.testing.assert_array_equal(r.label_array(), naive.label_components(les, connectivity))


def test_oblique_direction_with_origin_matches_naive():
    d = ph.rotation((0.3, 1.0, 0.2), 8.0) @ ph.AXIAL
    origin = (-120.0, 33.3, 812.5)
    les = blobs(4)
    liver = np.ones(SHAPE, np.uint8)
    spacing = SPACINGS["thick"]
    r = measure_arrays(liver, les, spacing, d, origin)
    ref = naive.measure(liver, les, spacing, d)
    compare(r, ref, d, spacing, origin=origin)
    for L in r.lesions:
        for p_mm, p_idx in zip(L.ld_endpoints_mm, L.ld_endpoints_index):
            np.testing.assert_allclose(p_mm, ph.index_to_lps(p_idx, spacing, d, origin), atol=1e-9)


def test_tiny_lesions_match_naive():
    """Single voxels, lines along each axis (LD 0 when along the slice axis),
    two-voxel pairs: no SA."""
    les = np.zeros((9, 10, 11), np.uint8)
    les[1, 1, 1] = 1
    les[3:7, 3, 3] = 1  # along axis 0
    les[1, 5:9, 6] = 1  # along axis 1
    les[7, 8, 5:10] = 1  # along axis 2
    les[4, 6, 8:10] = 1
    liver = ph.interior_liver(les.shape)
    for direction in DIRECTIONS.values():
        r = measure_arrays(liver, les, (1.5, 0.8, 0.6), direction)
        ref = naive.measure(liver, les, (1.5, 0.8, 0.6), direction)
        compare(r, ref, direction, (1.5, 0.8, 0.6))
        for L in r.lesions:
            assert L.sa_mm == 0.0 and L.sa_endpoints_index is None and L.sa_endpoints_mm is None


# --------------------------------------------------------------------------- SimpleITK
#
# What ITK's LabelShapeStatisticsImageFilter reports, checked empirically with
# SimpleITK 2.5 (test_simpleitk_feret_convention below pins it):
# - GetFeretDiameter() with ComputeFeretDiameterOn() is the largest distance
#   between the physical points (voxel CENTRES, spacing and direction applied)
#   of the label's border voxels. A 3 x 4 x 5 voxel box at spacing 1 gives
#   sqrt(2^2 + 3^2 + 4^2) = 5.385 mm, not the corner-to-corner sqrt(3^2+4^2+5^2);
#   a single voxel gives 0. Every vertex of the convex hull of the voxel centres
#   is a border voxel, so this is exactly our max3d (clinical-reference.md
#   section 1: distances between voxel centres), not a loose approximation.
# - GetPhysicalSize() is voxel count x voxel volume in mm^3 = 1000 x volume_ml.


def _sitk_image(labels: np.ndarray, spacing, direction, origin=None) -> sitk.Image:
    """(slice, row, col) array -> ITK image; ITK's axis i is our axis 2 - i."""
    img = sitk.GetImageFromArray(labels.astype(np.uint32))
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
    img.SetSpacing([float(s) for s in spacing[::-1]])
    img.SetDirection(d[:, ::-1].ravel().tolist())
    img.SetOrigin([0.0, 0.0, 0.0] if origin is None else [float(o) for o in origin])
    return img


def _sitk_shapes(labels, spacing, direction, origin=None):
    f = sitk.LabelShapeStatisticsImageFilter()
    f.ComputeFeretDiameterOn()
    f.Execute(_sitk_image(labels, spacing, direction, origin))
    return {int(k): (f.GetNumberOfPixels(k), f.GetPhysicalSize(k), f.GetFeretDiameter(k)) for k in f.GetLabels()}


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 0.5, 0.7)])
def test_simpleitk_feret_convention(spacing):
    a = ph.box_index((9, 10, 11), (2, 2, 2), (5, 6, 7))  # 3 x 4 x 5 voxels
    a[7, 8, 9] = True  # and a single voxel
    lab = naive.label_components(a)
    shapes = _sitk_shapes(lab, spacing, None)
    span = (np.array([3, 4, 5]) - 1) * np.asarray(spacing)
    assert shapes[1][2] == pytest.approx(math.sqrt((span**2).sum()), abs=1e-9)  # centre to centre
    assert shapes[2][2] == 0.0
    assert shapes[1][1] == pytest.approx(60 * np.prod(spacing), rel=1e-12)


@pytest.mark.parametrize(
    "direction, origin",
    [(None, None), (ph.SAGITTAL, (10.0, -5.0, 3.0)), (ph.rotation((1, 1, 0), 20.0) @ ph.AXIAL, (1.0, 2.0, 3.0))],
    ids=["identity", "sagittal", "oblique"],
)
@pytest.mark.parametrize("connectivity", [6, 26])
def test_volume_and_feret_match_simpleitk(connectivity, direction, origin):
    les = blobs(5 + connectivity)
    spacing = (1.25, 0.78, 0.78)
    r = measure_arrays(np.ones(SHAPE, np.uint8), les, spacing, direction, origin,
                       config={"lesions": {"connectivity": connectivity}})
    shapes = _sitk_shapes(r.label_array(), spacing, direction, origin)
    assert sorted(shapes) == [L.id for L in r.lesions]
    for L in r.lesions:
        n, mm3, feret = shapes[L.id]
        assert L.voxel_count == n
        assert L.volume_ml * 1000.0 == pytest.approx(mm3, rel=1e-12)
        assert L.max3d_mm == pytest.approx(feret, abs=1e-9)


@pytest.mark.parametrize("direction", DIRECTIONS.values(), ids=DIRECTIONS.keys())
def test_one_label_map_as_both_masks_equals_two_masks(direction):
    """A LiTS-style map (1 liver, 2 lesion) passed as both masks, with the config
    naming the values, gives the measurement of a separate liver and lesion mask
    (the scan's value-set paths against its non-zero paths), whichever axis the
    LD slices run along."""
    les = blobs(7).astype(np.uint8)
    vol = np.zeros(SHAPE, np.uint8)
    vol[2:-2, 3:-3, 1:-1] = 1
    vol[les > 0] = 2
    cfg = {"labels": {"liver": [1, 2], "lesion": [2], "other_lesion_values": "ignore"}}
    one = measure_arrays(vol, vol, SPACINGS["mixed"], direction, config=cfg)
    two = measure_arrays((vol > 0).astype(np.uint8), (vol == 2).astype(np.uint8), SPACINGS["mixed"], direction)
    assert one.lesion_count == two.lesion_count > 20
    assert [L.to_dict() for L in one.lesions] == [L.to_dict() for L in two.lesions]
    assert one.liver.to_dict() == two.liver.to_dict()
