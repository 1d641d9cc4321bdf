"""Side by side: ablation margins of 3 tumors in a 512x512x400 grid, one process, same arrays.

Run from the repository root::

    python benchmarks/bench_margin.py            # N = 7 runs per route, median
    python benchmarks/bench_margin.py --runs 11
    python benchmarks/bench_margin.py --small    # smoke test on a small grid
    python benchmarks/bench_margin.py --touched  # arrays in written memory (see below)

The volume: 400 x 512 x 512 voxels of (1.25, 0.78, 0.78) mm (slice, row, col), a
~1.7 L ellipsoidal liver, three spherical tumors (radii 10, 7, 12 mm) and their
ablation zones, offset so that the margins are about +8.0 (A0), +2.9 (A1) and
-1.5 mm (A2): two of them below 5 mm. Arrays are in memory; single thread
(numba kernels are serial; NUMBA/OMP/MKL threads are set to 1 before import).

Routes (every route gives, per tumor, the minimal signed margin and the surface
fractions < 0, 0 .. 5, >= 5 mm over the 6-neighbour surface voxels):

scipy-liver-bbox
    What the open tools do: crop to the liver's bounding box, then
    ``scipy.ndimage.distance_transform_edt`` of the zone and of its complement
    (``sampling`` = spacing), signed map, read at the surface voxels.
edt-tumor-box
    The fastest library route: the ``edt`` package (``pip install edt``;
    optional, skipped with a message when missing), ``parallel=1``, on each
    tumor's neighbourhood (its bounding box grown by max(10, 2 x 5) mm + the
    largest spacing, as liverburden's first search box), inside and outside. The
    tumors' labels and boxes are given (computed before the timing), as in the
    issue's ~31 ms figure.
edt-tumor-box+find
    The same, timing also what finds the tumors from the mask: its bounding box
    by any-projections, ``scipy.ndimage.label`` (26-connectivity) there,
    ``find_objects``. liverburden's figure includes finding its tumors.
liverburden
    ``margins_arrays(..., vic=False)`` (margins and surface distribution), and
    ``vic=True`` (adds VIC_0..VIC_10: one more EDT of the tumor over its box, cut at 10 mm).
liverburden-runs-given
    Diagnostic counterpart of edt-tumor-box: ``margins_arrays(..., vic=False)`` with
    the run-length scan of the tumor array (what finds the tumors) done before the
    timing and its result reused.

Times: wall-clock medians, and the process CPU time of the same runs (one thread
at a time: numba, scipy, and edt's one worker thread with ``parallel=1``), which
other processes on a busy machine do not inflate. Memory: the grids are built with
np.zeros and the shapes painted in, so most of their pages are never written and
read as the kernel's zero page, which is cheaper than real memory for the routes
that read whole arrays (liverburden's scan, the any-projections of
edt-tumor-box+find); ``--touched`` copies the arrays into written memory first, as
arrays loaded from files are.

The surface voxels and ids of the routes are the same; min margins must agree to
1e-9 mm (scipy, float64) or 1e-4 mm (edt computes in float32) and the surface
fractions exactly. Results go to ``benchmarks/results/margin.json``.
"""

from __future__ import annotations

import os

for _v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))

from liverburden.margin import margins_arrays  # noqa: E402

SIX = ndimage.generate_binary_structure(3, 1)
THR = 5.0


def ball_into(arr: np.ndarray, sp, centre_mm, radius_mm, value=1) -> None:
    """Set voxels whose centre (index x spacing) lies in the ball, touching only its box."""
    sp = np.asarray(sp, float)
    c = np.asarray(centre_mm, float)
    lo = np.maximum(np.floor((c - radius_mm) / sp).astype(int), 0)
    hi = np.minimum(np.ceil((c + radius_mm) / sp).astype(int) + 1, arr.shape)
    g = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    d2 = sum(((g[a] * sp[a]) - c[a]) ** 2 for a in range(3))
    sub = arr[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    sub[d2 <= radius_mm**2] = value


def ellipsoid_into(arr, sp, centre_mm, radii_mm):
    sp = np.asarray(sp, float)
    c = np.asarray(centre_mm, float)
    r = np.asarray(radii_mm, float)
    lo = np.maximum(np.floor((c - r) / sp).astype(int), 0)
    hi = np.minimum(np.ceil((c + r) / sp).astype(int) + 1, arr.shape)
    g = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    q = sum((((g[a] * sp[a]) - c[a]) / r[a]) ** 2 for a in range(3))
    arr[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]][q <= 1.0] = 1


def build(small: bool):
    sp = (1.25, 0.78, 0.78)
    if small:  # same tumors, a smaller liver and grid
        shape, c_off, radii = (112, 192, 192), np.zeros(3), np.array([66.0, 70.0, 70.0])
    else:
        shape, c_off, radii = (400, 512, 512), np.array([10.0, -15.0, -20.0]), np.array([75.0, 70.0, 77.0])
    ext = np.asarray(shape) * np.asarray(sp)
    c = ext / 2 + c_off
    liver = np.zeros(shape, np.uint8)
    ellipsoid_into(liver, sp, c, radii)
    # (tumor centre offset from the liver centre, tumor radius, zone offset from the tumor, zone radius)
    specs = [
        ((-30.0, 25.0, -35.0), 10.0, (1.0, 0.0, 0.0), 19.0),  # 19 - 10 - 1 = 8.0   (A0)
        ((20.0, -30.0, 20.0), 7.0, (0.0, 1.5, -1.0), 11.7),   # 11.7 - 7 - 1.8 = 2.9 (A1)
        ((5.0, 20.0, 40.0), 12.0, (2.0, 0.0, 1.5), 13.0),     # 13 - 12 - 2.5 = -1.5 (A2)
    ]
    tumor = np.zeros(shape, np.uint8)
    zone = np.zeros(shape, np.uint8)
    want = []
    for off, rt, zoff, rz in specs:
        ct = c + np.asarray(off)
        rt_s, rz_s = rt, rz
        ball_into(tumor, sp, ct, rt_s)
        ball_into(zone, sp, ct + np.asarray(zoff), rz_s)
        want.append(rz_s - rt_s - float(np.linalg.norm(zoff)))
    # tumor ids are in C order of each tumor's first voxel: order the analytic values so
    lab, _ = ndimage.label(tumor, ndimage.generate_binary_structure(3, 3))
    ids = [int(lab[tuple(np.round((c + np.asarray(off)) / np.asarray(sp)).astype(int))]) for off, _, _, _ in specs]
    want = [w for _, w in sorted(zip(ids, want))]
    return dict(shape=shape, spacing=sp, liver=liver, tumor=tumor, zone=zone, analytic=want)


def components(tumor):
    lab, n = ndimage.label(tumor, ndimage.generate_binary_structure(3, 3))
    return lab, n


def summarise(m: np.ndarray) -> dict:
    return {
        "min": float(m.min()),
        "below_0": float(np.mean(m < 0)),
        "from_0_to_threshold": float(np.mean((m >= 0) & (m < THR))),
        "at_least_threshold": float(np.mean(m >= THR)),
    }


def route_scipy_bbox(data, lab, objs):
    sp = data["spacing"]
    nz = np.nonzero(np.any(data["liver"], axis=(1, 2)))[0]
    r = np.nonzero(np.any(data["liver"], axis=(0, 2)))[0]
    cc = np.nonzero(np.any(data["liver"], axis=(0, 1)))[0]
    box = (slice(nz[0], nz[-1] + 1), slice(r[0], r[-1] + 1), slice(cc[0], cc[-1] + 1))
    z = data["zone"][box].astype(bool)
    sd = np.where(z, ndimage.distance_transform_edt(z, sampling=sp), -ndimage.distance_transform_edt(~z, sampling=sp))
    out = []
    lb = lab[box]
    for k in range(1, len(objs) + 1):
        t = lb == k
        s = t & ~ndimage.binary_erosion(t, SIX, border_value=0)
        out.append(summarise(sd[s]))
    return out


def _tumor_boxes(lab, objs, sp, shape):
    pad = np.ceil((max(10.0, 2 * THR) + max(sp)) / np.asarray(sp)).astype(int)
    boxes = []
    for k, o in enumerate(objs, start=1):
        lo = [max(o[a].start - pad[a], 0) for a in range(3)]
        hi = [min(o[a].stop + pad[a], shape[a]) for a in range(3)]
        boxes.append((k, tuple(slice(lo[a], hi[a]) for a in range(3))))
    return boxes


def route_edt(data, lab, objs, edt_mod):
    sp = data["spacing"]
    out = []
    for k, box in _tumor_boxes(lab, objs, sp, data["shape"]):
        z = data["zone"][box]
        t = lab[box] == k
        s = t & ~ndimage.binary_erosion(t, SIX, border_value=0)
        zi = np.ascontiguousarray(z, dtype=np.uint8)
        d_in = edt_mod.edt(zi, anisotropy=sp, black_border=False, parallel=1)
        d_out = edt_mod.edt(1 - zi, anisotropy=sp, black_border=False, parallel=1)
        sd = np.where(zi > 0, d_in, -d_out)
        out.append(summarise(sd[s].astype(np.float64)))
    return out


def find_tumors(tumor):
    """What a library route must do first: the tumor mask's bounding box (any-projections),
    26-connected components there (scipy.ndimage.label), their boxes (find_objects)."""
    box = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        nz = np.flatnonzero(np.any(tumor, axis=other))
        box.append(slice(int(nz[0]), int(nz[-1]) + 1))
    sub = tumor[tuple(box)]
    lab_b, n = ndimage.label(sub, ndimage.generate_binary_structure(3, 3))
    lab = np.zeros(tumor.shape, np.int32)
    lab[tuple(box)] = lab_b
    objs = [tuple(slice(o[a].start + box[a].start, o[a].stop + box[a].start) for a in range(3))
            for o in ndimage.find_objects(lab_b)]
    return lab, objs


def route_edt_find(data, edt_mod):
    lab, objs = find_tumors(data["tumor"])
    return route_edt(data, lab, objs, edt_mod)


def route_lb(data, vic: bool):
    r = margins_arrays(data["tumor"], data["zone"], data["spacing"], vic=vic)
    return [
        {"min": t.min_margin_mm, **{k: t.surface_fraction[k] for k in ("below_0", "from_0_to_threshold", "at_least_threshold")}}
        for t in r.tumors
    ], r


def route_lb_runs_given_timed(data, runs):
    """Diagnostic: ``margins_arrays(..., vic=False)`` timed with the tumor array's
    run-length scan (what finds the tumors) done before the timing and its result
    reused, the counterpart of edt-tumor-box's given labels and boxes. Not an API:
    the scan is swapped for its cached result while these runs are timed."""
    from liverburden import kernels as K

    scan = K.scan_runs
    t_u = np.ascontiguousarray(data["tumor"])
    lut = np.arange(256 if t_u.dtype == np.uint8 else 65536, dtype=np.int64)
    cached = scan(None, t_u, np.zeros(lut.size, np.uint8), lut, 0, t_u.shape[0])
    K.scan_runs = lambda *a: cached
    try:
        return timeit(lambda: route_lb(data, False), runs)
    finally:
        K.scan_runs = scan


CPU_MS: dict[int, list[float]] = {}  # id(wall list) -> the same runs' process CPU times


def timeit(fn, runs):
    """Median wall time (ms), the wall times, the last result; the process CPU times of
    the same runs go to CPU_MS (all threads: edt with parallel=1 still works in one
    worker thread of its own; nothing else runs meanwhile), which preemption by other
    processes does not inflate."""
    ts = []
    cpu = []
    res = None
    for _ in range(runs):
        c0 = time.process_time()
        t0 = time.perf_counter()
        res = fn()
        ts.append((time.perf_counter() - t0) * 1000.0)
        cpu.append((time.process_time() - c0) * 1000.0)
    CPU_MS[id(ts)] = cpu
    return statistics.median(ts), ts, res


def _entry(ms, ts, **extra):
    cpu = CPU_MS[id(ts)]
    return {"median_ms": ms, "runs_ms": ts, "median_cpu_ms": statistics.median(cpu), "runs_cpu_ms": cpu, **extra}


def compare(name, got, ref, tol):
    bad = []
    for i, (a, b) in enumerate(zip(got, ref)):
        if abs(a["min"] - b["min"]) > tol:
            bad.append(f"tumor {i + 1}: min {a['min']!r} vs {b['min']!r}")
        for k in ("below_0", "from_0_to_threshold", "at_least_threshold"):
            if a[k] != b[k]:
                bad.append(f"tumor {i + 1}: {k} {a[k]!r} vs {b[k]!r}")
    if len(got) != len(ref):
        bad.append(f"{len(got)} tumors vs {len(ref)}")
    if bad:
        print(f"!!! {name} DISAGREES with liverburden: " + "; ".join(bad))
    return bad


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--out", default=str(HERE / "results" / "margin.json"))
    ap.add_argument("--touched", action="store_true",
                    help="copy the arrays into freshly written memory, as arrays loaded from files are "
                         "(by default the grids are np.zeros with the shapes painted in: most pages are "
                         "never written and read back as the kernel's shared zero page, which is cheaper "
                         "to read than real memory for every route that reads the whole array)")
    a = ap.parse_args(argv)

    t0 = time.perf_counter()
    data = build(a.small)
    if a.touched:
        for k in ("liver", "tumor", "zone"):
            data[k] = data[k].copy()  # every page written
    lab, n = components(data["tumor"])
    objs = ndimage.find_objects(lab)
    print(f"grid {data['shape']} spacing {data['spacing']} mm; liver {data['liver'].sum() * np.prod(data['spacing']) / 1e6:.2f} L; "
          f"{n} tumors; built in {time.perf_counter() - t0:.1f} s")

    # warm-up (numba cache load / compile is not timed)
    route_lb(data, False)
    route_lb(data, True)

    results = {}
    ms, ts, (lb_res, lb_full) = timeit(lambda: route_lb(data, False), a.runs)
    results["liverburden"] = _entry(ms, ts)
    ms, ts, (lb_vic, lb_vic_full) = timeit(lambda: route_lb(data, True), a.runs)
    results["liverburden-vic"] = _entry(ms, ts)
    ms, ts, (lb_given, _) = route_lb_runs_given_timed(data, a.runs)
    results["liverburden-runs-given"] = _entry(ms, ts)
    disagree = {}
    from liverburden.kernels import _tiered

    print(f"liverburden kernels: ahead-of-time build {_tiered.status()['aot_reason']}")
    if _tiered.status()["aot"]:
        # the same on numba's JIT only (issue 13: the install's build must not be slower)
        with _tiered.jit_only():
            route_lb(data, False)  # its own warm-up: compile / cache load not timed
            ms, ts, (lb_jit, _) = timeit(lambda: route_lb(data, False), a.runs)
        results["liverburden-jit"] = _entry(ms, ts)
        disagree["liverburden-jit"] = compare("liverburden-jit", lb_jit, lb_res, 0.0)
    ms, ts, sc = timeit(lambda: route_scipy_bbox(data, lab, objs), max(3, a.runs // 2))
    results["scipy-liver-bbox"] = _entry(ms, ts)
    disagree["scipy-liver-bbox"] = compare("scipy-liver-bbox", sc, lb_res, 1e-9)
    disagree["liverburden-vic"] = compare("liverburden-vic", lb_vic, lb_res, 0.0)
    disagree["liverburden-runs-given"] = compare("liverburden-runs-given", lb_given, lb_res, 0.0)
    try:
        import edt as edt_mod
    except ImportError:
        edt_mod = None
        print("edt not installed (pip install edt): edt-tumor-box route skipped")
        results["edt-tumor-box"] = {"skipped": "pip install edt"}
    if edt_mod is not None:
        route_edt(data, lab, objs, edt_mod)
        ms, ts, ed = timeit(lambda: route_edt(data, lab, objs, edt_mod), a.runs)
        results["edt-tumor-box"] = _entry(ms, ts, version=getattr(edt_mod, "__version__", None))
        disagree["edt-tumor-box"] = compare("edt-tumor-box", ed, lb_res, 1e-4)
        ms, ts, ed2 = timeit(lambda: route_edt_find(data, edt_mod), a.runs)
        results["edt-tumor-box+find"] = _entry(ms, ts)
        disagree["edt-tumor-box+find"] = compare("edt-tumor-box+find", ed2, lb_res, 1e-4)

    lbms = results["liverburden"]["median_ms"]
    lbcpu = results["liverburden"]["median_cpu_ms"]
    print(f"\n{'route':<24} {'median ms':>10} {'x liverburden':>14} {'CPU ms':>8} {'x liverburden':>14}")
    for k, v in results.items():
        if "median_ms" in v:
            print(f"{k:<24} {v['median_ms']:>10.1f} {v['median_ms'] / lbms:>14.2f} {v['median_cpu_ms']:>8.1f} "
                  f"{v['median_cpu_ms'] / lbcpu:>14.2f}")
            v["ratio_to_liverburden"] = v["median_ms"] / lbms
            v["cpu_ratio_to_liverburden"] = v["median_cpu_ms"] / lbcpu
    print("\nper tumor (liverburden): analytic margin, min margin, fractions <0 / 0-5 / >=5, class")
    for t, w in zip(lb_full.tumors, data["analytic"]):
        sf = t.surface_fraction
        print(f"  tumor {t.id}: {w:6.2f} mm  {t.min_margin_mm:6.2f} mm  {sf['below_0']:.3f} / "
              f"{sf['from_0_to_threshold']:.3f} / {sf['at_least_threshold']:.3f}  {t.classification.value}")
    doc = {
        "grid": list(data["shape"]),
        "spacing_mm": list(data["spacing"]),
        "small": a.small,
        "memory": "touched" if a.touched else "zero-pages",
        "runs": a.runs,
        "threads": 1,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg": os.getloadavg()},
        "routes": results,
        "agree": {k: not v for k, v in disagree.items()},
        "disagreements": disagree,
        "tumors": [
            {"id": t.id, "analytic_mm": w, "min_margin_mm": t.min_margin_mm, "surface_fraction": t.surface_fraction,
             "classification": t.classification.value, "vic_ml": lb_vic_full.tumors[i].vic_ml}
            for i, (t, w) in enumerate(zip(lb_full.tumors, data["analytic"]))
        ],
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=1))
    print(f"\nwrote {a.out}")
    return 0 if not any(disagree.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
