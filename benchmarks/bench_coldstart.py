"""Cold start: the README's sample ``measure`` in a fresh process, empty vs warm kernel cache.

Run from the repository root::

    python benchmarks/bench_coldstart.py            # 1 cold + 3 warm runs
    python benchmarks/bench_coldstart.py --cold 3 --warm 5

Each run is a new ``python -m liverburden measure ...`` process (the README's sample
command, every stage: load, measure with segments and a right-hepatectomy plan, bundle
written) with ``NUMBA_CACHE_DIR`` pointing at a temporary folder: emptied before each
cold run, kept for the warm runs. Inside the process numba's ``numba:compile`` events
are recorded, so the report gives the compile time per kernel and per type
specialisation (inner kernels compiled as part of an outer one are listed under it,
their time included in the outer's); the recorder is registered when numba is first
imported (the kernels import it lazily), so a run on the install's ahead-of-time build
is timed without numba, as the plain command runs. Also a cold run on the JIT only
(``LIVERBURDEN_AOT=0``) and ``liverburden warmup`` cold and warm.

Figures are wall-clock seconds of the whole process (interpreter start, imports,
compile or cache load, the measurement, writing the bundle). The machine's load is
printed: on a busy machine the cold figure grows with the other jobs' CPU use.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
S = ROOT / "sample_data" / "study"
SAMPLE = ["measure", "--image", str(S / "ct"), "--liver", str(S / "liver.nii.gz"), "--lesions",
          str(S / "lesions.nii.gz"), "--segments", str(S / "segments.nii.gz"), "--resect", "right-hepatectomy",
          "--quiet"]

# Runs inside the measured process: record numba compile events, then run the CLI.
_PROBE = r"""
import json, os, sys, time
t_start = time.perf_counter()
stack, rec = [], []

def _register():
    from numba.core import event
    class _L(event.Listener):
        def on_start(self, ev):
            stack.append(time.perf_counter())
        def on_end(self, ev):
            t = time.perf_counter() - stack.pop()
            d = ev.data["dispatcher"]
            rec.append({"depth": len(stack), "kernel": d.py_func.__module__ + "." + d.py_func.__qualname__,
                        "signature": str(ev.data["args"]), "seconds": t})
    event.register("numba:compile", _L())

# numba is imported only when a kernel first runs on the JIT (kernels._jit): the
# recorder is registered at that moment, so a run that never needs the JIT is
# measured without importing numba, as the plain command runs
import liverburden.kernels._jit as _jit
_orig, _done = _jit.materialize_all, []
def _hooked():
    if not _done:
        _done.append(1)
        _register()
    _orig()
_jit.materialize_all = _hooked
from liverburden.cli import main
rc = main(sys.argv[1:])
out = {"rc": rc, "in_process_s": time.perf_counter() - t_start, "compiles": rec, "numba_imported": "numba" in sys.modules}
with open(os.environ["LB_BENCH_OUT"], "w") as f:
    json.dump(out, f)
"""


def _run(args: list[str], cache: Path, out_dir: Path, **env_extra: str) -> dict:
    rec = out_dir / "probe.json"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), LB_BENCH_OUT=str(rec), **env_extra)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _PROBE, *args], env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"run failed (rc {r.returncode}): {r.stderr[-2000:]}")
    d = json.loads(rec.read_text())
    d["wall_s"] = wall
    return d


def _load() -> str:
    try:
        la = os.getloadavg()
        return f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} on {os.cpu_count()} cores"
    except OSError:
        return "load average unknown"


def _table(compiles: list[dict]) -> list[str]:
    """Top-level compiles (called from Python) with their inner kernels under them."""
    lines = []
    # events arrive in post-order (inner first); rebuild the tree by depth
    pending: dict[int, list[dict]] = {}
    roots = []
    for c in compiles:
        c = dict(c, children=pending.pop(c["depth"] + 1, []))
        if c["depth"] == 0:
            roots.append(c)
        else:
            pending.setdefault(c["depth"], []).append(c)

    def mine(c):
        return c["kernel"].startswith("liverburden.")

    def walk(c, indent):
        if mine(c) or c["seconds"] >= 0.2:
            name = c["kernel"].replace("liverburden.kernels.", "")
            sig = c["signature"]
            lines.append(f"{c['seconds']:8.2f}  {'  ' * indent}{name}{sig[:110] + ('...' if len(sig) > 110 else '')}")
        for ch in c["children"]:
            walk(ch, indent + 1)

    for r in sorted(roots, key=lambda c: -c["seconds"]):
        walk(r, 0)
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cold", type=int, default=1, help="cold runs (empty cache each time); default 1")
    ap.add_argument("--warm", type=int, default=3, help="warm runs; default 3")
    ap.add_argument("--jit-cold", type=int, default=1,
                    help="cold runs with the install's ahead-of-time build switched off (LIVERBURDEN_AOT=0): "
                         "numba's JIT compiles every kernel, the figure before issue 13; default 1")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    from liverburden.kernels import _tiered

    print(f"ahead-of-time kernels: {_tiered.status()['aot_reason']}")

    tmp = Path(tempfile.mkdtemp(prefix="lb-coldstart-"))
    cache = tmp / "numba"
    try:
        print(f"machine before: {_load()}")
        cold, warm = [], []
        for i in range(args.cold):
            shutil.rmtree(cache, ignore_errors=True)
            cold.append(_run([*SAMPLE, "--out", str(tmp / "out")], cache, tmp))
        for i in range(args.warm):
            warm.append(_run([*SAMPLE, "--out", str(tmp / "out")], cache, tmp))
        jit_cold = []
        for i in range(args.jit_cold):
            shutil.rmtree(cache, ignore_errors=True)
            jit_cold.append(_run([*SAMPLE, "--out", str(tmp / "out")], cache, tmp, LIVERBURDEN_AOT="0"))
        shutil.rmtree(cache, ignore_errors=True)
        wu_cold = _run(["warmup", "--json"], cache, tmp)
        wu_warm = _run(["warmup", "--json"], cache, tmp)
        print(f"machine after:  {_load()}\n")

        for what, runs in (("cold run", cold), ("JIT-only cold run (LIVERBURDEN_AOT=0)", jit_cold)):
            if not runs:
                continue
            c0 = runs[0]
            top = sum(c["seconds"] for c in c0["compiles"] if c["depth"] == 0)
            print(f"compile time of the first {what}, per kernel and type specialisation (s; inner under outer):")
            print("\n".join(_table(c0["compiles"])))
            print(f"{top:8.2f}  total compile (top-level kernels)\n")

        cw = [r["wall_s"] for r in cold]
        ww = [r["wall_s"] for r in warm]
        nspec = sum(1 for c in cold[0]["compiles"] if c["kernel"].startswith("liverburden."))
        print(f"{'':34s}{'median s':>10s}{'min s':>8s}{'runs':>6s}")
        print(f"{'sample measure, cold cache':34s}{statistics.median(cw):10.2f}{min(cw):8.2f}{len(cw):6d}"
              f"   ({nspec} liverburden specialisations compiled)")
        print(f"numba imported by the cold / warm runs: {[r.get('numba_imported') for r in cold]} / "
              f"{[r.get('numba_imported') for r in warm]}")
        print(f"{'sample measure, warm cache':34s}{statistics.median(ww):10.2f}{min(ww):8.2f}{len(ww):6d}"
              f"   ({sum(1 for r in warm for c in r['compiles'])} compiles in warm runs)")
        if jit_cold:
            jw = [r["wall_s"] for r in jit_cold]
            print(f"{'same, JIT only, cold cache':34s}{statistics.median(jw):10.2f}{min(jw):8.2f}{len(jw):6d}"
                  f"   (LIVERBURDEN_AOT=0; the prewarm child compiles 2 kernels in parallel)")
        print(f"{'liverburden warmup, cold cache':34s}{wu_cold['wall_s']:10.2f}{'':8s}{1:6d}")
        print(f"{'liverburden warmup, warm cache':34s}{wu_warm['wall_s']:10.2f}{'':8s}{1:6d}")
        print(f"\ngoal: cold < 5 s: {'YES' if statistics.median(cw) < 5 else 'NO'}; "
              f"warm < 1 s: {'YES' if statistics.median(ww) < 1 else 'NO'}")
        if args.json:
            Path(args.json).write_text(json.dumps({"cold": cold, "warm": warm, "jit_cold": jit_cold,
                                                   "warmup_cold": wu_cold,
                                                   "warmup_warm": wu_warm}, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
