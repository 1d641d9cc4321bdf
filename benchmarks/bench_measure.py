"""Side-by-side: liverburden.measure_arrays vs the library routes, one process, same arrays.

Run from the repository root::

    python benchmarks/bench_measure.py              # 5 timed rounds (round robin)
    python benchmarks/bench_measure.py --runs 9 --profile --wait-idle 600
    python benchmarks/bench_measure.py --small      # smoke test on a tiny phantom

Routes (all on the phantom of ``phantom.py``: 512x512x400, 0.78x0.78x1.25 mm,
1.7 L liver, 30 lesions 3-40 mm, three touching pairs; arrays already in memory):

floor
    ``np.count_nonzero(liver) + np.count_nonzero(lesions)``: one read of both
    volumes, the memory-bandwidth floor.
library
    The fastest route through libraries: numpy bounding box of the lesions
    (per-slice max over a uint64 view, then rows/cols in the slab), cc3d
    26-connected components of the cropped box, ``cc3d.statistics`` for
    counts / boxes / centroids, then per component scipy ``ConvexHull`` of the
    physical voxel centres (reduced, exactly, to each row's first and last
    voxel) + max pairwise distance over the hull vertices for the 3-D
    diameter, and the same per slice in 2-D for the longest in-slice diameter
    (LD). Degenerate hulls (flat / collinear) fall back to all points.
    Also the liver voxel count.
library-allvox
    The same with every voxel centre given to Qhull.
library-plain
    cc3d on the whole volume (no bounding box) and every voxel centre to
    Qhull: what one tends to write first.
sitk
    SimpleITK ``ConnectedComponent`` (fully connected = 26) +
    ``LabelShapeStatisticsImageFilter`` with ``ComputeFeretDiameterOn``
    (no RECIST axes), on the whole volume, 1 ITK thread (and 2).
pyradiomics
    cc3d components, then per lesion (cropped to its box, as pyradiomics'
    extractor does) ``RadiomicsShape`` Maximum3DDiameter. Only when
    ``import radiomics`` works.
liverburden
    ``liverburden.measure_arrays(..., threads=1)`` and ``threads=2``; also
    computes SA, centroids, boxes, liver burden, RECIST selection.

Timing is round robin (each round runs every route once, after one untimed
warm-up round), so a busy neighbour on a shared machine slows every route
alike; median and minimum are reported.

The library route and liverburden must agree: same lesions, voxel counts,
boxes, centroids, max 3-D diameter and LD (1e-6 mm); any disagreement is
printed loudly and recorded in the JSON. SimpleITK's Feret diameter and
pyradiomics' mesh diameter are compared for information only.

Memory: tracemalloc peak of one ``measure_arrays`` call (numpy allocations),
and, in a fresh interpreter started before anything big is built, the peak
RSS above the RSS before the call, which also sees numba NRT allocations
(tracemalloc does not): once from ``ru_maxrss`` and once from Linux ``VmHWM``
reset through ``/proc/self/clear_refs``.

numba compile time is kept out: ``NUMBA_CACHE_DIR`` defaults to the
repository's ``.numba_cache/`` and every kernel is warmed up on a tiny
volume before any timing.

Output: a table on stdout and ``benchmarks/results/measure.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

import phantom as _phantom  # noqa: E402

TARGET_MS = 50.0
TOL_MM = 1e-6


# --------------------------------------------------------------------------- helpers


def _timeit(fn, runs: int, warmup: int = 1):
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    ms = [t * 1e3 for t in times]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "runs_ms": ms}, out


def _versions() -> dict:
    out = {"python": platform.python_version()}
    from importlib import metadata

    for name in ("numpy", "scipy", "numba", "SimpleITK", "connected-components-3d", "pyradiomics", "liverburden"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def other_cpu_load(sample_s: float = 0.5) -> dict:
    """Load average and the CPU share (percent of one core) used by other processes:
    on a shared 2-core machine a busy neighbour changes every figure."""
    out = {"loadavg": [round(v, 2) for v in os.getloadavg()]}
    try:
        import psutil

        me = os.getpid()
        procs = [p for p in psutil.process_iter() if p.pid != me]
        for p in procs:
            try:
                p.cpu_percent(None)
            except psutil.Error:
                pass
        time.sleep(sample_s)
        busy = 0.0
        for p in procs:
            try:
                busy += p.cpu_percent(None)
            except psutil.Error:
                pass
        out["other_processes_cpu_pct"] = round(busy, 1)
    except ImportError:
        pass
    return out


def wait_idle(max_wait_s: float, busy_pct: float = 20.0) -> dict:
    """Wait (at most ``max_wait_s``) until other processes use less than ``busy_pct``
    percent of a core; returns the last sample."""
    t_start = time.monotonic()
    t_end = t_start + max_wait_s
    last_print = -1e9
    while True:
        s = other_cpu_load()
        now = time.monotonic()
        if s.get("other_processes_cpu_pct", 0.0) < busy_pct or now >= t_end:
            s["waited_s"] = round(now - t_start, 1)
            return s
        if now - last_print >= 60.0:
            print(f"  machine busy ({s}); waiting (at most {max_wait_s:.0f} s) ...", flush=True)
            last_print = now
        time.sleep(5.0)


# --------------------------------------------------------------------------- routes


def route_floor(liver, lesions):
    return int(np.count_nonzero(liver)) + int(np.count_nonzero(lesions))


def route_floor_words(liver, lesions):
    """One read of both arrays as uint64 words (a numba OR over each): the
    memory-bandwidth floor without count_nonzero's per-byte work."""
    from numba import njit

    global _OR_WORDS
    if _OR_WORDS is None:
        @njit(cache=True, nogil=True)
        def _or_words(a, b):
            s = np.uint64(0)
            t = np.uint64(0)
            for i in range(a.shape[0]):
                s |= a[i]
                t |= b[i]
            return s, t

        _OR_WORDS = _or_words
    a = liver.reshape(-1).view(np.uint64)
    b = lesions.reshape(-1).view(np.uint64)
    return _OR_WORDS(a, b)


_OR_WORDS = None


def round_robin(routes, runs: int) -> tuple[dict, dict]:
    """Time ``routes`` (name, callable) round robin: every round runs each route
    once, so that a busy neighbour disturbs all alike; one untimed warm-up round
    first, whose results are returned. Returns (times, results); times[name] has
    median_ms, min_ms and runs_ms."""
    samples: dict[str, list[float]] = {name: [] for name, _ in routes}
    results: dict[str, object] = {}
    for rnd in range(runs + 1):
        for name, fn in routes:
            gc.collect()
            t0 = time.perf_counter()
            res = fn()
            dt = (time.perf_counter() - t0) * 1e3
            if rnd == 0:
                results[name] = res
            else:
                samples[name].append(dt)
            del res
    times = {k: {"median_ms": statistics.median(v), "min_ms": min(v), "runs_ms": v} for k, v in samples.items()}
    return times, results


def _nonzero_slices(a: np.ndarray) -> np.ndarray:
    """Per-slice "any voxel set", read as uint64 words when the layout allows it."""
    nz = a.shape[0]
    flat = a.reshape(nz, -1)
    if a.flags.c_contiguous and a.dtype.itemsize == 1 and flat.shape[1] % 8 == 0:
        return flat.view(np.uint64).max(axis=1) != 0
    return flat.max(axis=1) != 0


def lesion_bbox(lesions: np.ndarray):
    """(slice, row, col) slices of the lesions' bounding box, or None."""
    zs = np.flatnonzero(_nonzero_slices(lesions))
    if zs.size == 0:
        return None
    slab = lesions[zs[0] : zs[-1] + 1]
    prof = slab.max(axis=0)  # (row, col), a small read of the slab
    ys = np.flatnonzero(prof.max(axis=1))
    xs = np.flatnonzero(prof.max(axis=0))
    return (slice(zs[0], zs[-1] + 1), slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))


def _max_pairwise(points: np.ndarray):
    """Largest distance over a set of points (O(n^2) in blocks; n is hull-sized)."""
    from scipy.spatial.distance import pdist

    n = points.shape[0]
    if n < 2:
        return 0.0
    return float(pdist(points).max())


def _hull_diameter(points: np.ndarray) -> float:
    """Max pairwise distance over the convex-hull vertices (falls back to all points
    for flat / collinear sets that Qhull rejects)."""
    from scipy.spatial import ConvexHull, QhullError

    n, d = points.shape
    if n <= d + 1:
        return _max_pairwise(points)
    try:
        hull = ConvexHull(points)
    except QhullError:
        return _max_pairwise(points)
    return _max_pairwise(points[hull.vertices])


def _row_extremes(z, y, x):
    """Indices of the first and last voxel of every (slice, row) in C-ordered nonzero()."""
    n = z.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    key = z.astype(np.int64) * (int(y.max()) + 1) + y
    brk = np.flatnonzero(np.diff(key)) + 1
    first = np.concatenate(([0], brk))
    last = np.concatenate((brk - 1, [n - 1]))
    keep = np.concatenate((first, last[last != first]))
    keep.sort()
    return keep


def route_library(liver, lesions, spacing, all_voxels: bool = False, crop: bool = True):
    """numpy bbox + cc3d + scipy hulls. Returns (liver_count, list of lesion dicts).

    ``all_voxels``: every voxel centre goes to Qhull (else each row's first and
    last voxel, which have the same hull). ``crop=False``: cc3d on the whole
    volume (no numpy bounding box first).
    """
    import cc3d

    sp = np.asarray(spacing, dtype=np.float64)
    liver_count = int(np.count_nonzero(liver))
    if crop:
        box = lesion_bbox(lesions)
        if box is None:
            return liver_count, []
    else:
        box = tuple(slice(0, n) for n in lesions.shape)
    off = np.array([s.start for s in box])
    crop = lesions[box]
    labels, n = cc3d.connected_components(crop, connectivity=26, return_N=True)
    stats = cc3d.statistics(labels)
    out = []
    for lab in range(1, n + 1):
        bb = stats["bounding_boxes"][lab]
        sub = labels[bb] == lab
        z, y, x = np.nonzero(sub)  # C order: slice, then row, then col
        o = off + np.array([s.start for s in bb])
        if all_voxels:
            sel = slice(None)
        else:
            sel = _row_extremes(z, y, x)
        zs, ys, xs = z[sel], y[sel], x[sel]
        pts = np.column_stack(((zs + o[0]) * sp[0], (ys + o[1]) * sp[1], (xs + o[2]) * sp[2]))
        max3d = _hull_diameter(pts)
        # per-slice LD (zs is sorted)
        ld = 0.0
        ld_slice = -1
        cuts = np.flatnonzero(np.diff(zs)) + 1
        for a, b in zip(np.concatenate(([0], cuts)), np.concatenate((cuts, [zs.size]))):
            d = _hull_diameter(pts[a:b, 1:])
            if d > ld:
                ld, ld_slice = d, int(zs[a] + o[0])
        out.append({
            "voxel_count": int(stats["voxel_counts"][lab]),
            "bbox_min": tuple(int(s.start + off[k]) for k, s in enumerate(bb)),
            "bbox_max": tuple(int(s.stop - 1 + off[k]) for k, s in enumerate(bb)),
            "centroid_index": tuple(float(c + off[k]) for k, c in enumerate(stats["centroids"][lab])),
            "max3d_mm": max3d,
            "ld_mm": ld,
            "ld_slice": ld_slice,
        })
    return liver_count, out


def route_sitk(liver, lesions, spacing, threads: int = 1):
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
    liver_count = int(np.count_nonzero(liver))
    img = sitk.GetImageFromArray(lesions)
    img.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    cc = sitk.ConnectedComponent(img, True)  # fully connected: 26
    f = sitk.LabelShapeStatisticsImageFilter()
    f.ComputeFeretDiameterOn()
    f.Execute(cc)
    out = []
    for lab in f.GetLabels():
        bb = f.GetBoundingBox(lab)  # x, y, z, size_x, size_y, size_z
        lo = (bb[2], bb[1], bb[0])
        hi = (bb[2] + bb[5] - 1, bb[1] + bb[4] - 1, bb[0] + bb[3] - 1)
        out.append({
            "voxel_count": int(f.GetNumberOfPixels(lab)),
            "bbox_min": lo,
            "bbox_max": hi,
            "feret_mm": float(f.GetFeretDiameter(lab)),
        })
    return liver_count, out


def route_pyradiomics(liver, lesions, spacing):
    import logging

    import cc3d
    import radiomics
    import SimpleITK as sitk
    from radiomics import shape

    radiomics.setVerbosity(logging.ERROR)
    liver_count = int(np.count_nonzero(liver))
    box = lesion_bbox(lesions)
    if box is None:
        return liver_count, []
    off = np.array([s.start for s in box])
    labels, n = cc3d.connected_components(lesions[box], connectivity=26, return_N=True)
    stats = cc3d.statistics(labels)
    sp_xyz = tuple(float(s) for s in spacing[::-1])
    out = []
    for lab in range(1, n + 1):
        bb = stats["bounding_boxes"][lab]
        m = (labels[bb] == lab).astype(np.uint8)
        msk = sitk.GetImageFromArray(m)
        msk.SetSpacing(sp_xyz)
        img = sitk.GetImageFromArray(np.zeros(m.shape, dtype=np.float32))
        img.SetSpacing(sp_xyz)
        s = shape.RadiomicsShape(img, msk, label=1)
        s.disableAllFeatures()
        s.enableFeatureByName("Maximum3DDiameter")
        res = s.execute()
        out.append({
            "voxel_count": int(stats["voxel_counts"][lab]),
            "bbox_min": tuple(int(q.start + off[k]) for k, q in enumerate(bb)),
            "bbox_max": tuple(int(q.stop - 1 + off[k]) for k, q in enumerate(bb)),
            "max3d_mesh_mm": float(res["Maximum3DDiameter"]),
        })
    return liver_count, out


def route_liverburden(liver, lesions, spacing, direction, threads: int = 1):
    import liverburden

    return liverburden.measure_arrays(liver, lesions, spacing, direction, threads=threads)


def route_liverburden_jit(liver, lesions, spacing, direction, threads: int = 1):
    """The same on numba's JIT only, not the install's ahead-of-time build (issue 13:
    the compiled build must not be slower)."""
    from liverburden.kernels import _tiered

    with _tiered.jit_only():
        return route_liverburden(liver, lesions, spacing, direction, threads)


# --------------------------------------------------------------------------- agreement


def _key(d):
    return (tuple(d["bbox_min"]), tuple(d["bbox_max"]))


def compare(lb_res, lib_liver_count, lib_lesions, *, voxel_ml: float, extra_routes: dict) -> dict:
    """Library route vs liverburden (strict) + SimpleITK / pyradiomics (information)."""
    problems: list[str] = []
    lb_les = [
        {
            "id": les.id,
            "voxel_count": les.voxel_count,
            "bbox_min": tuple(les.bbox_index_min),
            "bbox_max": tuple(les.bbox_index_max),
            "centroid_index": tuple(les.centroid_index),
            "max3d_mm": les.max3d_mm,
            "ld_mm": les.ld_mm,
            "sa_mm": les.sa_mm,
        }
        for les in lb_res.lesions
    ]
    if len(lb_les) != len(lib_lesions):
        problems.append(f"lesion count: liverburden {len(lb_les)} vs library {len(lib_lesions)}")
    lb_liver = round(lb_res.liver.mask_volume_ml / voxel_ml)
    if lb_liver != lib_liver_count:
        problems.append(f"liver voxels: liverburden {lb_liver} vs library {lib_liver_count}")
    lib_by_key = {_key(d): d for d in lib_lesions}
    max_err = {"max3d_mm": 0.0, "ld_mm": 0.0, "centroid_index": 0.0}
    matched = 0
    for d in lb_les:
        o = lib_by_key.get(_key(d))
        if o is None:
            problems.append(f"lesion {d['id']} (box {d['bbox_min']}..{d['bbox_max']}) has no library counterpart")
            continue
        matched += 1
        if o["voxel_count"] != d["voxel_count"]:
            problems.append(f"lesion {d['id']}: voxels liverburden {d['voxel_count']} vs library {o['voxel_count']}")
        for q in ("max3d_mm", "ld_mm"):
            err = abs(o[q] - d[q])
            max_err[q] = max(max_err[q], err)
            if err > TOL_MM:
                problems.append(f"lesion {d['id']}: {q} liverburden {d[q]:.9f} vs library {o[q]:.9f} (diff {err:.3g})")
        err = float(np.max(np.abs(np.subtract(o["centroid_index"], d["centroid_index"]))))
        max_err["centroid_index"] = max(max_err["centroid_index"], err)
        if err > 1e-6:
            problems.append(f"lesion {d['id']}: centroid differs by {err:.3g} voxel")
    info = {}
    for name, (liver_count, lesions_o) in extra_routes.items():
        by_key = {_key(d): d for d in lesions_o}
        diffs = []
        missing = 0
        for d in lb_les:
            o = by_key.get(_key(d))
            if o is None or o["voxel_count"] != d["voxel_count"]:
                missing += 1
                continue
            val = o.get("feret_mm", o.get("max3d_mesh_mm"))
            diffs.append(val - d["max3d_mm"])
        info[name] = {
            "lesions": len(lesions_o),
            "unmatched_or_different_voxels": missing,
            "max3d_minus_liverburden_mm": {
                "min": float(min(diffs)) if diffs else None,
                "max": float(max(diffs)) if diffs else None,
                "max_abs": float(max(abs(v) for v in diffs)) if diffs else None,
            },
        }
    return {
        "lesions_liverburden": len(lb_les),
        "lesions_library": len(lib_lesions),
        "matched": matched,
        "max_abs_error": max_err,
        "tolerance_mm": TOL_MM,
        "agree": not problems,
        "problems": problems,
        "information": info,
        "lesion_table": [
            {**d, "library_ld_mm": lib_by_key.get(_key(d), {}).get("ld_mm"),
             "library_max3d_mm": lib_by_key.get(_key(d), {}).get("max3d_mm")}
            for d in lb_les
        ],
    }


# --------------------------------------------------------------------------- memory


def _proc_status_kb(field: str) -> int | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _trim() -> None:
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except Exception:
        pass


def memory_child(threads: int, data_dir: str) -> dict:
    """Runs in a fresh interpreter: peak RSS above the RSS before measure_arrays.

    The arrays come from .npy files (``np.load`` allocates just the arrays, no
    transient peak), after a numba warm-up on a tiny volume. The parent starts
    this process before it builds anything big (Linux carries a parent's
    ``ru_maxrss`` into a child across fork/exec), so ``ru_maxrss`` before the
    call is about the current RSS and its growth cross-checks ``VmHWM``.
    """
    import resource

    import liverburden

    t = _phantom.tiny_phantom()
    liverburden.measure_arrays(t.liver, t.lesions, t.spacing_mm, t.direction, threads=threads)
    _trim()
    if data_dir == "-":  # started early by the parent: wait for the arrays
        data_dir = sys.stdin.readline().strip()
        if not data_dir:
            return {"threads": threads, "calls": [], "error": "no data"}
    d = Path(data_dir)
    liver = np.load(d / "liver.npy")
    lesions = np.load(d / "lesions.npy")
    meta = json.loads((d / "meta.json").read_text())
    sp, direction = tuple(meta["spacing_mm"]), np.asarray(meta["direction"])
    out = {"threads": threads, "calls": []}
    # call 1: ru_maxrss (no reset; its growth over the RSS before the call);
    # call 2: VmHWM reset through /proc/self/clear_refs just before the call
    for call in range(2):
        _trim()
        rss0 = _proc_status_kb("VmRSS")
        maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        reset = _reset_hwm() if call == 1 else False
        res = liverburden.measure_arrays(liver, lesions, sp, direction, threads=threads)
        hwm1 = _proc_status_kb("VmHWM")
        maxrss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss1 = _proc_status_kb("VmRSS")
        entry = {
            "call": "ru_maxrss" if call == 0 else "VmHWM reset",
            "rss_before_mb": rss0 / 1024 if rss0 else None,
            "retained_after_mb": (rss1 - rss0) / 1024 if rss1 and rss0 else None,
        }
        if call == 0:
            # a peak below the earlier high-water mark does not show: report the blind zone
            entry["ru_maxrss_headroom_mb"] = max(0.0, (maxrss0 - rss0) / 1024) if rss0 else None
            entry["peak_extra_mb"] = max(0.0, (maxrss1 - rss0) / 1024) if rss0 and maxrss1 > maxrss0 else None
        else:
            entry["hwm_reset"] = reset
            entry["peak_extra_mb"] = (hwm1 - rss0) / 1024 if reset and hwm1 and rss0 else None
        out["calls"].append(entry)
        del res
    return out


def start_memory_children() -> dict:
    """Start the memory-measuring interpreters now, while this process is small."""
    kids = {}
    for threads in (1, 2):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_memory-child", str(threads), "--_data", "-"]
        kids[threads] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True, env=dict(os.environ))
    return kids


def stop_memory_children(kids: dict) -> None:
    for p in kids.values():
        if p.poll() is None:
            try:
                p.communicate("\n", timeout=60)
            except Exception:
                p.kill()


def memory_report(liver, lesions, spacing, direction, kids: dict) -> dict:
    import tempfile

    import liverburden

    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="lb-bench-mem-") as tmp:
        np.save(Path(tmp) / "liver.npy", liver)
        np.save(Path(tmp) / "lesions.npy", lesions)
        (Path(tmp) / "meta.json").write_text(json.dumps(
            {"spacing_mm": list(spacing), "direction": np.asarray(direction).tolist()}))
        for threads in (1, 2):
            _trim()
            tracemalloc.start()
            tracemalloc.reset_peak()
            base, _ = tracemalloc.get_traced_memory()
            res = liverburden.measure_arrays(liver, lesions, spacing, direction, threads=threads)
            cur, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            del res
            entry = {"tracemalloc_peak_mb": (peak - base) / 2**20, "tracemalloc_retained_mb": (cur - base) / 2**20}
            proc = kids[threads]
            try:
                stdout, stderr = proc.communicate(tmp + "\n", timeout=900)
                if proc.returncode == 0:
                    entry["subprocess"] = json.loads(stdout.strip().splitlines()[-1])
                else:
                    entry["subprocess_error"] = stderr[-2000:]
            except Exception as exc:  # pragma: no cover
                proc.kill()
                entry["subprocess_error"] = repr(exc)
            out[f"threads_{threads}"] = entry
    return out


# --------------------------------------------------------------------------- profile


def profile_liverburden(liver, lesions, spacing, direction, runs: int) -> dict:
    """Time measure_arrays' phases by calling the private kernels as
    ``measure/_measure.py`` does (private API: may break when src changes)."""
    from liverburden import kernels as K
    from liverburden.config import resolve_config
    from liverburden.measure import _measure as M

    cfg = resolve_config(None)
    out = {}
    out["resolve_config"], _ = _timeit(lambda: resolve_config(None), runs)
    llut = M._value_lut(cfg["labels"]["liver"], 256, ids=False)
    elut = M._value_lut(cfg["labels"]["lesion"], 256, ids=True)
    out["scan_runs_1thread"], scanned = _timeit(lambda: M._scan(liver, lesions, llut, elut, 1), runs)
    out["scan_runs_2threads"], _ = _timeit(lambda: M._scan(liver, lesions, llut, elut, 2), runs)
    scan = getattr(K, "scan_runs", K._scan_runs)  # the dispatcher where src has one
    nz = liver.shape[0]
    # two distinct, written zero arrays: np.zeros pages map the shared zero page,
    # and one array twice would be read from cache
    zeros = np.empty_like(liver)
    zeros.fill(0)
    zeros2 = np.empty_like(lesions)
    zeros2.fill(0)
    out["scan_all_zero_volume"], _ = _timeit(lambda: scan(zeros, zeros2, llut, elut, 0, nz), runs)
    out["scan_liver_only"], _ = _timeit(lambda: scan(liver, zeros2, llut, elut, 0, nz), runs)
    out["scan_lesions_only"], _ = _timeit(lambda: scan(zeros, lesions, llut, elut, 0, nz), runs)
    del zeros, zeros2
    runs_t = scanned[0]
    shape_zy = np.array(liver.shape[:2], dtype=np.int64)
    out["connect_runs"], (comp, n_comp) = _timeit(lambda: K._connect_runs(runs_t, shape_zy, 26, False), runs)

    def group():
        order = np.argsort(comp, kind="stable").astype(np.int64)
        starts = np.searchsorted(comp[order], np.arange(n_comp + 1)).astype(np.int64)
        return order, starts

    out["group_runs"], (order, starts) = _timeit(group, runs)
    tol = math.cos(math.radians(float(cfg["diameters"]["sa_perpendicular_tolerance_deg"])))
    tie = float(cfg["diameters"]["tie_tolerance_mm"])
    sp = np.ascontiguousarray(np.asarray(spacing, dtype=np.float64))
    out["lesion_geometry"], _ = _timeit(lambda: K._lesion_geometry(runs_t, order, starts, sp, tol, tie), runs)
    out["measure_arrays_total"], _ = _timeit(
        lambda: route_liverburden(liver, lesions, spacing, direction, 1), runs)
    parts = ("resolve_config", "scan_runs_1thread", "connect_runs", "group_runs", "lesion_geometry")
    rest = out["measure_arrays_total"]["median_ms"] - sum(out[p]["median_ms"] for p in parts)
    out["rest_python_assembly_ms"] = rest
    out["n_runs"] = int(runs_t.shape[0])
    out["n_components"] = int(n_comp)
    return out


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="timed runs per route (median reported); default 5")
    ap.add_argument("--seed", type=int, default=20240611, help="phantom seed")
    ap.add_argument("--small", action="store_true", help="tiny phantom (smoke test)")
    ap.add_argument("--skip-sitk", action="store_true")
    ap.add_argument("--skip-pyradiomics", action="store_true")
    ap.add_argument("--skip-allvox", action="store_true", help="skip the all-voxel library variant")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-profile", action="store_true", help="skip the phase profile of liverburden")
    ap.add_argument("--profile", action="store_true", help="always run the phase profile of liverburden")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                    help="wait up to S seconds for other processes to go idle before timing")
    ap.add_argument("--out", default=str(HERE / "results" / "measure.json"))
    ap.add_argument("--_memory-child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_data", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._memory_child is not None:
        print(json.dumps(memory_child(args._memory_child, args._data)))
        return 0

    import liverburden

    kids = {} if args.no_memory else start_memory_children()
    t0 = time.perf_counter()
    # numba: compile (or load from cache) on a tiny volume, out of every timing
    tiny = _phantom.tiny_phantom()
    for th in (1, 2):
        liverburden.measure_arrays(tiny.liver, tiny.lesions, tiny.spacing_mm, tiny.direction, threads=th)
    warm_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    ph = _phantom.tiny_phantom() if args.small else _phantom.build_phantom(seed=args.seed)
    build_s = time.perf_counter() - t0
    liver, lesions, sp, direction = ph.liver, ph.lesions, ph.spacing_mm, ph.direction
    voxel_ml = float(np.prod(sp)) / 1000.0
    print(f"phantom: {ph.summary()} (built in {build_s:.1f} s; numba warm-up {warm_s:.1f} s)")
    load_before = wait_idle(args.wait_idle) if args.wait_idle > 0 else other_cpu_load()
    print(f"machine: {os.cpu_count()} CPUs, {_cpu_model()}; runs per route: {args.runs} (median)")
    print(f"machine load before timing: {load_before}")
    if load_before.get("other_processes_cpu_pct", 0.0) >= 20.0:
        print("  WARNING: other processes are using the CPU; the figures below are disturbed "
              "(use --wait-idle 600)")
    print()

    skipped: dict[str, str] = {}
    routes: list[tuple[str, object]] = [
        ("floor", lambda: route_floor(liver, lesions)),
        ("floor-words", lambda: route_floor_words(liver, lesions)),
        ("library", lambda: route_library(liver, lesions, sp)),
    ]
    if not args.skip_allvox:
        routes.append(("library-allvox", lambda: route_library(liver, lesions, sp, all_voxels=True)))
        routes.append(("library-plain", lambda: route_library(liver, lesions, sp, all_voxels=True, crop=False)))
    try:
        if args.skip_sitk:
            raise ImportError("--skip-sitk")
        import SimpleITK  # noqa: F401

        routes.append(("sitk-1thread", lambda: route_sitk(liver, lesions, sp, 1)))
        routes.append(("sitk-2threads", lambda: route_sitk(liver, lesions, sp, 2)))
    except ImportError as exc:
        skipped["sitk"] = f"skipped: {exc}"
    try:
        if args.skip_pyradiomics:
            raise ImportError("--skip-pyradiomics")
        import radiomics  # noqa: F401

        routes.append(("pyradiomics", lambda: route_pyradiomics(liver, lesions, sp)))
    except ImportError as exc:
        skipped["pyradiomics"] = "skipped: pyradiomics not installed" if "radiomics" in str(exc) else f"skipped: {exc}"
        print(skipped["pyradiomics"])
    routes.append(("liverburden-1thread", lambda: route_liverburden(liver, lesions, sp, direction, 1)))
    routes.append(("liverburden-2threads", lambda: route_liverburden(liver, lesions, sp, direction, 2)))
    from liverburden.kernels import _tiered

    aot = _tiered.status()
    print(f"liverburden kernels: ahead-of-time build {aot['aot_reason']}")
    if aot["aot"]:
        routes.append(("liverburden-jit-1thread", lambda: route_liverburden_jit(liver, lesions, sp, direction, 1)))
        routes.append(("liverburden-jit-2threads", lambda: route_liverburden_jit(liver, lesions, sp, direction, 2)))

    # round robin: every round times each route once, so that a busy neighbour
    # disturbs all routes alike; one untimed warm-up round first
    print(f"  warm-up round + {args.runs} timed rounds over {len(routes)} routes ...", flush=True)
    times, results = round_robin(routes, args.runs)
    try:
        import SimpleITK

        SimpleITK.ProcessObject.SetGlobalDefaultNumberOfThreads(os.cpu_count() or 1)
    except ImportError:
        pass

    load_after = other_cpu_load()
    print(f"machine load after timing: {load_after}")

    # agreement ------------------------------------------------------------------
    lib_liver, lib_lesions = results["library"]
    extra = {k: results[k] for k in ("sitk-1thread", "pyradiomics") if k in results}
    agreement = compare(results["liverburden-1thread"], lib_liver, lib_lesions, voxel_ml=voxel_ml, extra_routes=extra)
    for variant in ("library-allvox", "library-plain"):
        if variant in results:
            a2 = compare(results["liverburden-1thread"], *results[variant], voxel_ml=voxel_ml, extra_routes={})
            agreement[f"{variant}_agree"] = a2["agree"]
            agreement["problems"] += [f"[{variant}] {p}" for p in a2["problems"]]
            agreement["agree"] = agreement["agree"] and a2["agree"]
    lb2 = results["liverburden-2threads"]
    same_2 = [les.to_dict() for les in lb2.lesions] == [les.to_dict() for les in results["liverburden-1thread"].lesions]
    agreement["threads_2_identical_to_1"] = bool(same_2)
    if not same_2:
        agreement["problems"].append("liverburden threads=2 result differs from threads=1")
        agreement["agree"] = False

    # table --------------------------------------------------------------------
    ref = times["liverburden-1thread"]["median_ms"]
    lib_fast = min(times[k]["median_ms"] for k in ("library", "library-allvox", "library-plain") if k in times)
    labels = {
        "floor": "floor: np.count_nonzero x2 (one read)",
        "floor-words": "floor: one uint64-word OR pass over both (numba)",
        "library": "library: numpy bbox + cc3d + scipy hulls (row extremes)",
        "library-allvox": "library: same, all voxel centres to Qhull",
        "library-plain": "library: cc3d on the whole volume, all voxels to Qhull",
        "sitk-1thread": "SimpleITK CC + LabelShapeStatistics+Feret, 1 thr",
        "sitk-2threads": "SimpleITK CC + LabelShapeStatistics+Feret, 2 thr",
        "pyradiomics": "pyradiomics shape Maximum3DDiameter per lesion",
        "liverburden-1thread": "liverburden.measure_arrays threads=1",
        "liverburden-2threads": "liverburden.measure_arrays threads=2",
        "liverburden-jit-1thread": "same, numba JIT kernels (no install build), threads=1",
        "liverburden-jit-2threads": "same, numba JIT kernels (no install build), threads=2",
    }
    print()
    print(f"{'route':58s} {'median ms':>10s} {'min ms':>9s} {'x lb-1thr':>10s}")
    print("-" * 90)
    for k, lab in labels.items():
        if k not in times:
            continue
        t = times[k]
        print(f"{lab:58s} {t['median_ms']:10.1f} {t['min_ms']:9.1f} {t['median_ms'] / ref:10.2f}")
    for k, v in skipped.items():
        print(f"{k:58s} {v}")
    print("-" * 90)
    lb1 = ref
    lb2t = times["liverburden-2threads"]["median_ms"]
    ratios = {
        "fastest_library_over_liverburden_1thread": lib_fast / lb1,
        "fastest_library_over_liverburden_2threads": lib_fast / lb2t,
        "liverburden_1thread_over_floor": lb1 / times["floor"]["median_ms"],
        "liverburden_2threads_over_floor": lb2t / times["floor"]["median_ms"],
        "liverburden_1thread_over_word_floor": lb1 / times["floor-words"]["median_ms"],
        "sitk_1thread_over_liverburden_1thread": times["sitk-1thread"]["median_ms"] / lb1 if "sitk-1thread" in times else None,
        "pyradiomics_over_liverburden_1thread": times["pyradiomics"]["median_ms"] / lb1 if "pyradiomics" in times else None,
        "speedup_2threads": lb1 / lb2t,
    }
    print(f"fastest library route / liverburden 1 thread : {ratios['fastest_library_over_liverburden_1thread']:.2f}x "
          f"(target >= 5x, i.e. liverburden <= {lib_fast / 5:.0f} ms; issue target ~{TARGET_MS:.0f} ms)")
    print(f"fastest library route / liverburden 2 threads: {ratios['fastest_library_over_liverburden_2threads']:.2f}x")
    print(f"liverburden 1 thread / floor                 : {ratios['liverburden_1thread_over_floor']:.1f}x (target <= 10x)")
    print(f"liverburden 2 threads / floor                : {ratios['liverburden_2threads_over_floor']:.1f}x")
    print(f"liverburden 1 thread / word-read floor       : {ratios['liverburden_1thread_over_word_floor']:.1f}x")
    if "liverburden-jit-1thread" in times:
        ratios["jit_over_aot_1thread"] = times["liverburden-jit-1thread"]["median_ms"] / lb1
        ratios["jit_over_aot_2threads"] = times["liverburden-jit-2threads"]["median_ms"] / lb2t
        print(f"JIT kernels / ahead-of-time kernels, 1 thread: {ratios['jit_over_aot_1thread']:.2f}x, "
              f"2 threads: {ratios['jit_over_aot_2threads']:.2f}x (> 1: the install's build is faster)")
    meets = lb1 <= TARGET_MS and ratios["fastest_library_over_liverburden_1thread"] >= 5.0
    print(f"target met (1 thread <= {TARGET_MS:.0f} ms and >= 5x the library route): {'YES' if meets else 'NO'}")

    print()
    if agreement["agree"]:
        print(f"agreement: OK - {agreement['matched']} lesions, voxel counts, boxes, centroids, LD and max3d equal "
              f"(max |diff| LD {agreement['max_abs_error']['ld_mm']:.2e} mm, "
              f"max3d {agreement['max_abs_error']['max3d_mm']:.2e} mm); threads=2 identical")
    else:
        bar = "!" * 90
        print(bar)
        print("DISAGREEMENT between the library route and liverburden:")
        for p in agreement["problems"]:
            print("  " + p)
        print(bar)
    for name, inf in agreement["information"].items():
        mm = inf["max3d_minus_liverburden_mm"]
        if mm["max_abs"] is None:
            print(f"  {name}: no lesion matched")
            continue
        print(f"  {name}: {inf['lesions']} lesions; max3d - liverburden in [{mm['min']:+.3f}, {mm['max']:+.3f}] mm "
              f"({'voxel-centre Feret' if 'sitk' in name else 'mesh vertices, not voxel centres'})")

    memory = None
    if not args.no_memory:
        print("\nmemory of measure_arrays (extra over the input arrays) ...", flush=True)
        memory = memory_report(liver, lesions, sp, direction, kids)
        for k, m in memory.items():
            line = f"  {k}: tracemalloc peak {m['tracemalloc_peak_mb']:.2f} MB"
            sub = m.get("subprocess")
            if sub:
                for c in sub["calls"]:
                    pk = c["peak_extra_mb"]
                    if pk is not None:
                        line += f"; peak RSS by {c['call']}: +{pk:.1f} MB"
                    elif c["call"] == "ru_maxrss":
                        line += f"; ru_maxrss: no new peak (blind below +{c['ru_maxrss_headroom_mb']:.1f} MB)"
                    else:
                        line += f"; {c['call']}: n/a"
                mx = max((c["peak_extra_mb"] or 0.0) for c in sub["calls"])
                m["peak_extra_mb"] = max(mx, m["tracemalloc_peak_mb"])
            else:
                line += f"; subprocess failed: {m.get('subprocess_error', '')[-300:]}"
            print(line)
        worst = max(m.get("peak_extra_mb", m["tracemalloc_peak_mb"]) for m in memory.values())
        memory["worst_extra_mb"] = worst
        print(f"  extra memory <= 50 MB: {'YES' if worst <= 50.0 else 'NO'} (worst {worst:.1f} MB)")

    profile = None
    if not args.no_profile and (lb1 > TARGET_MS or args.profile):
        print("\nliverburden phases (private kernels called as measure/_measure.py does) ...", flush=True)
        try:
            profile = profile_liverburden(liver, lesions, sp, direction, args.runs)
            print(f"  {'phase':28s} {'median':>8s} {'min':>8s}")
            for k, v in profile.items():
                if isinstance(v, dict):
                    print(f"  {k:28s} {v['median_ms']:8.2f} {v['min_ms']:8.2f} ms")
            print(f"  {'rest (Python assembly)':28s} {profile['rest_python_assembly_ms']:8.2f} ms"
                  f"   [{profile['n_runs']} runs, {profile['n_components']} components]")
        except Exception as exc:
            profile = {"error": repr(exc)}
            print(f"  profile failed (private API changed?): {exc!r}")

    doc = {
        "benchmark": "bench_measure",
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "cpu": _cpu_model(), "platform": platform.platform(),
                    "load_before": load_before, "load_after": load_after},
        "versions": _versions(),
        "phantom": {
            "summary": ph.summary(), "shape": list(liver.shape), "spacing_mm": list(sp),
            "liver_ml": ph.liver_ml, "lesions_drawn": len(ph.drawn), "touching_pairs": ph.touching_pairs,
            "seed": ph.seed, "small": bool(args.small),
        },
        "runs_per_route": args.runs,
        "times": times,
        "skipped": skipped,
        "ratios": ratios,
        "target": {"liverburden_1thread_ms": TARGET_MS, "min_ratio_vs_library": 5.0, "max_ratio_vs_floor": 10.0,
                   "max_extra_memory_mb": 50.0, "met": bool(meets)},
        "agreement": agreement,
        "memory": memory,
        "profile": profile,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, default=float) + "\n")
    print(f"\nwrote {out}")
    stop_memory_children(kids)
    return 0 if agreement["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
