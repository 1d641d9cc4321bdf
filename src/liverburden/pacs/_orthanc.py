"""``liverburden orthanc``: follow an Orthanc server's ``/changes`` feed.

For each ``StableStudy`` change the study is pulled over REST (one
``/instances/{id}/file`` per instance of the series not written by
liverburden), measured by :func:`~liverburden.pacs._process.process_study`, and
its SEG, SR and Secondary Capture are uploaded back (``POST /instances``): they
carry the study's identity, so Orthanc files them into the same study.

State (a JSON file, written atomically) remembers the last change seen and,
per study (by salted key), the fingerprint of the instances last processed:
a study is processed again only when its own instances changed, so our own
uploads (which make the study unstable and stable again) never re-trigger a
run. Uploads go through the spool's outbox with back-off: an Orthanc that is
down keeps the results pending until a later run. Only the standard library
talks HTTP (urllib).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping

from ._spool import Spool, key_of

__all__ = ["OrthancClient", "OrthancError", "run_orthanc"]

log = logging.getLogger(__name__)


class OrthancError(Exception):
    """Orthanc could not be reached or answered with an error."""


class OrthancClient:
    """A minimal Orthanc REST client (urllib)."""

    def __init__(self, url: str, *, username: str = "", password: str = "", timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.headers: dict[str, str] = {}
        if username:
            tok = base64.b64encode(f"{username}:{password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {tok}"

    def _request(self, path: str, data: bytes | None = None, content_type: str | None = None) -> bytes:
        headers = dict(self.headers)
        if content_type:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method="POST" if data else "GET")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.read()
        except urllib.error.HTTPError as exc:
            raise OrthancError(f"{self.url}: HTTP {exc.code} on {path.split('?')[0].split('/')[1]}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise OrthancError(f"{self.url}: not reachable ({reason})") from None

    def get(self, path: str) -> Any:
        return json.loads(self._request(path))

    def get_bytes(self, path: str) -> bytes:
        return self._request(path)

    def upload(self, data: bytes) -> dict[str, Any]:
        return json.loads(self._request("/instances", data, "application/dicom"))

    def changes(self, since: int, limit: int = 200) -> dict[str, Any]:
        return self.get(f"/changes?since={int(since)}&limit={int(limit)}")


def _atomic_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".state.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class _State:
    """The follower's memory: last change seen, processed studies."""

    def __init__(self, path: Path, url: str):
        self.path = path
        self.url = url
        data: dict[str, Any] = {}
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                from .._exceptions import ConfigError

                raise ConfigError(f"{path}: the Orthanc state file cannot be read ({exc}); "
                                  "move it away to start over") from None
        self.servers: dict[str, Any] = data.get("servers", {})
        self.me = self.servers.setdefault(url, {"last_seq": 0, "studies": {}})

    @property
    def last_seq(self) -> int:
        return int(self.me["last_seq"])

    @last_seq.setter
    def last_seq(self, v: int) -> None:
        self.me["last_seq"] = int(v)

    def study(self, skey: str) -> dict[str, Any] | None:
        return self.me["studies"].get(skey)

    def set_study(self, skey: str, **kw: Any) -> None:
        self.me["studies"][skey] = dict(kw, updated=time.time())

    def save(self) -> None:
        _atomic_json(self.path, {"note": "liverburden orthanc follower state (no identifiers)",
                                 "servers": self.servers})


class Follower:
    def __init__(self, pcfg: Mapping[str, Any], client: OrthancClient, spool: Spool, state: _State):
        self.cfg = pcfg
        self.client = client
        self.spool = spool
        self.state = state
        self.dest = "orthanc:" + client.url
        self.counts = {"done": 0, "parked": 0, "failed": 0, "skipped": 0, "uploaded": 0}

    # ---------------------------------------------------------------- changes
    def stable_studies(self) -> tuple[list[str], int]:
        """Study IDs of the StableStudy changes after the last one seen, and the new last seq."""
        since = self.state.last_seq
        ids: list[str] = []
        while True:
            ch = self.client.changes(since)
            for c in ch.get("Changes", []):
                if c.get("ChangeType") == "StableStudy" and c.get("ID") not in ids:
                    ids.append(str(c["ID"]))
            last = int(ch.get("Last", since))
            if ch.get("Done", True) or last <= since:
                return ids, last
            since = last

    def _inputs(self, study_id: str) -> tuple[list[str], str, bool] | None:
        """Instance IDs of the series not written by liverburden, their fingerprint,
        and whether one of them is a SEG (without one there is nothing to measure)."""
        try:
            info = self.client.get(f"/studies/{study_id}")
        except OrthancError as exc:
            if "HTTP 404" in str(exc):
                return None  # deleted meanwhile
            raise
        if not info.get("IsStable", True):
            return None  # a later StableStudy will come
        series = self.client.get(f"/studies/{study_id}/series")
        inst: list[str] = []
        has_seg = False
        for s in series:
            man = s.get("MainDicomTags", {}).get("Manufacturer")
            if man is None and s.get("Instances"):
                tags = self.client.get(f"/instances/{s['Instances'][0]}/simplified-tags")
                man = tags.get("Manufacturer", "")
            if str(man or "").strip().lower() == "liverburden":
                continue
            inst.extend(s.get("Instances", []))
            has_seg = has_seg or s.get("MainDicomTags", {}).get("Modality") == "SEG"
        fp = hashlib.sha256("\n".join(sorted(inst)).encode()).hexdigest()
        return inst, fp, has_seg

    # ---------------------------------------------------------------- one study
    def process(self, study_id: str) -> str:
        from ._process import StudyOutcome, process_study

        skey = key_of(study_id, self.spool.salt)
        got = self._inputs(study_id)
        if got is None:
            self.counts["skipped"] += 1
            return "skipped"
        inst, fp, has_seg = got
        prev = self.state.study(skey)
        if prev is not None and prev.get("fingerprint") == fp:
            self.counts["skipped"] += 1
            return "skipped"
        run = fp[:16]
        if not has_seg:  # decided from the index: no download of a study we cannot measure
            reason = "the study holds no DICOM SEG (liver and lesion segmentations are needed; seen in the index)"
            self.state.set_study(skey, fingerprint=fp, state="parked", run=run, reason=reason)
            self.state.save()
            self.counts["parked"] += 1
            print(f"study {skey[:12]}: parked: {reason}", flush=True)
            return "parked"
        work = self.spool.work_dir("orthanc-" + skey, run)
        snap = work / "in"
        if snap.exists():
            shutil.rmtree(snap)
        snap.mkdir(parents=True, mode=0o700)

        def fetch(iid: str) -> None:
            data = self.client.get_bytes(f"/instances/{iid}/file")
            (snap / (key_of(iid, self.spool.salt) + ".dcm")).write_bytes(data)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=4) as ex:
            list(ex.map(fetch, inst))
        result_dir = self.spool.results_dir("orthanc-" + skey, run)
        try:
            outcome = process_study(snap, work / "masks", result_dir, self.cfg)
        except Exception as exc:
            log.error("study %s: internal error (%s)", skey[:12], type(exc).__name__)
            log.debug("traceback", exc_info=True)
            outcome = StudyOutcome("failed", f"internal error ({type(exc).__name__})", result_dir)
        self.spool.write_status("orthanc-" + skey, run, outcome.status(skey, run, len(inst), self.cfg))
        if outcome.state == "done" and outcome.outputs is not None:
            rows = [(outcome.outputs.paths[k], self.dest, outcome.outputs.sop_classes[k])
                    for k in ("seg", "sr", "sc") if k in outcome.outputs.paths]
            with self.spool.transaction() as con:
                for path, dest, sop_class in rows:
                    con.execute("INSERT OR IGNORE INTO outbox (skey, path, dest, sop_class, state, next_try) "
                                "VALUES (?, ?, ?, ?, 'pending', ?)", ("orthanc-" + skey, str(path), dest, sop_class,
                                                                        time.time()))
        if outcome.state != "failed":
            shutil.rmtree(work, ignore_errors=True)
        else:
            shutil.rmtree(snap, ignore_errors=True)
        self.state.set_study(skey, fingerprint=fp, state=outcome.state, run=run, reason=outcome.reason)
        self.state.save()
        self.counts[outcome.state] = self.counts.get(outcome.state, 0) + 1
        msg = f"study {skey[:12]}: {outcome.state}"
        if outcome.state == "done":
            msg += (f", {outcome.measured_instances} instance(s) measured, {outcome.lesion_count} lesion(s) "
                    f"({time.perf_counter() - t0:.1f} s)")
        else:
            msg += f": {outcome.reason}"
        print(msg, flush=True)
        return outcome.state

    # ---------------------------------------------------------------- uploads
    def upload_due(self, *, force: bool = False) -> int:
        """Upload pending results; back-off on failure. ``force`` ignores next_try."""
        d = self.cfg["destination"]
        due = self.spool.due(self.dest, now=float("inf") if force else None)
        n = 0
        for rid, _skey, path, _cls, _att in due:
            try:
                data = Path(path).read_bytes()
                ans = self.client.upload(data)
            except (OrthancError, OSError) as exc:
                self.spool.mark_failed([rid], str(exc), initial_s=d["retry_initial_seconds"],
                                       max_s=d["retry_max_seconds"])
                log.warning("upload failed (%s); kept in the outbox", exc)
                break  # the server is down: retry later, in order
            if str(ans.get("Status", "")) in ("Success", "AlreadyStored"):
                self.spool.mark_sent([rid])
                n += 1
            else:
                self.spool.mark_failed([rid], f"Orthanc answered {ans.get('Status')}",
                                       initial_s=d["retry_initial_seconds"], max_s=d["retry_max_seconds"])
        self.counts["uploaded"] += n
        return n

    def once(self) -> None:
        ids, last = self.stable_studies()
        for sid in ids:
            self.process(sid)
            self.upload_due(force=True)
        self.state.last_seq = last
        self.state.save()
        self.upload_due(force=True)


def run_orthanc(pcfg: Mapping[str, Any], url: str, *, once: bool, state_path: Path | None = None,
                stop: Any = None) -> int:
    """Follow ``url``; with ``once`` process every stable study not yet processed and return.

    Exit codes: 0 every study processed (measured or parked with a reason) and
    every result uploaded; 3 a study failed or results are still pending
    (they stay in the outbox for the next run); 2 Orthanc is not reachable.
    """
    import threading

    from ..config import load_config

    mcfg = load_config(pcfg["measure"]["config"] or None)
    spool = Spool(pcfg["listener"]["spool_dir"], mcfg["privacy"]["salt"])
    o = pcfg["orthanc"]
    password = os.environ.get(o["password_env"], "") if o["password_env"] else ""
    client = OrthancClient(url, username=o["username"], password=password, timeout=float(o["timeout_seconds"]))
    state = _State(Path(state_path) if state_path else Path(o["state_file"]), client.url)
    f = Follower(pcfg, client, spool, state)
    stop = stop or threading.Event()
    try:
        client.get("/system")
    except OrthancError as exc:
        if once:
            from .._exceptions import InputError

            raise InputError(str(exc)) from None
        log.warning("%s; waiting for it", exc)
    if once:
        try:
            f.upload_due(force=True)
            f.once()
        except OrthancError as exc:
            print(f"liverburden: error: {exc}; what was done is kept, the next run goes on", file=sys.stderr,
                  flush=True)
            return 3
        pending = spool.pending(f.dest)
        print(f"orthanc: {f.counts['done']} measured, {f.counts['parked']} parked, {f.counts['failed']} failed, "
              f"{f.counts['skipped']} already processed or unstable; {f.counts['uploaded']} object(s) uploaded, "
              f"{pending} pending", flush=True)
        return 0 if f.counts["failed"] == 0 and pending == 0 else 3
    poll = float(o["poll_seconds"])
    while not stop.is_set():
        try:
            f.upload_due()
            ids, last = f.stable_studies()
            for sid in ids:
                if stop.is_set():
                    break
                f.process(sid)
                f.upload_due(force=True)
            else:
                state.last_seq = last
                state.save()
        except OrthancError as exc:
            log.warning("%s; retrying in %.0f s", exc, poll)
        stop.wait(poll)
    return 0
