"""Registration: the metric chosen by measurement, and the time of a full-size pair.

Run from the repository root::

    python benchmarks/bench_register.py                  # metric table + 512x512x300 pair
    python benchmarks/bench_register.py --no-large       # metric table only
    python benchmarks/bench_register.py --supersample 1  # point-sampled phantoms (aliasing)

Part 1, metric table: the four known rigid motions of ``tests/regphantom.py``
(rotations 2.5-5 deg about three axes, translations 10-17 mm; post scans on other
grids, fields of view and spacings, one oblique), with a hypodense tumor in the
pre scan, ablation cavities with a rim and +25 HU parenchyma in the post scan,
partial volume (2x2x2 sub-samples per voxel). For each config variant
``{"registration": {"metric": M, "metric_mask": K}}`` with M in {mattes,
meansquares, correlation} and K in {liver, none}, rigid and affine: the mean and
max error |M p - T p| over the pre liver's voxel centres, and the time.

Part 2: one 512x512x300 pair (0.78 x 0.78 x 1.25 mm pre; post on another grid
of similar size), rigid + affine (method "affine"), 2 SimpleITK threads, default
config, liver masks given. The phantom is evaluated slab by slab (no supersampling).

Writes ``benchmarks/results/register.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))

import regphantom as rp  # noqa: E402
from liverburden import load_config  # noqa: E402
from liverburden.register import register_volumes  # noqa: E402

TUMORS = [((-90.0, -20.0, 10.0), 9.0), ((-40.0, 5.0, -15.0), 7.0), ((-20.0, -30.0, -10.0), 8.0)]
ZONES = [((-89.0, -20.0, 10.0), 18.0), ((-38.5, 5.0, -15.0), 11.0), ((-14.0, -30.0, -10.0), 12.0)]
METRICS = ["mattes", "meansquares", "correlation"]
MASKS = ["liver", "none"]


def metric_table(supersample: int, threads: int):
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    t0 = time.perf_counter()
    pairs = []
    pre = None
    for i, m in enumerate(rp.MOTIONS):
        p = rp.make_pair(m, tumors=TUMORS, zones=ZONES, liver_shift_hu=25.0, seed=i, supersample=supersample,
                         pre_volumes=pre)
        pre = (p["pre"], p["liver_pre"])
        pairs.append((m, p))
    print(f"{len(pairs)} phantom pairs in {time.perf_counter() - t0:.1f} s (supersample {supersample})")
    rows = []
    print(f"{'metric':<12} {'mask':<6} {'method':<7} " + " ".join(f"{m['name']:>13}" for m, _ in pairs)
          + f" {'worst mean':>10} {'worst max':>9} {'time s':>7}")
    for metric in METRICS:
        for mask in MASKS:
            cfg = load_config(None, {"registration": {"metric": metric, "metric_mask": mask}})
            for method in ("rigid", "affine"):
                cells = []
                for m, p in pairs:
                    t1 = time.perf_counter()
                    r = register_volumes(p["pre"], p["post"], method=method, liver_pre=p["liver_pre"],
                                         liver_post=p["liver_post"], config=cfg)
                    dt = time.perf_counter() - t1
                    err = rp.transform_error(r.matrix_lps, p["R"], p["t"], p["liver_points"])
                    cells.append(dict(motion=m["name"], mean_mm=float(err.mean()), max_mm=float(err.max()), time_s=dt,
                                      ok=r.ok, liver_dice=r.liver_dice, liver_msd_mm=r.liver_msd_mm,
                                      iterations=r.iterations))
                row = dict(metric=metric, metric_mask=mask, method=method, cases=cells,
                           worst_mean_mm=max(c["mean_mm"] for c in cells), worst_max_mm=max(c["max_mm"] for c in cells),
                           mean_time_s=float(np.mean([c["time_s"] for c in cells])))
                rows.append(row)
                print(f"{metric:<12} {mask:<6} {method:<7} "
                      + " ".join(f"{c['mean_mm']:5.2f}/{c['max_mm']:5.2f}mm" for c in cells)
                      + f" {row['worst_mean_mm']:>10.2f} {row['worst_max_mm']:>9.2f} {row['mean_time_s']:>7.2f}", flush=True)
    return rows


def large_pair(threads: int):
    """512x512x300 pre (0.78 x 0.78 x 1.25 mm) and a post of similar size on another grid."""
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    m = rp.MOTIONS[0]
    R, t = rp.motion_transform(m)
    pre_g = dict(size=(300, 512, 512), spacing=(1.25, 0.78, 0.78), origin=(-200.0, -190.0, -187.0))
    post_g = dict(size=(280, 512, 512), spacing=(1.3, 0.8, 0.8), origin=(-205.0, -200.0, -182.0))
    d_pre = np.eye(3)[:, ::-1]
    d_post = rp.oblique_direction(3.0)
    t0 = time.perf_counter()
    pre = rp.make_volume(pre_g["size"], pre_g["spacing"], pre_g["origin"], d_pre, seed=1, tumors=TUMORS,
                         chunk_slices=20)
    lpre = rp.make_volume(pre_g["size"], pre_g["spacing"], pre_g["origin"], d_pre, kind="liver", chunk_slices=20)
    post = rp.make_volume(post_g["size"], post_g["spacing"], post_g["origin"], d_post, transform=(R, t), seed=2,
                          zones=ZONES, liver_shift_hu=25.0, chunk_slices=20)
    lpost = rp.make_volume(post_g["size"], post_g["spacing"], post_g["origin"], d_post, transform=(R, t),
                           kind="liver", chunk_slices=20)
    gen = time.perf_counter() - t0
    print(f"\nlarge pair generated in {gen:.1f} s: pre {pre_g['size']} {pre_g['spacing']}, post {post_g['size']} "
          f"{post_g['spacing']} oblique 3 deg")
    cfg = load_config(None, {})
    t1 = time.perf_counter()
    r = register_volumes(pre, post, method="affine", liver_pre=lpre, liver_post=lpost, config=cfg)
    dt = time.perf_counter() - t1
    pts = rp.grid_points(pre_g["size"], pre_g["spacing"], pre_g["origin"], d_pre)
    # liver points, subsampled (every 4th along each axis) to keep memory small
    sub = pts[::4, ::4, ::4][lpre.array[::4, ::4, ::4].astype(bool)]
    err = rp.transform_error(r.matrix_lps, R, t, sub)
    out = dict(pre=pre_g, post=post_g, method="affine", threads=threads, generate_s=gen, register_s=dt,
               mean_mm=float(err.mean()), max_mm=float(err.max()), ok=r.ok, liver_dice=r.liver_dice,
               liver_msd_mm=r.liver_msd_mm, iterations=r.iterations, stop_condition=r.stop_condition,
               metric=r.metric, split_s=dict(r.timing_s))
    print(f"register (rigid + affine, default config, {threads} threads, incl. quality): {dt:.1f} s; "
          f"error over the liver mean {err.mean():.2f} / max {err.max():.2f} mm; Dice {r.liver_dice:.3f}, "
          f"MSD {r.liver_msd_mm:.2f} mm, ok {r.ok}; split {r.timing_s}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--supersample", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-large", action="store_true")
    ap.add_argument("--no-table", action="store_true")
    ap.add_argument("--out", default=str(HERE / "results" / "register.json"))
    a = ap.parse_args(argv)
    doc = dict(machine=dict(cpus=os.cpu_count(), python=platform.python_version(), simpleitk=sitk.Version_VersionString(),
                            loadavg_start=os.getloadavg()), supersample=a.supersample, threads=a.threads)
    if not a.no_table:
        doc["metric_table"] = metric_table(a.supersample, a.threads)
        best = min(doc["metric_table"], key=lambda r: (r["worst_max_mm"], r["worst_mean_mm"]))
        print(f"\nlowest worst-case max error: {best['metric']} / mask {best['metric_mask']} / {best['method']}: "
              f"{best['worst_max_mm']:.2f} mm")
    if not a.no_large:
        doc["large_pair"] = large_pair(a.threads)
    doc["machine"]["loadavg_end"] = os.getloadavg()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=1))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
