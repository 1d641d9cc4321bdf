"""The spool: durable instance store, persisted study queue and outbox.

Layout (every folder 0700, every file 0600; names are salted hashes, never
patient data)::

    spool/
      tmp/                      partial writes; emptied at start
      studies/<study key>/      one file per instance: <instance key>.dcm
      work/<study key>/<run>/   hard links of one run's instances, masks
      results/<study key>/<run>/  measurements.json bundle, status.json, dicom/
      locks/<study key>.lock    held (flock) while a run is in progress
      queue.db                  sqlite3: studies (state machine) and outbox

An instance is stored by writing a temporary file, fsync, rename into its study
folder and fsync of that folder: when :meth:`Spool.store` returns, the instance
survives a crash or power loss. A study folder's mtime is the time of its last
arrival (a rename into a folder updates it), which is all the quiet-time rule
needs, so the listener never touches the database.

Study states: ``queued`` -> ``running`` -> ``done`` | ``parked`` | ``failed``.
A study whose instances change after it finished is queued again (a new run,
new fingerprint). Outbox rows: ``pending`` -> ``sent``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

__all__ = ["Spool", "StudyRow", "key_of"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    skey TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    dir_mtime_ns INTEGER NOT NULL DEFAULT 0,
    instances INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    run TEXT,
    owner INTEGER,
    measured_instances INTEGER,
    finished REAL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    skey TEXT NOT NULL,
    path TEXT NOT NULL,
    dest TEXT NOT NULL,
    sop_class TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL,
    last_error TEXT,
    sent REAL,
    UNIQUE (path, dest)
);
CREATE INDEX IF NOT EXISTS studies_state ON studies (state);
CREATE INDEX IF NOT EXISTS outbox_state ON outbox (state, next_try);
"""


def key_of(value: str, salt: str, n: int = 32) -> str:
    """Salted sha256 of an identifier (hex, ``n`` digits): names in the spool."""
    return hashlib.sha256((salt + "\x00" + value).encode()).hexdigest()[:n]


@dataclass(frozen=True)
class StudyRow:
    skey: str
    state: str
    fingerprint: str
    dir_mtime_ns: int
    instances: int
    attempts: int
    reason: str | None
    run: str | None
    owner: int | None
    measured_instances: int | None
    finished: float | None
    updated: float


def _mkdir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.chmod(path, 0o700)
    except PermissionError:  # pragma: no cover - not ours
        pass
    return path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """A spool folder. Safe to use from several threads and processes."""

    def __init__(self, root: str | Path, salt: str):
        self.root = Path(root)
        self.salt = salt
        old = os.umask(0o077)
        try:
            for sub in ("", "tmp", "studies", "work", "results", "locks"):
                _mkdir(self.root / sub)
        finally:
            os.umask(old)
        self.db_path = self.root / "queue.db"
        with self.db() as con:
            con.executescript(_SCHEMA)
        try:
            os.chmod(self.db_path, 0o600)
        except OSError:  # pragma: no cover
            pass

    # ------------------------------------------------------------------ paths
    @property
    def studies_dir(self) -> Path:
        return self.root / "studies"

    def study_dir(self, skey: str) -> Path:
        return self.root / "studies" / skey

    def results_dir(self, skey: str, run: str | None = None) -> Path:
        p = self.root / "results" / skey
        return p / run if run else p

    def work_dir(self, skey: str, run: str) -> Path:
        return self.root / "work" / skey / run

    def study_key(self, study_uid: str) -> str:
        return key_of(study_uid, self.salt)

    def instance_key(self, sop_uid: str) -> str:
        return key_of(sop_uid, self.salt)

    # ------------------------------------------------------------------ store
    def clean_tmp(self) -> int:
        """Remove partial writes left by a crash; returns how many."""
        n = 0
        for p in (self.root / "tmp").iterdir():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += 1
        return n

    def store(self, study_uid: str, sop_uid: str, data: bytes) -> Path:
        """Durably store one instance (bytes of a DICOM file); returns its path.

        The same instance stored twice keeps one file (the last one).
        """
        sdir = self.study_dir(self.study_key(study_uid))
        final = sdir / (self.instance_key(sop_uid) + ".dcm")
        fd, tmp = tempfile.mkstemp(prefix="i", suffix=".part", dir=self.root / "tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            for attempt in range(3):
                new_dir = not sdir.is_dir()
                if new_dir:
                    _mkdir(sdir)
                    _fsync_dir(self.studies_dir)
                try:
                    os.rename(tmp, final)
                    break
                except FileNotFoundError:  # the study folder was removed by clean-up meanwhile
                    if attempt == 2:
                        raise
            _fsync_dir(sdir)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return final

    # ------------------------------------------------------------------ database
    @contextlib.contextmanager
    def db(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.db_path, timeout=60.0, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            con.execute("PRAGMA busy_timeout=60000")
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.db() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def study(self, skey: str) -> StudyRow | None:
        with self.db() as con:
            r = con.execute("SELECT * FROM studies WHERE skey = ?", (skey,)).fetchone()
        return None if r is None else StudyRow(*r)

    def studies(self, state: str | None = None) -> list[StudyRow]:
        with self.db() as con:
            if state is None:
                rows = con.execute("SELECT * FROM studies ORDER BY updated").fetchall()
            else:
                rows = con.execute("SELECT * FROM studies WHERE state = ? ORDER BY updated", (state,)).fetchall()
        return [StudyRow(*r) for r in rows]

    def instance_files(self, skey: str) -> list[Path]:
        d = self.study_dir(skey)
        try:
            return sorted(p for p in d.iterdir() if p.suffix == ".dcm")
        except FileNotFoundError:
            return []

    @staticmethod
    def fingerprint(files: list[Path]) -> str:
        """Of a set of instance files: their names and sizes (names are instance keys)."""
        h = hashlib.sha256()
        for p in sorted(files):
            try:
                size = p.stat().st_size
            except FileNotFoundError:
                continue
            h.update(f"{p.name}:{size}\n".encode())
        return h.hexdigest()

    def scan(self, quiet_seconds: float, *, now_ns: int | None = None) -> list[str]:
        """Queue every study folder quiet for ``quiet_seconds`` whose instances
        changed since its last run; returns the study keys queued."""
        queued: list[str] = []
        try:
            entries = list(os.scandir(self.studies_dir))
        except FileNotFoundError:
            return queued
        with self.db() as con:
            seen = dict(con.execute("SELECT skey, dir_mtime_ns FROM studies").fetchall())
        for e in entries:
            if not e.is_dir():
                continue
            try:
                mt = e.stat().st_mtime_ns
            except FileNotFoundError:
                continue
            now = time.time_ns() if now_ns is None else now_ns
            if now - mt < quiet_seconds * 1e9:
                continue
            if seen.get(e.name) == mt:
                continue
            files = self.instance_files(e.name)
            if not files:
                continue
            fp = self.fingerprint(files)
            with self.transaction() as con:
                cur = con.execute("SELECT state, fingerprint FROM studies WHERE skey = ?", (e.name,)).fetchone()
                t = time.time()
                if cur is None:
                    con.execute(
                        "INSERT INTO studies (skey, state, fingerprint, dir_mtime_ns, instances, updated) "
                        "VALUES (?, 'queued', ?, ?, ?, ?)", (e.name, fp, mt, len(files), t))
                    queued.append(e.name)
                elif cur[1] == fp:
                    con.execute("UPDATE studies SET dir_mtime_ns = ? WHERE skey = ?", (mt, e.name))
                else:
                    con.execute(
                        "UPDATE studies SET state = 'queued', fingerprint = ?, dir_mtime_ns = ?, instances = ?, "
                        "attempts = 0, reason = NULL, updated = ? WHERE skey = ?", (fp, mt, len(files), t, e.name))
                    queued.append(e.name)
        return queued

    def reset_running(self, owner: int | None = None) -> int:
        """Runs that were in progress in a process that is gone go back to the queue."""
        with self.transaction() as con:
            if owner is None:
                cur = con.execute("UPDATE studies SET state = 'queued', owner = NULL WHERE state = 'running'")
            else:
                cur = con.execute("UPDATE studies SET state = 'queued', owner = NULL WHERE state = 'running' "
                                  "AND owner = ?", (owner,))
            return cur.rowcount

    def claim(self, owner: int, max_attempts: int) -> tuple[StudyRow, "Lock"] | None:
        """Take the oldest queued study whose lock is free; mark it running."""
        for row in self.studies("queued"):
            lock = Lock(self.root / "locks" / f"{row.skey}.lock")
            if not lock.acquire():
                continue
            with self.transaction() as con:
                cur = con.execute(
                    "UPDATE studies SET state = 'running', owner = ?, attempts = attempts + 1, updated = ? "
                    "WHERE skey = ? AND state = 'queued'", (owner, time.time(), row.skey))
                if cur.rowcount != 1:
                    lock.release()
                    continue
                r = con.execute("SELECT * FROM studies WHERE skey = ?", (row.skey,)).fetchone()
            claimed = StudyRow(*r)
            if claimed.attempts > max_attempts:
                self.finish(claimed.skey, claimed.fingerprint, "failed", reason=(
                    f"the run did not finish in {max_attempts} attempt(s) (a crash or a kill each time); "
                    "fix the cause and re-send the study"), run=None)
                lock.release()
                continue
            return claimed, lock
        return None

    def finish(self, skey: str, fingerprint: str, state: str, *, reason: str | None, run: str | None,
               measured_instances: int | None = None, outbox: list[tuple[Path, str, str]] | None = None) -> bool:
        """Record a run's end (and its outbox rows) in one transaction.

        ``fingerprint`` is that of the instances the run saw. If the scanner
        queued the study again meanwhile (new instances), the study stays queued
        for another run; this run's results are sent all the same. Returns
        whether the study was marked.
        """
        t = time.time()
        with self.transaction() as con:
            cur = con.execute(
                "UPDATE studies SET state = ?, fingerprint = ?, reason = ?, run = ?, owner = NULL, "
                "measured_instances = ?, finished = ?, updated = ? WHERE skey = ? AND state = 'running'",
                (state, fingerprint, reason, run, measured_instances, t, t, skey))
            ok = cur.rowcount == 1
            for path, dest, sop_class in outbox or []:
                con.execute(
                    "INSERT OR IGNORE INTO outbox (skey, path, dest, sop_class, state, next_try) "
                    "VALUES (?, ?, ?, ?, 'pending', ?)", (skey, str(path), dest, sop_class, t))
        return ok

    # ------------------------------------------------------------------ outbox
    def due(self, dest: str, now: float | None = None, limit: int = 500) -> list[tuple[int, str, str, str, int]]:
        t = time.time() if now is None else now
        with self.db() as con:
            return con.execute(
                "SELECT id, skey, path, sop_class, attempts FROM outbox WHERE state = 'pending' AND dest = ? "
                "AND next_try <= ? ORDER BY id LIMIT ?", (dest, t, limit)).fetchall()

    def pending(self, dest: str | None = None) -> int:
        with self.db() as con:
            if dest is None:
                return con.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0]
            return con.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending' AND dest = ?",
                               (dest,)).fetchone()[0]

    def mark_sent(self, ids: list[int]) -> None:
        if not ids:
            return
        t = time.time()
        with self.transaction() as con:
            con.executemany("UPDATE outbox SET state = 'sent', sent = ?, last_error = NULL WHERE id = ?",
                            [(t, i) for i in ids])

    def mark_failed(self, ids: list[int], error: str, *, initial_s: float, max_s: float) -> float:
        """Back off: the next try after initial x 2^(attempts-1), at most ``max_s``."""
        t = time.time()
        nxt = t
        with self.transaction() as con:
            for i in ids:
                (att,) = con.execute("SELECT attempts FROM outbox WHERE id = ?", (i,)).fetchone()
                delay = min(max_s, initial_s * (2 ** min(att, 30)))
                nxt = t + delay
                con.execute("UPDATE outbox SET attempts = attempts + 1, next_try = ?, last_error = ? WHERE id = ?",
                            (nxt, error[:500], i))
        return nxt

    def outbox_rows(self) -> list[dict[str, Any]]:
        with self.db() as con:
            cur = con.execute("SELECT id, skey, path, dest, sop_class, state, attempts, last_error FROM outbox")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]

    # ------------------------------------------------------------------ clean-up
    def remove_finished(self, retain_days: float) -> int:
        """Delete the instances and work files of studies finished (and sent)
        more than ``retain_days`` ago. Results stay. 0 keeps everything."""
        if retain_days <= 0:
            return 0
        limit = time.time() - retain_days * 86400.0
        n = 0
        with self.db() as con:
            rows = con.execute(
                "SELECT skey FROM studies s WHERE state IN ('done', 'parked', 'failed') AND finished < ? AND NOT "
                "EXISTS (SELECT 1 FROM outbox o WHERE o.skey = s.skey AND o.state = 'pending')", (limit,)).fetchall()
        for (skey,) in rows:
            lock = Lock(self.root / "locks" / f"{skey}.lock")
            if not lock.acquire():
                continue
            try:
                d = self.study_dir(skey)
                if d.is_dir() and (time.time_ns() - d.stat().st_mtime_ns) / 1e9 > retain_days * 86400.0:
                    shutil.rmtree(d, ignore_errors=True)
                    n += 1
                shutil.rmtree(self.root / "work" / skey, ignore_errors=True)
            finally:
                lock.release()
        return n

    def write_status(self, skey: str, run: str | None, status: dict[str, Any]) -> Path:
        """``results/<study>/[<run>/]status.json``, atomically (no identifiers in it)."""
        d = _mkdir(self.results_dir(skey, run))
        p = d / "status.json"
        fd, tmp = tempfile.mkstemp(prefix=".status.", suffix=".tmp", dir=d)
        with os.fdopen(fd, "w") as fh:
            json.dump(status, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
        return p


class Lock:
    """A non-blocking exclusive ``flock`` on a file; released when the process dies."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return False
            raise
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
