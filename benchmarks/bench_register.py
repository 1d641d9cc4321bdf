"""Registration: the metric chosen by measurement, and the time of a full-size pair.

Run from the repository root::

    python benchmarks/bench_register.py                  # metric table + 512x512x300 pair
    python benchmarks/bench_register.py --no-large       # metric table only
    python benchmarks/bench_register.py --supersample 1  # point-sampled phantoms (aliasing)
    python benchmarks/bench_register.py --no-table --crop-margin 0   # large pair, whole images

Part 1, metric table: the four known rigid motions of ``tests/regphantom.py``
(rotations 2.5-5 deg about three axes, translations 10-17 mm; post scans on other
grids, fields of view and spacings, one oblique), with a hypodense tumor in the
pre scan, ablation cavities with a rim and +25 HU parenchyma in the post scan,
partial volume (2x2x2 sub-samples per voxel). For each config variant
``{"registration": {"metric": M, "metric_mask": K}}`` with M in {mattes,
meansquares, correlation} and K in {liver, none}, rigid and affine: the mean and
max error |M p - T p| over the pre liver's voxel centres, and the time.

Part 1b, crop table: ``registration.crop_margin_mm`` in {0 (whole images), 20,
30, 40} mm with the default metric, same pairs and errors.

Part 2: one 512x512x300 pair (0.78 x 0.78 x 1.25 mm pre; post on another grid
of similar size), rigid + affine (method "affine"), default config (one
registration thread, ``registration.threads``; scans cropped to the liver box
+ ``crop_margin_mm``), liver masks given, registered ``--repeat`` times (2): the
time of each run, and whether the transforms agree bit for bit.
``--crop-margin 0`` registers the whole images (the behaviour before the crop).
The phantom is evaluated slab by slab (no supersampling).

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
#: registration.crop_margin_mm variants of the crop table (0 = whole images)
CROPS = [0.0, 20.0, 30.0, 40.0]


def make_pairs(supersample: int):
    t0 = time.perf_counter()
    pairs = []
    pre = None
    for i, m in enumerate(rp.MOTIONS):
        p = rp.make_pair(m, tumors=TUMORS, zones=ZONES, liver_shift_hu=25.0, seed=i, supersample=supersample,
                         pre_volumes=pre)
        pre = (p["pre"], p["liver_pre"])
        pairs.append((m, p))
    print(f"{len(pairs)} phantom pairs in {time.perf_counter() - t0:.1f} s (supersample {supersample})")
    return pairs


_BASE: dict = {}  # registration keys of every table row (--threads)


def _row(pairs, over: dict, method: str, label: str):
    cfg = load_config(None, {"registration": dict(_BASE, **over)})
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
    row = dict(over, method=method, cases=cells,
               worst_mean_mm=max(c["mean_mm"] for c in cells), worst_max_mm=max(c["max_mm"] for c in cells),
               mean_time_s=float(np.mean([c["time_s"] for c in cells])))
    print(f"{label} {method:<7} " + " ".join(f"{c['mean_mm']:5.2f}/{c['max_mm']:5.2f}mm" for c in cells)
          + f" {row['worst_mean_mm']:>10.2f} {row['worst_max_mm']:>9.2f} {row['mean_time_s']:>7.2f}", flush=True)
    return row


def metric_table(pairs):
    """Metric x metric mask, at the default crop margin."""
    rows = []
    print(f"{'metric':<12} {'mask':<6} {'method':<7} " + " ".join(f"{m['name']:>13}" for m, _ in pairs)
          + f" {'worst mean':>10} {'worst max':>9} {'time s':>7}")
    for metric in METRICS:
        for mask in MASKS:
            for method in ("rigid", "affine"):
                rows.append(_row(pairs, {"metric": metric, "metric_mask": mask}, method, f"{metric:<12} {mask:<6}"))
    return rows


def crop_table(pairs):
    """registration.crop_margin_mm (0 = whole images), default metric."""
    rows = []
    print(f"\n{'crop margin mm':<19} {'method':<7} " + " ".join(f"{m['name']:>13}" for m, _ in pairs)
          + f" {'worst mean':>10} {'worst max':>9} {'time s':>7}")
    for crop in CROPS:
        for method in ("rigid", "affine"):
            rows.append(_row(pairs, {"crop_margin_mm": crop}, method, f"{crop:<19g}"))
    return rows


def large_pair(over: dict, repeat: int):
    """512x512x300 pre (0.78 x 0.78 x 1.25 mm) and a post of similar size on another grid."""
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
    cfg = load_config(None, {"registration": over} if over else {})
    rc = cfg["registration"]
    pts = rp.grid_points(pre_g["size"], pre_g["spacing"], pre_g["origin"], d_pre)
    # liver points, subsampled (every 4th along each axis) to keep memory small
    sub = pts[::4, ::4, ::4][lpre.array[::4, ::4, ::4].astype(bool)]
    runs = []
    for k in range(repeat):
        t1 = time.perf_counter()
        r = register_volumes(pre, post, method="affine", liver_pre=lpre, liver_post=lpost, config=cfg)
        dt = time.perf_counter() - t1
        err = rp.transform_error(r.matrix_lps, R, t, sub)
        runs.append(dict(register_s=dt, matrix_lps=r.matrix_lps, mean_mm=float(err.mean()), max_mm=float(err.max()),
                         ok=r.ok, liver_dice=r.liver_dice, liver_msd_mm=r.liver_msd_mm, liver_hd95_mm=r.liver_hd95_mm,
                         iterations=r.iterations, stop_condition=r.stop_condition, metric=r.metric,
                         split_s=dict(r.timing_s)))
        print(f"run {k + 1}: register (rigid + affine, {rc['threads']} thread(s), crop margin "
              f"{rc['crop_margin_mm']:g} mm, incl. quality): {dt:.1f} s; error over the liver mean {err.mean():.3f} / "
              f"max {err.max():.3f} mm; Dice {r.liver_dice:.4f}, MSD {r.liver_msd_mm:.3f} mm, HD95 "
              f"{r.liver_hd95_mm:.3f} mm, ok {r.ok}; split {r.timing_s}", flush=True)
    same = all(x["matrix_lps"] == runs[0]["matrix_lps"] for x in runs)
    if repeat > 1:
        print(f"transform identical over the {repeat} runs (bit for bit): {same}")
    first = runs[0]
    return dict(pre=pre_g, post=post_g, method="affine", threads=rc["threads"], crop_margin_mm=rc["crop_margin_mm"],
                generate_s=gen, register_s=first["register_s"], register_s_runs=[x["register_s"] for x in runs],
                identical_over_runs=same, mean_mm=first["mean_mm"], max_mm=first["max_mm"], ok=first["ok"],
                liver_dice=first["liver_dice"], liver_msd_mm=first["liver_msd_mm"],
                liver_hd95_mm=first["liver_hd95_mm"], iterations=first["iterations"],
                stop_condition=first["stop_condition"], metric=first["metric"], split_s=first["split_s"],
                runs=runs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--supersample", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None,
                    help="registration.threads for every run (default: the config's, 1 = reproducible)")
    ap.add_argument("--crop-margin", type=float, default=None,
                    help="registration.crop_margin_mm of the large pair (default: the config's; 0 = whole images)")
    ap.add_argument("--repeat", type=int, default=2, help="large-pair runs (the transforms must be identical)")
    ap.add_argument("--no-large", action="store_true")
    ap.add_argument("--no-table", action="store_true")
    ap.add_argument("--out", default=str(HERE / "results" / "register.json"))
    a = ap.parse_args(argv)
    base = {} if a.threads is None else {"threads": a.threads}
    doc = dict(machine=dict(cpus=os.cpu_count(), python=platform.python_version(), simpleitk=sitk.Version_VersionString(),
                            loadavg_start=os.getloadavg()), supersample=a.supersample,
               threads=load_config(None, {"registration": base} if base else {})["registration"]["threads"])
    if not a.no_table:
        pairs = make_pairs(a.supersample)
        global _BASE
        _BASE = base
        doc["metric_table"] = metric_table(pairs)
        best = min(doc["metric_table"], key=lambda r: (r["worst_max_mm"], r["worst_mean_mm"]))
        print(f"\nlowest worst-case max error: {best['metric']} / mask {best['metric_mask']} / {best['method']}: "
              f"{best['worst_max_mm']:.2f} mm")
        doc["crop_table"] = crop_table(pairs)
    if not a.no_large:
        over = dict(base)
        if a.crop_margin is not None:
            over["crop_margin_mm"] = a.crop_margin
        doc["large_pair"] = large_pair(over, a.repeat)
    doc["machine"]["loadavg_end"] = os.getloadavg()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=1))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
