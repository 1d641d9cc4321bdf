"""``liverburden margin`` end to end on synthetic CT pairs written as DICOM.

The pre (planning) and post (control) scans are the ``regphantom`` patient,
written by ``dicomgen`` as CT series (pre: uint16 stored values with a -1024
intercept; post: signed int16 with its own rescale, an oblique grid, another
field of view and spacing), the post one moved by a known rigid map T. Three
spherical tumors on the pre grid and their ablation zones on the post grid give
analytic margins Rz - Rt - |offset|: about +8 mm (A0), +2.5 mm (A1) and -2 mm
(A2). Bad inputs give exit 2 and one stderr line naming the file.
"""

from __future__ import annotations

import csv
import json
import re
from importlib import resources
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import SimpleITK as sitk

import dicomgen as dg
import regphantom as rp
from liverburden.cli import main
from liverburden.margin import margins_arrays
from liverburden.pipeline import MARGIN_CSV_COLUMNS

#: Pre grid (slice, row, col): finer than the registration phantoms so that voxel
#: discretisation (half a voxel diagonal, 1.3 mm) leaves room in the 1.5 mm tolerance.
PRE = dict(size=(56, 150, 180), spacing=(2.0, 1.5, 1.5), origin=(-150.0, -120.0, -56.0))
#: Post grid: oblique (tilted 5 deg about x), other spacing and field of view.
POST = dict(size=(62, 128, 150), spacing=(2.0, 1.75, 1.8), origin=(-150.0, -118.0, -62.0), iop_deg=5.0)
MOTION = dict(rot=(3.0, -2.5, 4.0), trans=(9.0, -7.0, 11.0))

#: (tumor centre, tumor radius, zone centre, zone radius) in the anatomy's (pre) frame, LPS mm.
LESIONS = [
    ((-95.0, -20.0, 12.0), 7.0, (-94.0, -20.5, 12.0), 16.0),  # 16 - 7 - 1.12 = 7.88 -> A0
    ((-40.0, 8.0, -18.0), 6.0, (-38.5, 8.0, -17.0), 10.3),    # 10.3 - 6 - 1.80 = 2.50 -> A1
    ((-30.0, -35.0, 20.0), 6.0, (-24.0, -35.0, 20.0), 10.0),  # 10 - 6 - 6 = -2.0 -> A2
]
EXPECTED = [
    (rz - rt - float(np.linalg.norm(np.subtract(cz, ct))), cls)
    for (ct, rt, cz, rz), cls in zip(LESIONS, ["A0", "A1", "A2"])
]

SCHEMA = json.loads(resources.files("liverburden").joinpath("schemas/margin.schema.json").read_text("utf-8"))


def _stored_uint16(hu: np.ndarray) -> np.ndarray:
    return np.clip(np.round(hu + 1024.0), 0, 4095).astype(np.uint16)


def write_ct(folder: Path, grid: dict, hu: np.ndarray, *, signed: bool, study_uid=None, frame_uid=None, seed=0):
    """A CT series with the phantom's HU; ``signed``: int16 stored values, slope 1, intercept 0."""
    n, rows, cols = grid["size"]
    iop = dg.iop_rotated((1.0, 0.0, 0.0), grid.get("iop_deg", 0.0))
    per_slice = None
    if signed:
        vals = np.round(hu).astype(np.int16)

        def per_slice(k, ds):
            ds.PixelRepresentation = 1
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.RescaleIntercept = "0"
            ds.RescaleSlope = "1"
            ds.PixelData = np.ascontiguousarray(vals[k]).astype("<i2").tobytes()

    return dg.write_series(
        folder, n=n, rows=rows, cols=cols, pixel_spacing=grid["spacing"][1:], slice_spacing=grid["spacing"][0],
        iop=iop, origin=grid["origin"], stored=_stored_uint16(hu), slope=1.0, intercept=-1024.0,
        study_uid=study_uid, frame_uid=frame_uid, seed=seed, per_slice=per_slice,
    )


class Study:
    """The pair on disk, with the truth."""

    def __init__(self, root: Path):
        self.root = root
        self.R, self.t = rp.rotation(*MOTION["rot"]), np.asarray(MOTION["trans"])
        d_pre = np.eye(3)[:, ::-1]
        d_post = rp.oblique_direction(POST["iop_deg"])
        tumors = [(ct, rt) for ct, rt, _, _ in LESIONS]
        zones = [(cz, rz) for _, _, cz, rz in LESIONS]
        pre = rp.make_volume(PRE["size"], PRE["spacing"], PRE["origin"], d_pre, seed=1, tumors=tumors)
        post = rp.make_volume(POST["size"], POST["spacing"], POST["origin"], d_post, transform=(self.R, self.t),
                              seed=2, zones=zones, liver_shift_hu=25.0)
        self.pre_t = write_ct(root / "pre", PRE, pre.array, signed=False, seed=1)
        self.post_t = write_ct(root / "post", POST, post.array, signed=True, study_uid=dg.new_uid(),
                               frame_uid=dg.new_uid(), seed=2)
        # the written geometry is the phantom's (dicomgen's truth)
        np.testing.assert_allclose(self.pre_t.direction, d_pre, atol=1e-9)
        np.testing.assert_allclose(self.post_t.direction, d_post, atol=1e-6)
        np.testing.assert_allclose(self.post_t.origin_mm, POST["origin"], atol=1e-6)
        self.pre_dir, self.post_dir = root / "pre", root / "post"
        self.tumor_arr = np.zeros(PRE["size"], np.uint8)
        for ct, rt, _, _ in LESIONS:
            self.tumor_arr |= rp.ellipsoid_mask(PRE["size"], PRE["spacing"], PRE["origin"], d_pre, ct, rt)
        self.zone_arr = np.zeros(POST["size"], np.uint8)
        for _, _, cz, rz in LESIONS:
            self.zone_arr |= rp.ellipsoid_mask(POST["size"], POST["spacing"], POST["origin"], d_post, cz, rz,
                                               transform=(self.R, self.t))
        self.liver_pre_arr = rp.make_volume(PRE["size"], PRE["spacing"], PRE["origin"], d_pre, kind="liver").array
        self.liver_post_arr = rp.make_volume(POST["size"], POST["spacing"], POST["origin"], d_post,
                                             transform=(self.R, self.t), kind="liver").array
        self.tumor = self.pre_t.write_mask(root / "tumor_pre.nii.gz", self.tumor_arr)
        self.zone = self.post_t.write_mask(root / "zone_post.nii.gz", self.zone_arr)
        self.liver_pre = self.pre_t.write_mask(root / "liver_pre.nii.gz", self.liver_pre_arr)
        self.liver_post = self.post_t.write_mask(root / "liver_post.nii.gz", self.liver_post_arr)
        self.liver_points = self.pre_t.index_to_lps(np.argwhere(self.liver_pre_arr))

    def argv(self, out: Path, *extra: str, pre=None, post=None, tumor=None, zone=None, liver_pre=None,
             liver_post=None, livers=True) -> list[str]:
        a = ["margin", "--pre", str(pre or self.pre_dir), "--post", str(post or self.post_dir),
             "--tumor", str(tumor or self.tumor), "--zone", str(zone or self.zone)]
        if livers:
            a += ["--liver-pre", str(liver_pre or self.liver_pre), "--liver-post", str(liver_post or self.liver_post)]
        return a + ["--out", str(out), *extra]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Study:
    return Study(tmp_path_factory.mktemp("margin_study"))


@pytest.fixture(scope="module")
def main_run(study):
    out = study.root / "out_main"
    rc = main(study.argv(out, "--quiet"))
    return rc, out


def _doc(out: Path) -> dict:
    return json.loads((out / "margin.json").read_text())


# --------------------------------------------------------------------------- the main case
def test_exit_and_schema(main_run):
    rc, out = main_run
    assert rc == 0
    doc = _doc(out)
    jsonschema.validate(doc, SCHEMA)
    assert doc["axes"] == ["slice", "row", "col"]
    assert doc["registration"]["method"] == "affine"
    assert doc["registration"]["ok"] is True, doc["registration"]["reason"]
    for k in ("final_metric", "iterations", "stop_condition", "liver_dice", "liver_msd_mm", "liver_hd95_mm"):
        assert doc["registration"][k] is not None, k
    assert doc["registration"]["liver_dice"] > 0.95
    assert doc["registration"]["liver_msd_mm"] < 1.0


def test_recovered_transform_mean_over_the_liver(main_run, study):
    _, out = main_run
    M = _doc(out)["registration"]["matrix_lps"]
    err = rp.transform_error(M, study.R, study.t, study.liver_points)
    assert err.mean() < 1.0, (err.mean(), err.max())


def test_recovered_transform_max_over_the_liver(main_run, study):
    _, out = main_run
    M = _doc(out)["registration"]["matrix_lps"]
    err = rp.transform_error(M, study.R, study.t, study.liver_points)
    assert err.max() < 1.0, (err.mean(), err.max())


def test_whole_image_metric_via_config_file(study, tmp_path):
    """--config with [registration] metric_mask = "none": < 1 mm everywhere over the liver, same classes."""
    cf = tmp_path / "whole.toml"
    cf.write_text('[registration]\nmetric = "mattes"\nmetric_mask = "none"\n')
    out = tmp_path / "out"
    assert main(study.argv(out, "--quiet", "--config", str(cf))) == 0
    doc = _doc(out)
    assert "whole image" in doc["registration"]["metric"]
    err = rp.transform_error(doc["registration"]["matrix_lps"], study.R, study.t, study.liver_points)
    assert err.mean() < 0.6 and err.max() < 1.0, (err.mean(), err.max())
    assert sorted(t["classification"] for t in doc["tumors"]) == ["A0", "A1", "A2"]


def test_margins_and_classes(main_run, study):
    _, out = main_run
    doc = _doc(out)
    tumors = doc["tumors"]
    assert [t["id"] for t in tumors] == [1, 2, 3]
    # ids are in C order of each component's first voxel: match them to the lesions by position
    by_pos = []
    for t in tumors:
        p = np.asarray(t["min_margin_point_mm"])
        k = int(np.argmin([np.linalg.norm(p - np.asarray(ct)) - rt for ct, rt, _, _ in LESIONS]))
        by_pos.append(k)
    assert sorted(by_pos) == [0, 1, 2]
    for t, k in zip(tumors, by_pos):
        want, cls = EXPECTED[k]
        assert abs(t["min_margin_mm"] - want) <= 1.5, (k, t["min_margin_mm"], want)
        assert t["classification"] == cls, (k, t["classification"], t["min_margin_mm"])
        assert t["uncertainty_mm"] == pytest.approx(
            np.sqrt(doc["registration"]["liver_msd_mm"] ** 2 + (0.5 * max(PRE["spacing"])) ** 2), abs=1e-9)
        sf = t["surface_fraction"]
        assert sf["below_0"] + sf["from_0_to_threshold"] + sf["at_least_threshold"] == pytest.approx(1.0)
        assert (t["coverage_pct"] < 100.0) == (cls == "A2")


def test_transform_file(main_run, study):
    _, out = main_run
    tfm = out / "transform_pre_to_post.tfm"
    tx = sitk.ReadTransform(str(tfm))
    M = np.asarray(_doc(out)["registration"]["matrix_lps"])
    pts = study.liver_points[::5000]
    got = np.asarray([tx.TransformPoint(tuple(float(v) for v in p)) for p in pts])
    np.testing.assert_allclose(got, pts @ M[:3, :3].T + M[:3, 3], atol=1e-5)


def test_zone_in_pre_grid(main_run, study):
    _, out = main_run
    img = sitk.ReadImage(str(out / "zone_in_pre.nii.gz"))
    arr = sitk.GetArrayFromImage(img)
    assert arr.shape == PRE["size"]
    np.testing.assert_allclose(img.GetSpacing(), PRE["spacing"][::-1], atol=1e-6)
    np.testing.assert_allclose(img.GetOrigin(), study.pre_t.origin_mm, atol=1e-4)
    np.testing.assert_allclose(np.asarray(img.GetDirection()).reshape(3, 3), study.pre_t.direction[:, ::-1], atol=1e-6)
    # it is the zone, carried: Dice against the zones drawn analytically on the pre grid
    want = np.zeros(PRE["size"], bool)
    for _, _, cz, rz in LESIONS:
        want |= rp.ellipsoid_mask(PRE["size"], PRE["spacing"], PRE["origin"], np.eye(3)[:, ::-1], cz, rz).astype(bool)
    got = arr > 0
    assert 2 * np.count_nonzero(got & want) / (got.sum() + want.sum()) > 0.9


def test_pngs(main_run):
    import matplotlib.image as mpimg

    _, out = main_run
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 3
    for p in pngs:
        im = mpimg.imread(p)
        assert im.ndim == 3 and min(im.shape[:2]) >= 100
        assert float(np.std(im[..., :3])) > 0.02, p  # not blank


def test_csv(main_run):
    _, out = main_run
    rows = list(csv.reader((out / "margin.csv").open()))
    assert rows[0] == MARGIN_CSV_COLUMNS
    assert len(rows) == 1 + 3
    doc = _doc(out)
    for r, t in zip(rows[1:], doc["tumors"]):
        assert int(r[0]) == t["id"]
        assert float(r[2]) == pytest.approx(t["min_margin_mm"], abs=1e-9)
        assert r[MARGIN_CSV_COLUMNS.index("classification")] == t["classification"]


def test_no_phi_in_outputs(main_run):
    _, out = main_run
    for p in out.iterdir():
        if p.suffix in (".json", ".csv", ".tfm"):
            txt = p.read_text(errors="replace")
            for needle in dg.PHI_NEEDLES + [dg.UID_ROOT]:
                assert needle not in txt, (p.name, needle)


# --------------------------------------------------------------------------- same frame, no registration
def test_same_frame_none_matches_margins_arrays(study, tmp_path):
    """Post = pre series, zone on the pre grid, --registration none: the zone goes through the
    signed-distance resampling unchanged and the margins equal margins_arrays' to the bit."""
    zone_pre = np.zeros(PRE["size"], np.uint8)
    for ct, _, _, rz in LESIONS:  # zones centred on the tumors
        zone_pre |= rp.ellipsoid_mask(PRE["size"], PRE["spacing"], PRE["origin"], np.eye(3)[:, ::-1], ct, rz)
    zp = study.pre_t.write_mask(tmp_path / "zone_pre_grid.nii.gz", zone_pre)
    out = tmp_path / "out"
    rc = main(study.argv(out, "--registration", "none", "--quiet", post=study.pre_dir, zone=zp,
                         liver_post=study.liver_pre))
    assert rc == 0
    doc = _doc(out)
    assert doc["registration"]["ok"] is True and doc["registration"]["liver_dice"] == 1.0
    np.testing.assert_allclose(doc["registration"]["matrix_lps"], np.eye(4), atol=0)
    got_zone = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "zone_in_pre.nii.gz"))) > 0
    assert np.array_equal(got_zone, zone_pre > 0)
    ref = margins_arrays(study.tumor_arr, zone_pre, PRE["spacing"], study.pre_t.direction, study.pre_t.origin_mm,
                         registration_error_mm=0.0)
    assert len(doc["tumors"]) == len(ref.tumors)
    for t, r in zip(doc["tumors"], ref.tumors):
        assert t["min_margin_mm"] == r.min_margin_mm
        assert t["margin_quartiles_mm"] == list(r.margin_quartiles_mm)
        assert t["vic_ml"] == r.vic_ml
        assert t["classification"] == r.classification.value


# --------------------------------------------------------------------------- failed quality
def test_failed_quality_gives_no_verdict(study, tmp_path, capsys):
    """A post liver mask shifted 15 mm: the registration fails its quality check; exit 0,
    registration.ok false with the reason, classification null for every tumor."""
    shifted = rp.make_volume(POST["size"], POST["spacing"], POST["origin"], rp.oblique_direction(POST["iop_deg"]),
                             transform=(study.R, study.t + np.array([15.0, 0.0, 0.0])), kind="liver").array
    lp = study.post_t.write_mask(tmp_path / "liver_post_shifted.nii.gz", shifted)
    out = tmp_path / "out"
    rc = main(study.argv(out, liver_post=lp))
    printed = capsys.readouterr().out
    assert rc == 0
    doc = _doc(out)
    jsonschema.validate(doc, SCHEMA)
    assert doc["registration"]["ok"] is False
    assert doc["registration"]["reason"]
    assert all(t["classification"] is None for t in doc["tumors"])
    assert all(t["uncertain"] is False for t in doc["tumors"])
    assert any("no A0/A1/A2 verdict" in w for w in doc["warnings"])
    assert "FAILED" in printed and "not assessed" in printed
    rows = list(csv.DictReader((out / "margin.csv").open()))
    assert all(r["classification"] == "" for r in rows)


# --------------------------------------------------------------------------- bad input: exit 2
def run_bad(capfd, argv: list[str], named, *problem: str) -> str:
    rc = main(argv)
    out, err = capfd.readouterr()
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("liverburden: error: "), line
    assert str(named) in line, (str(named), line)
    for p in problem:
        assert re.search(p, line), (p, line)
    assert not (Path(argv[argv.index("--out") + 1]) / "margin.json").exists()
    for needle in dg.PHI_NEEDLES:
        assert needle not in err
    return line


def test_empty_tumor(study, tmp_path, capfd):
    p = study.pre_t.write_mask(tmp_path / "tumor_empty.nii.gz", np.zeros(PRE["size"], np.uint8))
    run_bad(capfd, study.argv(tmp_path / "out", tumor=p), p, "(?i)tumor mask is empty")


def test_empty_zone(study, tmp_path, capfd):
    p = study.post_t.write_mask(tmp_path / "zone_empty.nii.gz", np.zeros(POST["size"], np.uint8))
    run_bad(capfd, study.argv(tmp_path / "out", zone=p), p, "(?i)zone mask is empty")


def test_tumor_not_on_pre_grid(study, tmp_path, capfd):
    """The tumor mask written on the post grid."""
    arr = np.zeros(POST["size"], np.uint8)
    arr[20:30, 50:60, 50:60] = 1
    p = study.post_t.write_mask(tmp_path / "tumor_on_post.nii.gz", arr)
    run_bad(capfd, study.argv(tmp_path / "out", tumor=p), p)


def test_tumor_shifted_half_voxel(study, tmp_path, capfd):
    o = np.asarray(study.pre_t.origin_mm) + np.array([0.75, 0.0, 0.0])
    p = study.pre_t.write_mask(tmp_path / "tumor_shifted.nii.gz", study.tumor_arr, origin_mm=o)
    run_bad(capfd, study.argv(tmp_path / "out", tumor=p), p)


def test_zone_not_on_post_grid(study, tmp_path, capfd):
    """The zone mask written on the pre grid."""
    p = study.pre_t.write_mask(tmp_path / "zone_on_pre.nii.gz", study.tumor_arr)
    run_bad(capfd, study.argv(tmp_path / "out", zone=p), p)


@pytest.mark.parametrize(
    "content, problem",
    [
        ("a,b,c\n1,2,3\n", "columns"),
        ("x_pre,y_pre,z_pre,x_post,y_post,z_post\n1,2,3,4,5,abc\n", "not a number"),
        ("x_pre,y_pre,z_pre,x_post,y_post,z_post\n", "columns"),
        ("x_pre,y_pre,z_pre,x_post,y_post,z_post\n1,2,3,4,5,nan\n", "non-finite"),
    ],
    ids=["wrong-columns", "not-a-number", "no-rows", "nan"],
)
def test_landmarks_malformed(study, tmp_path, capfd, content, problem):
    p = tmp_path / "pts.csv"
    p.write_text(content)
    run_bad(capfd, study.argv(tmp_path / "out", "--landmarks", str(p)), p, problem)


def test_landmarks_missing_file(study, tmp_path, capfd):
    p = tmp_path / "nope.csv"
    run_bad(capfd, study.argv(tmp_path / "out", "--landmarks", str(p)), p)


@pytest.fixture(scope="module")
def far_post(study):
    """A post series whose field of view lies 320 mm above the pre scan's: nothing in common."""
    g = dict(size=(24, 64, 72), spacing=(3.0, 3.0, 3.0), origin=(-150.0, -110.0, 270.0), iop_deg=0.0)
    ct = rp.make_volume(g["size"], g["spacing"], g["origin"], np.eye(3)[:, ::-1], transform=(study.R, study.t), seed=4)
    t = write_ct(study.root / "post_far", g, ct.array, signed=False, study_uid=dg.new_uid(), frame_uid=dg.new_uid())
    zone = np.zeros(g["size"], np.uint8)
    zone[8:14, 20:30, 20:30] = 1
    zp = t.write_mask(study.root / "zone_far.nii.gz", zone)
    lp = t.write_mask(study.root / "liver_far.nii.gz", np.zeros(g["size"], np.uint8))
    return study.root / "post_far", zp, lp


def test_no_fov_overlap_without_livers(study, far_post, tmp_path, capfd):
    post, zone, _ = far_post
    run_bad(capfd, study.argv(tmp_path / "out", "--registration", "rigid", post=post, zone=zone, livers=False), post,
            "(?i)overlap")


def test_no_fov_overlap_with_livers(study, far_post, tmp_path, capfd):
    post, zone, liver = far_post
    run_bad(capfd, study.argv(tmp_path / "out", post=post, zone=zone, liver_post=liver), liver)
