"""``liverburden listen``: a real listener process on loopback (ephemeral port).

* peers outside the allow-list (AE title or address) are rejected at association;
* 20 concurrent associations, each sending a 150-slice study (+ its SEG): no
  instance lost, counted in the spool and in what was measured;
* the listener killed (SIGKILL) mid-transfer and restarted loses no instance
  that got a Success, and the study is still measured;
* a destination that is down at first receives the results once it is up;
* spool file names, status files and logs carry no patient data or UIDs.

The listener runs as ``python -m liverburden.pacs listen`` (what ``liverburden
listen`` runs), so these tests do not depend on the wiring of ``cli.py``.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pydicom
import pytest

import dicomgen as dg
import test_pacs_phantom as ph
from liverburden import load_config
from liverburden.pacs._spool import key_of

SALT = load_config()["privacy"]["salt"]


class ListenerProc:
    def __init__(self, root: Path, extra: str = "", *, allowed: str = "MODALITY", quiet: float = 1.0,
                 processes: int = 1, write: bool = True, listener_extra: str = ""):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.config = self.root / "pacs.toml"
        if write:
            self.write_config(extra, allowed, quiet, processes, listener_extra)
        self.spool = self.root / "spool"
        self.log_path = self.root / "listener.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def again(self) -> "ListenerProc":
        """Another listener process on the same config and spool (a restart)."""
        return ListenerProc(self.root, write=False).start()

    def write_config(self, extra: str, allowed: str, quiet: float, processes: int, listener_extra: str = "") -> None:
        self.config.write_text(f"""
[listener]
port = 0
spool_dir = "spool"
quiet_seconds = {quiet}
{listener_extra}
[[listener.allowed]]
ae_title = "{allowed}"
host = "127.0.0.1"
[worker]
poll_seconds = 0.2
processes = {processes}
{extra}
""")

    def start(self) -> "ListenerProc":
        info = self.spool / "listener.json"
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "liverburden.pacs", "listen", "--config", str(self.config), "-v"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if info.exists():
                d = json.loads(info.read_text())
                if d["pid"] == self.proc.pid:
                    self.port = int(d["port"])
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("listener did not start: " + self.log_path.read_text()[-3000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()

    def kill(self) -> None:
        """SIGKILL the listener and its workers (its own process group)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.log.close()

    def rows(self) -> list[tuple]:
        db = self.spool / "queue.db"
        if not db.exists():
            return []
        con = sqlite3.connect(db, timeout=30)
        try:
            return con.execute("SELECT skey, state, instances, measured_instances, run, reason FROM studies").fetchall()
        finally:
            con.close()

    def outbox(self) -> list[tuple]:
        con = sqlite3.connect(self.spool / "queue.db", timeout=30)
        try:
            return con.execute("SELECT state, attempts, last_error FROM outbox").fetchall()
        finally:
            con.close()

    def wait_for(self, pred, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = pred()
            if v:
                return v
            time.sleep(0.2)
        raise TimeoutError(f"{what}; studies: {self.rows()}; log: {self.log_path.read_text()[-2000:]}")


def _assert_no_identifiers(root: Path, texts: list[str], uids: list[str]) -> None:
    for p in root.rglob("*"):
        rel = str(p.relative_to(root))
        for needle in dg.PHI_NEEDLES + ["1.2.826.0.1.3680043"]:
            assert needle not in rel, rel
    for text in texts:
        for needle in dg.PHI_NEEDLES:
            assert needle not in text, needle
        for uid in uids:
            assert uid not in text, "an original UID in a log"


def _spool_instances(spool: Path) -> dict[str, list[Path]]:
    return {d.name: sorted(d.glob("*.dcm")) for d in (spool / "studies").iterdir() if d.is_dir()}


# ---------------------------------------------------------------------------------------------


def _echo(port: int, calling: str, called: str = "LIVERBURDEN", bind: tuple[str, int] | None = None):
    from pynetdicom import AE

    ae = AE(ae_title=calling)
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", port, ae_title=called, **({"bind_address": bind} if bind else {}))
    try:
        if assoc.is_established:
            return "accepted", int(assoc.send_c_echo().Status)
        reason = assoc.acceptor.primitive.reason_str if assoc.is_rejected and assoc.acceptor.primitive else ""
        return ("rejected" if assoc.is_rejected else "failed"), reason
    finally:
        if assoc.is_established:
            assoc.release()


def test_only_allowed_peers_are_accepted(tmp_path):
    lis = ListenerProc(tmp_path).start()
    try:
        assert _echo(lis.port, "MODALITY") == ("accepted", 0)
        assert _echo(lis.port, "STRANGER") == ("rejected", "Calling AE title not recognised")
        # the right AE title from another address (127.0.0.2 is loopback too): closed
        # at the TCP connection, before the association request is read (issue 12 item 7)
        assert _echo(lis.port, "MODALITY", bind=("127.0.0.2", 0))[0] == "failed"
        assert _echo(lis.port, "MODALITY", called="SOMEONEELSE") == ("rejected", "Called AE title not recognised")
    finally:
        lis.stop()
    log = lis.log_path.read_text()
    assert log.count("rejected an association") == 2
    assert log.count("127.0.0.2 at connect: address not in listener.allowed") == 1


def _sender_cmd(folder: Path, port: int) -> list[str]:
    """A modality-like sender, one process per association: dcmtk's storescu when
    installed (.ci/run installs it), else pynetdicom in its own process. (Twenty
    pynetdicom requestors as threads of one process starve each other past the
    DIMSE timeout on 2 cores: a test artefact, not a listener limit.)"""
    storescu = ph.dcmtk("storescu")
    if storescu:
        return [storescu, "-R", "-aet", "MODALITY", "-aec", "LIVERBURDEN", "127.0.0.1", str(port), "+sd", str(folder)]
    return [sys.executable, str(Path(ph.__file__)), "send", str(folder), str(port)]


def test_twenty_concurrent_studies_of_150_slices_lose_nothing(tmp_path):
    n_studies, n_slices = 20, 150
    base = ph.make_study(tmp_path / "base", n=n_slices, rows=16, cols=16,
                         lesion_boxes=[((75, 5, 5), (10, 3, 3)), ((40, 10, 10), (5, 3, 3))])
    folders = []
    sops: list[str] = []
    for i in range(n_studies):
        d = tmp_path / f"send{i:02d}"
        d.mkdir()
        for k, ds in enumerate(ph.clone_datasets(base.files, phi=dg.PHI)):
            ds.save_as(d / f"{k:04d}.dcm", enforce_file_format=True)
            sops.append(str(ds.SOPInstanceUID))
        folders.append(d)
    lis = ListenerProc(tmp_path / "lis", quiet=3.0, processes=2,  # 20 parallel associations from one address
                       extra="[output]\nsecondary_capture = false\n",
                       listener_extra="max_connections_per_address = 24").start()
    try:
        t0 = time.perf_counter()
        procs = [subprocess.Popen(_sender_cmd(f, lis.port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                 for f in folders]
        outs = [p.communicate(timeout=300)[0] for p in procs]
        t_sent = time.perf_counter() - t0
        assert [p.returncode for p in procs] == [0] * n_studies, outs[0][-2000:]
        per = n_slices + 1
        inst = _spool_instances(lis.spool)
        assert len(inst) == n_studies and all(len(v) == per for v in inst.values())
        assert sum(len(v) for v in inst.values()) == n_studies * per
        names = {p.stem for v in inst.values() for p in v}
        assert names == {key_of(u, SALT) for u in sops}

        def all_measured():
            rows = lis.rows()
            ok = len(rows) == n_studies and all(r[1] == "done" and r[2] == per and r[3] == n_slices for r in rows)
            return rows if ok else None

        rows = lis.wait_for(all_measured, 240, "not every study was measured with all its instances")
        t_done = time.perf_counter() - t0
        measured = 0
        for skey, _state, _n, _m, run, _ in rows:
            doc = json.loads((lis.spool / "results" / skey / run / "measurements.json").read_text())
            measured += doc["inputs"]["image"]["files"]
            assert doc["lesion_count"] == 2
        assert measured == n_studies * n_slices
        print(f"\n20 x 150 slices: {n_studies * per} instances stored in {t_sent:.1f} s "
              f"({n_studies * per / t_sent:.0f}/s, sender: {Path(_sender_cmd(folders[0], 0)[0]).name}); "
              f"all {n_studies} studies measured after {t_done:.1f} s; {measured} slices measured")
    finally:
        lis.stop()
    log = lis.log_path.read_text()
    assert "ERROR" not in log, log[-2000:]
    status = [p.read_text() for p in lis.spool.glob("results/*/*/status.json")]
    _assert_no_identifiers(lis.spool, [log] + status, sops[:50] + [base.study_uid])


def test_listener_killed_mid_transfer_loses_no_acknowledged_instance(tmp_path):
    st = ph.make_study(tmp_path / "s", n=150, rows=16, cols=16, lesion_boxes=[((75, 5, 5), (10, 3, 3))])
    lis = ListenerProc(tmp_path / "lis", quiet=1.0).start()
    acked: dict[str, int] = {}
    progress = threading.Event()

    def send():
        from pynetdicom import AE, evt

        from liverburden.pacs._send import no_delay

        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(dg.CT_IMAGE_STORAGE, [pydicom.uid.ExplicitVRLittleEndian])
        ae.dimse_timeout = 5
        assoc = ae.associate("127.0.0.1", lis.port, ae_title="LIVERBURDEN",
                             evt_handlers=[(evt.EVT_CONN_OPEN, no_delay)])
        try:
            for p in st.ct.paths:
                ds = pydicom.dcmread(p)
                r = assoc.send_c_store(ds)
                if not r or "Status" not in r:
                    return
                acked[str(ds.SOPInstanceUID)] = int(r.Status)
                if len(acked) == 60:
                    progress.set()
        finally:
            if assoc.is_established:
                assoc.release()

    th = threading.Thread(target=send)
    th.start()
    assert progress.wait(60)
    lis.kill()  # SIGKILL, mid-transfer
    th.join(30)
    ok = [u for u, s in acked.items() if s == 0]
    assert 60 <= len(ok) < len(st.ct.paths)
    # every acknowledged instance is in the spool, whole
    (files,) = _spool_instances(lis.spool).values()
    by_name = {p.stem: p for p in files}
    for uid in ok:
        p = by_name[key_of(uid, SALT)]
        assert str(pydicom.dcmread(p).SOPInstanceUID) == uid
    # restart: the partial study is resumed; the modality sends the whole study again
    lis2 = lis.again()
    try:
        assert not list((lis.spool / "tmp").iterdir())
        res = ph.send_files(st.files, lis2.port)
        assert set(res.values()) == {0}

        def measured():
            rows = lis2.rows()
            return rows if rows and rows[0][1] == "done" and rows[0][3] == 150 else None

        rows = lis2.wait_for(measured, 90, "the study was not measured after the restart")
        assert rows[0][2] == 151
    finally:
        lis2.stop()


def test_destination_down_at_first_receives_the_results_later(tmp_path):
    dport = ph.free_port()
    lis = ListenerProc(tmp_path / "lis", extra=f"""
[destination]
ae_title = "ORTHANC"
host = "127.0.0.1"
port = {dport}
retry_initial_seconds = 0.5
retry_max_seconds = 1.0
""").start()
    orthanc = None
    try:
        st = ph.make_study(tmp_path / "s")
        assert set(ph.send_files(st.files, lis.port).values()) == {0}
        lis.wait_for(lambda: [r for r in lis.rows() if r[1] == "done"], 60, "study not measured")
        # nothing listens on the destination port: the results wait in the outbox ...
        lis.wait_for(lambda: all(r[0] == "pending" and r[1] >= 2 for r in lis.outbox()) and len(lis.outbox()) == 3,
                     30, "outbox did not retry")
        # ... and survive a crash of the listener
        lis.kill()
        lis = lis.again()
        orthanc = ph.Orthanc(tmp_path / "orthanc", dicom_port=dport)
        lis.wait_for(lambda: all(r[0] == "sent" for r in lis.outbox()), 30, "results not sent after the "
                     "destination came up")
        assert [r[1] for r in lis.rows()] == ["done"]  # not measured twice: the study had not changed
        (sid,) = orthanc.get("/studies")
        mods = sorted(s["MainDicomTags"]["Modality"] for s in orthanc.get(f"/studies/{sid}/series")
                      if s["MainDicomTags"].get("Manufacturer") == "liverburden")
        assert mods == ["OT", "SEG", "SR"]
    finally:
        lis.stop()
        if orthanc is not None:
            orthanc.stop()
    log = lis.log_path.read_text()
    assert "kept in the outbox" in log and log.count("measured 24 instance(s)") == 1
    _assert_no_identifiers(lis.spool, [log], [st.study_uid] + st.ct.sop_uids)


def test_compressed_instances_are_stored_as_sent(tmp_path):
    """JPEG Lossless, JPEG-LS and RLE MR instances: accepted in their own transfer
    syntax and stored byte for byte (the pixel data is not re-encoded)."""
    from pynetdicom import AE

    data = Path(__file__).parent / "data" / "dicom2nifti"
    files = [sorted((data / d / "001").iterdir())[0] for d in ("compressed_jpeg", "compressed_jpegls", "compressed_rle")]
    lis = ListenerProc(tmp_path).start()
    try:
        for p in files:
            ds = pydicom.dcmread(p)
            ae = AE(ae_title="MODALITY")
            ae.add_requested_context(ds.SOPClassUID, [ds.file_meta.TransferSyntaxUID])
            assoc = ae.associate("127.0.0.1", lis.port, ae_title="LIVERBURDEN")
            assert assoc.is_established
            assert assoc.accepted_contexts[0].transfer_syntax[0] == ds.file_meta.TransferSyntaxUID
            assert int(assoc.send_c_store(ds).Status) == 0
            assoc.release()
            key = key_of(str(ds.StudyInstanceUID), SALT)
            stored = pydicom.dcmread(lis.spool / "studies" / key / (key_of(str(ds.SOPInstanceUID), SALT) + ".dcm"))
            assert stored.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
            assert stored.PixelData == ds.PixelData
    finally:
        lis.stop()


def test_truncated_instance_is_refused_not_acknowledged(tmp_path):
    """A CT cut in half (native) and an MR whose JPEG-LS pixel data ends inside a
    fragment get a failure status, so the sender keeps and resends them; nothing of
    them reaches the spool. The whole instance, sent next, is stored (issue 12 item 8)."""
    import copy

    from pynetdicom import AE

    from liverburden.pacs._integrity import incomplete

    root = Path(__file__).resolve().parents[1]
    native = sorted(p for p in (root / "sample_data" / "study" / "ct").rglob("*") if p.is_file())[5]
    jpegls = sorted((Path(__file__).parent / "data" / "dicom2nifti" / "compressed_jpegls" / "001").iterdir())[0]
    raw = native.read_bytes()
    assert incomplete(raw) is None and "truncated" in incomplete(raw[: len(raw) // 2])
    lis = ListenerProc(tmp_path).start()
    try:
        for path in (native, jpegls):
            whole = pydicom.dcmread(path)
            cut = copy.deepcopy(whole)
            half = len(whole.PixelData) // 2
            cut.PixelData = whole.PixelData[: half + half % 2]
            ae = AE(ae_title="MODALITY")
            ae.add_requested_context(whole.SOPClassUID, [whole.file_meta.TransferSyntaxUID])
            assoc = ae.associate("127.0.0.1", lis.port, ae_title="LIVERBURDEN")
            assert assoc.is_established
            status = int(assoc.send_c_store(cut).Status)
            assert status == 0xC000, (path.name, hex(status))
            key = key_of(str(whole.StudyInstanceUID), SALT)
            inst = lis.spool / "studies" / key / (key_of(str(whole.SOPInstanceUID), SALT) + ".dcm")
            assert not inst.exists()
            assert int(assoc.send_c_store(whole).Status) == 0  # the resend of the whole file
            assoc.release()
            assert inst.exists()
    finally:
        lis.stop()
    log = lis.log_path.read_text()
    assert log.count("refused an incomplete instance") == 2


def test_one_listener_per_spool(tmp_path):
    lis = ListenerProc(tmp_path).start()
    try:
        r = subprocess.run([sys.executable, "-m", "liverburden.pacs", "listen", "--config", str(lis.config)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "another listener is using this spool" in r.stderr
    finally:
        lis.stop()


def test_tls_listener(tmp_path):
    openssl = ph.which("openssl")
    if openssl is None:
        pytest.skip("openssl binary not found: needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    lis = ListenerProc(tmp_path / "lis", extra=f"""
[listener.tls]
enabled = true
certificate = "{cert}"
private_key = "{key}"
""").start()
    try:
        from pynetdicom import AE

        from liverburden.pacs._send import client_ssl_context

        ctx = client_ssl_context({"enabled": True, "ca_certificates": str(cert), "certificate": "", "private_key": ""})
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context("1.2.840.10008.1.1")
        assoc = ae.associate("127.0.0.1", lis.port, ae_title="LIVERBURDEN", tls_args=(ctx, "localhost"))
        assert assoc.is_established
        assert int(assoc.send_c_echo().Status) == 0
        assoc.release()
        # a plain-TCP peer gets no association
        assert _echo(lis.port, "MODALITY")[0] != "accepted"
    finally:
        lis.stop()
