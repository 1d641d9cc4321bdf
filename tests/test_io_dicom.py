"""DICOM loading: real series against SimpleITK / pydicom / highdicom, synthetic
series (``dicomgen``) against the geometry they were written with.

Oracles (house style 7): SimpleITK's ``ImageSeriesReader`` (GDCM) for real
single-frame series, pydicom's per-frame headers for the multi-frame file, and
the exact truth of the synthetic series. Series selection: ``clinical-reference.md``
section 6 ("select the series explicitly or by rule, never by accident").
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

import dicomgen as dg
import liverburden
from liverburden._exceptions import SeriesSelectionError
from liverburden.cli import main
from liverburden.io import load_study, read_series_pixels, scan_dicom, series_geometry

DATA = Path(__file__).parent / "data"
TS_CT = DATA / "totalsegmentator" / "example_ct_dicom"
CT3 = DATA / "dcmqi" / "ct-3slice"
ECT = DATA / "pydicom" / "eCT_Supplemental.dcm"
D2N = DATA / "dicom2nifti"


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def sitk_series(folder: Path, uid: str | None = None, recursive: bool = False) -> tuple[sitk.Image, list[str]]:
    """SimpleITK/GDCM reading of one series: the independent oracle."""
    if uid is None:
        ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        assert len(ids) == 1, ids
        uid = ids[0]
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid, False, recursive)
    r = sitk.ImageSeriesReader()
    r.SetFileNames(files)
    return r.Execute(), list(files)


def sitk_geometry_in_volume_order(img: sitk.Image) -> tuple[tuple, tuple, np.ndarray]:
    """(spacing, origin, direction) of a SimpleITK image in (slice, row, col) order."""
    d = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    return tuple(img.GetSpacing()[::-1]), tuple(img.GetOrigin()), d[:, ::-1]


def only_volume_series(folder: Path):
    series = [s for s in scan_dicom(folder) if s.is_candidate_image()]
    assert len(series) == 1, [s.describe() for s in series]
    g = series_geometry(series[0])
    return g, read_series_pixels(g)


def box_masks(truth: dg.SeriesTruth, tmp: Path, name: str = "m") -> tuple[Path, Path]:
    liver = truth.box_mask((1, 4, 4), (truth.size[0] - 1, truth.size[1] - 4, truth.size[2] - 4))
    lesion = truth.box_mask((3, 8, 8), (5, 12, 12))
    return truth.write_mask(tmp / f"{name}_liver.nii.gz", liver), truth.write_mask(tmp / f"{name}_lesions.nii.gz", lesion)


# ---------------------------------------------------------------------------
# real data: single-frame series against SimpleITK
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ts_loaded():
    g, arr = only_volume_series(TS_CT)
    img, files = sitk_series(TS_CT)
    return g, arr, img, files


def test_totalsegmentator_jpeg2000_is_really_jpeg2000_and_2mm_spaced():
    # guards the premise of the next tests: a compressed series whose
    # SliceThickness is not its slice spacing
    files = sorted(TS_CT.iterdir())
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"  # JPEG 2000 lossless
    assert float(ds.SliceThickness) != 2.0
    assert len(files) == 20


def test_totalsegmentator_pixels_identical_to_simpleitk(ts_loaded):
    g, arr, img, _ = ts_loaded
    ref = sitk.GetArrayFromImage(img)
    assert arr.dtype == np.int16
    assert arr.shape == ref.shape == (20, 512, 512)
    assert np.array_equal(arr, ref)
    # HU, not stored values: air is about -1000 (GDCM applies the rescale too)
    assert arr.min() <= -1000 < arr.max()


def test_totalsegmentator_geometry_identical_to_simpleitk(ts_loaded):
    g, _, img, files = ts_loaded
    sp, org, d = sitk_geometry_in_volume_order(img)
    np.testing.assert_allclose(g.spacing_mm, sp, rtol=0, atol=1e-9)
    assert g.spacing_mm[0] == pytest.approx(2.0, abs=1e-9)
    np.testing.assert_allclose(g.origin_mm, org, rtol=0, atol=1e-9)
    np.testing.assert_allclose(g.direction, d, rtol=0, atol=1e-12)
    # the same slice order as GDCM (increasing along the normal)
    assert [Path(i.path).name for i in g.instances] == [Path(f).name for f in files]


def test_ct3slice_files_in_decreasing_z_are_sorted_like_simpleitk():
    g, arr = only_volume_series(CT3)
    img, files = sitk_series(CT3)
    ref = sitk.GetArrayFromImage(img)
    assert [Path(i.path).name for i in g.instances] == ["03.dcm", "02.dcm", "01.dcm"]
    assert [Path(f).name for f in files] == ["03.dcm", "02.dcm", "01.dcm"]
    assert np.array_equal(arr.astype(np.int64), ref.astype(np.int64))
    sp, org, d = sitk_geometry_in_volume_order(img)
    np.testing.assert_allclose(g.spacing_mm, sp, atol=1e-9)
    np.testing.assert_allclose(g.origin_mm, org, atol=1e-9)
    np.testing.assert_allclose(g.direction, d, atol=1e-12)
    # spacing from positions (1.0 mm), not SliceThickness (1.25 mm)
    assert g.spacing_mm[0] == pytest.approx(1.0, abs=1e-6)
    assert float(pydicom.dcmread(CT3 / "01.dcm", stop_before_pixels=True).SliceThickness) == pytest.approx(1.25)
    # each slice equals its own file decoded by pydicom, matched by z
    for k, inst in enumerate(g.instances):
        ds = pydicom.dcmread(inst.path)
        assert float(ds.ImagePositionPatient[2]) == pytest.approx(g.origin_mm[2] + k * g.spacing_mm[0], abs=1e-4)
        hu = ds.pixel_array.astype(np.int64) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        assert np.array_equal(arr[k], hu)


D2N_CASES = {
    "compressed_jpeg": "1.2.840.10008.1.2.4.70",
    "compressed_jpegls": "1.2.840.10008.1.2.4.80",
    "compressed_rle": "1.2.840.10008.1.2.5",
}


@pytest.mark.parametrize("case", sorted(D2N_CASES))
def test_dicom2nifti_compressed_mr_matches_simpleitk(case):
    folder = D2N / case / "001"
    ts = {str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID) for f in folder.iterdir()}
    assert ts == {D2N_CASES[case]}
    g, arr = only_volume_series(folder)
    img, files = sitk_series(folder)
    ref = sitk.GetArrayFromImage(img)
    assert np.array_equal(arr.astype(np.int64), ref.astype(np.int64))
    sp, org, d = sitk_geometry_in_volume_order(img)
    np.testing.assert_allclose(g.spacing_mm, sp, atol=1e-9)
    np.testing.assert_allclose(g.origin_mm, org, atol=1e-9)
    np.testing.assert_allclose(g.direction, d, atol=1e-9)
    assert [Path(i.path).name for i in g.instances] == [Path(f).name for f in files]
    # a sagittal series: the slice axis runs along x, the LD axis is not axis 0
    assert abs(g.direction[0, 0]) == pytest.approx(1.0)


def test_dicom2nifti_transfer_syntaxes_decode_to_the_same_volume():
    loaded = [only_volume_series(D2N / c / "001") for c in sorted(D2N_CASES)]
    g0, a0 = loaded[0]
    assert a0.std() > 0
    for g, a in loaded[1:]:
        assert np.array_equal(a, a0)
        assert g.spacing_mm == g0.spacing_mm and g.origin_mm == g0.origin_mm
        np.testing.assert_array_equal(g.direction, g0.direction)


# ---------------------------------------------------------------------------
# real data: enhanced multi-frame CT (pydicom eCT_Supplemental, x flipped)
# ---------------------------------------------------------------------------
def _ect_frames():
    """Per-frame truth from pydicom: IPP, IOP, pixel spacing, HU."""
    ds = pydicom.dcmread(ECT)
    sh = ds.SharedFunctionalGroupsSequence[0]
    iop = np.array([float(v) for v in sh.PlaneOrientationSequence[0].ImageOrientationPatient])
    ps = np.array([float(v) for v in sh.PixelMeasuresSequence[0].PixelSpacing])
    pvt = sh.PixelValueTransformationSequence[0]
    hu = ds.pixel_array.astype(np.float64) * float(pvt.RescaleSlope) + float(pvt.RescaleIntercept)
    ipp = np.array([[float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient] for f in ds.PerFrameFunctionalGroupsSequence])
    return iop, ps, ipp, hu


@pytest.fixture(scope="module")
def ect_study(tmp_path_factory):
    """load_study on the multi-frame file with a mask written on pydicom's grid."""
    iop, ps, ipp, hu = _ect_frames()
    normal = dg.normal_of(iop)
    order = np.argsort(ipp @ normal)  # conventions: increasing along the normal
    dz = float(np.diff(ipp[order] @ normal)[0])
    truth_dir = np.stack([normal, iop[3:], iop[:3]], axis=1)
    tmp = tmp_path_factory.mktemp("ect")
    mask = np.zeros(hu.shape, np.uint8)
    mask[:, 100:300, 150:200] = 1
    mask[order[0], 100:110, 150:160] = 2  # marks the first slice (in normal order)
    img = sitk.GetImageFromArray(mask[order])
    img.SetSpacing([ps[1], ps[0], dz])
    img.SetOrigin(ipp[order[0]].tolist())
    img.SetDirection(truth_dir[:, ::-1].reshape(-1).tolist())
    mp = tmp / "ect_mask.nii.gz"
    sitk.WriteImage(img, str(mp))
    st = load_study(ECT, mp, mp, config=liverburden.load_config())
    return st, (iop, ps, ipp, hu, order, normal)


def test_multiframe_pixels_sit_where_pydicom_says(ect_study):
    st, (iop, ps, ipp, hu, order, normal) = ect_study
    vol = st.image
    assert st.header.source_kind == "dicom-multiframe"
    assert vol.shape == (2, 512, 512)
    # every voxel of the loaded volume, mapped to LPS, then back to (frame,
    # row, col) with pydicom's per-frame IPP/IOP: values must agree exactly
    idx = np.stack(np.meshgrid(np.arange(2), np.arange(0, 512, 7), np.arange(0, 512, 5), indexing="ij"), -1).reshape(-1, 3)
    lps = vol.index_to_lps(idx)
    frame = np.array([int(np.argmin(np.abs(ipp @ normal - p @ normal))) for p in lps])
    rel = lps - ipp[frame]
    col = rel @ iop[:3] / ps[1]
    row = rel @ iop[3:] / ps[0]
    assert np.allclose(rel @ normal, 0, atol=1e-3)
    assert np.allclose(col, np.round(col), atol=1e-3) and np.allclose(row, np.round(row), atol=1e-3)
    expect = hu[frame, np.round(row).astype(int), np.round(col).astype(int)]
    got = vol.array[idx[:, 0], idx[:, 1], idx[:, 2]]
    assert np.array_equal(got, expect)
    assert np.allclose(np.asarray(vol.spacing_mm)[[1, 2]], ps)
    assert vol.spacing_mm[0] == pytest.approx(10.0)


def test_multiframe_mask_on_pydicom_grid_is_reoriented_losslessly(ect_study):
    st, (iop, ps, ipp, hu, order, normal) = ect_study
    liver = st.liver.array
    assert int((liver > 0).sum()) == 2 * 200 * 50
    # the marker lies on the frame that pydicom places first along the normal:
    # find the loaded slice at that position
    k = int(np.argmin(np.abs(st.image.index_to_lps([[0, 0, 0], [1, 0, 0]]) @ normal - ipp[order[0]] @ normal)))
    assert int((liver[k] == 2).sum()) == 100
    assert int((liver[1 - k] == 2).sum()) == 0


def test_multiframe_geometry_agrees_with_simpleitk_physically(ect_study):
    st, _ = ect_study
    img = sitk.ReadImage(str(ECT))
    ref = sitk.GetArrayFromImage(img)
    vol = st.image
    for idx in [(0, 0, 0), (1, 0, 0), (0, 511, 0), (0, 0, 511), (1, 511, 511), (1, 200, 300)]:
        p = vol.index_to_lps(idx)
        ci = img.TransformPhysicalPointToContinuousIndex(p.tolist())
        ii = np.round(ci).astype(int)
        assert np.allclose(ci, ii, atol=1e-3)
        assert vol.array[idx] == ref[ii[2], ii[1], ii[0]]


def test_multiframe_slice_axis_follows_the_iop_normal(ect_study):
    st, (iop, ps, ipp, hu, order, normal) = ect_study
    np.testing.assert_allclose(st.image.direction[:, 0], normal, atol=1e-9)
    np.testing.assert_allclose(st.image.origin_mm, ipp[order[0]], atol=1e-6)


# ---------------------------------------------------------------------------
# synthetic series: sorting, rescale, junk
# ---------------------------------------------------------------------------
IOPS = {
    "axial": dg.AXIAL,
    "axial_x_flipped": (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "sagittal": (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
    "coronal": (1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
    "oblique": dg.iop_rotated((1.0, 0.3, 0.2), 25.0),
}


@pytest.mark.parametrize("name", sorted(IOPS))
def test_synthetic_series_sorted_by_position_not_name_or_instance_number(tmp_path, name):
    t = dg.write_series(tmp_path / "ct", iop=IOPS[name], seed=7)
    dg.write_localizer(tmp_path / "ct", study_uid=t.study_uid, frame_uid=t.frame_uid)
    dg.write_junk(tmp_path / "ct")
    # premise: neither names nor InstanceNumbers give the slice order
    inst = [int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber) for p in t.paths]
    assert inst != sorted(inst) and inst != sorted(inst, reverse=True)
    assert [p.name for p in t.paths] != sorted(p.name for p in t.paths)
    assert len({p.parent for p in t.paths}) > 1
    g, arr = only_volume_series(tmp_path / "ct")
    assert [i.path for i in g.instances] == t.paths
    assert arr.dtype == np.int16
    assert np.array_equal(arr, t.hu)
    np.testing.assert_allclose(g.origin_mm, t.origin_mm, atol=1e-6)
    np.testing.assert_allclose(g.spacing_mm, t.spacing_mm, atol=1e-6)
    np.testing.assert_allclose(g.direction, t.direction, atol=1e-7)
    # SimpleITK agrees (its reader needs the file list of the series)
    img, _ = sitk_series(tmp_path / "ct", t.series_uid, recursive=True)
    assert np.array_equal(sitk.GetArrayFromImage(img).astype(np.int64), arr.astype(np.int64))
    sp, org, d = sitk_geometry_in_volume_order(img)
    np.testing.assert_allclose(org, g.origin_mm, atol=1e-4)
    np.testing.assert_allclose(d, g.direction, atol=1e-6)


def test_rescale_integer_gives_int16_hu(tmp_path):
    t = dg.write_series(tmp_path / "ct", slope=1.0, intercept=-1000.0)
    g, arr = only_volume_series(tmp_path / "ct")
    assert arr.dtype == np.int16
    assert np.array_equal(arr, t.stored.astype(np.int64) - 1000)


def test_rescale_non_integer_slope_gives_float(tmp_path):
    t = dg.write_series(tmp_path / "ct", slope=0.25, intercept=-1024.5)
    g, arr = only_volume_series(tmp_path / "ct")
    assert arr.dtype.kind == "f"
    np.testing.assert_allclose(arr, t.stored * 0.25 - 1024.5, rtol=0, atol=1e-3)
    assert not np.allclose(arr, np.round(arr))  # the fractions survived
    img, _ = sitk_series(tmp_path / "ct", t.series_uid, recursive=True)
    np.testing.assert_allclose(arr, sitk.GetArrayFromImage(img), atol=1e-3)


def test_rescale_intercept_applied_per_slice(tmp_path):
    # half the slices stored with another intercept: HU must be continuous
    hu = np.random.default_rng(3).integers(-1000, 2000, size=(12, 32, 30))
    stored = (hu + 1024).astype(np.uint16)

    def other_intercept(k, ds):
        if k % 2:
            ds.RescaleIntercept = "-1000"
            ds.PixelData = (hu[k] + 1000).astype("<u2").tobytes()

    dg.write_series(tmp_path / "ct", stored=stored, intercept=-1024.0, per_slice=other_intercept)
    g, arr = only_volume_series(tmp_path / "ct")
    assert np.array_equal(arr, hu)


def test_scan_skips_junk_and_keeps_the_localizer_apart(tmp_path):
    t = dg.write_series(tmp_path / "ct")
    loc = dg.write_localizer(tmp_path / "ct", study_uid=t.study_uid, frame_uid=t.frame_uid)
    dg.write_junk(tmp_path / "ct")
    series = scan_dicom(tmp_path / "ct")
    assert sorted(s.n_files for s in series) == [len(loc), 12]
    assert [s.n_files for s in series if s.is_candidate_image()] == [12]


# ---------------------------------------------------------------------------
# series selection
# ---------------------------------------------------------------------------
@pytest.fixture
def triphasic(tmp_path):
    """Three series of one study in one folder (+ localizer + junk).

    arterial (#3) and portal venous (#4) share one grid; the delayed phase (#5)
    starts 10 mm higher. Descriptions carry digits like real ones do.
    """
    root = tmp_path / "study"
    study, frame = dg.new_uid(), dg.new_uid()
    kw = dict(study_uid=study, frame_uid=frame)
    art = dg.write_series(root, series_number=3, description="ART 3.0 B30f", seed=1, **kw)
    ven = dg.write_series(root, series_number=4, description="PV 3.0 B30f", seed=2, **kw)
    dl = dg.write_series(root, series_number=5, description="DELAY 5.0", seed=3, origin=(-11.5, -22.25, -30.0), **kw)
    dg.write_localizer(root, **kw)
    dg.write_junk(root)
    return root, {"art": art, "ven": ven, "delay": dl}


def test_series_chosen_automatically_when_only_one_fits_the_mask(triphasic, tmp_path):
    root, s = triphasic
    lp, ep = box_masks(s["delay"], tmp_path)
    st = load_study(root, lp, ep, config=liverburden.load_config())
    assert st.header.series_number == 5
    assert np.array_equal(st.image.array, s["delay"].hu)
    np.testing.assert_allclose(st.image.origin_mm, s["delay"].origin_mm, atol=1e-6)


def test_two_fitting_series_is_an_error_listing_the_candidates(triphasic, tmp_path):
    root, s = triphasic
    lp, ep = box_masks(s["ven"], tmp_path)
    with pytest.raises(SeriesSelectionError, match="cannot choose the image series") as ei:
        load_study(root, lp, ep, config=liverburden.load_config())
    msg = str(ei.value)
    assert str(root) in msg
    for t in (s["art"], s["ven"]):
        assert f"series number {t.series_number}" in msg
        assert t.description not in msg  # free text: only with --show-descriptions (issue 12 item 4)
    assert "--show-descriptions" in msg
    with pytest.raises(SeriesSelectionError) as ei, liverburden.io.show_descriptions():
        load_study(root, lp, ep, config=liverburden.load_config())
    assert all(t.description in str(ei.value) for t in (s["art"], s["ven"]))
    assert msg.count("12 slices") >= 2
    assert "size=[12, 32, 30]" in msg and "spacing_mm=" in msg and "origin_mm=" in msg
    assert "--series" in msg
    for needle in dg.PHI_NEEDLES + [dg.UID_ROOT]:
        assert needle not in msg


@pytest.mark.parametrize("how", ["uid", "number", "description", "pattern"])
def test_series_selected_explicitly(triphasic, tmp_path, how):
    root, s = triphasic
    ven = s["ven"]
    lp, ep = box_masks(ven, tmp_path)
    selector = {"uid": ven.series_uid, "number": "4", "description": "PV 3.0", "pattern": "pv*b30F"}[how]
    st = load_study(root, lp, ep, series=selector, config=liverburden.load_config())
    assert st.header.series_number == 4
    assert np.array_equal(st.image.array, ven.hu)


def test_series_number_is_not_confused_with_a_digit_in_a_description(triphasic, tmp_path):
    root, s = triphasic
    lp, ep = box_masks(s["art"], tmp_path)
    st = load_study(root, lp, ep, series="3", config=liverburden.load_config())
    assert st.header.series_number == 3
    assert np.array_equal(st.image.array, s["art"].hu)


def test_selector_matching_nothing_lists_the_series(triphasic, tmp_path):
    root, s = triphasic
    lp, ep = box_masks(s["ven"], tmp_path)
    with pytest.raises(SeriesSelectionError, match="no series matches --series 'NOPE'") as ei:
        load_study(root, lp, ep, series="NOPE", config=liverburden.load_config())
    assert "series number 4" in str(ei.value) and "series number 5" in str(ei.value)


def test_ambiguous_series_at_verbose_leaks_no_identifiers(triphasic, tmp_path, capfd, caplog):
    root, s = triphasic
    lp, ep = box_masks(s["ven"], tmp_path)
    caplog.set_level(logging.DEBUG)
    rc = main(["measure", "--image", str(root), "--liver", str(lp), "--lesions", str(ep), "--out", str(tmp_path / "o"), "-v"])
    out, err = capfd.readouterr()
    assert rc == 2
    assert "cannot choose the image series" in err
    text = out + err + caplog.text
    for needle in dg.PHI_NEEDLES + [dg.UID_ROOT]:
        assert needle not in text, needle
    assert not (tmp_path / "o" / "measurements.json").exists()


def test_signed_and_unsigned_slices_in_one_series_widen_never_wrap(tmp_path):
    """One slice stored as signed 16-bit (PixelRepresentation 1, a value below
    zero), the others unsigned with values above 32767: the volume holds every
    stored value plus the intercept, no wrap-around in either direction."""
    rng = np.random.default_rng(3)
    stored = rng.integers(0, 3000, size=(12, 32, 30)).astype(np.uint16)
    stored[2, 0, 0] = 40000  # only representable unsigned
    t = dg.write_series(tmp_path / "ct", stored=stored)
    for p in t.paths:  # all 16 bits stored (dicomgen writes 12)
        dg.edit(p, BitsStored=16, HighBit=15)
    signed = stored[6].astype(np.int16)
    signed[0, 0] = -500  # only representable signed
    dg.edit(t.paths[6], PixelRepresentation=1, PixelData=signed.astype("<i2").tobytes())
    _, px = only_volume_series(t.folder)
    want = stored.astype(np.float64)
    want[6] = signed
    want += t.intercept
    np.testing.assert_array_equal(px.astype(np.float64), want)
