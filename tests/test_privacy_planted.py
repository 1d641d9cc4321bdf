"""Patient data planted in every field that can reach a message (issue 12 item 4).

A series whose PatientName, PatientID, birth date, accession number, institution,
referring physician, StudyDescription and SeriesDescription carry recognisable
strings, and whose Study/Series/Frame-of-reference UIDs are non-conformant legacy
GE style (a component with a leading zero, ``...0604.01``): pydicom warns about
those UIDs quoting them in full, and before this fix that UserWarning reached
stderr even with ``--quiet``; series listings in selection errors quoted the
SeriesDescription. Every run below greps stdout, stderr (file-descriptor level),
all log records and every file written for the planted strings.
"""

from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import dicomgen as dg
from liverburden.cli import main

ROOT = Path(__file__).resolve().parents[1]
DESC = "ZZPHIDESC^JONES 03.02.1961"
STUDY_DESC = "ZZPHISTUDY follow-up Mrs Jones"
#: legacy GE-style UIDs: ".0604" breaks the UI VR (no leading zeros), pydicom quotes it
LEGACY = dg.UID_ROOT + "0604.01"
NEEDLES = dg.PHI_NEEDLES + [dg.UID_ROOT, "ZZPHIDESC", "JONES", "ZZPHISTUDY", "03.02.1961"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("phi")
    with warnings.catch_warnings():  # pydicom warns about the legacy UIDs as they are written
        warnings.simplefilter("ignore")
        return _write(root)


def _write(root: Path) -> dict:
    t = dg.write_series(root / "ct" / "a", description=DESC, study_uid=LEGACY + ".1", series_uid=LEGACY + ".2",
                        frame_uid=LEGACY + ".3", series_number=3)
    # a second series of the same geometry: selection needs --series
    dg.write_series(root / "ct" / "b", description=DESC + " B", study_uid=LEGACY + ".1", series_uid=LEGACY + ".4",
                    frame_uid=LEGACY + ".3", series_number=4)
    for p in dg.iter_files(root / "ct"):
        dg.edit(p, StudyDescription=STUDY_DESC)
    n = t.size[0]
    liver = t.write_mask(root / "liver.nii.gz", t.box_mask((1, 4, 4), (n - 1, 28, 26)))
    lesions = t.write_mask(root / "lesions.nii.gz", t.box_mask((3, 8, 8), (6, 14, 12)))
    return {"root": root, "image": root / "ct", "liver": liver, "lesions": lesions, "t": t}


def _argv(st, out, *extra):
    return ["measure", "--image", str(st["image"]), "--liver", str(st["liver"]), "--lesions", str(st["lesions"]),
            "--out", str(out), *extra]


def _files_text(folder: Path) -> str:
    texts = []
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file() and p.suffix in {".json", ".csv", ".html", ".txt", ".log"}:
            texts.append(p.read_text(errors="replace"))
    return "\n".join(texts)


def _assert_clean(*texts: str) -> None:
    for text in texts:
        for needle in NEEDLES:
            assert needle not in text, f"{needle!r} leaked: ...{text[max(0, text.find(needle) - 120):][:240]}..."


def test_quiet_subprocess_prints_nothing_not_even_library_warnings(study, tmp_path):
    """The exact report: a fresh process (Python's warning registry empty), --quiet."""
    env = dict(os.environ, NUMBA_CACHE_DIR=os.environ.get("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache")))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "liverburden", *_argv(study, out, "--series", "3", "--quiet")],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == "", (r.stdout, r.stderr)
    _assert_clean(_files_text(out))


def test_verbose_run_logs_that_a_warning_was_withheld_not_its_text(study, tmp_path, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # earlier tests may have used up pydicom's once-per-location warnings
        rc = main(_argv(study, out, "--series", "3", "-v"))
    so, se = capfd.readouterr()
    assert rc == 0, se
    said = [r.getMessage() for r in caplog.records if "was withheld" in r.getMessage()]
    assert said and any("pydicom" in m for m in said)  # there was something to withhold: named, once per origin
    assert len(said) == len(set(said)) <= 4
    _assert_clean(so, se, caplog.text, _files_text(out))


@pytest.mark.parametrize("extra", [[], ["--series", "99"], ["--series", "ZZNOMATCH*"]],
                         ids=["ambiguous", "no-such-number", "no-such-description"])
def test_selection_errors_list_series_without_descriptions(study, tmp_path, capfd, extra):
    rc = main(_argv(study, tmp_path / "out", *extra))
    _, se = capfd.readouterr()
    assert rc == 2
    assert "series number 3" in se and "series number 4" in se and "--show-descriptions" in se
    _assert_clean(se)


def test_show_descriptions_quotes_them_when_asked(study, tmp_path, capfd):
    rc = main(_argv(study, tmp_path / "out", "--show-descriptions"))
    _, se = capfd.readouterr()
    assert rc == 2 and DESC in se and "withheld" not in se


def test_batch_error_rows_and_tables_carry_no_planted_strings(study, tmp_path, capfd, caplog):
    """One study needs --series (error row), the other is fine: no PHI in any table."""
    caplog.set_level(logging.DEBUG)
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["patient", "timepoint", "image", "liver", "lesions"])
        w.writerow(["P1", "base", study["image"], study["liver"], study["lesions"]])  # ambiguous: failed row
        w.writerow(["P2", "base", study["image"] / "a", study["liver"], study["lesions"]])
    out = tmp_path / "res"
    rc = main(["batch", str(manifest), "--out", str(out), "--workers", "1", "--quiet"])
    so, se = capfd.readouterr()
    assert rc == 3, se
    _assert_clean(so, se, caplog.text, _files_text(out))
