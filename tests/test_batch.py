"""``liverburden batch``: manifest validation, isolated studies, resume after a
kill, Dask (LocalCluster with 2 worker processes; an existing cluster that loses
a worker mid-run), cohort tables (CSV + Parquet), survival by remnant burden.

Phantoms from ``cohortgen`` (1 mm axial grid, box lesions with exact LD:
31x41 -> 50, 19x25 -> 30, 13x36 -> 37, 25x46 -> 51, 22x29 -> 35, 16x21 -> 25,
4x5 -> 5). Expected responses are worked out by hand next to each patient.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import cohortgen as cg
from liverburden.cli import main
from liverburden.compare import compare_bundles

ROOT = Path(__file__).resolve().parents[1]


def B(y0, x0, dy, dx, z0=10, dz=3):
    return (z0, y0, x0, dz, dy, dx)


T50 = B(10, 10, 31, 41)
SERIES = {
    "ld50": [T50],
    "ld30": [B(10, 10, 19, 25)],
    "ld37": [B(10, 10, 13, 36)],
    "ld51": [B(10, 10, 25, 46)],
    "ld35": [B(10, 10, 22, 29)],
    "empty": [],
    "t1t2": [T50, B(50, 10, 16, 21)],  # 50 + 25
    "ld50new": [T50, B(60, 60, 4, 5)],  # + a new 5 mm lesion far away
}

# patient -> [(timepoint, day, series)], with the hand-computed RECIST response per
# time point and the remnant (first follow-up) all-lesion SoD
COHORT = {
    # 50 -> 30: -40 % PR (nadir 30) -> 37: +23.3 % and +7 mm from the nadir: PD. Remnant 30: low
    "P1": [("t0", 0, "ld50"), ("t1", 90, "ld30"), ("t2", 180, "ld37")],
    # 50 -> 51: +2 %: SD. Remnant 51 > 50: high
    "P2": [("t0", None, "ld50"), ("t1", None, "ld51")],
    # 50 -> nothing: CR. Remnant 0: low
    "P3": [("t0", None, "ld50"), ("t1", None, "empty")],
    # 75 -> 75: SD. Remnant 75: high
    "P4": [("t0", None, "t1t2"), ("t1", None, "t1t2")],
    # 50 -> 35: -30 % exactly: PR. Remnant 35: low
    "P5": [("t0", None, "ld50"), ("t1", None, "ld35")],
    # 50 -> 50 + new 5 mm lesion: PD. Remnant 55: high
    "P6": [("t0", None, "ld50"), ("t1", None, "ld50new")],
}
EXPECTED = {
    "P1": ([50.0, 30.0, 37.0], [None, "PR", "PD"], 30.0, "low"),
    "P2": ([50.0, 51.0], [None, "SD"], 51.0, "high"),
    "P3": ([50.0, 0.0], [None, "CR"], 0.0, "low"),
    "P4": ([75.0, 75.0], [None, "SD"], 75.0, "high"),
    "P5": ([50.0, 35.0], [None, "PR"], 35.0, "low"),
    "P6": ([50.0, 50.0], [None, "PD"], 55.0, "high"),
}
# survival.csv: patient,time_months,event (P9 is not in the cohort: ignored)
SURVIVAL = [
    ("P1", 25.0, 1), ("P2", 10.0, 1), ("P3", 60.0, 0), ("P4", 18.0, 1),
    ("P5", 48.0, 1), ("P6", 30.0, 0), ("P9", 5.0, 1),
]
TABLES = ("studies", "lesions", "response", "errors")


def _env():
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _row(patient, tp, paths, day=None):
    return {"patient": patient, "timepoint": tp, "day": day, "image": paths["image"], "liver": paths["liver"],
            "lesions": paths["lesions"]}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    inputs = {name: cg.write_study(root / "inputs" / name, boxes) for name, boxes in SERIES.items()}
    rows = []
    for pat, tps in COHORT.items():
        for tp, day, series in tps:
            rows.append(_row(pat, tp, inputs[series], day))
    # P1's rows out of order in the manifest: the day column orders them
    p1 = [r for r in rows if r["patient"] == "P1"]
    rows = [p1[2], p1[0], p1[1]] + [r for r in rows if r["patient"] != "P1"]
    manifest = cg.write_manifest(root / "manifest.csv", rows, ["patient", "timepoint", "day", "image", "liver", "lesions"])
    surv = root / "survival.csv"
    surv.write_text("patient,time_months,event\n" + "".join(f"{p},{t},{e}\n" for p, t, e in SURVIVAL))
    return {"root": root, "inputs": inputs, "manifest": manifest, "survival": surv, "rows": rows}


@pytest.fixture(scope="module")
def run_w1(cohort):
    out = cohort["root"] / "out_w1"
    rc = main(["batch", str(cohort["manifest"]), "--out", str(out), "--workers", "1", "--quiet",
               "--survival", str(cohort["survival"])])
    return rc, out


def _tables(out: Path) -> dict[str, pd.DataFrame]:
    return {t: pd.read_csv(out / f"{t}.csv") for t in TABLES}


# ---------------------------------------------------------------------------
# a full run: tables, response numbers, survival
# ---------------------------------------------------------------------------
def test_batch_tables_and_response(cohort, run_w1):
    rc, out = run_w1
    assert rc == 0
    n = len(cohort["rows"])  # 13 studies
    for t in TABLES:
        assert (out / f"{t}.csv").is_file() and (out / f"{t}.parquet").is_file()
        pq = pd.read_parquet(out / f"{t}.parquet")
        csv_ = pd.read_csv(out / f"{t}.csv")
        if t != "errors":
            assert list(pq.columns) == list(csv_.columns)
            assert len(pq) == len(csv_)
    studies = pd.read_csv(out / "studies.csv")
    assert len(studies) == n and (studies.state == "ok").all()
    # studies: one row per study, the measurement numbers
    by = {(r.patient, r.timepoint): r for r in studies.itertuples()}
    assert by[("P4", "t0")].sum_diameters_all_mm == pytest.approx(75.0)
    assert by[("P4", "t0")].lesion_count == 2
    assert by[("P3", "t1")].lesion_count == 0 and by[("P3", "t1")].involvement_pct == 0.0
    assert by[("P1", "t0")].tumor_volume_ml == pytest.approx(31 * 41 * 3 / 1000)
    # lesions: one row per lesion per study (P4 2+2, P6 1+2, P3 1+0, others 1 each)
    lesions = pd.read_parquet(out / "lesions.parquet")
    assert len(lesions) == 3 + 2 + 1 + 4 + 2 + 3
    assert set(lesions.columns) >= {"patient", "timepoint", "id", "ld_mm", "volume_ml", "recist_target"}
    errors = pd.read_csv(out / "errors.csv")
    assert len(errors) == 0
    # response: one row per patient per time point, in day order for P1
    resp = pd.read_csv(out / "response.csv", keep_default_na=False)
    assert len(resp) == n
    assert list(resp[resp.patient == "P1"].label) == ["t0", "t1", "t2"]
    for pat, (sods, responses, rem_sod, rem) in EXPECTED.items():
        sub = resp[resp.patient == pat]
        assert list(sub.target_sod_mm.astype(float)) == pytest.approx(sods), pat
        assert [r or None for r in sub.response] == responses, pat
        # remnant_burden on the remnant time point (the first follow-up) only
        assert list(sub.remnant_burden) == ["", rem] + [""] * (len(sub) - 2), pat
    # the numbers are those of compare over the same bundles
    for pat, tps in COHORT.items():
        order = sorted(tps, key=lambda t: t[1]) if pat == "P1" else tps
        doc = compare_bundles([out / "studies" / pat / tp / "measure" for tp, _, _ in order],
                              labels=[tp for tp, _, _ in order])
        sub = resp[resp.patient == pat]
        for tp, (_, r) in zip(doc["timepoints"], sub.iterrows()):
            assert r.label == tp["label"]
            assert float(r.target_sod_mm) == pytest.approx(tp["target_sod_mm"])
            for k in ("change_from_baseline_pct", "change_from_nadir_pct"):
                assert (r[k] == "" if tp[k] is None else float(r[k]) == pytest.approx(tp[k])), (pat, k)
            assert (r.response or None) == tp["response"] and r.reason == tp["reason"]
            assert r.new_lesions == ";".join(map(str, tp["new_lesions"]))
        assert doc["remnant"]["remnant_sod_mm"] == pytest.approx(EXPECTED[pat][2])
        pj = json.loads((out / "patients" / pat / "response.json").read_text())
        assert pj["remnant"] == doc["remnant"]
    assert json.loads((out / "summary.json").read_text())["patients_compared"] == 6


def test_empty_errors_table_keeps_its_columns(run_w1):
    rc, out = run_w1
    assert rc == 0
    cols = ["row", "patient", "timepoint", "error_class", "message"]
    assert list(pd.read_csv(out / "errors.csv").columns) == cols
    assert list(pd.read_parquet(out / "errors.parquet").columns) == cols


def test_survival_matches_lifelines(cohort, run_w1):
    from lifelines import CoxPHFitter, KaplanMeierFitter
    from lifelines.statistics import logrank_test

    rc, out = run_w1
    assert rc == 0
    s = json.loads((out / "survival.json").read_text())
    assert (out / "survival.png").stat().st_size > 1000
    # independent grouping from the hand-computed remnant SoD (> 50 mm = high)
    df = pd.DataFrame(
        [{"patient": p, "T": t, "E": e, "high": int(EXPECTED[p][2] > 50.0)} for p, t, e in SURVIVAL if p in EXPECTED]
    )
    assert s["n"] == 6
    assert set(s["groups"]) == {"high", "low"}
    hi, lo = df[df.high == 1], df[df.high == 0]
    for g, sub in (("high", hi), ("low", lo)):
        km = KaplanMeierFitter().fit(sub["T"], sub["E"])
        sf = km.survival_function_.iloc[:, 0]
        assert s["groups"][g]["n"] == len(sub) == 3
        assert s["groups"][g]["events"] == int(sub["E"].sum())
        assert s["groups"][g]["time"] == pytest.approx(list(sf.index))
        assert s["groups"][g]["survival"] == pytest.approx(list(sf.values))
    # high: deaths at 10, 18; censored 30 -> KM 1, 2/3, 1/3, 1/3 at 0, 10, 18, 30
    assert s["groups"]["high"]["survival"] == pytest.approx([1.0, 2 / 3, 1 / 3, 1 / 3])
    p = logrank_test(hi["T"], lo["T"], hi["E"], lo["E"]).p_value
    assert s["logrank_p"] == pytest.approx(p, rel=1e-9)
    cph = CoxPHFitter().fit(df[["T", "E", "high"]], duration_col="T", event_col="E")
    assert s["hazard_ratio"] == pytest.approx(float(cph.hazard_ratios_["high"]), rel=1e-6)
    assert s["hazard_ratio"] > 1.0  # the high-burden group dies earlier here
    lo_ci, hi_ci = np.exp(cph.confidence_intervals_.loc["high"].values)
    assert s["hazard_ratio_ci95"] == pytest.approx([lo_ci, hi_ci], rel=1e-6)


def test_dask_two_workers_same_tables(cohort, run_w1):
    rc1, out1 = run_w1
    out2 = cohort["root"] / "out_w2"
    rc2 = main(["batch", str(cohort["manifest"]), "--out", str(out2), "--workers", "2", "--quiet"])
    assert rc1 == rc2 == 0
    for t in TABLES:
        assert (out1 / f"{t}.csv").read_text() == (out2 / f"{t}.csv").read_text(), t
        a, b = pd.read_parquet(out1 / f"{t}.parquet"), pd.read_parquet(out2 / f"{t}.parquet")
        pd.testing.assert_frame_equal(a, b)
    assert len(list(out2.glob("studies/*/*/status.json"))) == len(cohort["rows"])


# ---------------------------------------------------------------------------
# manifest validation before any work; survival CSV validation
# ---------------------------------------------------------------------------
def _bad_manifests(cohort, d: Path):
    ok = cohort["inputs"]["ld50"]
    good = [_row("A", "t0", ok), _row("A", "t1", ok)]
    cols = ["patient", "timepoint", "day", "image", "liver", "lesions"]
    cases = {}
    cases["unknown column"] = (cg.write_manifest(d / "unknown.csv", [dict(r, tumour_grade="3") for r in good]),
                               "unknown column(s) tumour_grade")
    cases["missing required column"] = (
        cg.write_manifest(d / "nopatient.csv", good, ["timepoint", "image", "liver", "lesions"]), "'patient' column")
    cases["bad number"] = (cg.write_manifest(d / "badnum.csv", [good[0], dict(good[1], day="ninety")], cols),
                           "row 3: day 'ninety' is not a number")
    cases["bad height"] = (cg.write_manifest(d / "badheight.csv", [dict(good[0], height_cm="1,80"), good[1]]),
                           "row 2: height_cm '1,80' is not a number")
    cases["missing file"] = (cg.write_manifest(d / "nofile.csv", [good[0], dict(good[1], lesions=d / "nope.nii.gz")], cols),
                             "row 3: lesions file not found")
    cases["duplicate patient+timepoint"] = (
        cg.write_manifest(d / "dup.csv", [good[0], good[1], dict(good[0])], cols), "row 4: patient 'A' time point 't0' repeats row 2")
    cases["missing measure input"] = (cg.write_manifest(d / "noliver.csv", [dict(good[0], liver=""), good[1]], cols),
                                      "row 2: measure inputs missing: liver")
    # keys that differ but would share a results folder (issue 12 item 1): on main the
    # last one's numbers silently replaced the others', exit 0
    cases["patients P 1 / P_1 share a folder"] = (
        cg.write_manifest(d / "coll1.csv", [_row("P 1", "t0", ok), _row("P_1", "t0", ok)], cols),
        "row 3: patient 'P_1' and patient 'P 1' of row 2 share the results folder 'P_1'")
    cases["patients P/1 / P_1 share a folder"] = (
        cg.write_manifest(d / "coll2.csv", [_row("P/1", "t0", ok), _row("P_1", "t1", ok)], cols),
        "row 3: patient 'P_1' and patient 'P/1' of row 2 share the results folder 'P_1'")
    cases["time points .. / ... share a folder"] = (
        cg.write_manifest(d / "coll3.csv", [_row("A", "..", ok), _row("A", "...", ok)], cols),
        "row 3: time point '...' and time point '..' of row 2 (patient 'A') share the results folder 'A/_'")
    cases["case-insensitive file systems"] = (
        cg.write_manifest(d / "coll4.csv", [_row("ab", "t0", ok), _row("AB", "t0", ok)], cols),
        "row 3: patient 'AB' and patient 'ab' of row 2 share the results folder 'AB'")
    return cases


def test_manifest_validation_exit_2_before_any_work(cohort, tmp_path, capsys):
    for what, (manifest, msg) in _bad_manifests(cohort, tmp_path).items():
        out = tmp_path / ("out_" + what.replace(" ", "_"))
        capsys.readouterr()
        rc = main(["batch", str(manifest), "--out", str(out), "--quiet"])
        err = capsys.readouterr().err
        assert rc == 2, what
        assert msg in err, (what, err)
        assert not (out / "studies").exists(), what  # no study folder: nothing ran
        assert not out.exists(), what


def test_survival_csv_malformed_exit_2(cohort, tmp_path, capsys):
    cases = {
        "columns": "patient,months,death\nP1,3,1\n",
        "number": "patient,time_months,event\nP1,three,1\n",
        "event": "patient,time_months,event\nP1,3,2\n",
        "empty": "",
    }
    for what, text in cases.items():
        s = tmp_path / f"surv_{what}.csv"
        s.write_text(text)
        out = tmp_path / f"out_{what}"
        capsys.readouterr()
        rc = main(["batch", str(cohort["manifest"]), "--out", str(out), "--survival", str(s), "--quiet"])
        assert rc == 2, what
        assert "survival" in capsys.readouterr().err, what
        assert not (out / "studies").exists(), what


# ---------------------------------------------------------------------------
# one corrupt study
# ---------------------------------------------------------------------------
def test_one_corrupt_study_others_finish_exit_3(cohort, tmp_path):
    ok = cohort["inputs"]
    bad = cg.write_garbage(tmp_path / "bad" / "ct.nii.gz")
    rows = [
        _row("C1", "t0", ok["ld50"]),
        _row("C2", "t0", ok["ld50"]) | {"image": bad},  # garbage image
        _row("C1", "t1", ok["ld30"]),
    ]
    manifest = cg.write_manifest(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    rc = main(["batch", str(manifest), "--out", str(out), "--quiet"])
    assert rc == 3
    st = {p.parent.parent.name + "/" + p.parent.name: json.loads(p.read_text()) for p in out.glob("studies/*/*/status.json")}
    assert {k: v["state"] for k, v in st.items()} == {"C1/t0": "ok", "C1/t1": "ok", "C2/t0": "failed"}
    assert st["C2/t0"]["error_class"] == "InputError" and "ct.nii.gz" in st["C2/t0"]["message"]
    errors = pd.read_csv(out / "errors.csv")
    assert len(errors) == 1
    e = errors.iloc[0]
    assert (e.row, e.patient, e.timepoint, e.error_class) == (3, "C2", "t0", "InputError")
    assert "cannot read" in e.message
    pe = pd.read_parquet(out / "errors.parquet")
    assert list(pe.error_class) == ["InputError"]
    studies = pd.read_csv(out / "studies.csv")
    assert list(studies.state) == ["ok", "failed", "ok"]
    resp = pd.read_csv(out / "response.csv", keep_default_na=False)
    assert list(resp.response) == ["", "PR"] and list(resp.patient) == ["C1", "C1"]
    # the failed study left no bundle, the others are complete
    assert (out / "studies" / "C1" / "t1" / "measure" / "measurements.json").is_file()
    assert not (out / "studies" / "C2" / "t0" / "measure" / "measurements.json").exists()


# ---------------------------------------------------------------------------
# a killed run resumed
# ---------------------------------------------------------------------------
def _statuses(out: Path) -> dict[str, dict]:
    res = {}
    for p in out.glob("studies/*/*/status.json"):
        try:
            res[f"{p.parent.parent.name}/{p.parent.name}"] = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):  # pragma: no cover - atomic writes make this impossible
            res[f"{p.parent.parent.name}/{p.parent.name}"] = {"state": "unreadable"}
    return res


def _wait_for(pred, timeout, what):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_run_resumes_without_redoing_or_losing(cohort, tmp_path, capsys):
    ins = cohort["inputs"]
    rows = []
    for i in range(12):  # 24 studies, ~0.2 s each in one process
        rows += [_row(f"R{i:02d}", "t0", ins["ld50"]), _row(f"R{i:02d}", "t1", ins["ld30" if i % 2 else "ld51"])]
    manifest = cg.write_manifest(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "liverburden", "batch", str(manifest), "--out", str(out),
                             "--workers", "1", "--quiet"], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: len(_statuses(out)) >= 4 or proc.poll() is not None, 120, "4 finished studies")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    before = _statuses(out)
    assert 4 <= len(before) < len(rows), "the kill must land mid-run"
    assert all(s["state"] == "ok" for s in before.values())
    assert not (out / "studies.csv").exists()  # the tables come at the end
    t_resume = time.time()
    r = subprocess.run([sys.executable, "-m", "liverburden", "batch", str(manifest), "--out", str(out),
                        "--workers", "1", "--resume"], env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"{len(rows)}/{len(rows)} studies ok" in r.stdout
    assert f"({len(before)} skipped by --resume)" in r.stdout
    after = _statuses(out)
    assert set(after) == {f"{x['patient']}/{x['timepoint']}" for x in rows}
    assert all(s["state"] == "ok" for s in after.values())
    for k, s in after.items():
        if k in before:  # finished before the kill: not redone
            assert s["started"] == before[k]["started"] and s["finished"] == before[k]["finished"], k
        else:  # every other study ran exactly once, in the resumed run
            assert s["started"] >= t_resume, k
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] == len(rows) and summary["failed"] == 0
    studies = pd.read_csv(out / "studies.csv")
    assert len(studies) == len(rows) and (studies.state == "ok").all()
    assert not studies.duplicated(["patient", "timepoint"]).any()
    resp = pd.read_csv(out / "response.csv", keep_default_na=False)
    assert len(resp) == len(rows)
    fu = resp[resp.label == "t1"].set_index("patient")
    for i in range(12):  # 50 -> 30: PR; 50 -> 51: SD
        assert fu.loc[f"R{i:02d}", "response"] == ("PR" if i % 2 else "SD")
    # a second resume: nothing left to do
    again = main(["batch", str(manifest), "--out", str(out), "--resume"])
    assert again == 0
    assert f"({len(rows)} skipped by --resume)" in capsys.readouterr().out
    assert _statuses(out) == after


def test_resume_after_manifest_reordered(cohort, tmp_path):
    ins = cohort["inputs"]
    a, b = _row("Q1", "t0", ins["ld50"]), _row("Q2", "t0", ins["ld30"])
    m1 = cg.write_manifest(tmp_path / "m1.csv", [a, b])
    m2 = cg.write_manifest(tmp_path / "m2.csv", [b, a])  # same studies, other order
    out = tmp_path / "out"
    assert main(["batch", str(m1), "--out", str(out), "--quiet"]) == 0
    assert main(["batch", str(m2), "--out", str(out), "--quiet", "--resume"]) == 0
    studies = pd.read_csv(out / "studies.csv").set_index("patient")
    assert studies.loc["Q1", "sum_diameters_all_mm"] == pytest.approx(50.0)
    assert studies.loc["Q2", "sum_diameters_all_mm"] == pytest.approx(30.0)


# ---------------------------------------------------------------------------
# an existing cluster (--scheduler) that loses a worker mid-run
def test_finished_study_without_its_numbers_is_a_failure_not_a_blank_row(cohort, tmp_path):
    """A study whose status says ok but whose measurements.json is gone (removed, or
    being rewritten by a second run of the same task) is reported as failed in
    studies.csv and errors.csv, never as an "ok" row of blanks."""
    ins = cohort["inputs"]
    a, b = _row("Q1", "t0", ins["ld50"]), _row("Q2", "t0", ins["ld30"])
    m = cg.write_manifest(tmp_path / "m.csv", [a, b])
    out = tmp_path / "out"
    assert main(["batch", str(m), "--out", str(out), "--quiet"]) == 0
    gone = next((out / "studies").glob("Q2*/*/measure/measurements.json"))
    gone.unlink()
    rc = main(["batch", str(m), "--out", str(out), "--quiet", "--resume"])
    studies = pd.read_csv(out / "studies.csv").set_index("patient")
    assert studies.loc["Q1", "state"] == "ok" and studies.loc["Q1", "lesion_count"] >= 1
    assert studies.loc["Q2", "state"] == "failed"
    errors = pd.read_csv(out / "errors.csv")
    assert list(errors.patient) == ["Q2"] and "measurements.json is missing" in errors.message[0]
    assert rc != 0  # the batch says some studies failed


# ---------------------------------------------------------------------------
BIG = (40, 128, 128)
BIG_LIVER = (slice(2, 38), slice(5, 123), slice(5, 123))


def test_worker_killed_mid_run_every_result_arrives(cohort, tmp_path):
    from distributed import Client, LocalCluster

    big = [cg.write_study(tmp_path / f"big{k}", [B(10 + 30 * j, 10 + 20 * k, 21, 16, dz=8) for j in range(4)],
                          size=BIG, liver_box=BIG_LIVER) for k in range(2)]
    rows = [_row(f"W{i:02d}", f"t{t}", big[t]) for i in range(10) for t in range(2)]  # 20 studies, ~0.3 s each
    manifest = cg.write_manifest(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=40) as cluster, Client(cluster) as client:
        pids = client.run(os.getpid)
        assert len(pids) == 2 and os.getpid() not in pids.values()
        proc = subprocess.Popen([sys.executable, "-m", "liverburden", "batch", str(manifest), "--out", str(out),
                                 "--scheduler", cluster.scheduler_address, "--quiet"],
                                env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for(lambda: len(_statuses(out)) >= 3 or proc.poll() is not None, 120, "3 finished studies")
            busy = {w: n for w, n in client.processing().items() if n}
            victim = next(iter(busy), None)
            n_done_at_kill = len(_statuses(out))
            assert victim is not None and n_done_at_kill < len(rows), "the kill must land mid-run"
            t_kill = time.time()
            os.kill(pids[victim], signal.SIGKILL)
            so, se = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, se
        # the nanny restarted the worker: the cluster is whole again, with a new process
        _wait_for(lambda: len(client.scheduler_info()["workers"]) == 2, 30, "the restarted worker")
        assert pids[victim] not in client.run(os.getpid).values()
    st = _statuses(out)
    assert len(st) == len(rows) and all(s["state"] == "ok" for s in st.values())
    # the studies the killed worker held ran again, after the kill, on a live worker
    held = {int(str(k).split("-")[1]) for k in busy[victim]}  # task key "study-ROW-HASH"
    by_row = {s["row"]: s for s in st.values()}
    assert any(by_row[r]["started"] >= t_kill for r in held)
    studies = pd.read_csv(out / "studies.csv")
    assert len(studies) == len(rows) and (studies.state == "ok").all()
    assert (studies.lesion_count == 4).all()
    assert len(pd.read_csv(out / "errors.csv")) == 0
    assert len(pd.read_csv(out / "response.csv")) == len(rows)
