"""Cohort throughput: ``liverburden.batch.run_batch`` with 1 and 2 workers.

Run from the repository root::

    python benchmarks/bench_batch.py                 # 40 studies, 60x160x160, 2 repeats
    python benchmarks/bench_batch.py --repeats 3 --wait-idle 600
    python benchmarks/bench_batch.py --small         # smoke test (8 tiny studies)

The cohort: 20 patients x 2 time points = 40 phantom studies (``tests/cohortgen.py``):
NIfTI CT + liver + lesion masks of 60 x 160 x 160 voxels at 1 mm, an axial box
liver of 56 x 150 x 150 voxels and 3-5 box lesions per study (seeded, every study
different; the follow-up keeps the baseline's lesions, shrunk or grown), so the
run also tracks lesions and writes a response per patient.

Timed: one ``run_batch(manifest, out, workers=W, progress=False)`` call per run
into a fresh output folder, as the CLI runs it: for W = 1 the studies run one after
another in this process; for W = 2 the call starts a Dask LocalCluster of 2
worker processes (the start-up, ~2 s, is inside the timing, as a user sees it),
then the cohort tables (studies / lesions / response / errors, CSV + Parquet, and
one compare per patient) are written at the end, also inside the timing.
Reported: studies per minute = studies / wall time x 60; also the study phase alone
(first study started -> last finished, from the ``status.json`` records) and the
scaling ratio (2 workers / 1 worker). Runs alternate W = 1, 2, 1, 2 ... and the
best of the repeats is reported (the median too), since the machine is shared.

numba compile time is kept out: ``NUMBA_CACHE_DIR`` defaults to the repository's
``.numba_cache/`` and one study is run before any timing (the workers load the
compiled kernels from that on-disk cache).

Output: a table on stdout and ``benchmarks/results/batch.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))
for p in (HERE, REPO / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import numpy as np  # noqa: E402

import cohortgen as cg  # noqa: E402
from bench_measure import other_cpu_load, wait_idle  # noqa: E402


def build_cohort(root: Path, n_patients: int, size, seed: int = 7) -> Path:
    """``n_patients`` x 2 studies; returns the manifest path."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = size
    liver_box = (slice(2, nz - 2), slice(5, ny - 5), slice(5, nx - 5))
    rows = []
    for p in range(n_patients):
        k = int(rng.integers(3, 6))
        # lesions on a coarse lattice of cells so they never touch
        cells = rng.choice(16, size=k, replace=False)
        cy, cx = (ny - 10) // 4, (nx - 10) // 4
        base = []
        for c in cells:
            dy, dx = int(rng.integers(8, cy - 4)), int(rng.integers(8, cx - 4))
            dz = int(rng.integers(4, max(5, nz // 4)))
            z0 = int(rng.integers(3, nz - 3 - dz))
            base.append((z0, 7 + (c // 4) * cy, 7 + (c % 4) * cx, dz, dy, dx))
        # follow-up: each lesion shrunk or grown (0.5-1.15x), kept inside its cell
        fu = [(z0, y0, x0, dz, max(3, min(cy - 3, int(dy * f))), max(3, min(cx - 3, int(dx * f))))
              for (z0, y0, x0, dz, dy, dx), f in zip(base, rng.uniform(0.5, 1.15, len(base)))]
        for tp, boxes, day in (("t0", base, 0), ("t1", fu, 90)):
            paths = cg.write_study(root / "inputs" / f"P{p:03d}" / tp, boxes, size=size, liver_box=liver_box)
            rows.append({"patient": f"P{p:03d}", "timepoint": tp, "day": day, **{k: paths[k] for k in ("image", "liver", "lesions")}})
    return cg.write_manifest(root / "manifest.csv", rows)


def _span(out: Path, t_call: float) -> dict:
    st = [json.loads(p.read_text()) for p in out.glob("studies/*/*/status.json")]
    t0 = min(s["started"] for s in st)
    t1 = max(s["finished"] for s in st)
    per = [s["finished"] - s["started"] for s in st]
    return {"span_s": t1 - t0, "study_s_median": statistics.median(per), "study_s_sum": sum(per), "n": len(st),
            "first_start_s": t0 - t_call, "last_finish_s": t1 - t_call}


def time_run(manifest: Path, scratch: Path, workers: int, tag: str) -> dict:
    from liverburden.batch import run_batch

    out = scratch / f"out_{tag}"
    if out.exists():
        shutil.rmtree(out)
    t_call = time.time()
    t0 = time.perf_counter()
    summary = run_batch(manifest, out, workers=workers, progress=False)
    wall = time.perf_counter() - t0
    sp = _span(out, t_call)
    res = {"workers": workers, "wall_s": wall, "studies": summary["studies"], "ok": summary["ok"],
           "studies_per_min": summary["studies"] / wall * 60.0,
           "study_phase_s": sp["span_s"], "study_phase_studies_per_min": sp["n"] / sp["span_s"] * 60.0,
           "per_study_s_median": sp["study_s_median"], "per_study_s_sum": sp["study_s_sum"],
           # before the first study starts: input hashing (+ cluster start-up and the
           # first task's imports on a worker); after the last one ends: the cluster shut-down (W = 2)
           # and the cohort tables
           "startup_s": sp["first_start_s"], "tables_s": wall - sp["last_finish_s"], "out": out}
    if summary["ok"] != summary["studies"]:
        raise SystemExit(f"run {tag}: {summary['failed']} studies failed")
    return res


def _same_tables(a: Path, b: Path) -> bool:
    return all((a / f"{t}.csv").read_bytes() == (b / f"{t}.csv").read_bytes()
               for t in ("studies", "lesions", "response", "errors"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patients", type=int, default=20, help="patients (x 2 time points = studies)")
    ap.add_argument("--size", type=int, nargs=3, default=(60, 160, 160), metavar=("Z", "Y", "X"))
    ap.add_argument("--repeats", type=int, default=2, help="runs per worker count (alternating)")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                    help="wait at most S seconds for the machine to be idle before timing")
    ap.add_argument("--small", action="store_true", help="smoke test: 4 patients, 30x80x80")
    ap.add_argument("--json", default=str(HERE / "results" / "batch.json"))
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args(argv)
    if args.small:
        args.patients, args.size, args.repeats = 4, (30, 80, 80), 1

    scratch = Path(tempfile.mkdtemp(prefix="lb_bench_batch_"))
    try:
        t = time.perf_counter()
        manifest = build_cohort(scratch / "cohort", args.patients, tuple(args.size))
        n = 2 * args.patients
        print(f"cohort: {n} studies of {args.size[0]}x{args.size[1]}x{args.size[2]} voxels "
              f"({time.perf_counter() - t:.1f} s to write) in {scratch}")
        # warm the numba cache (on disk, for the workers too) and this process's imports
        from liverburden.batch import run_batch

        warm = scratch / "warm.csv"
        warm.write_text("\n".join(manifest.read_text().splitlines()[:2]) + "\n")
        run_batch(warm, scratch / "out_warm", workers=1, progress=False)

        load_before = wait_idle(args.wait_idle) if args.wait_idle > 0 else other_cpu_load()
        if load_before.get("other_processes_cpu_pct", 0.0) >= 20.0:
            print(f"  WARNING: other processes are using the CPU ({load_before}); the figures are disturbed "
                  "(use --wait-idle 600)")
        runs: list[dict] = []
        for r in range(args.repeats):
            for w in (1, 2):
                res = time_run(manifest, scratch, w, f"w{w}_r{r}")
                res["load_after"] = other_cpu_load(0.3)
                print(f"  workers={w} run {r + 1}: {res['wall_s']:6.2f} s wall, {res['studies_per_min']:6.1f} studies/min "
                      f"(start-up {res['startup_s']:.2f} s, study phase {res['study_phase_s']:.2f} s = "
                      f"{res['study_phase_studies_per_min']:.1f}/min, shut-down + tables {res['tables_s']:.2f} s, "
                      f"median study {res['per_study_s_median']:.2f} s)", flush=True)
                runs.append(res)
        same = _same_tables(runs[0]["out"], runs[1]["out"])
        load_after = other_cpu_load()

        def agg(w):
            rs = [x for x in runs if x["workers"] == w]
            best = max(rs, key=lambda x: x["studies_per_min"])
            return {
                "studies_per_min_best": best["studies_per_min"],
                "studies_per_min_median": statistics.median(x["studies_per_min"] for x in rs),
                "wall_s_best": best["wall_s"],
                "study_phase_studies_per_min_best": max(x["study_phase_studies_per_min"] for x in rs),
                "per_study_s_median": statistics.median(x["per_study_s_median"] for x in rs),
                "startup_s_median": statistics.median(x["startup_s"] for x in rs),
                "tables_s_median": statistics.median(x["tables_s"] for x in rs),
            }

        a1, a2 = agg(1), agg(2)
        ratio = a2["studies_per_min_best"] / a1["studies_per_min_best"]
        ratio_phase = a2["study_phase_studies_per_min_best"] / a1["study_phase_studies_per_min_best"]
        print()
        print(f"{'workers':>8} {'studies/min (best)':>19} {'(median)':>9} {'wall s':>7} {'study phase /min':>17} "
              f"{'start-up s':>11} {'median study s':>15}")
        for w, a in ((1, a1), (2, a2)):
            print(f"{w:>8} {a['studies_per_min_best']:>19.1f} {a['studies_per_min_median']:>9.1f} "
                  f"{a['wall_s_best']:>7.2f} {a['study_phase_studies_per_min_best']:>17.1f} "
                  f"{a['startup_s_median']:>11.2f} {a['per_study_s_median']:>15.2f}")
        print(f"scaling 2 workers / 1 worker: {ratio:.2f}x end to end, {ratio_phase:.2f}x in the study phase "
              f"(linear = 2.00x; {os.cpu_count()} CPUs)")
        print(f"tables identical for 1 and 2 workers: {same}")

        doc = {
            "benchmark": "bench_batch",
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "load_before": load_before, "load_after": load_after},
            "cohort": {"studies": n, "patients": args.patients, "size": list(args.size), "spacing_mm": [1.0, 1.0, 1.0],
                       "lesions_per_study": "3-5 boxes"},
            "timed": "run_batch(manifest, fresh out, workers=W, progress=False): studies + cohort tables "
                     "(+ LocalCluster start-up for W=2); numba cache warm",
            "workers_1": a1,
            "workers_2": a2,
            "scaling_ratio": ratio,
            "scaling_ratio_study_phase": ratio_phase,
            "tables_identical": same,
            "runs": [{k: v for k, v in x.items() if k != "out"} for x in runs],
        }
        if not args.small:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
            print(f"wrote {args.json}")
    finally:
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
