"""Side-by-side on ONE label volume (LiTS style: 0 background, 1 liver, 2 lesion).

The issue's benchmark speaks of "a 512x512x400 label volume" whose floor is "one
read of the volume". ``bench_measure.py`` times the two-mask input (a liver mask
and a lesion mask: two reads); this script times the one-volume input on the
same phantom (``phantom.py``), lesions written as 2 into the liver mask:

floor
    ``np.count_nonzero(vol)``: one read of the volume (the issue's floor).
floor-words
    one uint64-word OR pass over the volume (numba).
library
    ``les = vol == 2``, then the library route of ``bench_measure.py`` (numpy
    bounding box + cc3d + scipy hulls); liver voxels = ``count_nonzero(vol)``.
liverburden
    ``measure_arrays(vol, vol, ..., config={"labels": {"liver": [1, 2],
    "lesion": [2], "other_lesion_values": "ignore"}})`` with 1 and 2 threads: the liver counted a word at a time
    as lanes equal to 1 or 2, the lesion runs read from the same rows while
    they are in cache.

Run from the repository root::

    python benchmarks/bench_labelmap.py --runs 9 [--wait-idle 600]

Round robin timing as in ``bench_measure.py``; results must agree (same
lesions, counts, LD and max3d) or the script says so loudly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_measure as bm  # noqa: E402
import phantom as _phantom  # noqa: E402

CONFIG = {"labels": {"liver": [1, 2], "lesion": [2], "other_lesion_values": "ignore"}}
_OR1 = None


def route_floor_words_one(vol):
    from numba import njit

    global _OR1
    if _OR1 is None:
        @njit(cache=True, nogil=True)
        def _or1(a):
            s = np.uint64(0)
            for i in range(a.shape[0]):
                s |= a[i]
            return s

        _OR1 = _or1
    return _OR1(vol.reshape(-1).view(np.uint64))


def route_library_labelmap(vol, spacing):
    les = (vol == 2).view(np.uint8)
    return bm.route_library(vol, les, spacing)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="S")
    ap.add_argument("--out", default=str(HERE / "results" / "labelmap.json"))
    args = ap.parse_args(argv)

    import liverburden

    tiny = _phantom.tiny_phantom()
    tv = tiny.liver.copy()
    tv[tiny.lesions > 0] = 2
    for th in (1, 2):
        liverburden.measure_arrays(tv, tv, tiny.spacing_mm, tiny.direction, config=CONFIG, threads=th)
    ph = _phantom.build_phantom(seed=args.seed)
    vol = ph.liver.copy()  # written memory, as a mask read from a file
    vol[ph.lesions > 0] = 2
    sp, direction = ph.spacing_mm, ph.direction
    voxel_ml = float(np.prod(sp)) / 1000.0
    print(f"label volume: {vol.shape} uint8, values {np.unique(vol).tolist()}; {ph.summary()}")
    load_before = bm.wait_idle(args.wait_idle) if args.wait_idle > 0 else bm.other_cpu_load()
    print(f"machine load before timing: {load_before}")

    routes = [
        ("floor", lambda: int(np.count_nonzero(vol))),
        ("floor-words", lambda: route_floor_words_one(vol)),
        ("library", lambda: route_library_labelmap(vol, sp)),
        ("liverburden-1thread", lambda: liverburden.measure_arrays(vol, vol, sp, direction, config=CONFIG, threads=1)),
        ("liverburden-2threads", lambda: liverburden.measure_arrays(vol, vol, sp, direction, config=CONFIG, threads=2)),
    ]
    times, results = bm.round_robin(routes, args.runs)
    load_after = bm.other_cpu_load()
    print(f"machine load after timing: {load_after}")

    lib_liver, lib_lesions = results["library"]
    agreement = bm.compare(results["liverburden-1thread"], lib_liver, lib_lesions, voxel_ml=voxel_ml, extra_routes={})
    same_2 = [x.to_dict() for x in results["liverburden-2threads"].lesions] == \
        [x.to_dict() for x in results["liverburden-1thread"].lesions]
    lb1 = times["liverburden-1thread"]["median_ms"]
    lb2 = times["liverburden-2threads"]["median_ms"]
    print()
    print(f"{'route':48s} {'median ms':>10s} {'min ms':>9s}")
    for k, _ in routes:
        print(f"{k:48s} {times[k]['median_ms']:10.1f} {times[k]['min_ms']:9.1f}")
    ratios = {
        "library_over_liverburden_1thread": times["library"]["median_ms"] / lb1,
        "library_over_liverburden_2threads": times["library"]["median_ms"] / lb2,
        "liverburden_1thread_over_floor": lb1 / times["floor"]["median_ms"],
        "liverburden_1thread_over_word_floor": lb1 / times["floor-words"]["median_ms"],
    }
    print(f"library / liverburden 1 thread : {ratios['library_over_liverburden_1thread']:.2f}x (target >= 5x)")
    print(f"library / liverburden 2 threads: {ratios['library_over_liverburden_2threads']:.2f}x")
    print(f"liverburden 1 thread / floor   : {ratios['liverburden_1thread_over_floor']:.2f}x (target <= 10x)")
    print(f"liverburden 1 thread / word floor: {ratios['liverburden_1thread_over_word_floor']:.2f}x")
    ok = agreement["agree"] and same_2
    print("agreement: OK" if ok else f"DISAGREEMENT: {agreement['problems'][:5]} threads=2 same: {same_2}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"times": times, "ratios": ratios, "agree": ok, "load_before": load_before,
                               "load_after": load_after, "cpus": os.cpu_count()}, indent=2))
    print(f"wrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
