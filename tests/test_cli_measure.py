"""``liverburden measure`` end to end: the bundled sample study against its
brute-force truth (``sample_data/study/truth.json``), the bundle against its JSON
Schema and against SimpleITK's reading of the CT; identifiers never leave the
input; the documented exit-0 edge cases (empty lesion mask, allowed gaps).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import logging
from pathlib import Path

import jsonschema
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

import dicomgen as dg
from liverburden.cli import main

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data" / "study"
SCHEMA = ROOT / "src" / "liverburden" / "schemas" / "measurements.schema.json"
SAMPLE_PHI = ["LIVERBURDEN^SAMPLE", "LB-SAMPLE-001"]


def _validate(doc: dict) -> None:
    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    cls(schema).validate(doc)


# ---------------------------------------------------------------------------
# the bundled sample study
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def truth() -> dict:
    return json.loads((SAMPLE / "truth.json").read_text())


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "bundle"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)  # the documented command line, with relative paths
        cap = _Capture()
        with cap:
            rc = main([
                "measure", "--image", "sample_data/study/ct", "--liver", "sample_data/study/liver.nii.gz",
                "--lesions", "sample_data/study/lesions.nii.gz", "--out", str(out),
            ])
    return rc, out, cap.out, cap.err


class _Capture:
    """Capture sys.stdout/err inside a module-scoped fixture (capsys is function-scoped)."""

    def __enter__(self):
        import contextlib
        import io

        self._o, self._e = io.StringIO(), io.StringIO()
        self._cm = [contextlib.redirect_stdout(self._o), contextlib.redirect_stderr(self._e)]
        for c in self._cm:
            c.__enter__()
        return self

    def __exit__(self, *exc):
        for c in reversed(self._cm):
            c.__exit__(*exc)
        self.out, self.err = self._o.getvalue(), self._e.getvalue()
        return False


def _doc(sample_run) -> dict:
    return json.loads((sample_run[1] / "measurements.json").read_text())


def test_sample_exit_0_and_bundle_complete(sample_run):
    rc, out, stdout, stderr = sample_run
    assert rc == 0, stderr
    for name in ("measurements.json", "lesions.csv", "lesion_labels.nii.gz", "inputs.json"):
        assert (out / name).is_file(), name
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # atomic writes left nothing behind


def test_sample_measurements_validate_against_the_schema(sample_run):
    _validate(_doc(sample_run))


def test_sample_lesions_equal_truth(sample_run, truth):
    doc = _doc(sample_run)
    got = {les["id"]: les for les in doc["lesions"]}
    assert doc["lesion_count"] == len(truth["lesions"]) == 6
    assert sorted(got) == [t["id"] for t in truth["lesions"]]
    for t in truth["lesions"]:
        les = got[t["id"]]
        assert les["voxel_count"] == t["voxel_count"], t["id"]
        assert les["volume_ml"] == pytest.approx(t["volume_ml"], abs=1e-6)
        assert les["ld_mm"] == pytest.approx(t["ld_mm"], abs=1e-6)
        assert les["max3d_mm"] == pytest.approx(t["max3d_mm"], abs=1e-6)
        assert les["location"] == ("liver" if t["in_liver"] else "extrahepatic")
        # the same slices (the label map test checks the voxels)
        assert les["bbox_index"]["min"][0] == t["slices"][0]
        assert les["bbox_index"]["max"][0] == t["slices"][1]


def test_sample_liver_and_burden_equal_truth(sample_run, truth):
    liver = _doc(sample_run)["liver"]
    tot = truth["totals"]
    assert liver["volume_ml"] == pytest.approx(truth["liver"]["volume_ml"], abs=1e-6)
    assert liver["tumor_volume_ml"] == pytest.approx(tot["intrahepatic_lesion_volume_ml"], abs=1e-6)
    assert liver["involvement_pct"] == pytest.approx(tot["burden_percent"], abs=1e-9)
    sod = _doc(sample_run)["sum_diameters"]
    assert sod["all_mm"] == pytest.approx(sum(t["ld_mm"] for t in truth["lesions"]), abs=1e-6)


def test_sample_image_geometry_equals_truth(sample_run, truth):
    img = _doc(sample_run)["image"]
    g = truth["geometry"]
    assert img["size"] == g["size"]
    np.testing.assert_allclose(img["spacing_mm"], g["spacing_mm"], atol=1e-9)
    np.testing.assert_allclose(img["origin_mm"], g["origin_mm"], atol=1e-9)
    cols = np.array([g["direction_columns"][k] for k in ("slice", "row", "col")]).T
    np.testing.assert_allclose(img["direction"], cols, atol=1e-12)


def test_sample_truncated_liver_warning(sample_run):
    doc = _doc(sample_run)
    assert doc["liver"]["truncated"] is True
    assert doc["liver"]["reliable"] is False
    w = [x for x in doc["warnings"] if "truncated" in x]
    assert len(w) == 1 and "first slice" in w[0] and "last slice" in w[0]


def test_sample_lesions_csv_matches_json(sample_run, truth):
    doc = _doc(sample_run)
    with open(sample_run[1] / "lesions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["id"]) for r in rows] == [les["id"] for les in doc["lesions"]]
    by_id = {t["id"]: t for t in truth["lesions"]}
    for r in rows:
        t = by_id[int(r["id"])]
        assert int(r["voxel_count"]) == t["voxel_count"]
        assert float(r["volume_ml"]) == pytest.approx(t["volume_ml"], abs=1e-9)
        assert float(r["ld_mm"]) == pytest.approx(t["ld_mm"], abs=1e-6)
        assert float(r["max3d_mm"]) == pytest.approx(t["max3d_mm"], abs=1e-6)
        assert r["location"] == ("liver" if t["in_liver"] else "extrahepatic")


@pytest.fixture(scope="module")
def sample_ct(truth) -> sitk.Image:
    ct = str(SAMPLE / "ct")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(ct, truth["series"]["ct_series_uid"])
    assert len(files) == 20
    r = sitk.ImageSeriesReader()
    r.SetFileNames(files)
    r.MetaDataDictionaryArrayUpdateOff()
    return r.Execute()


def test_sample_label_map_is_on_the_ct_grid_and_holds_the_ids(sample_run, sample_ct, truth):
    doc = _doc(sample_run)
    lab = sitk.ReadImage(str(sample_run[1] / "lesion_labels.nii.gz"))
    assert lab.GetSize() == sample_ct.GetSize()
    np.testing.assert_allclose(lab.GetSpacing(), sample_ct.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(lab.GetOrigin(), sample_ct.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(lab.GetDirection(), sample_ct.GetDirection(), atol=1e-6)
    arr = sitk.GetArrayFromImage(lab)
    ids = sorted(int(v) for v in np.unique(arr) if v != 0)
    assert ids == [les["id"] for les in doc["lesions"]]
    for t in truth["lesions"]:
        assert int((arr == t["id"]).sum()) == t["voxel_count"]
        assert arr[tuple(t["first_voxel_slice_row_col"])] == t["id"]
    # and it is the lesion mask itself, reoriented (LAS -> CT) without resampling
    mask = sitk.ReadImage(str(SAMPLE / "lesions.nii.gz"))
    on_ct = sitk.Resample(mask, sample_ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, mask.GetPixelID())
    assert np.array_equal(arr > 0, sitk.GetArrayFromImage(on_ct) > 0)


def test_sample_inputs_json_hashes_the_inputs(sample_run):
    inputs = json.loads((sample_run[1] / "inputs.json").read_text())
    for role, name in (("liver", "liver.nii.gz"), ("lesions", "lesions.nii.gz")):
        assert inputs["sha256"][role] == hashlib.sha256((SAMPLE / name).read_bytes()).hexdigest()
    assert len(inputs["inputs"]["image"]) == 20  # the CT series only, not the localizer


def _identifiers(truth) -> list[str]:
    s = truth["series"]
    uids = [s["study_uid"], s["ct_series_uid"], s["localizer_series_uid"], s["frame_of_reference_uid"]]
    for f in sorted((SAMPLE / "ct").iterdir()):
        uids.append(str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID))
    return SAMPLE_PHI + uids


def test_sample_outputs_carry_no_identifiers(sample_run, truth):
    rc, out, stdout, stderr = sample_run
    needles = _identifiers(truth)
    texts = {
        "stdout": stdout,
        "stderr": stderr,
        "measurements.json": (out / "measurements.json").read_text(),
        "lesions.csv": (out / "lesions.csv").read_text(),
        "lesion_labels.nii.gz": gzip.decompress((out / "lesion_labels.nii.gz").read_bytes()).decode("latin-1"),
    }
    inputs = json.loads((out / "inputs.json").read_text())
    inputs.pop("inputs")  # the local paths are allowed there, nothing else
    texts["inputs.json (without paths)"] = json.dumps(inputs)
    for where, text in texts.items():
        for n in needles:
            assert n not in text, (where, n)


def test_no_input_paths_writes_no_paths(tmp_path):
    out = tmp_path / "bundle"
    rc = main([
        "measure", "--image", str(SAMPLE / "ct"), "--liver", str(SAMPLE / "liver.nii.gz"),
        "--lesions", str(SAMPLE / "lesions.nii.gz"), "--out", str(out), "--no-input-paths", "--quiet",
    ])
    assert rc == 0
    assert not (out / "inputs.json").exists()
    for f in out.iterdir():
        data = f.read_bytes()
        if f.name.endswith(".gz"):
            data = gzip.decompress(data)
        assert str(SAMPLE).encode() not in data and b"sample_data" not in data, f.name


# ---------------------------------------------------------------------------
# synthetic studies (dicomgen): identifiers at -v, exit-0 edge cases
# ---------------------------------------------------------------------------
def _study(tmp_path, **kw):
    t = dg.write_series(tmp_path / "ct", **kw)
    dg.write_localizer(tmp_path / "ct", study_uid=t.study_uid, frame_uid=t.frame_uid)
    dg.write_junk(tmp_path / "ct")
    n = t.size[0]
    liver = t.write_mask(tmp_path / "liver.nii.gz", t.box_mask((1, 4, 4), (n - 1, 28, 26)))
    return t, liver


def test_verbose_run_leaks_no_identifiers(tmp_path, capfd, caplog):
    t, liver = _study(tmp_path)
    lesions = t.write_mask(tmp_path / "lesions.nii.gz", t.box_mask((3, 8, 8), (6, 14, 12)))
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "out"
    rc = main(["measure", "--image", str(t.folder), "--liver", str(liver), "--lesions", str(lesions), "--out", str(out), "-v"])
    so, se = capfd.readouterr()
    assert rc == 0, se
    texts = [so, se, caplog.text] + [(out / n).read_text() for n in ("measurements.json", "lesions.csv", "inputs.json")]
    for text in texts:
        for needle in dg.PHI_NEEDLES + [dg.UID_ROOT]:
            assert needle not in text, needle
    doc = json.loads((out / "measurements.json").read_text())
    _validate(doc)
    assert doc["lesion_count"] == 1 and doc["lesions"][0]["voxel_count"] == 3 * 6 * 4
    assert doc["source"]["series_number"] == t.series_number


def test_empty_lesion_mask_is_a_complete_response(tmp_path, capfd):
    t, liver = _study(tmp_path)
    lesions = t.write_mask(tmp_path / "lesions.nii.gz", np.zeros(t.size, np.uint8))
    out = tmp_path / "out"
    rc = main(["measure", "--image", str(t.folder), "--liver", str(liver), "--lesions", str(lesions), "--out", str(out)])
    _, err = capfd.readouterr()
    assert rc == 0, err
    doc = json.loads((out / "measurements.json").read_text())
    _validate(doc)
    assert doc["lesion_count"] == 0 and doc["lesions"] == []
    assert doc["liver"]["involvement_pct"] == 0
    assert doc["liver"]["tumor_volume_ml"] == 0
    assert doc["sum_diameters"]["all_mm"] == 0 and doc["sum_diameters"]["recist_mm"] == 0
    assert doc["liver"]["volume_ml"] == pytest.approx(10 * 24 * 22 * 2.0 * 0.8 * 0.7 / 1000)
    with open(out / "lesions.csv", newline="") as fh:
        assert len(list(csv.reader(fh))) == 1  # header only
    assert not sitk.GetArrayFromImage(sitk.ReadImage(str(out / "lesion_labels.nii.gz"))).any()


def test_missing_slice_allowed_is_measured_with_a_warning(tmp_path, capfd):
    t = dg.write_series(tmp_path / "ct")
    t.paths[6].unlink()
    # the masks sit on the regular grid the loader documents for this case:
    # 11 slices from the first to the last position (22 mm / 10 gaps)
    grid = dict(spacing_mm=(2.2, 0.8, 0.7))
    liver = t.write_mask(tmp_path / "liver.nii.gz", np.pad(np.ones((9, 24, 22), np.uint8), ((1, 1), (4, 4), (4, 4))), **grid)
    lesions = t.write_mask(tmp_path / "lesions.nii.gz", np.zeros((11, 32, 30), np.uint8), **grid)
    out = tmp_path / "out"
    argv = ["measure", "--image", str(t.folder), "--liver", str(liver), "--lesions", str(lesions), "--out", str(out)]
    assert main(argv) == 2  # refused by default ...
    capfd.readouterr()
    rc = main(argv + ["--allow-uneven-slices"])
    _, err = capfd.readouterr()
    assert rc == 0, err
    doc = json.loads((out / "measurements.json").read_text())
    _validate(doc)
    w = [x for x in doc["warnings"] if "missing slice" in x]
    assert len(w) == 1 and "measured anyway" in w[0]
    assert doc["image"]["size"] == [11, 32, 30]
    assert doc["image"]["spacing_mm"][0] == pytest.approx(2.2)
