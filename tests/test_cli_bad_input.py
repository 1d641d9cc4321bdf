"""Bad input at the command line: exit 2 and ONE line on stderr,
``liverburden: error: <file>: <problem>``, naming the file and the problem, no
traceback (``cli.py``; ``clinical-reference.md`` section 6 for what a series must
satisfy). One test per kind of bad input, each on a small synthetic series
written by ``dicomgen`` with exactly one thing wrong.

stderr is captured at the file-descriptor level (``capfd``), so output that C
libraries (ITK, GDCM, VNL) write straight to fd 2 counts too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dicomgen as dg
from liverburden.cli import main


class Case:
    """A synthetic study: series + liver + lesion masks, and a way to run the CLI."""

    def __init__(self, tmp: Path, **series_kw):
        self.tmp = tmp
        self.image = tmp / "ct"
        self.t = dg.write_series(self.image, **series_kw)
        self.liver = self.t.write_mask(tmp / "liver.nii.gz", self.t.box_mask((1, 4, 4), (11, 28, 26)))
        self.lesions = self.t.write_mask(tmp / "lesions.nii.gz", self.t.box_mask((3, 8, 8), (6, 12, 12)))
        self.out = tmp / "out"

    def argv(self, *extra: str, image=None, liver=None, lesions=None) -> list[str]:
        return [
            "measure", "--image", str(image or self.image), "--liver", str(liver or self.liver),
            "--lesions", str(lesions or self.lesions), "--out", str(self.out), *extra,
        ]


@pytest.fixture
def case(tmp_path) -> Case:
    return Case(tmp_path)


def run_bad(capfd, argv: list[str], named: str | Path, *problem: str) -> str:
    """Run main(argv); assert exit 2 and one clean error line naming ``named`` and matching ``problem``."""
    rc = main(argv)
    out, err = capfd.readouterr()
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    line = lines[0]
    assert line.startswith("liverburden: error: "), line
    assert str(named) in line, (str(named), line)
    for p in problem:
        assert re.search(p, line), (p, line)
    assert out == ""
    assert not (Path(argv[argv.index("--out") + 1]) / "measurements.json").exists()
    for needle in dg.PHI_NEEDLES + [dg.UID_ROOT]:
        assert needle not in err
    return line


# ---------------------------------------------------------------------------
# the series
# ---------------------------------------------------------------------------
def test_no_dicom_found(tmp_path, capfd):
    c = Case(tmp_path)
    empty = tmp_path / "not_dicom"
    dg.write_junk(empty)
    run_bad(capfd, c.argv(image=empty), empty, "no DICOM files found")


def test_image_path_does_not_exist(case, capfd):
    missing = case.tmp / "no_such_folder"
    run_bad(capfd, case.argv(image=missing), missing, "(?i)no such file|not found")


def test_ambiguous_series(tmp_path, capfd):
    c = Case(tmp_path, series_number=3, description="ART")
    dg.write_series(c.image, series_number=4, description="PV", study_uid=c.t.study_uid, frame_uid=c.t.frame_uid, seed=5)
    line = run_bad(capfd, c.argv(), c.image, "cannot choose the image series", "series number 3", "series number 4", "--series")
    assert "'ART'" not in line and "--show-descriptions" in line  # descriptions are free text (issue 12 item 4)
    line = run_bad(capfd, c.argv("--show-descriptions"), c.image, "cannot choose the image series")
    assert "'ART'" in line and "'PV'" in line


def test_missing_slice(case, capfd):
    case.t.paths[6].unlink()
    run_bad(capfd, case.argv(), case.t.paths[5].name, "1 missing slice", case.t.paths[7].name, "4.000 mm")


def test_uneven_spacing(case, capfd):
    p = case.t.positions[6] + [0.0, 0.0, 0.3]
    dg.edit(case.t.paths[6], ImagePositionPatient=[dg.ds_str(v) for v in p])
    run_bad(capfd, case.argv(), case.t.paths[6].name, "uneven slice spacing", r"2\.300 mm|1\.700 mm")


def test_duplicate_positions(case, capfd):
    dg.edit(case.t.paths[6], ImagePositionPatient=[dg.ds_str(v) for v in case.t.positions[5]])
    run_bad(capfd, case.argv(), case.t.paths[6], "duplicate slice position", re.escape(case.t.paths[5].name))


def test_gantry_tilt(tmp_path, capfd):
    # IPP sheared along y by tan(15 deg) per mm of z, IOP still axial
    pos = [[-11.5, -22.25 + 2.0 * k * np.tan(np.radians(15)), -40.0 + 2.0 * k] for k in range(12)]
    c = Case(tmp_path, positions=pos)
    run_bad(capfd, c.argv(), c.t.paths[-1], "gantry tilt", r"15\.00 deg")


def test_mixed_orientation(case, capfd):
    dg.edit(case.t.paths[6], ImageOrientationPatient=[dg.ds_str(v) for v in dg.iop_rotated((0, 0, 1), 3.0)])
    run_bad(capfd, case.argv(), case.t.paths[6], "mixed orientation")


def test_mixed_size(case, capfd):
    dg.edit(case.t.paths[6], Rows=30, PixelData=np.zeros((30, 30), "<u2").tobytes())
    run_bad(capfd, case.argv(), case.t.paths[6], "image size 30x30 differs from 32x30")


def test_mixed_pixel_spacing(case, capfd):
    dg.edit(case.t.paths[6], PixelSpacing=["0.8", "0.75"])
    run_bad(capfd, case.argv(), case.t.paths[6], "pixel spacing")


def test_missing_image_position(case, capfd):
    dg.edit(case.t.paths[6], ImagePositionPatient=None)
    run_bad(capfd, case.argv(), case.t.paths[6], "ImagePositionPatient")


def test_zero_pixel_spacing_in_dicom(case, capfd):
    for p in case.t.paths:
        dg.edit(p, PixelSpacing=["0", "0.7"])
    run_bad(capfd, case.argv(), "ct", "(?i)pixel spacing must be positive")


def test_all_slices_at_one_position(tmp_path, capfd):
    c = Case(tmp_path, positions=[[-11.5, -22.25, -40.0]] * 12)
    run_bad(capfd, c.argv(), c.image, "(?i)zero slice spacing|duplicate slice position")


def _meta_end(path: Path) -> int:
    import pydicom

    meta = pydicom.filereader.read_file_meta_info(path)
    # preamble (128) + "DICM" (4) + the group length element (12) + the group
    return 132 + 12 + int(meta.FileMetaInformationGroupLength)


def test_corrupt_file_valid_preamble_truncated(case, capfd):
    bad = case.t.paths[6]
    dg.truncate(bad, _meta_end(bad) + 60)  # preamble, DICM and file meta intact, dataset cut
    run_bad(capfd, case.argv(), bad, "(?i)corrupt|truncated")


def test_corrupt_end_slice_is_not_silently_dropped(case):
    from liverburden._exceptions import LiverburdenError
    from liverburden.io import scan_dicom

    bad = case.t.paths[0]
    dg.truncate(bad, _meta_end(bad) + 60)
    with pytest.raises(LiverburdenError, match="(?i)corrupt|truncated"):
        scan_dicom(case.image)


def test_pixel_data_truncated(case, capfd):
    bad = case.t.paths[6]
    dg.truncate(bad, dg.pixel_data_offset(bad) + 100)
    run_bad(capfd, case.argv(), bad, "(?i)pixel data")


# ---------------------------------------------------------------------------
# the masks
# ---------------------------------------------------------------------------
def test_mask_geometry_mismatch(case, capfd):
    bad = case.t.write_mask(case.tmp / "liver_shifted.nii.gz", case.t.box_mask((1, 4, 4), (11, 28, 26)),
                            origin_mm=np.asarray(case.t.origin_mm) + [0.0, 0.35, 0.0])
    line = run_bad(capfd, case.argv(liver=bad), bad, "not on the image grid")
    # both geometries, each with its own origin
    assert line.count("origin_mm=") == 2
    assert "-21.9" in line and "-22.25" in line


def test_liver_mask_not_found(case, capfd):
    missing = case.tmp / "nope_liver.nii.gz"
    run_bad(capfd, case.argv(liver=missing), missing, "not found")


def test_lesion_mask_not_found(case, capfd):
    missing = case.tmp / "nope_lesions.nii.gz"
    run_bad(capfd, case.argv(lesions=missing), missing, "not found")


def test_mask_neither_volume_nor_seg(case, capfd):
    bad = case.tmp / "liver.txt"
    bad.write_text("not a mask\n")
    run_bad(capfd, case.argv(liver=bad), bad, "(?i)neither NIfTI")


def test_empty_liver_mask(case, capfd):
    empty = case.t.write_mask(case.tmp / "liver_empty.nii.gz", np.zeros(case.t.size, np.uint8))
    run_bad(capfd, case.argv(liver=empty), empty, "(?i)empty")


def test_empty_liver_mask_problem_named(case, capfd):
    # the part of the contract that holds today (the file is missing: see above)
    empty = case.t.write_mask(case.tmp / "liver_empty.nii.gz", np.zeros(case.t.size, np.uint8))
    rc = main(case.argv(liver=empty))
    _, err = capfd.readouterr()
    assert rc == 2 and len(err.splitlines()) == 1 and "liver mask is empty" in err


def test_liver_labels_outside_the_configured_set(case, capfd):
    m = case.t.box_mask((1, 4, 4), (6, 28, 26))
    m[6:11, 4:28, 4:26] = 3
    bad = case.t.write_mask(case.tmp / "liver_13.nii.gz", m)
    run_bad(capfd, case.argv("--liver-label", "1", liver=bad), bad, r"\[3\]", r"\[1\]")


def test_liver_labels_outside_the_configured_set_problem_named(case, capfd):
    m = case.t.box_mask((1, 4, 4), (6, 28, 26))
    m[6:11, 4:28, 4:26] = 3
    bad = case.t.write_mask(case.tmp / "liver_13.nii.gz", m)
    rc = main(case.argv("--liver-label", "1", liver=bad))
    _, err = capfd.readouterr()
    assert rc == 2 and len(err.splitlines()) == 1
    assert re.search(r"values \[3\] are not configured liver labels \[1\]", err)


def _pixdim_case(tmp_path, bad: float, qform: bool, sform: bool):
    # 1.0 mm pixels so that a reader that silently turns the bad pixdim into
    # 1.0 lands exactly on the image grid (the worst case: no error at all)
    c = Case(tmp_path, pixel_spacing=(1.0, 1.0))
    liver = c.t.box_mask((1, 4, 4), (11, 28, 26))
    p = dg.write_nifti_raw_pixdim(
        tmp_path / "liver_badpixdim.nii", liver, (1.0, 1.0, 2.0), c.t.origin_mm,
        bad_axis=0, bad_value=bad, qform=qform, sform=sform,
    )
    return c, p


@pytest.mark.parametrize("sform", [False, True], ids=["qform", "qform+sform"])
def test_nifti_mask_with_nan_pixdim(tmp_path, capfd, sform):
    # nibabel cannot derive such a header from an affine; dicomgen patches the bytes
    c, p = _pixdim_case(tmp_path, float("nan"), qform=True, sform=sform)
    run_bad(capfd, c.argv(liver=p), p, "(?i)nan", "(?i)spacing|pixdim")


@pytest.mark.parametrize("sform", [False, True], ids=["qform", "qform+sform"])
def test_nifti_mask_with_zero_pixdim(tmp_path, capfd, sform):
    c, p = _pixdim_case(tmp_path, 0.0, qform=True, sform=sform)
    run_bad(capfd, c.argv(liver=p), p, "(?i)zero|spacing|pixdim")


# ---------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------
def test_config_unknown_key(case, capfd):
    cfg = case.tmp / "site.toml"
    cfg.write_text("[lesions]\nconectivity = 6\n")
    run_bad(capfd, case.argv("--config", str(cfg)), cfg, "unknown key 'conectivity'")


def test_config_unknown_section(case, capfd):
    cfg = case.tmp / "site.toml"
    cfg.write_text("[lesion]\nconnectivity = 6\n")
    run_bad(capfd, case.argv("--config", str(cfg)), cfg, "unknown key 'lesion'")


def test_config_value_out_of_range(case, capfd):
    cfg = case.tmp / "site.toml"
    cfg.write_text("[lesions]\nhepatic_fraction = 1.5\n")
    run_bad(capfd, case.argv("--config", str(cfg)), cfg, "lesions.hepatic_fraction", "1.5")


def test_config_not_toml(case, capfd):
    cfg = case.tmp / "site.toml"
    cfg.write_text("[lesions\nconnectivity = \n")
    run_bad(capfd, case.argv("--config", str(cfg)), cfg, "(?i)not a valid TOML")


def test_config_file_not_found(case, capfd):
    cfg = case.tmp / "missing.toml"
    run_bad(capfd, case.argv("--config", str(cfg)), cfg, "not found")


# ---------------------------------------------------------------------------
# the real process: Python warnings and C++ output reach the user's terminal
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("what", ["missing_slice", "mixed_orientation"])
def test_real_process_prints_one_line(tmp_path, what):
    c = Case(tmp_path)
    if what == "missing_slice":
        c.t.paths[6].unlink()
    else:
        dg.edit(c.t.paths[6], ImageOrientationPatient=[dg.ds_str(v) for v in dg.iop_rotated((0, 0, 1), 3.0)])
    env = dict(os.environ, PYTHONWARNINGS="default")
    r = subprocess.run([sys.executable, "-m", "liverburden", *c.argv()], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith("liverburden: error: ")
    assert r.stdout == ""
