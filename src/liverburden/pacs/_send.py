"""C-STORE to the configured destination, and TLS contexts.

Delivery is at least once (``conventions.md`` "PACS"): a file leaves the
outbox only after the destination answered Success (or a storage warning); any
other answer, a refused association or a network error keeps it pending with
exponential back-off. A resend after a crash repeats the same SOP Instance
UIDs, which the PACS files as duplicates.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any, Mapping, Sequence

import pydicom

__all__ = ["SendError", "client_ssl_context", "no_delay", "send_files", "server_ssl_context"]

log = logging.getLogger(__name__)

#: Success and the storage warnings (coercion, elements discarded, SOP class mismatch).
STORED = {0x0000, 0xB000, 0xB006, 0xB007}


class SendError(Exception):
    """The destination could not be reached or refused the association."""


def no_delay(event: Any) -> None:
    """EVT_CONN_OPEN handler: TCP_NODELAY on the association's socket.

    pynetdicom writes a C-STORE's command and data set as separate PDUs; with
    Nagle's algorithm on, the second waits for the peer's delayed ACK (about
    40 ms per instance on Linux), which caps a 150-slice series at ~20
    instances/s. Measured: 50 ms -> ~2 ms per small instance on loopback.
    """
    import socket as _socket

    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        except OSError:
            pass


def server_ssl_context(tls: Mapping[str, Any]) -> ssl.SSLContext | None:
    """The listener's TLS context (None when ``listener.tls.enabled`` is false)."""
    if not tls["enabled"]:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls["certificate"], tls["private_key"])
    if tls["ca_certificates"]:
        ctx.load_verify_locations(cafile=tls["ca_certificates"])
    ctx.verify_mode = ssl.CERT_REQUIRED if tls["require_client_certificate"] else ssl.CERT_NONE
    return ctx


def client_ssl_context(tls: Mapping[str, Any]) -> ssl.SSLContext | None:
    """The sender's TLS context: the server certificate is verified (against
    ``ca_certificates`` when given, else the system store)."""
    if not tls["enabled"]:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls["ca_certificates"] or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls["certificate"]:
        ctx.load_cert_chain(tls["certificate"], tls["private_key"] or None)
    return ctx


def send_files(files: Sequence[tuple[int, Path, str]], dest: Mapping[str, Any]) -> tuple[list[int], dict[int, str]]:
    """Send ``(row id, path, SOP class)`` items over one association.

    Returns the ids stored and, for the others, an error text (no identifiers).

    Raises
    ------
    SendError
        The association could not be established (destination down, refused).
    """
    from pynetdicom import AE

    ae = AE(ae_title=dest["calling_ae_title"])
    t = float(dest["timeout_seconds"])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = t
    ae.connection_timeout = t
    syntaxes: dict[str, set[str]] = {}
    for _, path, sop_class in files:
        try:
            meta = pydicom.filereader.read_file_meta_info(path)
            ts = str(meta.TransferSyntaxUID)
        except Exception:
            ts = pydicom.uid.ExplicitVRLittleEndian
        syntaxes.setdefault(sop_class, set()).add(ts)
    for sop_class, tss in sorted(syntaxes.items()):
        for ts in sorted(tss):
            ae.add_requested_context(sop_class, [ts])
    tls = client_ssl_context(dest["tls"])
    kw: dict[str, Any] = {}
    if tls is not None:
        kw["tls_args"] = (tls, dest["tls"]["server_hostname"] or dest["host"])
    from pynetdicom import evt

    try:
        assoc = ae.associate(dest["host"], int(dest["port"]), ae_title=dest["ae_title"],
                             evt_handlers=[(evt.EVT_CONN_OPEN, no_delay)], **kw)
    except (OSError, ssl.SSLError) as exc:
        raise SendError(f"cannot connect to {dest['ae_title']}@{dest['host']}:{dest['port']} ({exc})") from None
    if not assoc.is_established:
        why = "rejected the association" if assoc.is_rejected else "is not reachable or aborted"
        raise SendError(f"{dest['ae_title']}@{dest['host']}:{dest['port']} {why}")
    stored: list[int] = []
    errors: dict[int, str] = {}
    try:
        for rid, path, _ in files:
            try:
                status = assoc.send_c_store(Path(path))
            except (ValueError, RuntimeError, OSError) as exc:
                errors[rid] = f"{type(exc).__name__}: {str(exc)[:200]}"
                continue
            code = int(getattr(status, "Status", -1)) if status else -1
            if code in STORED:
                stored.append(rid)
            else:
                errors[rid] = "no response" if code < 0 else f"status 0x{code:04X}"
            if not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    for rid, _, _ in files:
        if rid not in stored and rid not in errors:
            errors[rid] = "association ended before this file was sent"
    return stored, errors
