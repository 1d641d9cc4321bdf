"""Sizes checked from headers before a voxel is read; paths SimpleITK cannot take; FIFOs
(issue 12 items 5 and 6).

Each input below declares more voxels than ``limits.max_voxels`` (default 1e9) in a file
of a few hundred bytes: a gzipped NIfTI header declaring 32767^3, an NRRD header declaring
65535^3, DICOM slices with Rows = Columns = 65535. Before the check, each ended in a
MemoryError (exit 1) or worse after trying to allocate; now each is exit 2 naming the
file, the declared size (slice, row, col) and the limit. Every run is a subprocess under
an address-space limit (RLIMIT_AS 4 GiB) with a timeout, so a regression fails, never
swaps the machine.
"""

from __future__ import annotations

import gzip
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import dicomgen as dg
from liverburden.cli import main

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data" / "study"
AS_LIMIT = 4 << 30


def _limit():
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))


def _run(args, timeout=120):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "liverburden", *args], capture_output=True, timeout=timeout,
                          preexec_fn=_limit, env=env)


def _measure(tmp_path, image=SAMPLE / "ct", liver=SAMPLE / "liver.nii.gz", lesions=SAMPLE / "lesions.nii.gz", *extra):
    return _run(["measure", "--image", image, "--liver", liver, "--lesions", lesions,
                 "--out", tmp_path / "out", "--quiet", *extra])


def _huge_nifti(path: Path, shape=(32767, 32767, 32767)) -> Path:
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.uint8)
    hdr.set_data_shape(shape)
    hdr.set_zooms((1.0, 1.0, 1.0))
    hdr.set_sform(np.eye(4), code=1)
    hdr["vox_offset"] = 352
    raw = hdr.binaryblock + b"\0" * 4
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def _assert_refused(r, name: str, size: str):
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 2, err
    assert name in err and size in err and "limits.max_voxels = 1000000000" in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "MemoryError" not in err


def test_nifti_mask_declaring_32767_cubed_is_refused_from_its_header(tmp_path):
    m = _huge_nifti(tmp_path / "huge_liver.nii.gz")
    assert m.stat().st_size < 200  # the whole file: a header
    _assert_refused(_measure(tmp_path, SAMPLE / "ct", m), "huge_liver.nii.gz", "32767 x 32767 x 32767")


def test_nifti_image_declaring_32767_cubed_is_refused(tmp_path):
    img = _huge_nifti(tmp_path / "huge_ct.nii")
    _assert_refused(_measure(tmp_path, img), "huge_ct.nii", "32767 x 32767 x 32767")


def test_nrrd_header_declaring_65535_cubed_is_refused(tmp_path):
    m = tmp_path / "huge_lesions.nrrd"
    m.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 65535 65535 65535\nspacings: 1 1 1\n"
                  b"encoding: raw\n\n\0\0\0\0")
    _assert_refused(_measure(tmp_path, SAMPLE / "ct", SAMPLE / "liver.nii.gz", m), "huge_lesions.nrrd",
                    "65535 x 65535 x 65535")


def test_dicom_rows_columns_65535_are_refused_before_pixels(tmp_path):
    t = dg.write_series(tmp_path / "ct", n=4, rows=8, cols=8)
    for f in dg.iter_files(tmp_path / "ct"):
        dg.edit(f, Rows=65535, Columns=65535)
    liver = t.write_mask(tmp_path / "liver.nii.gz", t.box_mask((0, 1, 1), (4, 6, 6)))
    r = _measure(tmp_path, tmp_path / "ct", liver, liver)
    _assert_refused(r, str(tmp_path / "ct"), "4 x 65535 x 65535")


def test_mask_declaring_another_grid_is_refused_before_its_voxels(tmp_path):
    """A header-only NIfTI (no voxel bytes) of the wrong size: refused by its declared size,
    not by reading (the old message was 'truncated', after allocating the array)."""
    img = nib.load(SAMPLE / "liver.nii.gz")
    shape = tuple(int(d) for d in img.shape)
    m = _huge_nifti(tmp_path / "other_grid.nii.gz", (shape[0] + 1, shape[1], shape[2]))
    r = _measure(tmp_path, SAMPLE / "ct", SAMPLE / "liver.nii.gz", m)  # as the lesion mask
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert "other_grid.nii.gz" in err and "declares size" in err and "not the image grid" in err, err
    assert "truncated" not in err


def test_a_lower_configured_limit_refuses_the_sample(tmp_path):
    cfg = tmp_path / "small.toml"
    cfg.write_text("[limits]\nmax_voxels = 1000\n")
    r = _measure(tmp_path, SAMPLE / "ct", SAMPLE / "liver.nii.gz", SAMPLE / "lesions.nii.gz", "--config", cfg)
    err = r.stderr.decode()
    assert r.returncode == 2 and "limits.max_voxels = 1000;" in err and "liver.nii.gz: liver mask declares 20 x 512 x 512" in err, err


def test_memory_error_is_exit_2_one_line(tmp_path, monkeypatch, capsys):
    import liverburden.cli as cli

    def boom(args):
        raise MemoryError()

    monkeypatch.setattr(cli, "_cmd_measure", boom)
    rc = main(["measure", "--image", str(SAMPLE / "ct"), "--liver", str(SAMPLE / "liver.nii.gz"),
               "--lesions", str(SAMPLE / "lesions.nii.gz"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "out of memory" in err and len(err.strip().splitlines()) == 1


def test_path_not_utf8_is_refused_before_simpleitk(tmp_path):
    """SimpleITK aborts the process (C++ exception, rc 134) on such a path."""
    bad = os.fsencode(str(tmp_path)) + b"/liver_\xff.nii.gz"
    shutil.copyfile(SAMPLE / "liver.nii.gz", bad)
    r = _run([b"measure", b"--image", os.fsencode(str(SAMPLE / "ct")), b"--liver", bad,
              b"--lesions", os.fsencode(str(SAMPLE / "lesions.nii.gz")), b"--out", os.fsencode(str(tmp_path / "o"))])
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 2, (r.returncode, err)
    assert "liver_\\xff.nii.gz" in err and "not valid UTF-8" in err, err


def test_fifo_named_dcm_in_the_dicom_folder_is_skipped(tmp_path):
    ct = tmp_path / "ct"
    shutil.copytree(SAMPLE / "ct", ct)
    os.mkfifo(ct / "x.dcm")  # nobody writes to it: opening it for reading blocks forever
    r = _measure(tmp_path, ct)
    assert r.returncode == 0, r.stderr.decode()
    assert (tmp_path / "out" / "measurements.json").is_file()


def test_fifo_as_a_mask_is_refused(tmp_path):
    f = tmp_path / "liver.nii.gz"
    os.mkfifo(f)
    r = _measure(tmp_path, SAMPLE / "ct", f)
    err = r.stderr.decode()
    assert r.returncode == 2 and "liver.nii.gz" in err and "not a regular file" in err, err
