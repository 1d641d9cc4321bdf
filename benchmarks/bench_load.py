"""End to end on files: a 512x512x400 CT DICOM series + NIfTI liver / lesion masks.

Run from the repository root::

    python benchmarks/bench_load.py                 # generate in a temp dir, time, delete
    python benchmarks/bench_load.py --keep          # keep / reuse benchmarks/results/load_study/
    python benchmarks/bench_load.py --data-dir DIR  # keep / reuse DIR
    python benchmarks/bench_load.py --runs 5

The study (written once; ~210 MB of DICOM + ~1 MB of masks):

- ``dicom/``: 400 single-frame CT files, 512x512 int16, uncompressed (explicit
  VR little endian), written with pydicom, real geometry tags
  (ImagePositionPatient, ImageOrientationPatient, PixelSpacing 0.78 mm,
  SliceThickness 1.25 mm, RescaleIntercept -1024); content: air, a body
  ellipse, the phantom liver and lesions, seeded noise; files named in a
  shuffled order;
- ``liver.nii.gz`` / ``lesions.nii.gz``: the phantom of ``phantom.py`` on the
  same grid, written with SimpleITK (``--nii`` writes uncompressed ``.nii``).

Timed round robin (each of ``--runs`` rounds runs every route once, after an
untimed warm-up round; median and minimum reported), warm page cache (every
file was read before):

sitk-series
    ``ImageSeriesReader.GetGDCMSeriesFileNames`` + ``ImageSeriesReader.Execute``
    on the folder (the reference the issue names);
sitk-series+masks
    the same plus ``sitk.ReadImage`` of both masks (the same files as
    liverburden's loader reads);
lb-load_study
    ``liverburden.io.load_study(dicom_dir, liver, lesions, config=load_config())``,
    also split into its public steps (``scan_dicom``, ``series_geometry``,
    ``read_series_pixels``, ``read_volume_file`` x 2);
lb-measure_study
    ``liverburden.pipeline.measure_study(...)`` end to end, split with its
    ``timing_s`` into load / measure / hash / write (threads 1 and 2).

SimpleITK runs with ``--sitk-threads`` (default 1, "single thread") for every
route, liverburden's own mask reads included.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
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
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

import phantom as _phantom  # noqa: E402
from bench_measure import other_cpu_load, wait_idle  # noqa: E402

DATA_VERSION = 1  # bump when the generated study changes


# --------------------------------------------------------------------------- data


def _uid(tag: str, seed: int) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["liverburden-bench", str(seed), tag])


def _ds(v: float) -> str:
    s = f"{v:.6f}".rstrip("0").rstrip(".")
    return s if len(s) <= 16 else f"{v:.4f}"


def write_study(root: Path, seed: int, small: bool, compressed_nii: bool) -> dict:
    """Write the DICOM series and the masks under ``root``; returns the manifest."""
    import pydicom
    import SimpleITK as sitk
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    t0 = time.perf_counter()
    ph = _phantom.tiny_phantom() if small else _phantom.build_phantom(seed=seed)
    nz, ny, nx = ph.liver.shape
    sz, sy, sx = ph.spacing_mm
    # LPS origin of voxel [0, 0, 0]; rounded as DICOM DS will store it
    origin = tuple(float(_ds(v)) for v in (-0.5 * (nx - 1) * sx, -0.5 * (ny - 1) * sy, -0.5 * (nz - 1) * sz - 400.0))
    dicom_dir = root / "dicom"
    dicom_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    study_uid, series_uid, frame_uid = _uid("study", seed), _uid("series", seed), _uid("frame", seed)
    # body: an elliptic cylinder of soft tissue
    yy = (np.arange(ny) - ny / 2)[:, None] * sy
    xx = (np.arange(nx) - nx / 2)[None, :] * sx
    body = (yy / 150.0) ** 2 + (xx / 185.0) ** 2 <= 1.0
    names = [f"IM{k:06d}.dcm" for k in rng.permutation(nz)]  # shuffled file order
    for k in range(nz):
        hu = np.where(body, np.int16(40), np.int16(-1000)).astype(np.int16)
        hu[ph.liver[k] != 0] = 60
        hu[ph.lesions[k] != 0] = 25
        hu += rng.integers(-25, 26, size=(ny, nx), dtype=np.int16)
        stored = (hu + 1024).astype(np.int16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        sop_uid = _uid(f"sop{k}", seed)
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientName = "Bench^Phantom"
        ds.PatientID = "BENCH0001"
        ds.StudyDate = "20240101"
        ds.Modality = "CT"
        ds.Manufacturer = "benchmark"
        ds.SeriesNumber = 3
        ds.SeriesDescription = "ABD PORTAL 1.25mm"
        ds.InstanceNumber = k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [_ds(origin[0]), _ds(origin[1]), _ds(origin[2] + k * sz)]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.PixelSpacing = [_ds(sy), _ds(sx)]  # row spacing, column spacing
        ds.SliceThickness = _ds(sz)
        ds.SliceLocation = _ds(origin[2] + k * sz)
        ds.Rows = ny
        ds.Columns = nx
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.PixelData = stored.tobytes()
        ds.save_as(dicom_dir / names[k], enforce_file_format=True)
    # masks: same grid, LPS direction identity (x, y, z) = (col, row, slice)
    suffix = ".nii.gz" if compressed_nii else ".nii"
    paths = {}
    for role, arr in (("liver", ph.liver), ("lesions", ph.lesions)):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((sx, sy, sz))
        img.SetOrigin(origin)
        img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
        p = root / f"{role}{suffix}"
        sitk.WriteImage(img, str(p), useCompression=compressed_nii)
        paths[role] = p.name
    manifest = {
        "data_version": DATA_VERSION, "seed": seed, "small": small, "compressed_nii": compressed_nii,
        "shape": [nz, ny, nx], "spacing_mm": list(ph.spacing_mm), "phantom": ph.summary(),
        "files": {"dicom": "dicom", **paths}, "written_s": round(time.perf_counter() - t0, 2),
        "dicom_bytes": sum(p.stat().st_size for p in dicom_dir.iterdir()),
        "lesions_drawn": len(ph.drawn),
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def get_study(root: Path, seed: int, small: bool, compressed_nii: bool) -> dict:
    mf = root / "manifest.json"
    if mf.exists():
        m = json.loads(mf.read_text())
        if (m.get("data_version"), m.get("seed"), m.get("small"), m.get("compressed_nii")) == (
            DATA_VERSION, seed, small, compressed_nii
        ):
            print(f"reusing the study in {root}")
            return m
        shutil.rmtree(root)
    print(f"writing the study to {root} ...", flush=True)
    return write_study(root, seed, small, compressed_nii)


# --------------------------------------------------------------------------- routes


def sitk_series(dicom_dir: Path):
    import SimpleITK as sitk

    names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(dicom_dir))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(names)
    img = reader.Execute()
    return sitk.GetArrayViewFromImage(img).shape, img


def sitk_series_and_masks(dicom_dir: Path, liver: Path, lesions: Path):
    import SimpleITK as sitk

    shape, img = sitk_series(dicom_dir)
    return img, sitk.ReadImage(str(liver)), sitk.ReadImage(str(lesions))


def lb_load(dicom_dir: Path, liver: Path, lesions: Path, cfg):
    from liverburden.io import load_study

    return load_study(dicom_dir, liver, lesions, config=cfg)


def lb_load_steps(dicom_dir: Path, liver: Path, lesions: Path, cfg) -> dict:
    """load_study's public steps, timed one after the other (one pass)."""
    from liverburden.io import read_series_pixels, read_volume_file, scan_dicom, series_geometry

    g = cfg["geometry"]
    t = {}
    t0 = time.perf_counter()
    series = scan_dicom(dicom_dir)
    t1 = time.perf_counter()
    geo = series_geometry(series[0], slice_spacing_rel_tol=g["slice_spacing_rel_tol"],
                          allow_uneven_slices=g["allow_uneven_slices"])
    t2 = time.perf_counter()
    arr = read_series_pixels(geo)
    t3 = time.perf_counter()
    read_volume_file(liver, "liver mask")
    t4 = time.perf_counter()
    read_volume_file(lesions, "lesion mask")
    t5 = time.perf_counter()
    t["scan_dicom_headers_ms"] = (t1 - t0) * 1e3
    t["series_geometry_ms"] = (t2 - t1) * 1e3
    t["read_series_pixels_ms"] = (t3 - t2) * 1e3
    t["read_liver_mask_ms"] = (t4 - t3) * 1e3
    t["read_lesion_mask_ms"] = (t5 - t4) * 1e3
    t["image_dtype"] = str(arr.dtype)
    return t


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="timed runs per route (median); default 3")
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--small", action="store_true", help="tiny phantom (smoke test)")
    ap.add_argument("--keep", action="store_true", help="keep (and reuse) the study in benchmarks/results/load_study/")
    ap.add_argument("--data-dir", default=None, help="keep (and reuse) the study in this folder")
    ap.add_argument("--nii", action="store_true", help="write uncompressed .nii masks instead of .nii.gz")
    ap.add_argument("--sitk-threads", type=int, default=1, help="SimpleITK global thread count (default 1)")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                    help="wait up to S seconds for other processes to go idle before timing")
    ap.add_argument("--out", default=str(HERE / "results" / "load.json"))
    args = ap.parse_args(argv)

    import SimpleITK as sitk

    import liverburden
    from liverburden.pipeline import measure_study

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(args.sitk_threads))
    tmp = None
    if args.data_dir:
        root = Path(args.data_dir).resolve()
    elif args.keep:
        root = HERE / "results" / ("load_study_small" if args.small else "load_study")
    else:
        tmp = tempfile.mkdtemp(prefix="liverburden-bench-load-")
        root = Path(tmp)
    try:
        manifest = get_study(root, args.seed, args.small, not args.nii)
        dicom_dir = root / manifest["files"]["dicom"]
        liver_p = root / manifest["files"]["liver"]
        lesion_p = root / manifest["files"]["lesions"]
        print(f"study: {manifest['phantom']}; DICOM {manifest['dicom_bytes'] / 2**20:.0f} MiB in "
              f"{len(list(dicom_dir.iterdir()))} files; masks {liver_p.name}, {lesion_p.name}")
        cfg = liverburden.load_config()

        # warm: numba (compile / cache load), imports, page cache
        tiny = _phantom.tiny_phantom()
        liverburden.measure_arrays(tiny.liver, tiny.lesions, tiny.spacing_mm, tiny.direction)
        for p in [*dicom_dir.iterdir(), liver_p, lesion_p]:
            with open(p, "rb") as fh:
                while fh.read(1 << 22):
                    pass
        load_before = wait_idle(args.wait_idle) if args.wait_idle > 0 else other_cpu_load()
        print(f"machine: {os.cpu_count()} CPUs, {_cpu_model()}; load {load_before}")
        print(f"runs per route: {args.runs} (median, warm page cache); SimpleITK threads: {args.sitk_threads}\n")

        # round robin: each round runs every route once (a busy neighbour then
        # disturbs all routes alike); round 0 is an untimed warm-up
        n_lesions_loaded = None
        samples: dict[str, list[float]] = {"sitk-series": [], "sitk-series+masks": [], "lb-load_study": []}
        steps: list[dict] = []
        e2e_rows: dict[int, list[dict]] = {1: [], 2: []}

        def measure_once(threads: int) -> dict:
            nonlocal n_lesions_loaded
            out_dir = Path(tempfile.mkdtemp(prefix="lb-bench-out-", dir=root))
            try:
                run = measure_study(dicom_dir, liver_p, lesion_p, out_dir, threads=threads)
                n_lesions_loaded = run.result.lesion_count
                return dict(run.timing_s)
            finally:
                shutil.rmtree(out_dir, ignore_errors=True)

        print(f"  warm-up round + {args.runs} timed rounds ...", flush=True)
        for rnd in range(args.runs + 1):
            for name, fn in (
                ("sitk-series", lambda: sitk_series(dicom_dir)),
                ("sitk-series+masks", lambda: sitk_series_and_masks(dicom_dir, liver_p, lesion_p)),
                ("lb-load_study", lambda: lb_load(dicom_dir, liver_p, lesion_p, cfg)),
            ):
                gc.collect()
                t0 = time.perf_counter()
                res = fn()
                dt = (time.perf_counter() - t0) * 1e3
                if rnd == 0 and name == "lb-load_study":
                    shape = tuple(res.image.array.shape)
                    assert shape == tuple(manifest["shape"]), (shape, manifest["shape"])
                del res
                if rnd:
                    samples[name].append(dt)
            gc.collect()
            st = lb_load_steps(dicom_dir, liver_p, lesion_p, cfg)
            for threads in (1, 2):
                gc.collect()
                row = measure_once(threads)
                if rnd:
                    e2e_rows[threads].append(row)
            if rnd:
                steps.append(st)
        times = {k: {"median_ms": statistics.median(v), "min_ms": min(v), "runs_ms": v} for k, v in samples.items()}
        step_keys = [k for k in steps[0] if k.endswith("_ms")]
        step_med = {k: statistics.median(s[k] for s in steps) for k in step_keys}
        step_min = {k: min(s[k] for s in steps) for k in step_keys}
        keys = ["load", "measure", "hash", "write", "total"]
        e2e = {
            f"threads_{th}": {
                k: {"median_ms": statistics.median(r[k] for r in rows) * 1e3, "min_ms": min(r[k] for r in rows) * 1e3,
                    "runs_ms": [r[k] * 1e3 for r in rows]}
                for k in keys
            }
            for th, rows in e2e_rows.items()
        }
        load_after = other_cpu_load()

        # table ----------------------------------------------------------------
        ref = times["sitk-series"]["median_ms"]
        print()
        print(f"{'route':58s} {'median ms':>10s} {'min ms':>9s} {'x sitk':>8s}")
        print("(x sitk: median over the SimpleITK series reader's median)")
        print("-" * 88)
        labels = {
            "sitk-series": "SimpleITK ImageSeriesReader (DICOM only)",
            "sitk-series+masks": "SimpleITK series + ReadImage(liver, lesions)",
            "lb-load_study": "liverburden.io.load_study (DICOM + masks + checks)",
        }
        for k, lab in labels.items():
            t = times[k]
            print(f"{lab:58s} {t['median_ms']:10.0f} {t['min_ms']:9.0f} {t['median_ms'] / ref:8.2f}")
        print(f"  load_study's public steps, one after the other:{'median':>17s} {'min':>9s}")
        for k, v in step_med.items():
            print(f"    {k[:-3]:54s} {v:10.0f} {step_min[k]:9.0f}")
        for name, row in e2e.items():
            th = name.split("_")[1]
            print(f"liverburden.pipeline.measure_study, threads={th} (its timing_s):")
            for k in ("load", "measure", "hash", "write", "total"):
                print(f"    {k:54s} {row[k]['median_ms']:10.0f} {row[k]['min_ms']:9.0f}")
        lb = times["lb-load_study"]["median_ms"]
        e2e_load = e2e["threads_1"]["load"]["median_ms"]
        ratio = lb / times["sitk-series+masks"]["median_ms"]
        ratio_min = times["lb-load_study"]["min_ms"] / times["sitk-series+masks"]["min_ms"]
        print("-" * 88)
        print(f"load_study / SimpleITK series+masks : {ratio:.2f}x medians, {ratio_min:.2f}x minima  "
              f"(load_study / series only: {lb / ref:.2f}x medians, "
              f"{times['lb-load_study']['min_ms'] / times['sitk-series']['min_ms']:.2f}x minima)")
        print(f"measure_study load / SimpleITK series+masks: {e2e_load / times['sitk-series+masks']['median_ms']:.2f}x")
        ok = ratio <= 1.0
        print(f"loading no slower than SimpleITK on the same files: {'YES' if ok else 'NO'}")
        print(f"lesions measured end to end: {n_lesions_loaded}")
        print(f"machine load before / after: {load_before} / {load_after}")

        doc = {
            "benchmark": "bench_load",
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "cpu": _cpu_model(), "platform": platform.platform(),
                        "load_before": load_before, "load_after": load_after},
            "versions": {"python": platform.python_version(), "SimpleITK": sitk.Version_VersionString(),
                         "liverburden": liverburden.__version__, "numpy": np.__version__},
            "study": manifest,
            "runs_per_route": args.runs,
            "sitk_threads": args.sitk_threads,
            "page_cache": "warm",
            "times": times,
            "load_study_steps_ms": {"median": step_med, "min": step_min},
            "measure_study": e2e,
            "ratios": {
                "load_study_over_sitk_series_and_masks": ratio,
                "load_study_over_sitk_series_and_masks_minima": ratio_min,
                "load_study_over_sitk_series": lb / ref,
                "measure_study_load_over_sitk_series_and_masks": e2e_load / times["sitk-series+masks"]["median_ms"],
            },
            "loading_no_slower_than_sitk": ok,
            "lesions_measured": n_lesions_loaded,
        }
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nwrote {out}" + ("" if tmp is None else f" (study in {root} is deleted; --keep keeps it)"))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
