"""A worker process of the listener: completes studies, runs them, sends results.

``python -m liverburden.pacs._worker --config pacs.toml --index N`` (started by
``liverburden listen``). Every worker claims queued studies from the spool's
database and runs :func:`~liverburden.pacs._process.process_study` on a
snapshot (hard links) of their instances. Worker 0 also

* queues every study folder quiet for ``listener.quiet_seconds`` whose
  instances changed since its last run (the study is complete);
* sends the outbox to ``[destination]`` with exponential back-off (a
  destination that is down keeps its results pending, on disk);
* deletes the instances of studies finished ``worker.retain_days`` ago.

A run interrupted by a crash or a kill is queued again at the next start and
repeats harmlessly: the output UIDs derive from the input and the result. A
worker whose parent (the listener) is gone exits.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ._config import load_pacs_config
from ._spool import Spool, StudyRow

__all__ = ["Worker", "main"]

log = logging.getLogger("liverburden.pacs._worker")  # not __name__: run as __main__ (python -m)

DICOM_DEST = "dicom"


class Backoff:
    """Exponential back-off for a loop whose step keeps failing (a full spool disk:
    sqlite "database or disk is full"). The first failure waits ``base`` seconds,
    each next one twice as long up to ``cap``; each wait is logged once, with the
    error type only. A success resets it and says so once."""

    def __init__(self, name: str, base: float, cap: float):
        self.name, self.base, self.cap = name, float(base), float(cap)
        self.failures = 0

    def failed(self, exc: BaseException) -> float:
        self.failures += 1
        delay = min(self.cap, self.base * 2 ** (self.failures - 1))
        why = getattr(exc, "strerror", None) or type(exc).__name__
        log.error("%s: %s (failure %d in a row); next try in %.1f s", self.name, why, self.failures, delay)
        log.debug("traceback", exc_info=exc)
        return delay

    def ok(self) -> None:
        if self.failures:
            log.warning("%s: working again after %d failure(s)", self.name, self.failures)
        self.failures = 0


class Worker:
    def __init__(self, pcfg: Mapping[str, Any], spool: Spool, index: int = 0):
        self.cfg = pcfg
        self.spool = spool
        self.index = index
        self.stop = threading.Event()

    # -------------------------------------------------------------- jobs
    def run_one(self) -> bool:
        """Claim and run one queued study; False when none was waiting."""
        got = self.spool.claim(os.getpid(), int(self.cfg["worker"]["max_attempts"]))
        if got is None:
            return False
        row, lock = got
        try:
            self._run(row)
        finally:
            lock.release()
        return True

    def _run(self, row: StudyRow) -> None:
        from ._process import StudyOutcome, process_study

        skey = row.skey
        files = self.spool.instance_files(skey)
        fp = Spool.fingerprint(files)
        run = fp[:16]
        work = self.spool.work_dir(skey, run)
        snap = work / "in"
        if snap.exists():
            shutil.rmtree(snap)
        snap.mkdir(parents=True, mode=0o700)
        for p in files:
            try:
                os.link(p, snap / p.name)
            except FileNotFoundError:
                continue
            except OSError:
                shutil.copy2(p, snap / p.name)
        result_dir = self.spool.results_dir(skey, run)
        t0 = time.perf_counter()
        log.info("study %s: run %s on %d instance(s)", skey[:12], run[:8], len(files))
        try:
            outcome = process_study(snap, work / "masks", result_dir, self.cfg)
        except OSError as exc:
            # the spool's disk, not the study: leave it queued (attempts bound the retries)
            log.error("study %s: run failed on the spool (%s); it stays queued", skey[:12], exc.strerror)
            self.spool.finish(skey, fp, "queued", reason=f"spool error: {exc.strerror}", run=run)
            return
        except Exception as exc:  # a bug: the study is kept, the type is named, nothing else
            log.error("study %s: internal error (%s)", skey[:12], type(exc).__name__)
            log.debug("traceback", exc_info=True)
            outcome = StudyOutcome("failed", f"internal error ({type(exc).__name__}); see the worker log with --debug",
                                   result_dir)
        outbox = []
        if outcome.state == "done" and outcome.outputs is not None and self.cfg["destination"]["enabled"]:
            for kind in ("seg", "sr", "sc"):  # the SEG first: the SR references it
                if kind in outcome.outputs.paths:
                    outbox.append((outcome.outputs.paths[kind], DICOM_DEST, outcome.outputs.sop_classes[kind]))
        self.spool.write_status(skey, run, outcome.status(skey, run, len(files), self.cfg))
        self.spool.finish(skey, fp, outcome.state, reason=outcome.reason, run=run,
                          measured_instances=outcome.measured_instances, outbox=outbox)
        if outcome.state != "failed":  # kept after an internal error, for --debug
            shutil.rmtree(work, ignore_errors=True)
        if outcome.state == "done":
            n_out = len(outcome.outputs.paths) if outcome.outputs else 0
            log.info("study %s: measured %d instance(s), %s lesion(s), %d DICOM output(s), %d to send; %.1f s",
                     skey[:12], outcome.measured_instances, outcome.lesion_count, n_out, len(outbox),
                     time.perf_counter() - t0)
        else:
            log.warning("study %s: %s: %s", skey[:12], outcome.state, outcome.reason)

    # -------------------------------------------------------------- sending
    def send_due(self) -> int:
        """Send what is due in the outbox; returns how many were stored."""
        from ._send import SendError, send_files

        dest = self.cfg["destination"]
        if not dest["enabled"]:
            return 0
        due = self.spool.due(DICOM_DEST)
        if not due:
            return 0
        items = [(rid, Path(path), sop_class) for rid, _skey, path, sop_class, _att in due]
        missing = [rid for rid, p, _ in items if not p.exists()]
        if missing:
            self.spool.mark_failed(missing, "result file missing", initial_s=dest["retry_max_seconds"],
                                   max_s=dest["retry_max_seconds"])
            items = [it for it in items if it[0] not in missing]
        try:
            stored, errors = send_files(items, dest)
        except SendError as exc:
            nxt = self.spool.mark_failed([i[0] for i in items], str(exc), initial_s=dest["retry_initial_seconds"],
                                         max_s=dest["retry_max_seconds"])
            log.warning("destination: %s; %d file(s) kept in the outbox, next try in %.1f s", exc, len(items),
                        nxt - time.time())
            return 0
        self.spool.mark_sent(stored)
        if errors:
            self.spool.mark_failed(list(errors), "; ".join(sorted(set(errors.values())))[:300],
                                   initial_s=dest["retry_initial_seconds"], max_s=dest["retry_max_seconds"])
            log.warning("destination refused %d file(s) (%s); kept in the outbox", len(errors),
                        ", ".join(sorted(set(errors.values())))[:200])
        if stored:
            log.info("sent %d file(s) to %s", len(stored), dest["ae_title"])
        return len(stored)

    # -------------------------------------------------------------- loops
    def _backoff(self, name: str, base: float) -> Backoff:
        return Backoff(name, base, float(self.cfg["worker"]["error_backoff_max_seconds"]))

    def _every(self, seconds: float, fn, name: str) -> threading.Thread:
        def loop() -> None:
            bo = self._backoff(name, seconds)
            while not self.stop.is_set():
                try:
                    fn()
                    bo.ok()
                    wait = seconds
                except Exception as exc:  # keep the loop alive, back off; name the type only
                    wait = bo.failed(exc)
                self.stop.wait(wait)

        t = threading.Thread(target=loop, name=name, daemon=True)
        t.start()
        return t

    def serve(self, parent_pid: int | None = None) -> None:
        poll = float(self.cfg["worker"]["poll_seconds"])
        quiet = float(self.cfg["listener"]["quiet_seconds"])
        if self.index == 0:
            self._every(min(poll, quiet / 2), lambda: self.spool.scan(quiet), "scan")
            self._every(poll, self.send_due, "send")
            self._every(600.0, lambda: self.spool.remove_finished(float(self.cfg["worker"]["retain_days"])),
                        "clean-up")
        bo = self._backoff("worker loop", poll)
        while not self.stop.is_set():
            if parent_pid is not None and os.getppid() != parent_pid:
                log.warning("the listener is gone; worker %d exits", self.index)
                break
            try:
                busy = self.run_one()
                bo.ok()
                wait = poll
            except Exception as exc:
                busy = False
                wait = bo.failed(exc)
            if not busy:
                self.stop.wait(wait)


def main(argv: Sequence[str] | None = None) -> int:
    import signal

    from ..config import load_config

    ap = argparse.ArgumentParser(prog="python -m liverburden.pacs._worker")
    ap.add_argument("--config", required=True)
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--debug", action="store_true", help="log tracebacks of internal errors")
    args = ap.parse_args(argv)
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level,
                        format=f"liverburden worker {args.index} %(levelname)s: %(message)s")
    from ._privacy import quiet_third_party

    quiet_third_party(debug=args.debug)
    pcfg = load_pacs_config(args.config)
    mcfg = load_config(pcfg["measure"]["config"] or None)
    spool = Spool(pcfg["listener"]["spool_dir"], mcfg["privacy"]["salt"])
    w = Worker(pcfg, spool, args.index)
    signal.signal(signal.SIGTERM, lambda *_: w.stop.set())
    signal.signal(signal.SIGINT, lambda *_: w.stop.set())
    w.serve(parent_pid=os.getppid())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
