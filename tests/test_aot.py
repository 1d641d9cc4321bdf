"""The kernels compiled ahead of time at install (issue 13).

- the install built them and they are used (unless LIVERBURDEN_AOT=0 was asked for);
- compiled and JIT give identical numbers, kernel by kernel and on whole studies;
- every entry's declared return type is the one numba infers (nothing is cast);
- a call that does not fit an entry exactly (strided, read-only, byte-swapped,
  other dtype, a float for an int) goes to the JIT, and is still right;
- a build from other sources or for another CPU is never used;
- a cold ``measure`` of the sample compiles no kernel at all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import liverburden.kernels as K
from liverburden import measure_arrays
from liverburden.kernels import _aot_spec, _scan, _tiered

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "liverburden"
S = ROOT / "sample_data" / "study"

pytestmark = pytest.mark.skipif(
    os.environ.get("LIVERBURDEN_AOT") == "0",
    reason="LIVERBURDEN_AOT=0: the ahead-of-time build was switched off for this run")


def _require_build():
    st = _tiered.status()
    assert st["aot"], f"the ahead-of-time kernels are not in use: {st['aot_reason']} (pip install -e . builds them)"


def test_install_built_and_uses_them():
    _require_build()
    assert _tiered.status()["aot_entries"] == len(_aot_spec.ENTRIES)


def _blobs(rng, shape, n, dtype, values):
    a = np.zeros(shape, dtype)
    for k in range(n):
        c = [rng.integers(2, s - 2) for s in shape]
        r = [rng.integers(1, max(2, s // 5)) for s in shape]
        zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
        m = ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1
        a[m] = values[k % len(values)]
    return a


def _studies():
    rng = np.random.default_rng(13)
    out = []
    for nx in (48, 45):  # whole uint64 words per row, and not (the per-voxel scan)
        for ldt, edt in ((np.uint8, np.uint8), (np.uint8, np.uint16), (np.uint16, np.uint8), (np.uint16, np.uint16)):
            shape = (14, 40, nx)
            liver = np.zeros(shape, ldt)
            liver[1:13, 3:37, 2 : nx - 2] = 1
            lesions = _blobs(rng, shape, 6, edt, [1] if edt == np.uint8 else [1, 2, 300, 301])
            seg = np.zeros(shape, np.uint8)
            for k in range(8):
                seg[:, :, k * nx // 8 : (k + 1) * nx // 8] = k + 1
            seg[liver == 0] = 0
            out.append((liver, lesions, seg))
    return out


@pytest.mark.parametrize("case", range(8))
def test_compiled_equals_jit_on_studies(case):
    """Whole measurements, once on the compiled build and once on the JIT only."""
    _require_build()
    liver, lesions, seg = _studies()[case]
    spacing = (2.5, 0.74, 0.81)
    hits0 = K._lesion_geometry.hits
    a = measure_arrays(liver, lesions, spacing, segments=seg, resect="right-hepatectomy").to_dict()
    assert K._lesion_geometry.hits > hits0, "the compiled build was not used"
    with _tiered.jit_only():
        hits1 = K._lesion_geometry.hits
        b = measure_arrays(liver, lesions, spacing, segments=seg, resect="right-hepatectomy").to_dict()
        assert K._lesion_geometry.hits == hits1
    for d in (a, b):
        d.pop("timing", None)
    assert a == b
    assert a["lesions"], "the phantom has lesions"


def _ball(shape, c, r, spacing):
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    d2 = ((zz - c[0]) * spacing[0]) ** 2 + ((yy - c[1]) * spacing[1]) ** 2 + ((xx - c[2]) * spacing[2]) ** 2
    return d2 <= r * r


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_margins_compiled_equal_jit(dtype):
    """Ablation margins on both paths: a covered tumor (A0), one whose zone is off
    centre (a positive and a negative side), one outside the zone; with a liver
    (subcapsular distance) and VIC."""
    from liverburden import margins_arrays
    from liverburden.margin import _margin as M

    _require_build()
    sp = (1.5, 0.8, 0.8)
    shape = (40, 70, 90)
    tumor = np.zeros(shape, dtype)
    zone = np.zeros(shape, dtype)
    tumor[_ball(shape, (12, 20, 20), 6.0, sp)] = 1
    zone[_ball(shape, (12, 20, 20), 13.0, sp)] = 1
    tumor[_ball(shape, (25, 45, 55), 7.0, sp)] = 1
    zone[_ball(shape, (25, 47, 59), 9.0, sp)] = 1
    tumor[_ball(shape, (30, 20, 75), 4.0, sp)] = 1
    liver = np.zeros(shape, dtype)
    liver[1:39, 2:68, 2:88] = 1
    for kw in ({"liver": liver}, {}):
        h = M._side_margins.hits + M._tumor_surface.hits
        a = margins_arrays(tumor, zone, sp, **kw).to_dict()
        assert M._side_margins.hits + M._tumor_surface.hits > h, "the compiled build was not used"
        with _tiered.jit_only():
            b = margins_arrays(tumor, zone, sp, **kw).to_dict()
        assert a == b
        assert len(a["tumors"]) == 3


def _scan_inputs():
    rng = np.random.default_rng(5)
    for nx in (64, 61):
        for ldt in (np.uint8, np.uint16):
            for edt in (np.uint8, np.uint16):
                shape = (9, 30, nx)
                liver = _blobs(rng, shape, 3, ldt, [1, 5, 7])
                lesion = _blobs(rng, shape, 5, edt, [1, 2, 3] if edt == np.uint8 else [2, 300, 1000])
                n_l = 256 if ldt == np.uint8 else 65536
                n_e = 256 if edt == np.uint8 else 65536
                for liver_vals in ("nonzero", (5,), (1, 7)):
                    liver_lut = np.zeros(n_l, np.uint8)
                    if liver_vals == "nonzero":
                        liver_lut[1:] = 1
                    else:
                        liver_lut[list(liver_vals)] = 1
                    for lesion_vals in ("nonzero", (2,)):
                        lesion_lut = np.zeros(n_e, np.int64)
                        if lesion_vals == "nonzero":
                            lesion_lut[1:] = np.arange(1, n_e)
                        else:
                            lesion_lut[2] = 2
                        yield liver, lesion, liver_lut, lesion_lut


def _eq(x, y):
    assert type(x) is type(y)
    if isinstance(x, tuple):
        assert len(x) == len(y)
        for p, q in zip(x, y):
            _eq(p, q)
    elif isinstance(x, np.ndarray):
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)
    else:
        assert x == y


def test_scan_compiled_equals_jit_every_mode():
    """The scan's modes (liver: any value / non-zero / a few values; lesion: all /
    a few; with and without a liver), word-tested and per-voxel rows, all four
    dtype pairs."""
    _require_build()
    n = 0
    for liver, lesion, liver_lut, lesion_lut in _scan_inputs():
        for has_liver in (True, False):
            for z0, z1 in ((0, liver.shape[0]), (2, 7)):
                h0 = _scan._scan_runs_words_t.hits + _scan._scan_runs_t.hits
                a = K.scan_runs(liver if has_liver else None, lesion, liver_lut, lesion_lut, z0, z1)
                assert _scan._scan_runs_words_t.hits + _scan._scan_runs_t.hits == h0 + 1
                with _tiered.jit_only():
                    b = K.scan_runs(liver if has_liver else None, lesion, liver_lut, lesion_lut, z0, z1)
                _eq(a, b)
                n += a[0].shape[0]
    assert n > 1000  # the phantoms have runs to compare


def test_small_kernels_compiled_equal_jit():
    _require_build()
    rng = np.random.default_rng(3)
    runs_src = _blobs(rng, (8, 20, 24), 4, np.uint8, [1, 2, 3])
    runs, *_ = K.scan_runs(None, runs_src, np.zeros(256, np.uint8), np.arange(256, dtype=np.int64), 0, 8)
    shape_zy = np.array([8, 20], np.int64)
    for by_value in (False, True):
        for conn in (6, 18, 26):
            a = K._connect_runs(runs, shape_zy, conn, by_value)
            b = K._connect_runs.jit(runs, shape_zy, conn, by_value)
            _eq(a, b)
            assert K._connect_runs.fits(runs, shape_zy, conn, by_value)
    comp, n = K._connect_runs(runs, shape_zy, 26, True)
    for t in (np.uint8, np.uint16):
        vals = rng.integers(0, 9, size=(8, 20, 24)).astype(t)
        _eq(K._run_value_counts(vals, runs, comp, n, 10), K._run_value_counts.jit(vals, runs, comp, n, 10))
        assert K._run_value_counts.fits(vals, runs, comp, n, 10)
        _eq(K._face_counts(vals, 10), K._face_counts.jit(vals, 10))
        assert K._face_counts.fits(vals, 10)
    lab = comp + 1
    for t in (np.uint8, np.uint16, np.int32):
        a, b = np.zeros((8, 20, 24), t), np.zeros((8, 20, 24), t)
        K._paint_runs(a, runs, lab)  # trailing offsets omitted: the defaults (0, 0, 0)
        K._paint_runs.jit(b, runs, lab)
        assert np.array_equal(a, b) and a.any()
        assert K._paint_runs.fits(a, runs, lab)
        c, d = np.zeros((6, 15, 20), t), np.zeros((6, 15, 20), t)
        K._paint_runs(c, runs[runs[:, 0] >= 2], lab[runs[:, 0] >= 2], 2, 0, 0)
        K._paint_runs.jit(d, runs[runs[:, 0] >= 2], lab[runs[:, 0] >= 2], 2, 0, 0)
        assert np.array_equal(c, d)


def test_declared_return_types_are_numbas():
    """pycc casts the result to the declared type; the declared type must be the
    one the JIT infers for the same arguments, so nothing is ever cast."""
    from numba.core import sigutils

    mods = {m: __import__(f"liverburden.kernels.{m}", fromlist=["x"]) for m in {e.module for e in _aot_spec.ENTRIES}}
    for e in _aot_spec.ENTRIES:
        args, ret = sigutils.normalize_signature(f"{e.ret}({', '.join(e.args)})")
        disp = getattr(mods[e.module], e.func)
        disp = getattr(disp, "jit", disp)
        if args not in disp.overloads:
            disp.compile(args)
        assert disp.overloads[args].signature.return_type == ret, e.name


def test_misfits_go_to_the_jit_and_are_right():
    _require_build()
    rng = np.random.default_rng(9)
    liver = _blobs(rng, (6, 20, 32), 2, np.uint8, [1])
    lesion = _blobs(rng, (6, 20, 32), 3, np.uint8, [1])
    lut_l = np.zeros(256, np.uint8)
    lut_l[1:] = 1
    lut_e = np.arange(256, dtype=np.int64)
    ref = K._scan_runs(liver, lesion, lut_l, lut_e, 0, 6)
    assert K._scan_runs.fits(liver, lesion, lut_l, lut_e, 0, 6)
    wide = np.zeros((6, 20, 64), np.uint8)
    wide[:, :, ::2] = liver
    strided = wide[:, :, ::2]
    ro = liver.copy()
    ro.flags.writeable = False
    misfits = [
        (strided, lesion, lut_l, lut_e, 0, 6),  # a strided view of the same values
        (ro, lesion, lut_l, lut_e, 0, 6),  # read-only
        (liver.astype(np.int32), lesion, lut_l, lut_e, 0, 6),  # another dtype
        (liver, lesion, lut_l, lut_e.astype(">i8"), 0, 6),  # byte-swapped
        (liver, lesion, lut_l, lut_e, 0.0, 6),  # a float where an int is declared
        (liver, lesion, lut_l, lut_e, True, 6),  # a bool is not an int here
    ]
    for i, args in enumerate(misfits):
        assert not K._scan_runs.fits(*args)
        if i >= 3:
            continue  # numba's JIT refuses these types itself: here only the guard matters
        h = K._scan_runs.hits
        _eq(K._scan_runs(*args), ref)
        assert K._scan_runs.hits == h


def _status_in(pkg_parent: Path, env_extra=None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(pkg_parent)
    env["NUMBA_CACHE_DIR"] = str(pkg_parent / "nc")
    env.update(env_extra or {})
    code = "import json; from liverburden.kernels import _tiered; print(json.dumps(_tiered.status()))"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, cwd="/")
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_stale_or_foreign_builds_are_not_used(tmp_path):
    _require_build()
    site = tmp_path / "site"
    shutil.copytree(PKG, site / "liverburden", ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    assert _status_in(site)["aot"] is True  # the copy itself is usable
    assert _status_in(site, {"LIVERBURDEN_AOT": "0"})["aot_reason"].startswith("switched off")
    scan = site / "liverburden" / "kernels" / "_scan.py"
    scan.write_text(scan.read_text() + "\n# an edit after the build\n")
    st = _status_in(site)
    assert st["aot"] is False and "other kernel sources" in st["aot_reason"], st
    # and another CPU: the host stamp no longer matches
    scan.write_text(scan.read_text().replace("\n# an edit after the build\n", ""))
    sitecustom = tmp_path / "cpu"
    sitecustom.mkdir()
    (sitecustom / "sitecustomize.py").write_text(
        "import llvmlite.binding as ll\nll.get_host_cpu_name = lambda: 'some-other-cpu'\n")
    env = {"PYTHONPATH": f"{site}{os.pathsep}{sitecustom}"}
    st = _status_in(site, env)
    assert st["aot"] is False and "another CPU" in st["aot_reason"], st


_PROBE = r"""
import json, sys
from numba.core import event
n = []
class L(event.Listener):
    def on_start(self, ev):
        n.append(ev.data["dispatcher"].py_func.__module__)
    def on_end(self, ev):
        pass
event.register("numba:compile", L())
from liverburden.cli import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "compiled": [m for m in n if m.startswith("liverburden")]}))
"""


def test_cold_sample_measure_compiles_nothing(tmp_path):
    """The README's sample command with an empty numba cache: no kernel compiled."""
    _require_build()
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "empty-cache"))
    args = ["measure", "--image", str(S / "ct"), "--liver", str(S / "liver.nii.gz"), "--lesions",
            str(S / "lesions.nii.gz"), "--segments", str(S / "segments.nii.gz"), "--resect", "right-hepatectomy",
            "--out", str(tmp_path / "out"), "--quiet"]
    r = subprocess.run([sys.executable, "-c", _PROBE, *args], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"rc": 0, "compiled": []}, out
    assert json.loads((tmp_path / "out" / "measurements.json").read_text())["lesions"]
