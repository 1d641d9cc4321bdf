"""Outputs under a full disk and an unwritable folder (issue 12 item 2).

Real file systems: a small tmpfs filled to the last byte, and a tmpfs remounted
read-only (root ignores permission bits, not a read-only mount). A re-run that
fails half way must never leave the earlier run's measurements.json beside the new
run's files (``report`` would render the mix), and must exit 2 with one line.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest

from liverburden.cli import main

ROOT = Path(__file__).resolve().parents[1]
S = ROOT / "sample_data" / "study"
ARGS = ["measure", "--image", str(S / "ct"), "--liver", str(S / "liver.nii.gz"), "--lesions",
        str(S / "lesions.nii.gz"), "--quiet"]


@contextlib.contextmanager
def _tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "none", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"SKIP reason: cannot mount a tmpfs ({r.stderr.strip()})", file=sys.stderr)
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill(d: Path) -> None:
    """Write until the file system is full, to the last byte."""
    for name, block in (("filler", 65536), ("filler2", 512), ("filler3", 1)):
        try:
            with open(d / name, "wb", buffering=0) as fh:
                while True:
                    fh.write(b"\0" * block)
        except OSError:
            pass


def test_disk_full_rerun_leaves_no_mixed_bundle(tmp_path, capsys, monkeypatch):
    from liverburden.report import _bundle

    with _tmpfs(tmp_path / "fs", "8m") as fs:
        out = fs / "bundle"
        assert main([*ARGS, "--out", str(out)]) == 0
        assert (out / "measurements.json").is_file()
        assert main(["report", str(out), "--quiet"]) == 0
        begin = _bundle.begin_outputs

        def begin_then_fill(o, complete):  # the disk fills up while the re-run writes (another job)
            begin(o, complete)
            _fill(fs)

        monkeypatch.setattr(_bundle, "begin_outputs", begin_then_fill)
        capsys.readouterr()
        rc = main([*ARGS, "--out", str(out), "--no-input-paths"])
        monkeypatch.setattr(_bundle, "begin_outputs", begin)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2, err
        assert len(err) == 1 and "No space left on device" in err[0] and str(fs) in err[0], err
        # the earlier run's numbers and report are gone, not mixed with this run's files
        assert not (out / "measurements.json").exists()
        assert not (out / "report.html").exists()
        assert not [p for p in out.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".")]
        capsys.readouterr()
        assert main(["report", str(out), "--quiet"]) == 2  # nothing complete to report
        # space again: the re-run completes
        for f in fs.glob("filler*"):
            f.unlink()
        assert main([*ARGS, "--out", str(out)]) == 0 and (out / "measurements.json").is_file()


def test_read_only_out_is_exit_2_with_one_line(tmp_path, capsys):
    with _tmpfs(tmp_path / "ro", "1m") as fs:
        (fs / "existing").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
        for out in (fs / "existing", fs / "new"):
            capsys.readouterr()
            rc = main([*ARGS, "--out", str(out)])
            err = capsys.readouterr().err.strip().splitlines()
            assert rc == 2, (out, err)
            assert len(err) == 1 and "Read-only file system" in err[0] and str(out) in err[0], err
