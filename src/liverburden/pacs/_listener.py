"""The C-STORE SCP (pynetdicom) and the process that supervises the workers.

As pynetdicom's storescp: the store handler only stores and returns a status.
It writes the instance durably to the spool (temporary file, fsync, rename,
fsync of the folder) BEFORE answering Success, and never measures. Which
studies are complete, their runs and the sending of results happen in
separate worker processes (:mod:`liverburden.pacs._worker`) that share the
spool's persisted queue.

Associations are accepted only from the configured peers (calling AE title
AND network address, ``[[listener.allowed]]``); any other is rejected during
association negotiation (A-ASSOCIATE-RJ, "calling AE title not recognised"),
as is a wrong called AE title. Nothing logged names a patient, a study or an
instance: studies appear by their salted key.

Before any of that, at the TCP connection (:class:`_Gate`): a connection from an
address that no allowed peer has is closed before a byte is read, at most
``listener.max_connections_per_address`` connections per address are open at
once, and each connection must complete its association request (TLS handshake
included) within ``listener.request_timeout_s`` or it is closed. Idle or
trickling connections therefore cannot hold the ``max_associations`` slots that
real senders need. Rejections at connect are logged at most once per address
per minute (a flood must not flood the log).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from ._config import peers
from ._integrity import incomplete
from ._send import no_delay, server_ssl_context
from ._spool import Spool

__all__ = ["Listener", "run_listener"]

log = logging.getLogger(__name__)

#: Storage SOP classes accepted: CT, MR (classic and enhanced), SEG.
STORAGE_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image Storage
    "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR Image Storage
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation Storage
)

#: Transfer syntaxes accepted: uncompressed, deflated, and the common compressed ones.
TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203",  # HTJ2K
    "1.2.840.10008.1.2.5",  # RLE Lossless
)

_VERIFICATION = "1.2.840.10008.1.1"


def _pynetdicom() -> Any:
    try:
        import pynetdicom
    except ImportError:
        from .._exceptions import ConfigError

        raise ConfigError("the DICOM listener needs pynetdicom: pip install 'liverburden[pacs]'") from None
    return pynetdicom


class _Gate:
    """Admission at the TCP connection and the association-request deadline.

    ``admit`` runs in the server's accept loop (``verify_request``), before any
    thread or association exists for the connection. A connection counts against
    its address from then until its association thread ends; ``watch`` closes
    the socket of an association still not negotiated at its deadline (shutting
    the socket down wakes the reader blocked in ``recv``; the association then
    ends as a closed transport).
    """

    LOG_EVERY_S = 60.0

    def __init__(self, peers: list[Any], request_timeout_s: float, per_address: int):
        self.peers = peers
        self.timeout = float(request_timeout_s)
        self.per_address = int(per_address)
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}  # admitted, association not yet started
        self._live: dict[str, list[Any]] = {}  # host -> association threads
        self._accepted_at: dict[tuple, float] = {}
        self._watched: list[tuple[float, Any, str]] = []
        self._last_log: dict[tuple[str, str], float] = {}
        self.refused = 0
        self.cut = 0

    @staticmethod
    def host_of(client_address: Any) -> str:
        return str(client_address[0]).split("%")[0]

    def _note(self, host: str, why: str) -> None:
        now = time.monotonic()
        if now - self._last_log.get((host, why), -1e9) >= self.LOG_EVERY_S:
            self._last_log[(host, why)] = now
            log.warning("closed a connection from %s at connect: %s (further ones logged at most once a minute)",
                        host, why)

    def _open(self, host: str) -> int:
        live = [a for a in self._live.get(host, []) if a.is_alive() or a.ident is None]
        self._live[host] = live
        return self._pending.get(host, 0) + len(live)

    def admit(self, client_address: Any) -> bool:
        host = self.host_of(client_address)
        with self._lock:
            if not any(p.allows_address(host) for p in self.peers):
                self.refused += 1
                self._note(host, "address not in listener.allowed")
                return False
            if self._open(host) >= self.per_address:
                self.refused += 1
                self._note(host, f"{self.per_address} connection(s) from it already open "
                                 "(listener.max_connections_per_address)")
                return False
            self._pending[host] = self._pending.get(host, 0) + 1
            self._accepted_at[tuple(client_address)] = time.monotonic()
        return True

    def opened(self, assoc: Any, client_address: Any) -> None:
        """EVT_CONN_OPEN: the association exists (its thread starts right after)."""
        host = self.host_of(client_address)
        with self._lock:
            t0 = self._accepted_at.pop(tuple(client_address), time.monotonic())
            self._live.setdefault(host, []).append(assoc)
            self._watched.append((t0 + self.timeout, assoc, host))

    def started(self, client_address: Any) -> None:
        """The connection's handler returned (its association thread runs, or it failed)."""
        host = self.host_of(client_address)
        with self._lock:
            self._accepted_at.pop(tuple(client_address), None)
            n = self._pending.get(host, 0) - 1
            if n > 0:
                self._pending[host] = n
            else:
                self._pending.pop(host, None)

    def sweep(self) -> None:
        """Close every connection whose association request is overdue."""
        now = time.monotonic()
        overdue = []
        with self._lock:
            keep = []
            for deadline, assoc, host in self._watched:
                done = assoc.is_established or assoc.is_rejected or assoc.is_aborted or (
                    assoc.ident is not None and not assoc.is_alive())
                if done:
                    continue
                if now >= deadline:
                    overdue.append((assoc, host))
                else:
                    keep.append((deadline, assoc, host))
            self._watched = keep
        for assoc, host in overdue:
            self.cut += 1
            now = time.monotonic()
            if now - self._last_log.get((host, "deadline"), -1e9) >= self.LOG_EVERY_S:
                self._last_log[(host, "deadline")] = now
                log.warning("closed a connection from %s: no complete association request within %g s "
                            "(listener.request_timeout_s; further ones logged at most once a minute)",
                            host, self.timeout)
            sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _server_class(gate: _Gate) -> type:
    """pynetdicom's threaded server with the gate in front of it."""
    import ssl

    from pynetdicom.transport import ThreadedAssociationServer

    class GatedServer(ThreadedAssociationServer):
        # socketserver listens with a backlog of 5: under a flood the kernel then
        # drops the SYNs of real senders, which retry only after 1 s, 3 s, 7 s...
        # The gate closes unwanted connections at accept, so a deep queue is cheap.
        request_queue_size = socket.SOMAXCONN

        def get_request(self):  # type: ignore[override]
            # accept only: pynetdicom wraps TLS here, in the accept loop, where a
            # peer that never completes its handshake would stop every other one
            return self.socket.accept()

        def verify_request(self, request, client_address):  # type: ignore[override]
            return gate.admit(client_address)

        def service_actions(self) -> None:  # called by serve_forever every poll
            super().service_actions()
            gate.sweep()

        def process_request_thread(self, request, client_address):  # type: ignore[override]
            try:
                if self.ssl_context:
                    request.settimeout(gate.timeout)  # the handshake is part of the request deadline
                    try:
                        request = self.ssl_context.wrap_socket(request, server_side=True)
                    except (OSError, ssl.SSLError) as exc:
                        log.warning("closed a connection from %s: TLS handshake failed (%s)",
                                    gate.host_of(client_address), type(exc).__name__)
                        self.shutdown_request(request)
                        return
                    request.settimeout(None)
                super().process_request_thread(request, client_address)
            finally:
                gate.started(client_address)

    return GatedServer


def _reject(assoc: Any, diagnostic: int) -> None:
    """A-ASSOCIATE-RJ (permanent, service user), and wait until it is on the wire:
    pynetdicom closes the socket right after the EVT_REQUESTED handlers return,
    which could otherwise drop the PDU and leave the peer with a bare abort."""
    assoc.acse.send_reject(0x01, 0x01, diagnostic)
    deadline = time.monotonic() + 2.0
    while assoc.dul.state_machine.current_state != "Sta13" and time.monotonic() < deadline:
        time.sleep(0.001)


class Listener:
    """The SCP: call :meth:`start`, then :meth:`stop`."""

    def __init__(self, pcfg: Mapping[str, Any], spool: Spool):
        AE = _pynetdicom().AE

        self.cfg = pcfg
        self.spool = spool
        self.peers = peers(pcfg)
        lis = pcfg["listener"]
        self.ae_title = lis["ae_title"]
        ae = AE(ae_title=self.ae_title)
        ae.maximum_associations = int(lis["max_associations"])
        ae.acse_timeout = float(lis["acse_timeout_seconds"])
        ae.dimse_timeout = float(lis["dimse_timeout_seconds"])
        ae.network_timeout = float(lis["network_timeout_seconds"])
        for uid in STORAGE_CLASSES:
            ae.add_supported_context(uid, list(TRANSFER_SYNTAXES))
        ae.add_supported_context(_VERIFICATION)
        self.ae = ae
        self.gate = _Gate(self.peers, float(lis["request_timeout_s"]), int(lis["max_connections_per_address"]))
        self.server: Any = None
        self._counts: dict[int, int] = {}
        self._lock = threading.Lock()
        self.stored = 0

    # -------------------------------------------------------------- handlers
    def _on_open(self, event: Any) -> None:
        self.gate.opened(event.assoc, event.address)

    def _on_requested(self, event: Any) -> None:
        assoc = event.assoc
        rq = assoc.requestor.primitive
        calling = str(getattr(rq, "calling_ae_title", "") or "").strip()
        called = str(getattr(rq, "called_ae_title", "") or "").strip()
        address = str(assoc.requestor.address)
        if not any(p.allows(calling, address) for p in self.peers):
            log.warning("rejected an association from AE '%s' at %s: not in listener.allowed", calling[:16], address)
            _reject(assoc, 0x03)
            return
        if self.cfg["listener"]["require_called_ae_title"] and called != self.ae_title.strip():
            log.warning("rejected an association from AE '%s' at %s: called AE title '%s' is not ours",
                        calling[:16], address, called[:16])
            _reject(assoc, 0x07)

    def _on_store(self, event: Any) -> int:
        try:
            sop = str(event.request.AffectedSOPInstanceUID)
            study = str(event.dataset.StudyInstanceUID)
            if not sop or not study:
                raise ValueError("empty UID")
        except Exception:
            log.warning("refused an instance without SOPInstanceUID/StudyInstanceUID")
            return 0xC000  # cannot understand
        data = event.encoded_dataset(include_meta=True)
        problem = incomplete(data)
        if problem is not None:
            # never Success for what we could not read whole: the sender keeps it and resends
            log.warning("refused an incomplete instance (%s): answering 0xC000 'cannot understand'", problem)
            return 0xC000
        try:
            self.spool.store(study, sop, data)
        except OSError as exc:
            log.error("cannot store an instance in the spool (%s): answering 'out of resources'", exc.strerror)
            return 0xA700
        with self._lock:
            key = id(event.assoc)
            self._counts[key] = self._counts.get(key, 0) + 1
            self.stored += 1
        return 0x0000

    def _on_end(self, event: Any) -> None:
        with self._lock:
            n = self._counts.pop(id(event.assoc), 0)
        rq = event.assoc.requestor
        log.info("association from AE '%s' ended: %d instance(s) stored", str(rq.ae_title).strip()[:16], n)

    # -------------------------------------------------------------- life cycle
    def start(self) -> int:
        """Start serving in background threads; returns the bound port."""
        from pynetdicom import evt

        lis = self.cfg["listener"]
        handlers = [
            (evt.EVT_CONN_OPEN, self._on_open),
            (evt.EVT_CONN_OPEN, no_delay),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_end),
            (evt.EVT_ABORTED, self._on_end),
        ]
        # as AE.start_server(block=False), with the gated server class
        server = self.ae.make_server(
            (lis["host"], int(lis["port"])), evt_handlers=handlers,
            ssl_context=server_ssl_context(lis["tls"]), server_class=_server_class(self.gate),
        )
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.25},
                                  name="liverburden-scp", daemon=True)
        thread.start()
        self.ae._servers.append(server)  # AssociationServer.shutdown removes it from there
        self.server = server
        return int(self.server.server_address[1])

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None


def _spawn_worker(config_path: Path, index: int, spool: Spool, verbose: bool, debug: bool = False) -> subprocess.Popen:
    from ..kernels._cache import configure as _numba_cache

    _numba_cache()  # the worker uses the same kernel cache as every other command (README "Cold start")
    env = dict(os.environ)
    env.setdefault("MPLBACKEND", "Agg")
    env["PYTHONUNBUFFERED"] = "1"
    cmd = [sys.executable, "-m", "liverburden.pacs._worker", "--config", str(config_path), "--index", str(index)]
    if verbose:
        cmd.append("--verbose")
    if debug:  # the traceback an "internal error ... see --debug" message points to
        cmd.append("--debug")
    return subprocess.Popen(cmd, env=env)


def run_listener(pcfg: Mapping[str, Any], config_path: Path, *, role: str = "all", verbose: bool = False,
                 stop: threading.Event | None = None, debug: bool = False) -> int:
    """Serve until SIGTERM/SIGINT (or ``stop``): the SCP and its worker processes.

    ``role`` "scp" runs only the SCP, "worker" only the workers (for deployments
    that run them as separate services), "all" both.
    """
    from ..config import load_config

    mcfg = load_config(pcfg["measure"]["config"] or None)  # validate before listening
    spool = Spool(pcfg["listener"]["spool_dir"], mcfg["privacy"]["salt"])
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    listener = None
    guard = None
    if role in ("all", "scp"):
        from .._exceptions import ConfigError
        from ._spool import Lock

        guard = Lock(spool.root / "locks" / "listener.lock")
        if not guard.acquire():
            raise ConfigError(f"{spool.root}: another listener is using this spool")
        n = spool.clean_tmp()
        if n:
            log.info("removed %d partial file(s) left by an earlier crash", n)
        listener = Listener(pcfg, spool)
        port = listener.start()
        info = {"pid": os.getpid(), "port": port, "ae_title": pcfg["listener"]["ae_title"], "started": time.time()}
        tmp = spool.root / ".listener.json.tmp"
        tmp.write_text(json.dumps(info))
        os.replace(tmp, spool.root / "listener.json")
        log.info("listening as %s on %s:%d (%d allowed peer(s), max %d associations)",
                 pcfg["listener"]["ae_title"], pcfg["listener"]["host"], port, len(pcfg["listener"]["allowed"]),
                 pcfg["listener"]["max_associations"])
    workers: dict[int, subprocess.Popen] = {}
    next_start: dict[int, float] = {}
    if role in ("all", "worker"):
        requeued = spool.reset_running()
        if requeued:
            log.info("%d interrupted run(s) queued again", requeued)
        for i in range(int(pcfg["worker"]["processes"])):
            workers[i] = _spawn_worker(config_path, i, spool, verbose, debug)
    try:
        while not stop.wait(0.5):
            for i, proc in list(workers.items()):
                if proc.poll() is None:
                    continue
                if time.monotonic() < next_start.get(i, 0.0):
                    continue
                log.warning("worker %d ended (exit %s); restarting it", i, proc.returncode)
                spool.reset_running(owner=proc.pid)
                workers[i] = _spawn_worker(config_path, i, spool, verbose, debug)
                next_start[i] = time.monotonic() + 5.0
    finally:
        if listener is not None:
            listener.stop()
        if guard is not None:
            guard.release()
        for proc in workers.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in workers.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.info("stopped")
    return 0
