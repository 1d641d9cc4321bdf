"""``liverburden orthanc``: a real Orthanc (temporary config and storage, loopback,
ephemeral ports, StableAge 1 s).

The phantom CT and its SEG are stored into Orthanc by C-STORE (pynetdicom);
``orthanc --once`` must bring an SR, a SEG and a Secondary Capture back into
the same study; highdicom parses the SR and its numbers equal those of
``measure`` on the same inputs; the SEG's tracking ids equal the JSON ids. A
second run processes nothing (our own uploads never re-trigger a run); the
follower without ``--once`` picks up a new study and remembers the last change
across restarts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import highdicom as hd
import pytest

import dicomgen as dg
import test_pacs_phantom as ph
from liverburden.pacs import codes as C
from liverburden.pipeline import measure_study


def _cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "liverburden.pacs", "orthanc", *args], capture_output=True, text=True,
                          timeout=timeout)


def _store_dicom(orthanc: ph.Orthanc, files) -> None:
    res = ph.send_files(files, orthanc.dicom_port, called="ORTHANC", calling="MODALITY")
    assert set(res.values()) == {0} and len(res) == len(files)


def _our_series(orthanc: ph.Orthanc, sid: str) -> dict[str, dict]:
    return {s["MainDicomTags"]["Modality"]: s for s in orthanc.get(f"/studies/{sid}/series")
            if s["MainDicomTags"].get("Manufacturer") == "liverburden"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("orthanc")
    o = ph.Orthanc(root / "server")
    yield o, root
    o.stop()


def test_once_brings_sr_seg_and_summary_back_into_the_study(server):
    orthanc, root = server
    st = ph.make_study(root / "study")
    _store_dicom(orthanc, st.files)
    (sid,) = orthanc.get("/studies")
    orthanc.wait_stable(sid)
    cfg = root / "pacs.toml"
    cfg.write_text('[listener]\nspool_dir = "spool"\n')
    r = _cli("--url", orthanc.url, "--config", str(cfg), "--once", "-v")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 measured" in r.stdout and "3 object(s) uploaded, 0 pending" in r.stdout
    ours = _our_series(orthanc, sid)
    assert sorted(ours) == ["OT", "SEG", "SR"]
    assert orthanc.get("/studies") == [sid]  # the same study, not a new one

    # the SR, parsed by highdicom, against measure on the same inputs
    (sr_id,) = ours["SR"]["Instances"]
    sr_path = root / "sr.dcm"
    sr_path.write_bytes(orthanc.get(f"/instances/{sr_id}/file"))
    sr = hd.sr.srread(sr_path)
    assert sr.StudyInstanceUID == st.study_uid and sr.PatientID == dg.PHI["PatientID"]
    direct = measure_study(st.ct.folder, st.seg_path, st.seg_path, root / "direct", input_paths=False).document
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == [str(les["id"]) for les in direct["lesions"]]
    for g, les in zip(groups, direct["lesions"]):
        vals = {(m.name.value, None if m.derivation is None else m.derivation.value): m.value
                for m in g.get_measurements()}
        assert vals == {
            (C.VOLUME.value, None): les["volume_ml"],
            (C.LONG_AXIS.value, None): les["ld_mm"],
            (C.SHORT_AXIS.value, None): les["sa_mm"],
            (C.DIAMETER.value, C.MAXIMUM.value): les["max3d_mm"],
        }
    study = {g.tracking_identifier: g for g in sr.content.get_image_measurement_groups()}
    burden = {m.name.value: m.value for m in study["hepatic tumor burden"].get_measurements()}
    assert burden[C.VOLUME.value] == direct["liver"]["tumor_volume_ml"]
    assert burden[C.INVOLVEMENT_PCT.value] == direct["liver"]["involvement_pct"]
    assert burden[C.SOD_ALL_MM.value] == direct["sum_diameters"]["all_mm"]
    assert burden[C.SOD_RECIST_MM.value] == direct["sum_diameters"]["recist_mm"]

    # the SEG's tracking ids are the JSON's lesion ids
    (seg_id,) = ours["SEG"]["Instances"]
    seg_path = root / "seg.dcm"
    seg_path.write_bytes(orthanc.get(f"/instances/{seg_id}/file"))
    seg = hd.seg.segread(seg_path)
    (mjson,) = list((root / "spool" / "results").glob("orthanc-*/*/measurements.json"))
    doc = json.loads(mjson.read_text())
    assert [s.TrackingID for s in seg.SegmentSequence] == [str(les["id"]) for les in doc["lesions"]]
    assert [int(s.SegmentNumber) for s in seg.SegmentSequence] == list(range(1, doc["lesion_count"] + 1))
    assert doc["lesions"] == direct["lesions"]

    # nothing identifying in what we print, keep or name
    for text in (r.stdout, r.stderr, mjson.read_text(), (root / "spool" / "orthanc-state.json").read_text()):
        for needle in dg.PHI_NEEDLES:
            assert needle not in text
        assert st.study_uid not in text and dg.UID_ROOT not in text
    for p in (root / "spool").rglob("*"):
        assert not any(n in str(p) for n in dg.PHI_NEEDLES + [dg.UID_ROOT])

    # again: nothing new to do, even after our uploads made the study stable again
    time.sleep(2.5)
    n_before = len(orthanc.get(f"/studies/{sid}/instances"))
    r2 = _cli("--url", orthanc.url, "--config", str(cfg), "--once")
    assert r2.returncode == 0 and "0 measured" in r2.stdout, r2.stdout + r2.stderr
    assert len(orthanc.get(f"/studies/{sid}/instances")) == n_before
    state = json.loads((root / "spool" / "orthanc-state.json").read_text())
    assert state["servers"][orthanc.url]["last_seq"] > 0


def test_follower_picks_up_a_new_study_and_remembers(server):
    orthanc, root = server
    cfg = root / "pacs.toml"
    if not cfg.exists():
        cfg.write_text('[listener]\nspool_dir = "spool"\n')
    cfg2 = root / "pacs2.toml"
    cfg2.write_text('[listener]\nspool_dir = "spool"\n[orthanc]\npoll_seconds = 0.5\n')
    log = open(root / "follow.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "liverburden.pacs", "orthanc", "--url", orthanc.url,
                             "--config", str(cfg2), "-v"], stdout=log, stderr=subprocess.STDOUT)
    try:
        st = ph.make_study(root / "study2", seed=5, n=16, rows=40, cols=40)
        _store_dicom(orthanc, st.files)
        sid = next(s for s in orthanc.get("/studies")
                   if orthanc.get(f"/studies/{s}")["MainDicomTags"]["StudyInstanceUID"] == st.study_uid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(_our_series(orthanc, sid)) < 3:
            assert proc.poll() is None, (root / "follow.log").read_text()
            time.sleep(0.3)
        assert sorted(_our_series(orthanc, sid)) == ["OT", "SEG", "SR"], (root / "follow.log").read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    time.sleep(2.5)  # our uploads make the study stable again: must not re-run
    r = _cli("--url", orthanc.url, "--config", str(cfg2), "--once")
    assert r.returncode == 0 and "0 measured" in r.stdout, r.stdout + r.stderr


def test_study_without_seg_is_parked_from_the_index(server):
    orthanc, root = server
    st = ph.make_study(root / "study3", seed=9, n=8, rows=16, cols=16, with_seg=False)
    _store_dicom(orthanc, st.files)
    sid = next(s for s in orthanc.get("/studies")
               if orthanc.get(f"/studies/{s}")["MainDicomTags"]["StudyInstanceUID"] == st.study_uid)
    orthanc.wait_stable(sid)
    cfg = root / "pacs.toml"
    if not cfg.exists():
        cfg.write_text('[listener]\nspool_dir = "spool"\n')
    r = _cli("--url", orthanc.url, "--config", str(cfg), "--once")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "parked: the study holds no DICOM SEG" in r.stdout and "seen in the index" in r.stdout
    assert not _our_series(orthanc, sid)
    r = _cli("--url", orthanc.url, "--config", str(cfg), "--once")
    assert "0 parked" in r.stdout  # remembered


def test_orthanc_not_reachable(tmp_path):
    cfg = tmp_path / "pacs.toml"
    cfg.write_text('[listener]\nspool_dir = "spool"\n[orthanc]\ntimeout_seconds = 2\n')
    r = _cli("--url", f"http://127.0.0.1:{ph.free_port()}", "--config", str(cfg), "--once")
    assert r.returncode == 2 and "not reachable" in r.stderr


def test_orthanc_needs_a_url(tmp_path):
    r = _cli("--once", "--spool", str(tmp_path / "spool"))
    assert r.returncode == 2 and "give --url" in r.stderr
