"""Masks onto the image grid: lossless reorientation of real masks, DICOM SEG frame
placement, and one-field-at-a-time geometry mismatches (house style: highdicom's
own bug compared a UID with itself; every validation is tested by changing ONE
field).

Oracles: SimpleITK ``Resample`` (nearest neighbour, identity transform) of the
mask onto the CT -- exact for a mask whose voxel centres coincide with the CT's
-- and dcmqi's own NRRD conversion of its SEG, matched by physical position.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import dicomgen as dg
import liverburden
from liverburden._exceptions import GeometryError, InputError
from liverburden.geometry import match_to_grid
from liverburden.io import load_study, read_seg, read_volume_file

DATA = Path(__file__).parent / "data"
TS_CT = DATA / "totalsegmentator" / "example_ct_dicom"
TS_SEG = DATA / "totalsegmentator" / "example_seg_dicom.nii.gz"
CT3 = DATA / "dcmqi" / "ct-3slice"
SEG = DATA / "dcmqi" / "liver.dcm"
SEG_NRRD = DATA / "dcmqi" / "liver_seg.nrrd"


def _ct_reference(folder: Path) -> sitk.Image:
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    r = sitk.ImageSeriesReader()
    r.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0]))
    return r.Execute()


# ---------------------------------------------------------------------------
# TotalSegmentator: a real multi-label mask stored LAS on the JPEG 2000 CT
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ts_study():
    cfg = liverburden.load_config(
        overrides={"labels": {"liver": [5], "other_liver_values": "ignore", "other_lesion_values": "ignore"}}
    )
    return load_study(TS_CT, TS_SEG, TS_SEG, config=cfg, read_pixels=False)


@pytest.fixture(scope="module")
def ts_expected():
    ct = _ct_reference(TS_CT)
    mask = sitk.ReadImage(str(TS_SEG))
    res = sitk.Resample(mask, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, mask.GetPixelID())
    return sitk.GetArrayFromImage(res), sitk.GetArrayFromImage(mask), ct


def test_totalsegmentator_mask_is_las_on_the_ct_grid(ts_expected):
    # premise: stored with the row axis flipped, yet on the CT's voxel centres
    _, raw, ct = ts_expected
    mask = sitk.ReadImage(str(TS_SEG))
    assert np.allclose(np.reshape(mask.GetDirection(), (3, 3)), np.diag([1.0, -1.0, 1.0]))
    assert np.allclose(np.reshape(ct.GetDirection(), (3, 3)), np.eye(3))
    reoriented = sitk.DICOMOrient(mask, "LPS")
    assert np.allclose(reoriented.GetOrigin(), ct.GetOrigin(), atol=1e-6)
    assert np.allclose(reoriented.GetSpacing(), ct.GetSpacing(), atol=1e-9)


def test_totalsegmentator_liver_equals_simpleitk_nearest_resample(ts_study, ts_expected):
    expected, raw, _ = ts_expected
    got = np.asarray(ts_study.liver.array)
    assert got.shape == expected.shape == (20, 512, 512)
    assert np.array_equal(got, expected)  # every label, not only the liver
    assert int((got == 5).sum()) == 366708
    # the test has teeth: ignoring the orientation would put the liver elsewhere
    assert not np.array_equal(raw == 5, expected == 5)


def test_totalsegmentator_liver_volume_on_the_image_grid(ts_study):
    vox_mm3 = float(np.prod(ts_study.image.spacing_mm))
    assert vox_mm3 == pytest.approx(0.9765625**2 * 2.0)
    assert int((np.asarray(ts_study.liver.array) == 5).sum()) * vox_mm3 / 1000 == pytest.approx(699.44, abs=0.005)


# ---------------------------------------------------------------------------
# dcmqi: DICOM SEG whose frames run opposite to the CT files
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nrrd_by_z():
    img = sitk.ReadImage(str(SEG_NRRD))
    arr = sitk.GetArrayFromImage(img)
    assert np.allclose(np.reshape(img.GetDirection(), (3, 3)), np.eye(3))
    return {round(img.TransformIndexToPhysicalPoint((0, 0, k))[2], 2): arr[k] for k in range(arr.shape[0])}


def _slice_z(vol, k: int) -> float:
    return round(float(vol.index_to_lps([k, 0, 0])[2]), 2)


def test_dcmqi_seg_frames_land_on_the_right_ct_slices(nrrd_by_z):
    st = load_study(CT3, SEG, SEG, config=liverburden.load_config())
    liver = np.asarray(st.liver.array)
    assert st.header.source_kind == "dicom-series"
    assert int((liver > 0).sum()) == 107098
    counts = [int((liver[k] > 0).sum()) for k in range(3)]
    assert counts == [36233, 35645, 35220]  # increasing z, as the NRRD
    for k in range(3):
        assert np.array_equal(liver[k] > 0, nrrd_by_z[_slice_z(st.image, k)] > 0)
    assert st.image.direction[2, 0] == pytest.approx(1.0)  # slice axis along +z


def test_dcmqi_seg_by_own_geometry_equals_by_reference(nrrd_by_z):
    # without the source SOP references the SEG's plane positions define its
    # grid; it must coincide with the CT and give the same frames
    st = load_study(CT3, SEG, SEG, config=liverburden.load_config(), read_pixels=False)
    seg = read_seg(SEG)
    arr = match_to_grid(seg, st.image)
    assert np.array_equal(np.asarray(arr) > 0, np.asarray(st.liver.array) > 0)
    for k in range(3):
        assert np.array_equal(np.asarray(arr[k]) > 0, nrrd_by_z[_slice_z(st.image, k)] > 0)


def test_dcmqi_nrrd_mask_is_accepted_on_the_ct(nrrd_by_z):
    # NRRD path; its origin differs from the CT's IPP by 3e-6 mm (DS rounding)
    st = load_study(CT3, SEG_NRRD, SEG_NRRD, config=liverburden.load_config(), read_pixels=False)
    assert [int((np.asarray(st.liver.array)[k] > 0).sum()) for k in range(3)] == [36233, 35645, 35220]


# ---------------------------------------------------------------------------
# synthetic: lossless reorientation, one-field mismatches, tolerances
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    t = dg.write_series(root / "ct", n=12, rows=32, cols=30, pixel_spacing=(0.8, 0.7), slice_spacing=2.0)
    rng = np.random.default_rng(11)
    labels = np.zeros(t.size, np.uint8)
    labels[1:11, 3:29, 2:27] = 1
    labels[rng.random(t.size) < 0.05] = 0  # asymmetric: any flip or transpose shows
    labels[2:5, 5:9, 4:6] = 1
    lesions = t.box_mask((3, 8, 8), (6, 12, 11))
    les_path = t.write_mask(root / "lesions.nii.gz", lesions)
    return t, labels, les_path, root


def _load(t, liver_path, les_path):
    return load_study(t.folder, liver_path, les_path, config=liverburden.load_config(), read_pixels=False)


REORIENT = {
    "flip_row (LAS)": lambda im: sitk.Flip(im, [False, True, False]),
    "flip_slice": lambda im: sitk.Flip(im, [False, False, True]),
    "flip_all": lambda im: sitk.Flip(im, [True, True, True]),
    "swap_row_col": lambda im: sitk.PermuteAxes(im, [1, 0, 2]),
    "slice_first": lambda im: sitk.PermuteAxes(im, [2, 0, 1]),
    "permute_and_flip": lambda im: sitk.Flip(sitk.PermuteAxes(im, [2, 1, 0]), [True, False, True]),
}


@pytest.mark.parametrize("how", sorted(REORIENT))
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_mask_on_the_grid_in_another_axis_order_is_reoriented_losslessly(grid, tmp_path, how, suffix):
    t, labels, les_path, _ = grid
    img = REORIENT[how](t.sitk_image(labels))
    assert sitk.GetArrayFromImage(img).shape != labels.shape or not np.array_equal(sitk.GetArrayFromImage(img), labels)
    p = tmp_path / f"liver{suffix}"
    sitk.WriteImage(img, str(p))
    st = _load(t, p, les_path)
    assert np.array_equal(np.asarray(st.liver.array), labels)


def _expect_mismatch(t, liver_path, les_path, *needles: str):
    with pytest.raises(GeometryError, match="not on the image grid") as ei:
        _load(t, liver_path, les_path)
    msg = str(ei.value)
    assert str(liver_path) in msg
    assert "image:" in msg and "liver mask:" in msg  # both geometries
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def test_mismatch_slice_spacing(grid, tmp_path):
    t, labels, les_path, _ = grid
    p = t.write_mask(tmp_path / "l.nii.gz", labels, spacing_mm=(2.5, 0.8, 0.7))
    _expect_mismatch(t, p, les_path, "spacing_mm=[2.5, 0.8, 0.7]", "spacing_mm=[2.0, 0.8, 0.7]")


def test_mismatch_pixel_spacing(grid, tmp_path):
    t, labels, les_path, _ = grid
    p = t.write_mask(tmp_path / "l.nii.gz", labels, spacing_mm=(2.0, 0.8, 0.75))
    _expect_mismatch(t, p, les_path, "spacing_mm=[2.0, 0.8, 0.75]", "spacing_mm=[2.0, 0.8, 0.7]")


def test_mismatch_origin_shift_of_half_a_voxel(grid, tmp_path):
    t, labels, les_path, _ = grid
    o = np.asarray(t.origin_mm) + [0.35, 0.0, 0.0]
    p = t.write_mask(tmp_path / "l.nii.gz", labels, origin_mm=o)
    _expect_mismatch(
        t, p, les_path, f"origin_mm={[round(float(v), 4) for v in o]}", f"origin_mm={[round(float(v), 4) for v in t.origin_mm]}"
    )


def test_mismatch_origin_shift_of_one_whole_slice(grid, tmp_path):
    # a mask shifted by exactly one slice has coinciding centres for 11 of 12
    # slices: still a different grid
    t, labels, les_path, _ = grid
    o = np.asarray(t.origin_mm) + [0.0, 0.0, 2.0]
    p = t.write_mask(tmp_path / "l.nii.gz", labels, origin_mm=o)
    _expect_mismatch(t, p, les_path, "offset")


def test_mismatch_size(grid, tmp_path):
    t, labels, les_path, _ = grid
    p = t.write_mask(tmp_path / "l.nii.gz", labels[:-1])
    _expect_mismatch(t, p, les_path, "size=[11, 32, 30]", "size=[12, 32, 30]")


def test_mismatch_rotated_direction(grid, tmp_path):
    t, labels, les_path, _ = grid
    c, s = math.cos(math.radians(5)), math.sin(math.radians(5))
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    p = t.write_mask(tmp_path / "l.nii.gz", labels, direction=rot @ t.direction)
    _expect_mismatch(t, p, les_path, "direction", str(round(c, 4)))


def test_origin_within_tolerance_is_the_same_grid(grid, tmp_path):
    # tolerance 1e-2 of a voxel along each axis (col 0.7, row 0.8, slice 2.0 mm):
    # half of it on every axis is float32 rounding far from the origin, accepted
    t, labels, les_path, _ = grid
    p = t.write_mask(tmp_path / "l.nii.gz", labels, origin_mm=np.asarray(t.origin_mm) + [0.0035, -0.004, 0.01])
    assert np.array_equal(np.asarray(_load(t, p, les_path).liver.array), labels)


def test_origin_just_beyond_tolerance_is_an_error(grid, tmp_path):
    t, labels, les_path, _ = grid
    p = t.write_mask(tmp_path / "l.nii.gz", labels, origin_mm=np.asarray(t.origin_mm) + [0.0105, 0.0, 0.0])
    # 0.015 of a 0.7 mm column: 1.5 x the 1e-2 voxel tolerance
    _expect_mismatch(t, p, les_path, "offset by up to 0.015 voxel along the image col axis")


def test_lesion_mask_mismatch_names_the_lesion_file(grid, tmp_path):
    t, labels, _, _ = grid
    lp = t.write_mask(tmp_path / "liver.nii.gz", labels)
    ep = t.write_mask(tmp_path / "lesions_bad.nii.gz", labels, spacing_mm=(3.0, 0.8, 0.7))
    with pytest.raises(GeometryError, match="lesion mask") as ei:
        _load(t, lp, ep)
    assert str(ep) in str(ei.value)


# ---------------------------------------------------------------------------
# unreadable / implausible mask headers
# ---------------------------------------------------------------------------
def test_mask_file_not_found(tmp_path):
    with pytest.raises(InputError, match="not found") as ei:
        read_volume_file(tmp_path / "nope.nii.gz", "liver mask")
    assert "nope.nii.gz" in str(ei.value)


def test_mask_4d_is_rejected(tmp_path):
    p = tmp_path / "m4.nii.gz"
    sitk.WriteImage(sitk.Image([4, 4, 4, 2], sitk.sitkUInt8), str(p))
    with pytest.raises(InputError, match="3-D"):
        read_volume_file(p, "liver mask")


def _bad_pixdim_file(tmp_path, bad: float) -> Path:
    arr = np.zeros((4, 5, 6), np.uint8)
    arr[1:3, 1:3, 1:3] = 1
    return dg.write_nifti_raw_pixdim(tmp_path / "m.nii", arr, (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), bad_axis=0, bad_value=bad)


def test_nifti_with_nan_pixdim_is_rejected(tmp_path):
    # ITK alone would read a NaN pixdim as 1.0 mm (qform-only header)
    p = _bad_pixdim_file(tmp_path, float("nan"))
    with pytest.raises(InputError, match="(?i)nan.*spacing|spacing.*nan") as ei:
        read_volume_file(p, "liver mask")
    assert str(p) in str(ei.value)


def test_nifti_with_zero_pixdim_is_rejected(tmp_path):
    p = _bad_pixdim_file(tmp_path, 0.0)
    with pytest.raises(InputError, match="(?i)zero|spacing|pixdim"):
        read_volume_file(p, "liver mask")


# --------------------------------------------------------------------------- direct NIfTI read

def _sitk_volume(path: Path):
    img = sitk.ReadImage(str(path))
    if img.GetDimension() == 4:
        img = img[:, :, :, 0]
    d = np.asarray(img.GetDirection()).reshape(3, 3)[:, ::-1]
    return sitk.GetArrayFromImage(img), img.GetSpacing()[::-1], img.GetOrigin(), d


def _oblique_affine(spacing, flip_x: bool):
    a = math.radians(17.0)
    rot = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    if flip_x:
        rot[:, 0] = -rot[:, 0]
    aff = np.eye(4)
    aff[:3, :3] = rot * np.asarray(spacing)[None, :]
    aff[:3, 3] = (-120.5, 33.25, -410.0)
    return aff


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.float32])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("big_endian", [False, True])
def test_direct_nifti_read_equals_simpleitk(tmp_path, dtype, suffix, big_endian):
    """The NIfTI voxels read without SimpleITK's copy: same array, dtype and
    geometry as ``sitk.ReadImage`` (ITK's own LPS conversion), either byte
    order, compressed or not, an oblique flipped affine."""
    version = 1
    import nibabel as nib

    rng = np.random.default_rng(7)
    data = rng.integers(0, 6, size=(13, 11, 7)).astype(dtype)  # (i, j, k) = ITK (x, y, z)
    cls = nib.Nifti1Image if version == 1 else nib.Nifti2Image
    img = cls(data, _oblique_affine((0.8, 0.9, 2.5), flip_x=True))
    if big_endian:
        img = cls(data.astype(data.dtype.newbyteorder(">")), img.affine, img.header.as_byteswapped(">"))
    img.header.set_data_dtype(data.dtype)
    path = tmp_path / f"m{suffix}"
    nib.save(img, str(path))
    if big_endian:
        raw = path.read_bytes() if suffix == ".nii" else __import__("gzip").decompress(path.read_bytes())
        assert raw[:4] == (348 if version == 1 else 540).to_bytes(4, "big")  # the case under test
    vol = read_volume_file(path, "mask")
    arr, spacing, origin, direction = _sitk_volume(path)
    assert vol.array.dtype == arr.dtype
    np.testing.assert_array_equal(vol.array, arr)
    assert vol.array.flags.writeable and vol.array.flags.c_contiguous
    np.testing.assert_allclose(vol.spacing_mm, spacing, rtol=0, atol=1e-12)
    np.testing.assert_allclose(vol.origin_mm, origin, rtol=0, atol=1e-9)
    np.testing.assert_allclose(vol.direction, direction, rtol=0, atol=1e-12)


def test_direct_nifti_read_of_4d_with_one_volume_and_scaled_data(tmp_path):
    """A 4-D file with one time point reads as 3-D; scaled data (scl_slope) goes
    through ITK's reader, which applies the scaling."""
    import nibabel as nib

    data = np.arange(5 * 4 * 3, dtype=np.int16).reshape(5, 4, 3, 1) % 3
    p4 = tmp_path / "t.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([0.7, 0.7, 3.0, 1.0])), str(p4))
    vol = read_volume_file(p4, "mask")
    np.testing.assert_array_equal(vol.array, _sitk_volume(p4)[0])
    ps = tmp_path / "s.nii.gz"
    img = nib.Nifti1Image(data[..., 0], np.diag([0.7, 0.7, 3.0, 1.0]))
    img.header.set_slope_inter(2.0, 1.0)
    nib.save(img, str(ps))
    vol = read_volume_file(ps, "mask")
    np.testing.assert_array_equal(vol.array, _sitk_volume(ps)[0])
    assert vol.array.max() == 2 * 2 + 1


def test_nifti2_is_a_clear_error_as_in_itk(tmp_path):
    """ITK (and so this package) does not read NIfTI-2: one line naming the file."""
    import nibabel as nib

    p = tmp_path / "two.nii.gz"
    nib.save(nib.Nifti2Image(np.ones((4, 4, 4), np.uint8), np.eye(4)), str(p))
    with pytest.raises(InputError, match=r"two\.nii\.gz: cannot read liver mask"):
        read_volume_file(p, "liver mask")


def test_truncated_nifti_gz_names_the_file(tmp_path):
    import nibabel as nib

    p = tmp_path / "cut.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((40, 40, 40), np.uint8), np.eye(4)), str(p))
    import gzip

    raw = gzip.decompress(p.read_bytes())
    p.write_bytes(gzip.compress(raw[: len(raw) - 5000]))
    with pytest.raises(InputError, match=r"cut\.nii\.gz.*truncated"):
        read_volume_file(p, "liver mask")
