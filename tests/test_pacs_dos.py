"""The listener under connection floods (issue 12 item 7), on loopback only.

* 40 idle TCP connections from an address no allowed peer has are closed at
  connect, before a byte is read; the allowed peer still C-STOREs, and the log
  says so once, not 40 times.
* 32 connections from an ALLOWED address, each trickling a partial
  A-ASSOCIATE-RQ one byte at a time: at most ``max_connections_per_address``
  are kept, and those are closed at ``request_timeout_s``; meanwhile the real
  peer stores, with ``max_associations`` set below the number of tricklers.
* With TLS on, a peer that connects and never starts its handshake no longer
  stops the accept loop for everyone.

Everything is bounded: sockets have timeouts, threads are joined with one.
"""

from __future__ import annotations

import select
import socket
import subprocess
import threading
import time
from pathlib import Path

import pydicom
import pytest

import test_pacs_listener as tl
import test_pacs_phantom as ph
from liverburden.pacs._spool import key_of

ROOT = Path(__file__).resolve().parents[1]
CT = sorted(p for p in (ROOT / "sample_data" / "study" / "ct").rglob("*") if p.is_file())


def _listener(tmp_path: Path, *, extra_listener: str = "", extra: str = "", allowed_extra: str = "") -> tl.ListenerProc:
    lis = tl.ListenerProc(tmp_path, write=False)
    lis.config.write_text(f"""
[listener]
port = 0
spool_dir = "spool"
quiet_seconds = 30
max_associations = 8
request_timeout_s = 2
max_connections_per_address = 4
{extra_listener}
[[listener.allowed]]
ae_title = "MODALITY"
host = "127.0.0.1"
{allowed_extra}
[worker]
poll_seconds = 0.2
{extra}
""")
    return lis.start()


def _store_one(port: int, path: Path, **kw) -> int:
    from pynetdicom import AE

    ds = pydicom.dcmread(path)
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    ae.add_requested_context(ds.SOPClassUID, [ds.file_meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", port, ae_title="LIVERBURDEN", **kw)
    assert assoc.is_established, "the allowed peer got no association"
    try:
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


def _stored(lis: tl.ListenerProc, path: Path) -> bool:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    key = key_of(str(ds.StudyInstanceUID), tl.SALT)
    return (lis.spool / "studies" / key / (key_of(str(ds.SOPInstanceUID), tl.SALT) + ".dcm")).exists()


def _connect(port: int, source: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def _closed_by_server(s: socket.socket, within: float) -> bool:
    """True when the server closes ``s`` (EOF or reset) within ``within`` seconds."""
    r, _, _ = select.select([s], [], [], within)
    if not r:
        return False
    try:
        return s.recv(64) == b""
    except (ConnectionResetError, OSError):
        return True


class Trickler(threading.Thread):
    """Connects from ``source`` and sends an A-ASSOCIATE-RQ that never ends, one
    byte every 0.2 s; records how long the server kept the connection."""

    PDU = b"\x01\x00\x00\x00\x01\x00" + b"\x00\x01\x00\x00" + b"LIVERBURDEN     " + b"MODALITY        " + b"\x00" * 200

    def __init__(self, port: int, source: str, limit: float):
        super().__init__(daemon=True)
        self.port, self.source, self.limit = port, source, limit
        self.held: float | None = None  # seconds until the server closed it; None = never within limit
        self.connect_s: float | None = None  # how long the TCP connect took

    def run(self) -> None:
        c0 = time.monotonic()
        s = _connect(self.port, self.source)
        t0 = time.monotonic()
        self.connect_s = t0 - c0
        try:
            for b in self.PDU:
                if time.monotonic() - t0 > self.limit:
                    return
                try:
                    s.send(bytes([b]))
                except OSError:
                    self.held = time.monotonic() - t0
                    return
                if _closed_by_server(s, 0.2):
                    self.held = time.monotonic() - t0
                    return
        finally:
            s.close()


def test_idle_connections_from_a_stranger_address_are_closed_at_connect(tmp_path):
    lis = _listener(tmp_path)
    socks = []
    try:
        socks = [_connect(lis.port, "127.0.0.2") for _ in range(40)]
        closed = [_closed_by_server(s, 3.0) for s in socks]
        assert all(closed), f"{closed.count(False)} of 40 idle stranger connections still open after 3 s"
        # the 40 sockets are still open on our side: the allowed peer stores anyway
        assert _store_one(lis.port, CT[0]) == 0
        assert _stored(lis, CT[0])
    finally:
        for s in socks:
            s.close()
        lis.stop()
    log = lis.log_path.read_text()
    assert log.count("address not in listener.allowed") == 1, "one log line per minute and address, not per connection"
    assert "127.0.0.2" in log


def test_trickling_requests_from_an_allowed_address_are_capped_and_cut(tmp_path):
    lis = _listener(tmp_path, allowed_extra='[[listener.allowed]]\nae_title = "OTHER"\nhost = "127.0.0.3"\n')
    try:
        tricklers = [Trickler(lis.port, "127.0.0.3", limit=15.0) for _ in range(32)]
        same_address = Trickler(lis.port, "127.0.0.1", limit=15.0)  # where the real peer lives
        for t in tricklers + [same_address]:
            t.start()
        time.sleep(0.8)
        # 32 tricklers > max_associations 8: without the cap nobody else would get in
        assert _store_one(lis.port, CT[1]) == 0
        assert _stored(lis, CT[1])
        for t in tricklers + [same_address]:
            t.join(timeout=30)
        held = [t.held for t in tricklers]
        assert None not in held, "a trickler kept its connection 15 s (no deadline)"
        # the listen queue holds the flood: no SYN dropped and retried 1-3 s later
        # (a late connect could then take a slot freed by the deadline, and a real
        # sender would wait as long)
        slow = [round(t.connect_s, 2) for t in tricklers + [same_address] if t.connect_s > 0.5]
        assert not slow, f"TCP connects that took > 0.5 s (listen backlog too short): {slow}"
        at_connect = [h for h in held if h < 1.0]
        kept = [h for h in held if h >= 1.0]
        assert len(at_connect) >= 28 and len(kept) <= 4, held
        for h in kept + [same_address.held]:
            assert 1.5 <= h <= 5.0, f"held {h:.1f} s: request_timeout_s is 2"
        # every slot is free again
        assert _store_one(lis.port, CT[2]) == 0
    finally:
        lis.stop()
    log = lis.log_path.read_text()
    assert "listener.max_connections_per_address" in log and "listener.request_timeout_s" in log
    assert log.count("listener.request_timeout_s") <= 2  # once per address (127.0.0.3, 127.0.0.1)


def test_stalled_tls_handshake_does_not_stop_the_accept_loop(tmp_path):
    openssl = ph.which("openssl")
    if openssl is None:
        pytest.skip("openssl binary not found: needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    lis = _listener(tmp_path / "lis", extra=f"""
[listener.tls]
enabled = true
certificate = "{cert}"
private_key = "{key}"
""")
    silent = None
    try:
        silent = _connect(lis.port, "127.0.0.1")  # connects, never sends a ClientHello
        time.sleep(0.3)
        from liverburden.pacs._send import client_ssl_context

        ctx = client_ssl_context({"enabled": True, "ca_certificates": str(cert), "certificate": "", "private_key": ""})
        assert _store_one(lis.port, CT[3], tls_args=(ctx, "localhost")) == 0
        assert _closed_by_server(silent, 5.0), "the silent TLS connection outlived request_timeout_s"
    finally:
        if silent is not None:
            silent.close()
        lis.stop()
