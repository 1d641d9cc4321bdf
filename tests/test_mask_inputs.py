"""Masks as users have them (issue 11 items 2 and 4), on real public data.

* 3D-IRCADb-style ``MASKS_DICOM/<organ>/`` folders: binary DICOM slices (0/255 or
  0/1) sharing the geometry of a real CT series (TotalSegmentator's example CT,
  20 JPEG 2000 slices), written here with pydicom from the real TotalSegmentator
  liver label (5) of that CT. The slices carry no SeriesInstanceUID, as some
  exporters write them.
* TotalSegmentator output folders as they come: ``liver.nii.gz`` of the real
  ``total`` run (example_seg_fast/), the real ``total`` multi-label map, and
  ``liver_segments`` / ``liver_vessels`` files named as that tool names them,
  made here on the real liver's grid.

Every volume is checked against numpy voxel counts x voxel volume (oracle: the
counts, the DICOM headers' spacing, SimpleITK's own series reader for the grid).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from scipy import ndimage
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from liverburden.cli import main

DATA = Path(__file__).parent / "data" / "totalsegmentator"
CT_DICOM = DATA / "example_ct_dicom"
SEG_ON_DICOM = DATA / "example_seg_dicom.nii.gz"  # total map on the DICOM grid, liver = 5
TS_FAST = DATA / "example_seg_fast"  # real per-class output folder of the 'total' task
TS_TOTAL = DATA / "example_seg_fast.nii.gz"  # the same run as one multi-label map


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.out + cap.err


# --------------------------------------------------------------------------- DICOM mask folders


@pytest.fixture(scope="module")
def ct_grid():
    """The real CT's files in SimpleITK's slice order, and the real liver on that grid."""
    r = sitk.ImageSeriesReader()
    files = r.GetGDCMSeriesFileNames(str(CT_DICOM))
    r.SetFileNames(files)
    ct = r.Execute()
    seg = sitk.ReadImage(str(SEG_ON_DICOM))
    # same grid (stored LAS): nearest-neighbour with identity only permutes/flips
    seg_on_ct = sitk.Resample(seg, ct, sitk.Transform(3, sitk.sitkIdentity), sitk.sitkNearestNeighbor, 0)
    liver = sitk.GetArrayFromImage(seg_on_ct) == 5
    assert liver.sum() == 366708  # every liver voxel of the file landed (tests/data/README.md)
    ds0, ds1 = (pydicom.dcmread(f, stop_before_pixels=True) for f in files[:2])
    dz = abs(float(ds1.ImagePositionPatient[2]) - float(ds0.ImagePositionPatient[2]))
    voxel_ml = float(ds0.PixelSpacing[0]) * float(ds0.PixelSpacing[1]) * dz / 1000.0
    return [Path(f) for f in files], liver, voxel_ml


def write_mask_folder(folder: Path, files: list[Path], mask: np.ndarray, on_value: int, *,
                      shift_mm: float = 0.0, drop: int = 0) -> Path:
    """Binary DICOM slices (3D-IRCADb MASKS_DICOM style) with the CT slices' geometry.

    ``mask`` is (slice, row, col) in the order of ``files``; ``shift_mm`` moves every
    ImagePositionPatient along x; ``drop`` leaves out the last slices."""
    folder.mkdir(parents=True)
    for k, f in enumerate(files[: len(files) - drop]):
        src = pydicom.dcmread(f, stop_before_pixels=True)
        ds = pydicom.Dataset()
        for kw in ("StudyInstanceUID", "FrameOfReferenceUID", "Modality", "ImageOrientationPatient",
                   "PixelSpacing", "SliceThickness", "Rows", "Columns", "StudyDate"):
            if kw in src:
                setattr(ds, kw, getattr(src, kw))
        ipp = [float(v) for v in src.ImagePositionPatient]
        ipp[0] += shift_mm
        ds.ImagePositionPatient = ipp
        ds.SOPClassUID = src.file_meta.MediaStorageSOPClassUID  # this CT leaves SOPClassUID blank
        ds.SOPInstanceUID = generate_uid()
        ds.SeriesNumber = 1  # no SeriesInstanceUID at all, as some exporters write mask slices
        ds.InstanceNumber = k + 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = (mask[k].astype(np.uint16) * on_value).tobytes()
        meta = pydicom.dataset.FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out = folder / f"image_{k}"
        pydicom.dcmwrite(out, pydicom.FileDataset(out, ds, file_meta=meta, preamble=b"\0" * 128),
                         enforce_file_format=True)
    return folder


def _lesion_boxes(liver: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two separate lesions inside the real liver (its voxels within two boxes)."""
    idx = np.argwhere(liver)
    lo, hi = idx.min(0), idx.max(0)
    mid = (lo + hi) // 2
    a = np.zeros_like(liver)
    b = np.zeros_like(liver)
    a[mid[0] - 3 : mid[0] + 3, mid[1] - 20 : mid[1] + 5, mid[2] - 40 : mid[2] - 20] = True
    b[mid[0] - 2 : mid[0] + 4, mid[1] - 10 : mid[1] + 10, mid[2] + 10 : mid[2] + 22] = True
    return a & liver, b & liver


def test_ircadb_folders_liver_and_lesions_in_given_order(ct_grid, tmp_path, capsys):
    files, liver, voxel_ml = ct_grid
    a, b = _lesion_boxes(liver)
    assert a.sum() > 0 and b.sum() > 0 and not (a & b).any()
    masks = tmp_path / "MASKS_DICOM"
    write_mask_folder(masks / "liver", files, liver, 255)
    write_mask_folder(masks / "livertumor01", files, a, 1)
    write_mask_folder(masks / "livertumor02", files, b, 255)
    out = tmp_path / "out"
    # tumor 02 first: it must be lesion 1
    code, text = _run(["measure", "--image", str(CT_DICOM), "--liver", str(masks / "liver"), "--lesions",
                       str(masks / "livertumor02"), str(masks / "livertumor01"), "--out", str(out), "--quiet"], capsys)
    assert code == 0, text
    doc = json.loads((out / "measurements.json").read_text())
    assert doc["liver"]["mask_volume_ml"] == pytest.approx(liver.sum() * voxel_ml, rel=1e-9)
    assert doc["liver"]["volume_ml"] == pytest.approx(liver.sum() * voxel_ml, rel=1e-9)  # lesions lie inside
    by_id = {les["id"]: les for les in doc["lesions"]}
    assert sorted(by_id) == [1, 2]
    assert by_id[1]["volume_ml"] == pytest.approx(b.sum() * voxel_ml, rel=1e-9)
    assert by_id[2]["volume_ml"] == pytest.approx(a.sum() * voxel_ml, rel=1e-9)
    assert doc["liver"]["tumor_volume_ml"] == pytest.approx((a.sum() + b.sum()) * voxel_ml, rel=1e-9)
    # the instance ids written to the label map are the JSON's, in the given order
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "lesion_labels.nii.gz")))
    assert sorted(np.bincount(lab.ravel())[1:].tolist()) == sorted([int(a.sum()), int(b.sum())])
    assert doc["inputs"]["liver"]["files"] == len(files)
    assert doc["inputs"]["lesions"]["files"] == 2 * len(files)
    inputs = json.loads((out / "inputs.json").read_text())
    assert inputs["inputs"]["lesions"] == [str((masks / "livertumor02").resolve()), str((masks / "livertumor01").resolve())]
    src = inputs["sources"]["lesions"]
    assert [s["kind"] for s in src] == ["dicom-series", "dicom-series"] and len(src[0]["files"]) == len(files)
    assert inputs["sources"]["liver"][0]["sha256"] == inputs["sha256"]["liver"]
    # compare reloads image and liver from inputs.json this way (frames differ): a folder works
    from liverburden.config import load_config
    from liverburden.io import load_image, load_mask_on

    cfg = load_config(None, None)
    img, hdr, _, _ = load_image(Path(inputs["inputs"]["image"][0]).parent, config=cfg,
                                match_mask=inputs["inputs"]["liver"][0])
    back = load_mask_on(inputs["inputs"]["liver"][0], img, hdr, config=cfg, role="liver", what="liver mask")
    assert int(np.count_nonzero(back.array)) == int(liver.sum())
    # the report reloads the folder masks from inputs.json (no "could not be read", no "changed")
    code, text = _run(["report", str(out)], capsys)
    assert code == 0, text
    html = (out / "report.html").read_text()
    assert "could not be read" not in html and "has changed" not in html and "not found" not in html


def test_lesion_glob_gives_sorted_ids_and_one_folder_keeps_components(ct_grid, tmp_path, capsys):
    files, liver, voxel_ml = ct_grid
    a, b = _lesion_boxes(liver)
    masks = tmp_path / "MASKS_DICOM"
    write_mask_folder(masks / "liver", files, liver, 255)
    write_mask_folder(masks / "livertumor01", files, a, 255)
    write_mask_folder(masks / "livertumor02", files, b, 255)
    out = tmp_path / "glob"
    code, text = _run(["measure", "--image", str(CT_DICOM), "--liver", str(masks / "liver"), "--lesions",
                       str(masks / "livertumor*"), "--out", str(out), "--quiet"], capsys)
    assert code == 0, text
    by_id = {les["id"]: les["volume_ml"] for les in json.loads((out / "measurements.json").read_text())["lesions"]}
    assert by_id == {1: pytest.approx(a.sum() * voxel_ml, rel=1e-9), 2: pytest.approx(b.sum() * voxel_ml, rel=1e-9)}
    # both lesions in ONE folder: a binary mask, split into its components as any binary mask
    write_mask_folder(masks / "both", files, a | b, 1)
    out2 = tmp_path / "one"
    code, text = _run(["measure", "--image", str(CT_DICOM), "--liver", str(masks / "liver"), "--lesions",
                       str(masks / "both"), "--out", str(out2), "--quiet"], capsys)
    assert code == 0, text
    vols = sorted(les["volume_ml"] for les in json.loads((out2 / "measurements.json").read_text())["lesions"])
    assert vols == pytest.approx(sorted([a.sum() * voxel_ml, b.sum() * voxel_ml]), rel=1e-9)


def test_several_components_in_one_input_is_one_lesion_with_a_warning(ct_grid, tmp_path, capsys):
    files, liver, voxel_ml = ct_grid
    a, b = _lesion_boxes(liver)
    masks = tmp_path / "MASKS_DICOM"
    write_mask_folder(masks / "liver", files, liver, 255)
    write_mask_folder(masks / "t1", files, a | b, 255)  # two components, given as one lesion
    write_mask_folder(masks / "t2", files, np.zeros_like(a), 255)  # empty: id 2 has no voxel
    out = tmp_path / "out"
    code, text = _run(["measure", "--image", str(CT_DICOM), "--liver", str(masks / "liver"), "--lesions",
                       str(masks / "t1"), str(masks / "t2"), "--out", str(out), "--quiet"], capsys)
    assert code == 0, text
    doc = json.loads((out / "measurements.json").read_text())
    assert [les["id"] for les in doc["lesions"]] == [1]
    assert doc["lesions"][0]["volume_ml"] == pytest.approx((a.sum() + b.sum()) * voxel_ml, rel=1e-9)
    assert any("instance 1 has 2 components" in w for w in doc["warnings"]), doc["warnings"]


def test_overlapping_lesion_inputs_are_refused(ct_grid, tmp_path, capsys):
    files, liver, _ = ct_grid
    a, _ = _lesion_boxes(liver)
    masks = tmp_path / "M"
    write_mask_folder(masks / "liver", files, liver, 255)
    write_mask_folder(masks / "t1", files, a, 255)
    write_mask_folder(masks / "t2", files, a, 1)
    code, text = _run(["measure", "--image", str(CT_DICOM), "--liver", str(masks / "liver"), "--lesions",
                       str(masks / "t1"), str(masks / "t2"), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 2
    assert "t2" in text and "overlaps lesion input 1" in text


@pytest.mark.parametrize("shift, drop", [(0.1 * 0.9765625, 0), (0.5 * 0.9765625, 0), (0.0, 2)])
def test_dicom_mask_folder_off_grid_names_both_grids(ct_grid, tmp_path, capsys, shift, drop):
    files, liver, _ = ct_grid
    masks = tmp_path / "M"
    write_mask_folder(masks / "liver", files, liver, 255, shift_mm=shift, drop=drop)
    write_mask_folder(masks / "t1", files, _lesion_boxes(liver)[0], 255)
    code, text = _run(["measure", "--image", str(CT_DICOM), "--liver", str(masks / "liver"), "--lesions",
                       str(masks / "t1"), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 2, text
    assert str(masks / "liver") in text and "not on the image grid" in text
    assert text.count("origin_mm") >= 2 or text.count("size") >= 2, text  # both geometries named


def test_folder_with_nothing_usable(ct_grid, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a mask")
    code, text = _run(["measure", "--image", str(CT_DICOM), "--liver", str(empty), "--lesions", str(empty),
                       "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 2
    assert str(empty) in text and "no liver mask in this folder" in text and "TotalSegmentator" in text
    code, text = _run(["measure", "--image", str(CT_DICOM), "--liver", str(SEG_ON_DICOM), "--liver-label", "5",
                       "--ignore-other-labels", "--lesions", str(tmp_path / "nothing*"),
                       "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 2 and "no lesion mask matches this pattern" in text


# --------------------------------------------------------------------------- TotalSegmentator


@pytest.fixture(scope="module")
def ts_liver():
    img = sitk.ReadImage(str(TS_FAST / "liver.nii.gz"))
    arr = sitk.GetArrayFromImage(img) != 0
    assert arr.sum() == 39350
    voxel_ml = float(np.prod(img.GetSpacing())) / 1000.0
    return img, arr, voxel_ml


def _write_like(path: Path, ref: sitk.Image, arr: np.ndarray) -> None:
    out = sitk.GetImageFromArray(arr.astype(np.uint8))
    out.CopyInformation(ref)
    sitk.WriteImage(out, str(path), useCompression=True)


def test_totalsegmentator_folders_as_they_come(ts_liver, tmp_path, capsys):
    ref, liver, voxel_ml = ts_liver
    ts = tmp_path / "ts_total"  # TotalSegmentator -i ct.nii.gz -o ts_total (per-class files)
    shutil.copytree(TS_FAST, ts)
    # liver_segments task: one file per Couinaud segment, numbered as liverburden's segments
    segs = tmp_path / "ts_segments"
    segs.mkdir()
    idx = np.argwhere(liver)
    labels = np.zeros(liver.shape, np.uint8)
    cuts = [np.median(idx[:, k]) for k in range(3)]
    code_of = ((idx[:, 0] > cuts[0]).astype(int) * 4 + (idx[:, 1] > cuts[1]) * 2 + (idx[:, 2] > cuts[2])) + 1
    labels[tuple(idx.T)] = code_of
    for n in range(1, 9):
        _write_like(segs / f"liver_segment_{n}.nii.gz", ref, labels == n)
    # liver_vessels task: liver_tumor.nii.gz (binary, two components here)
    ves = tmp_path / "ts_vessels"
    ves.mkdir()
    tumor = np.zeros(liver.shape, bool)
    deep = ndimage.binary_erosion(liver, iterations=3)
    for c in (np.argwhere(deep)[0], np.argwhere(deep)[-1]):  # two cubes deep inside the real liver, far apart
        tumor[c[0] - 1 : c[0] + 2, c[1] - 2 : c[1] + 2, c[2] - 2 : c[2] + 3] = True
    tumor &= liver
    comp, n_comp = ndimage.label(tumor, structure=np.ones((3, 3, 3)))
    assert n_comp == 2
    _write_like(ves / "liver_tumor.nii.gz", ref, tumor)
    _write_like(ves / "liver_vessels.nii.gz", ref, np.zeros_like(tumor))
    out = tmp_path / "out"
    code, text = _run(["measure", "--image", str(TS_TOTAL), "--liver", str(ts), "--lesions", str(ves),
                       "--segments", str(segs), "--out", str(out), "--quiet"], capsys)
    assert code == 0, text
    doc = json.loads((out / "measurements.json").read_text())
    assert doc["liver"]["mask_volume_ml"] == pytest.approx(liver.sum() * voxel_ml, rel=1e-9)
    assert doc["liver"]["tumor_volume_ml"] == pytest.approx(tumor.sum() * voxel_ml, rel=1e-9)
    assert sorted(les["volume_ml"] for les in doc["lesions"]) == pytest.approx(
        sorted(np.bincount(comp.ravel())[1:] * voxel_ml), rel=1e-9)
    for n in range(1, 9):
        assert doc["anatomy"]["segments"][str(n)]["volume_ml"] == pytest.approx((labels == n).sum() * voxel_ml,
                                                                                 rel=1e-9), n
    assert doc["anatomy"]["unassigned"]["volume_ml"] == pytest.approx(0.0, abs=1e-12)
    inputs = json.loads((out / "inputs.json").read_text())
    assert [Path(f).name for f in inputs["sources"]["liver"][0]["files"]] == ["liver.nii.gz"]
    assert [Path(f).name for f in inputs["sources"]["lesions"][0]["files"]] == ["liver_tumor.nii.gz"]
    assert len(inputs["sources"]["segments"][0]["files"]) == 8


def test_total_map_as_liver_needs_liver_label_5(ts_liver, tmp_path, capsys):
    ref, liver, voxel_ml = ts_liver
    total = sitk.GetArrayFromImage(sitk.ReadImage(str(TS_TOTAL)))
    assert ((total == 5) == liver).all()  # the per-class file is the map's label 5
    empty = tmp_path / "lesions.nii.gz"
    _write_like(empty, ref, np.zeros_like(liver))
    code, text = _run(["measure", "--image", str(TS_TOTAL), "--liver", str(TS_TOTAL), "--lesions", str(empty),
                       "--out", str(tmp_path / "o1"), "--quiet"], capsys)
    assert code == 2
    assert str(TS_TOTAL) in text and "--liver-label 5" in text and "multi-label" in text
    out = tmp_path / "o2"
    code, text = _run(["measure", "--image", str(TS_TOTAL), "--liver", str(TS_TOTAL), "--liver-label", "5",
                       "--ignore-other-labels", "--lesions", str(empty), "--out", str(out), "--quiet"], capsys)
    assert code == 0, text
    doc = json.loads((out / "measurements.json").read_text())
    assert doc["liver"]["volume_ml"] == pytest.approx((total == 5).sum() * voxel_ml, rel=1e-9)
    assert doc["lesion_count"] == 0
    # a folder holding the one multi-label map file is read as that file
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(TS_TOTAL, one / "segmentations.nii.gz")
    code, text = _run(["measure", "--image", str(TS_TOTAL), "--liver", str(one), "--liver-label", "5",
                       "--ignore-other-labels", "--lesions", str(empty), "--out", str(tmp_path / "o3"), "--quiet"],
                      capsys)
    assert code == 0, text


def test_batch_manifest_lesions_parts(ct_grid, tmp_path):
    from liverburden.batch import input_hash, read_manifest
    from liverburden.config import load_config

    files, liver, _ = ct_grid
    a, b = _lesion_boxes(liver)
    m = tmp_path / "M"
    write_mask_folder(m / "liver", files, liver, 255)
    write_mask_folder(m / "t2", files, b, 255)
    write_mask_folder(m / "t1", files, a, 255)
    man = tmp_path / "manifest.csv"
    man.write_text("patient,timepoint,image,liver,lesions\n"
                   f"p1,base,{CT_DICOM},M/liver,M/t2;M/t1\n"
                   f"p1,fu,{CT_DICOM},M/liver,M/t*\n")
    rows = read_manifest(man)
    assert [Path(x).name for x in rows[0].fields["lesions"].split(";")] == ["t2", "t1"]
    assert [Path(x).name for x in rows[1].fields["lesions"].split(";")] == ["t1", "t2"]
    # the resume hash covers every part, in order (t2;t1 is not t1;t2: the ids differ)
    cfg = load_config(None, None)
    assert input_hash(rows[0], cfg) != input_hash(rows[1], cfg)


def test_margin_takes_dicom_mask_folders(ct_grid, tmp_path, capsys):
    files, _, _ = ct_grid
    tum = np.zeros((len(files), 512, 512), bool)
    tum[8:12, 240:260, 240:260] = True
    zone = np.zeros_like(tum)
    zone[6:14, 230:270, 230:270] = True
    m = tmp_path / "M"
    write_mask_folder(m / "tumor", files, tum, 255)
    write_mask_folder(m / "zone", files, zone, 1)
    out = tmp_path / "o"
    code, text = _run(["margin", "--pre", str(CT_DICOM), "--post", str(CT_DICOM), "--tumor", str(m / "tumor"),
                       "--zone", str(m / "zone"), "--registration", "none", "--out", str(out), "--no-pictures",
                       "--quiet"], capsys)
    assert code == 0, text
    doc = json.loads((out / "margin.json").read_text())
    # nearest voxel outside the zone: 3 slices (2 mm) beyond the tumor's last slice; in-plane it is 11 pixels
    assert doc["tumors"][0]["min_margin_mm"] == pytest.approx(6.0, abs=1e-6)
    assert doc["tumors"][0]["volume_ml"] == pytest.approx(tum.sum() * ct_grid[2], rel=1e-9)
    assert doc["inputs"]["tumor"]["files"] == len(files) and doc["inputs"]["zone"]["files"] == len(files)
    assert json.loads((out / "inputs.json").read_text())["inputs"]["tumor"] == [str((m / "tumor").resolve())]
