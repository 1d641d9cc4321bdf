"""Many studies: a manifest, one isolated run per study, local or on Dask.

``conventions.md`` "Cohorts": manifest columns, exit codes (0 all ok, 3 some
failed, 2 manifest invalid). Each study writes its own folder and a
``status.json`` (ok / failed with the error class and message); one bad
study never stops or corrupts the others. ``--resume`` skips studies whose
status is ok for the same input content hash and configuration. Outputs are
written atomically. The same code path runs on a LocalCluster (N worker
processes) or on an existing scheduler.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import logging
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ._exceptions import InputError, LiverburdenError
from ._version import __version__
from .config import load_config

log = logging.getLogger(__name__)

MEASURE_COLS = ("image", "liver", "lesions", "segments", "resect", "height_cm", "weight_kg")
MARGIN_COLS = ("pre", "post", "tumor", "zone", "liver_pre", "liver_post")
ALL_COLS = ("patient", "timepoint", "day") + MEASURE_COLS + MARGIN_COLS
PATH_COLS = ("image", "liver", "lesions", "segments", "pre", "post", "tumor", "zone", "liver_pre", "liver_post")

EXIT_OK = 0
EXIT_SOME_FAILED = 3


class ManifestError(InputError):
    """The manifest itself is invalid (exit 2, no study is run)."""


@dataclass(frozen=True)
class StudyRow:
    row: int  # 1-based data row number (header = row 1, so the first study is row 2)
    patient: str
    timepoint: str
    day: float | None
    fields: dict[str, str]

    @property
    def key(self) -> str:
        return f"{_safe(self.patient)}/{_safe(self.timepoint)}"

    @property
    def has_measure(self) -> bool:
        return bool(self.fields.get("image"))

    @property
    def has_margin(self) -> bool:
        return bool(self.fields.get("pre"))


def _safe(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return s or "_"


def _folder_collisions(rows: Sequence[StudyRow]) -> list[str]:
    """Distinct patient / time point keys that would share a results folder.

    Folder names are the keys with every character outside ``A-Za-z0-9._-`` made
    ``_`` (``P 1``, ``P/1`` and ``P_1`` all become ``P_1``; ``..`` and ``...``
    become ``_``), compared without case (case-insensitive file systems). Two
    studies in one folder would silently replace each other's numbers, so this is a
    manifest error naming both rows.
    """
    errors: list[str] = []
    patients: dict[str, tuple[int, str]] = {}
    studies: dict[str, tuple[int, str, str]] = {}
    for r in rows:
        pk = _safe(r.patient).casefold()
        first = patients.setdefault(pk, (r.row, r.patient))
        if first[1] != r.patient:
            errors.append(f"row {r.row}: patient '{r.patient}' and patient '{first[1]}' of row {first[0]} share the "
                          f"results folder '{_safe(r.patient)}' (folder names keep only A-Za-z0-9._- and ignore case); "
                          "rename one")
            continue
        sk = r.key.casefold()
        first_s = studies.setdefault(sk, (r.row, r.patient, r.timepoint))
        if first_s[2] != r.timepoint:
            errors.append(f"row {r.row}: time point '{r.timepoint}' and time point '{first_s[2]}' of row {first_s[0]} "
                          f"(patient '{r.patient}') share the results folder '{r.key}' (folder names keep only "
                          "A-Za-z0-9._- and ignore case); rename one")
    return errors


def read_manifest(path: str | Path) -> list[StudyRow]:
    """Read and validate a manifest before any work; errors carry row numbers."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ManifestError(f"{p}: cannot read the manifest ({exc.strerror})") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise ManifestError(f"{p}: the manifest is empty")
    header = [h.strip() for h in rows[0]]
    unknown = [h for h in header if h not in ALL_COLS]
    if unknown:
        raise ManifestError(f"{p}: unknown column(s) {', '.join(unknown)} (known: {', '.join(ALL_COLS)})")
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise ManifestError(f"{p}: duplicate column(s) {', '.join(dup)}")
    for req in ("patient", "timepoint"):
        if req not in header:
            raise ManifestError(f"{p}: the manifest needs a '{req}' column")
    base = p.parent
    out: list[StudyRow] = []
    errors: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    for i, r in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in r):
            continue
        if len(r) != len(header):
            errors.append(f"row {i}: {len(r)} values for {len(header)} columns")
            continue
        d = {h: v.strip() for h, v in zip(header, r)}
        if not d["patient"] or not d["timepoint"]:
            errors.append(f"row {i}: patient and timepoint are required")
            continue
        k = (d["patient"], d["timepoint"])
        if k in seen:
            errors.append(f"row {i}: patient '{d['patient']}' time point '{d['timepoint']}' repeats row {seen[k]}")
        seen[k] = i
        has_m = any(d.get(c) for c in ("image", "liver", "lesions"))
        has_g = any(d.get(c) for c in ("pre", "post", "tumor", "zone"))
        if not has_m and not has_g:
            errors.append(f"row {i}: neither measure inputs (image, liver, lesions) nor margin inputs (pre, post, tumor, zone)")
        if has_m:
            missing = [c for c in ("image", "liver", "lesions") if not d.get(c)]
            if missing:
                errors.append(f"row {i}: measure inputs missing: {', '.join(missing)}")
        if has_g:
            missing = [c for c in ("pre", "post", "tumor", "zone") if not d.get(c)]
            if missing:
                errors.append(f"row {i}: margin inputs missing: {', '.join(missing)}")
        if d.get("resect") and not d.get("segments"):
            errors.append(f"row {i}: resect needs a segments map")
        for c in ("day", "height_cm", "weight_kg"):
            if d.get(c):
                try:
                    float(d[c])
                except ValueError:
                    errors.append(f"row {i}: {c} '{d[c]}' is not a number")
        fields = {}
        for c in header:
            if c in ("patient", "timepoint", "day"):
                continue
            v = d.get(c, "")
            if v and c == "lesions":  # ";"-separated parts or globs: one lesion per part (ids in order)
                parts = []
                for part in (x.strip() for x in v.split(";")):
                    if not part:
                        continue
                    q = Path(part)
                    q = q if q.is_absolute() else (base / q)
                    if q.exists():
                        parts.append(str(q))
                    elif any(ch in part for ch in "*?["):
                        hits = sorted(glob.glob(str(q)))
                        if not hits:
                            errors.append(f"row {i}: {c} pattern matches nothing: {q}")
                        parts.extend(hits)
                    else:
                        errors.append(f"row {i}: {c} file not found: {q}")
                v = ";".join(parts)
            elif v and c in PATH_COLS:
                q = Path(v)
                v = str(q if q.is_absolute() else (base / q))
                if not Path(v).exists():
                    errors.append(f"row {i}: {c} file not found: {v}")
            fields[c] = v
        day = float(d["day"]) if d.get("day") and _isnum(d["day"]) else None
        out.append(StudyRow(i, d["patient"], d["timepoint"], day, fields))
    errors += _folder_collisions(out)
    if errors:
        raise ManifestError(f"{p}: invalid manifest: " + "; ".join(errors[:20]) + ("; ..." if len(errors) > 20 else ""))
    if not out:
        raise ManifestError(f"{p}: the manifest has no study rows")
    return out


def _isnum(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def _hash_path(p: Path, h) -> None:
    if p.is_dir():
        for q in sorted(p.rglob("*")):
            if q.is_file():
                h.update(str(q.relative_to(p)).encode())
                _hash_path(q, h)
        return
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)


def input_hash(row: StudyRow, cfg: Mapping[str, Any]) -> str:
    """Content hash of a study's inputs + the resolved configuration + version."""
    h = hashlib.sha256()
    h.update(json.dumps(cfg, sort_keys=True).encode())
    h.update(__version__.encode())
    for c in sorted(row.fields):
        v = row.fields[c]
        h.update(c.encode() + b"=")
        if v and c == "lesions":
            for part in v.split(";"):
                _hash_path(Path(part), h)
        elif v and c in PATH_COLS:
            _hash_path(Path(v), h)
        else:
            h.update(v.encode())
    return h.hexdigest()


def run_study(row: StudyRow, out_root: str, config_path: str | None, ihash: str) -> dict[str, Any]:
    """Run one study in isolation; never raises: returns its status record."""
    from .kernels._cache import configure as _numba_cache

    _numba_cache()  # the one per-machine kernel cache (README "Cold start"), not one per results folder
    from ._privacy import ensure_installed

    ensure_installed()  # a Dask worker process: library warnings would quote data values on its stderr
    from .pipeline import margin_study, measure_study
    from .report import write_json_atomic

    out = Path(out_root) / "studies" / row.key
    out.mkdir(parents=True, exist_ok=True)
    status: dict[str, Any] = {
        "patient": row.patient, "timepoint": row.timepoint, "day": row.day, "row": row.row,
        "input_hash": ihash, "started": time.time(), "state": "running", "software_version": __version__,
    }
    try:
        f = row.fields
        if row.has_measure:
            measure_study(
                f["image"], f["liver"], f["lesions"].split(";"), out / "measure",
                segments=f.get("segments") or None, config=config_path, resect=f.get("resect") or None,
                height_cm=float(f["height_cm"]) if f.get("height_cm") else None,
                weight_kg=float(f["weight_kg"]) if f.get("weight_kg") else None,
            )
        if row.has_margin:
            margin_study(
                f["pre"], f["post"], f["tumor"], f["zone"], out / "margin",
                liver_pre=f.get("liver_pre") or None, liver_post=f.get("liver_post") or None,
                config=config_path, pictures=False,
            )
        status.update(state="ok")
    except LiverburdenError as exc:
        status.update(state="failed", error_class=type(exc).__name__, message=str(exc))
    except Exception as exc:  # a bug: record it, keep the cohort going
        status.update(state="failed", error_class=type(exc).__name__, message=f"internal error: {exc}",
                      traceback=traceback.format_exc(limit=5))
    status["finished"] = time.time()
    write_json_atomic(out / "status.json", status)
    return status


def _read_status(out_root: Path, row: StudyRow) -> dict[str, Any] | None:
    p = out_root / "studies" / row.key / "status.json"
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


class _Progress:
    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.done, self.failed, self.t0, self.stream = total, 0, 0, time.time(), stream
        self.tty = stream.isatty()

    def update(self, st: Mapping[str, Any]) -> None:
        self.done += 1
        self.failed += st["state"] != "ok"
        el = time.time() - self.t0
        eta = el / self.done * (self.total - self.done) if self.done else 0.0
        if self.tty:
            n = 30
            k = int(n * self.done / max(1, self.total))
            self.stream.write(f"\r[{'#' * k}{'.' * (n - k)}] {self.done}/{self.total} done, {self.failed} failed, ETA {eta:5.0f} s")
            if self.done == self.total:
                self.stream.write("\n")
            self.stream.flush()
        else:
            log.warning("study %d/%d %s: %s (%d failed so far, ETA %.0f s)", self.done, self.total, st.get("row"),
                        st["state"], self.failed, eta)


def run_batch(
    manifest: str | Path,
    out: str | Path,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    resume: bool = False,
    config: str | None = None,
    survival: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every study of a manifest; return the summary (and write the cohort tables)."""
    cfg = load_config(config)
    rows = read_manifest(manifest)
    surv_rows = _read_survival(survival) if survival is not None else None
    out_root = Path(out).resolve()
    out_root.mkdir(parents=True, exist_ok=True)
    hashes = {r.row: input_hash(r, cfg) for r in rows}
    todo, skipped = [], []
    for r in rows:
        st = _read_status(out_root, r) if resume else None
        if (st and st.get("state") == "ok" and st.get("input_hash") == hashes[r.row]
                and st.get("patient") == r.patient and st.get("timepoint") == r.timepoint):
            st["row"] = r.row  # the manifest may have been reordered since
            skipped.append(st)
        else:
            todo.append(r)
    statuses = list(skipped)
    cfg_path = str(Path(config).resolve()) if config else None
    from .kernels._cache import configure as _numba_cache

    _numba_cache()  # exported to the workers when it is the per-user cache
    prog = _Progress(len(todo)) if progress else None
    if todo:
        if scheduler is None and workers <= 1:
            for r in todo:
                st = run_study(r, str(out_root), cfg_path, hashes[r.row])
                statuses.append(st)
                if prog:
                    prog.update(st)
        else:
            statuses += _run_dask(todo, out_root, cfg_path, hashes, workers, scheduler, prog)
    return write_cohort_tables(out_root, rows, statuses, cfg, surv_rows, skipped=len(skipped))


def _run_dask(todo, out_root, cfg_path, hashes, workers, scheduler, prog):
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)
        client = Client(cluster)
    statuses = []
    try:
        futs = {client.submit(run_study, r, str(out_root), cfg_path, hashes[r.row], pure=False, retries=2,
                              key=f"study-{r.row}-{hashes[r.row][:12]}"): r for r in todo}
        for fut in as_completed(list(futs)):
            r = futs.pop(fut)
            try:
                st = fut.result()
            except Exception as exc:  # the worker died more often than retries allow
                st = {"patient": r.patient, "timepoint": r.timepoint, "day": r.day, "row": r.row,
                      "input_hash": hashes[r.row], "state": "failed", "error_class": type(exc).__name__,
                      "message": f"worker lost: {exc}"}
                from .report import write_json_atomic

                (out_root / "studies" / r.key).mkdir(parents=True, exist_ok=True)
                write_json_atomic(out_root / "studies" / r.key / "status.json", st)
            # forget the result at once: a result still wanted when the worker holding it
            # dies is computed again, and that second run would rewrite (first removing
            # measurements.json) a finished study while the cohort tables read it
            fut.release()
            del fut
            statuses.append(st)
            if prog:
                prog.update(st)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return statuses


def _read_survival(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    try:
        rows = list(csv.DictReader(p.read_text().splitlines()))
    except OSError as exc:
        raise ManifestError(f"{p}: cannot read survival data ({exc.strerror})") from None
    need = {"patient", "time_months", "event"}
    if not rows or not need <= set(rows[0]):
        raise ManifestError(f"{p}: survival CSV needs the columns patient,time_months,event")
    out = []
    for i, r in enumerate(rows, start=2):
        try:
            t = float(r["time_months"])
            e = int(r["event"])
        except ValueError:
            raise ManifestError(f"{p}: row {i}: time_months and event must be numbers") from None
        if e not in (0, 1) or t < 0:
            raise ManifestError(f"{p}: row {i}: event must be 0/1 and time_months >= 0")
        out.append({"patient": r["patient"], "time_months": t, "event": e})
    return out


def _flat_study(st: Mapping[str, Any], out_root: Path, key: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    row: dict[str, Any] = {"patient": st["patient"], "timepoint": st["timepoint"], "day": st.get("day"), "state": st["state"]}
    lesions: list[dict[str, Any]] = []
    mj = out_root / "studies" / key / "measure" / "measurements.json"
    if st["state"] == "ok" and mj.is_file():
        d = json.loads(mj.read_text())
        lv, sd = d["liver"], d["sum_diameters"]
        row.update(
            lesion_count=d["lesion_count"], liver_volume_ml=lv["volume_ml"], tumor_volume_ml=lv["tumor_volume_ml"],
            involvement_pct=lv["involvement_pct"], liver_truncated=lv["truncated"],
            sum_diameters_all_mm=sd["all_mm"], sum_diameters_recist_mm=sd["recist_mm"],
        )
        flr = d.get("flr")
        if flr:
            row.update(flr_ml=flr["flr_ml"], flr_pct=flr["flr_pct"], sflr_vauthey_pct=flr["sflr_pct"]["vauthey"],
                       flr_adequate=flr["adequate"], cytoreduction_pct=flr["cytoreduction_pct"])
        an = d.get("anatomy")
        if an:
            row.update(enets_pattern=an["enets_pattern"], bilobar=an["bilobar"])
        for les in d["lesions"]:
            lesions.append({"patient": st["patient"], "timepoint": st["timepoint"], "id": les["id"],
                            "location": les["location"], "volume_ml": les["volume_ml"], "ld_mm": les["ld_mm"],
                            "sa_mm": les["sa_mm"], "max3d_mm": les["max3d_mm"], "segment": les["segment"],
                            "recist_target": les["recist_target"]})
    gj = out_root / "studies" / key / "margin" / "margin.json"
    if st["state"] == "ok" and gj.is_file():
        g = json.loads(gj.read_text())
        row.update(registration_ok=g["registration"]["ok"],
                   min_margin_mm=min(t["min_margin_mm"] for t in g["tumors"]),
                   margin_classes=";".join(str(t["classification"]) for t in g["tumors"]))
    return row, lesions


TABLE_COLUMNS = {
    "studies": ["patient", "timepoint", "day", "state", "lesion_count", "liver_volume_ml", "tumor_volume_ml",
                "involvement_pct", "liver_truncated", "sum_diameters_all_mm", "sum_diameters_recist_mm", "flr_ml",
                "flr_pct", "sflr_vauthey_pct", "flr_adequate", "cytoreduction_pct", "enets_pattern", "bilobar",
                "registration_ok", "min_margin_mm", "margin_classes"],
    "lesions": ["patient", "timepoint", "id", "location", "volume_ml", "ld_mm", "sa_mm", "max3d_mm", "segment",
                "recist_target"],
    "response": ["patient", "label", "target_sod_mm", "change_from_baseline_pct", "change_from_nadir_pct", "response",
                 "reason", "new_lesions", "remnant_burden"],
    "errors": ["row", "patient", "timepoint", "error_class", "message"],
}


def write_cohort_tables(out_root: Path, rows: Sequence[StudyRow], statuses, cfg, survival=None,
                        skipped: int = 0) -> dict[str, Any]:
    from .compare import compare_bundles, write_compare
    from .report import write_json_atomic
    from .report._bundle import _atomic_write

    by_row = {st["row"]: st for st in statuses}
    studies, lesions, errors, response = [], [], [], []
    for r in rows:
        st = by_row.get(r.row) or _read_status(out_root, r) or {"state": "missing", "patient": r.patient,
                                                               "timepoint": r.timepoint, "row": r.row}
        if (st["state"] == "ok" and r.has_measure
                and not (out_root / "studies" / r.key / "measure" / "measurements.json").is_file()):
            # never a row of blanks marked ok: say the study's numbers are not there
            st = dict(st, state="failed", error_class="ExportError",
                      message="measurements.json is missing although the study finished (removed, or being rewritten)")
        flat, les = _flat_study(st, out_root, r.key)
        studies.append(flat)
        lesions += les
        if st["state"] != "ok":
            errors.append({"row": r.row, "patient": r.patient, "timepoint": r.timepoint,
                           "error_class": st.get("error_class", ""), "message": st.get("message", "")})
    # per patient: follow-up comparison over the successful measure bundles, by day then manifest order
    remnant: dict[str, Any] = {}
    pats: dict[str, list[StudyRow]] = {}
    for r in rows:
        if r.has_measure and by_row.get(r.row, {}).get("state") == "ok":
            pats.setdefault(r.patient, []).append(r)
    for pat, rs in pats.items():
        rs = sorted(rs, key=lambda r: (r.day if r.day is not None else float("inf"), r.row)) \
            if all(r.day is not None for r in rs) else rs
        if len(rs) < 2:
            continue
        try:
            doc = compare_bundles([out_root / "studies" / r.key / "measure" for r in rs],
                                  labels=[r.timepoint for r in rs], config=cfg)
        except LiverburdenError as exc:
            errors.append({"row": rs[0].row, "patient": pat, "timepoint": "compare", "error_class": type(exc).__name__,
                           "message": str(exc)})
            continue
        write_compare(out_root / "patients" / _safe(pat), doc)
        for tp in doc["timepoints"]:
            response.append({"patient": pat, "label": tp["label"], "target_sod_mm": tp["target_sod_mm"],
                             "change_from_baseline_pct": tp["change_from_baseline_pct"],
                             "change_from_nadir_pct": tp["change_from_nadir_pct"], "response": tp["response"],
                             "reason": tp["reason"], "new_lesions": ";".join(map(str, tp["new_lesions"]))})
        remnant[pat] = doc["remnant"]
    for r in response:
        rem = remnant.get(r["patient"])
        r["remnant_burden"] = rem["remnant_burden"] if rem and rem["label"] == r["label"] else ""
    tables = {"studies": studies, "lesions": lesions, "response": response, "errors": errors}
    for name, recs in tables.items():
        _write_table(out_root, name, recs, _atomic_write)
    surv = None
    if survival is not None:
        surv = survival_analysis(survival, remnant)
        write_json_atomic(out_root / "survival.json", surv)
        _survival_png(out_root / "survival.png", surv)
    n_ok = sum(1 for s in studies if s["state"] == "ok")
    summary = {"studies": len(rows), "ok": n_ok, "failed": len(rows) - n_ok, "patients_compared": len(remnant),
               "survival": surv is not None, "skipped_by_resume": skipped}
    write_json_atomic(out_root / "summary.json", summary)
    return summary


def _write_table(out_root: Path, name: str, recs: list[dict[str, Any]], atomic) -> None:
    cols: list[str] = list(TABLE_COLUMNS.get(name, []))
    for r in recs:
        for k in r:
            if k not in cols:
                cols.append(k)
    import io as _io

    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in recs:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    atomic(out_root / f"{name}.csv", buf.getvalue().encode())
    try:
        import pandas as pd
    except ImportError:  # parquet is an optional extra
        return
    df = pd.DataFrame.from_records(recs, columns=cols) if recs else pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    tmp = out_root / f".{name}.parquet.tmp"
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, out_root / f"{name}.parquet")
    except (ImportError, ValueError):
        tmp.unlink(missing_ok=True)


def survival_analysis(survival: Sequence[Mapping[str, Any]], remnant: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Kaplan-Meier by remnant burden (high/low), log-rank p and Cox hazard ratio (Du et al. 2015)."""
    from lifelines import CoxPHFitter, KaplanMeierFitter
    from lifelines.statistics import logrank_test
    import pandas as pd

    recs = [dict(s, burden=remnant[s["patient"]]["remnant_burden"]) for s in survival if s["patient"] in remnant]
    out: dict[str, Any] = {"n": len(recs), "groups": {}, "logrank_p": None, "hazard_ratio": None,
                           "hazard_ratio_ci95": None, "method": "Kaplan-Meier by remnant burden; log-rank; Cox PH (lifelines)"}
    if not recs:
        return out
    df = pd.DataFrame(recs)
    for g in ("high", "low"):
        sub = df[df.burden == g]
        if len(sub):
            km = KaplanMeierFitter().fit(sub.time_months, sub.event)
            sf = km.survival_function_.iloc[:, 0]
            out["groups"][g] = {"n": int(len(sub)), "events": int(sub.event.sum()),
                                "time": [float(t) for t in sf.index], "survival": [float(v) for v in sf.values],
                                "median_months": None if not np.isfinite(km.median_survival_time_) else float(km.median_survival_time_)}
    hi, lo = df[df.burden == "high"], df[df.burden == "low"]
    if len(hi) and len(lo):
        out["logrank_p"] = float(logrank_test(hi.time_months, lo.time_months, hi.event, lo.event).p_value)
        try:
            cph = CoxPHFitter().fit(pd.DataFrame({"T": df.time_months, "E": df.event, "high": (df.burden == "high").astype(int)}),
                                    duration_col="T", event_col="E")
            out["hazard_ratio"] = float(cph.hazard_ratios_["high"])
            ci = np.exp(cph.confidence_intervals_.loc["high"].values)
            out["hazard_ratio_ci95"] = [float(ci[0]), float(ci[1])]
        except Exception as exc:  # convergence on tiny cohorts
            out["cox_error"] = f"{type(exc).__name__}: {exc}"
    return out


def _survival_png(path: Path, surv: Mapping[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=90)
    for g, colour in (("high", "tab:red"), ("low", "tab:blue")):
        d = surv["groups"].get(g)
        if d:
            ax.step(d["time"], d["survival"], where="post", color=colour, label=f"{g} remnant burden (n={d['n']})")
    ax.set_xlabel("months")
    ax.set_ylabel("survival")
    ax.set_ylim(0, 1.05)
    p = surv.get("logrank_p")
    ax.set_title("Kaplan-Meier by remnant burden" + (f" (log-rank p = {p:.3g})" if p is not None else ""))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

