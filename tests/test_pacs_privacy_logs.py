"""No identifier in the logs of the PACS processes (issue 12 item 4, listener part).

* The entry-point set-up of ``listen``, its workers and ``orthanc``
  (``quiet_third_party``): a third-party WARNING record and a pydicom-style
  UserWarning quoting a UID reach the log with their origin only; with
  ``--debug`` (the developer's switch) their text is shown.
* A real listener (``-v``) receives a study whose UIDs are non-conformant legacy
  GE style (pydicom quotes those in its warnings) and whose patient, institution
  and description fields carry planted strings; it measures it; its log, its
  status files and the file names of the spool carry none of them.
"""

from __future__ import annotations

import subprocess
import sys
import time
import warnings

import dicomgen as dg
import test_pacs_listener as tl
import test_pacs_phantom as ph

LEGACY = dg.UID_ROOT + "0604.01"
DESC = "ZZPHIDESC^JONES 03.02.1961"
NEEDLES = dg.PHI_NEEDLES + ["ZZPHIDESC", "JONES", "03.02.1961", LEGACY, "0604.01"]

_SNIPPET = """
import logging, sys, warnings
logging.basicConfig(level=logging.DEBUG, format="%(name)s %(levelname)s: %(message)s")
from liverburden.pacs._privacy import quiet_third_party
quiet_third_party(debug={debug})
uid = "{uid}"
logging.getLogger("pynetdicom.acse").warning("Association for %s rejected", uid)
logging.getLogger("highdicom.seg").error("cannot copy from instance %s", uid)
logging.getLogger("pynetdicom.dul").info("PDU with %s", uid)
warnings.warn("Invalid value for VR UI: '" + uid + "'", UserWarning)
logging.getLogger("liverburden.pacs").warning("study abc123: parked")
"""


def _run_snippet(debug: bool) -> str:
    r = subprocess.run([sys.executable, "-c", _SNIPPET.format(debug=debug, uid=LEGACY + ".7")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout + r.stderr


def test_entry_point_setup_withholds_third_party_texts():
    out = _run_snippet(False)
    assert LEGACY not in out, out
    assert "was withheld" in out and "pynetdicom.acse" in out and "highdicom.seg" in out
    assert "study abc123: parked" in out  # our own lines are untouched
    assert "PDU with" not in out  # pynetdicom INFO is not even produced


def test_debug_shows_the_texts():
    out = _run_snippet(True)
    assert LEGACY + ".7" in out


def _legacy(datasets):
    """Every UID of the study (not the SOP class / transfer syntax) replaced by a
    legacy GE-style one with a leading-zero component."""
    mapping: dict[str, str] = {}

    def new(uid: str) -> str:
        if uid not in mapping:
            mapping[uid] = f"{LEGACY}.{len(mapping) + 1}"
        return mapping[uid]

    def walk(ds):
        for elem in ds:
            if elem.VR == "SQ":
                for item in elem.value:
                    walk(item)
            elif elem.VR == "UI" and elem.tag not in (0x00080016, 0x00020002, 0x00020010, 0x00081150,
                                                      0x00020012):
                if elem.VM == 1 and elem.value:
                    elem.value = new(str(elem.value))

    for ds in datasets:
        walk(ds)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesDescription = DESC
        ds.StudyDescription = DESC
    return mapping


def test_listener_logs_carry_no_planted_identifier(tmp_path):
    base = ph.make_study(tmp_path / "base", n=12, rows=32, cols=32, phi=dg.PHI)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        datasets = ph.clone_datasets(base.files, phi=dg.PHI)
        uids = list(_legacy(datasets).values())
        for ds in datasets:
            # pydicom's own check of the values: these UIDs are what it warns about
            assert ds.StudyInstanceUID.startswith(LEGACY)
    lis = tl.ListenerProc(tmp_path / "lis", quiet=1.0, extra="[output]\nsecondary_capture = false\n").start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            status = ph.send_datasets(datasets, lis.port)
        assert set(status.values()) == {0}, status

        def finished():
            rows = lis.rows()
            return rows if rows and all(r[1] in ("done", "parked", "failed") for r in rows) else None

        rows = lis.wait_for(finished, 180, "the study was not run")
        assert [r[1] for r in rows] == ["done"], rows
        time.sleep(0.5)
    finally:
        lis.stop()
    log = lis.log_path.read_text()
    status_files = [p.read_text() for p in lis.spool.glob("results/*/*/status.json")]
    for text in [log] + status_files:
        for needle in NEEDLES:
            assert needle not in text, f"{needle!r} in a log or status file"
    for p in lis.spool.rglob("*"):
        rel = str(p.relative_to(lis.spool))
        assert "0604" not in rel and dg.UID_ROOT not in rel, rel
    assert len(uids) > len(datasets)  # study, series, frame of reference and every instance were legacy
