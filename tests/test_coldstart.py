"""Kernel cache location (issue 13): a read-only install still caches.

The install directory is made truly read-only (a tmpfs remounted ``ro``: root
ignores permission bits, not a read-only mount). ``liverburden warmup`` run
twice in fresh processes: the first compiles into
``$XDG_CACHE_HOME/liverburden/numba``, the second compiles nothing (numba's own
per-dispatcher cache hit / miss counters, summed over every kernel).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "liverburden"


def _env(pythonpath: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "PYTHONPATH")}
    env["PYTHONPATH"] = str(pythonpath)
    env.update(extra)
    return env


@pytest.fixture
def readonly_install(tmp_path):
    mnt = tmp_path / "site"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "none", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"SKIP reason: cannot mount a tmpfs for a read-only install ({r.stderr.strip()})", file=sys.stderr)
        pytest.skip(f"cannot mount a tmpfs for a read-only install: {r.stderr.strip()}")
    try:
        shutil.copytree(PKG, mnt / "liverburden", ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        with pytest.raises(OSError):
            (mnt / "probe").write_text("x")
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _warmup(env) -> dict:
    r = subprocess.run([sys.executable, "-m", "liverburden", "warmup", "--json"], env=env, capture_output=True,
                       text=True, timeout=600, cwd="/")
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    _WARMUP_SCHEMA.validate(doc)  # the documented shape (README, schemas/warmup.schema.json)
    return doc


def _warmup_schema():
    import jsonschema

    schema = json.loads((PKG / "schemas" / "warmup.schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


_WARMUP_SCHEMA = _warmup_schema()


def test_readonly_install_caches_per_user(readonly_install, tmp_path):
    """The JIT's cache: what runs when the install has no usable build (no compiler
    at install, another CPU, ``LIVERBURDEN_AOT=0``). With the build every kernel
    ``warmup`` runs is compiled ahead (next test), so the build is switched off here."""
    xdg = tmp_path / "xdg"
    env = _env(readonly_install, XDG_CACHE_HOME=str(xdg), LIVERBURDEN_AOT="0")
    first = _warmup(env)
    assert first["cache_rule"] == "user"
    assert Path(first["cache_dir"]) == xdg / "liverburden" / "numba"
    assert first["compiled"] > 0
    assert list((xdg / "liverburden" / "numba").rglob("*.nbi")), "nothing was cached"
    assert not list(readonly_install.rglob("__pycache__"))
    second = _warmup(env)
    assert second["compiled"] == 0, second
    assert second["loaded_from_cache"] > 0


def test_readonly_install_with_its_build_compiles_nothing(readonly_install, tmp_path):
    from liverburden.kernels import _tiered

    if not _tiered.status()["aot"]:
        print(f"SKIP reason: the install's ahead-of-time build is not in use ({_tiered.status()['aot_reason']})",
              file=sys.stderr)
        pytest.skip(f"the ahead-of-time build is not in use: {_tiered.status()['aot_reason']}")
    xdg = tmp_path / "xdg"
    first = _warmup(_env(readonly_install, XDG_CACHE_HOME=str(xdg)))
    assert first["aot"] is True and first["aot_entries"] > 0, first
    assert first["compiled"] == 0, first  # every kernel of every command fits the build
    assert not list(xdg.rglob("*.nbi")), "the JIT compiled something"


def _choice(env) -> list:
    code = ("import json, os; from liverburden.kernels import _cache; "
            "print(json.dumps([*_cache.CHOICE, os.environ.get('NUMBA_CACHE_DIR')]))")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def test_numba_cache_dir_wins(readonly_install, tmp_path):
    mine = tmp_path / "mine"
    d, rule, exported = _choice(_env(readonly_install, NUMBA_CACHE_DIR=str(mine), XDG_CACHE_HOME=str(tmp_path / "x")))
    assert (d, rule, exported) == (str(mine), "NUMBA_CACHE_DIR", str(mine))


def test_user_cache_is_exported_to_child_processes(readonly_install, tmp_path):
    """Batch workers and the PACS worker inherit the environment: the same cache."""
    d, rule, exported = _choice(_env(readonly_install, XDG_CACHE_HOME=str(tmp_path / "x")))
    assert rule == "user" and exported == d == str(tmp_path / "x" / "liverburden" / "numba")


def test_writable_package_keeps_numba_default(tmp_path):
    site = tmp_path / "site"
    shutil.copytree(PKG, site / "liverburden", ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    d, rule, exported = _choice(_env(site, XDG_CACHE_HOME=str(tmp_path / "x")))
    assert rule == "package" and d == str(site / "liverburden" / "kernels" / "__pycache__") and exported is None


def test_hand_written_argsort_equals_numpy_stable():
    """The compile-cheap argsort of the diameter kernels (replaces np.argsort)."""
    import numpy as np

    from liverburden.kernels._diameters import _argsort

    rng = np.random.default_rng(7)
    for n in (0, 1, 2, 3, 8, 9, 257, 1000):
        for a in (rng.normal(size=n), rng.integers(0, 4, size=n).astype(np.float64), -np.arange(n, dtype=np.float64)):
            assert np.array_equal(_argsort(a), np.argsort(a, kind="stable")), n


_PREWARM = r"""
import json, os, sys
from liverburden.kernels import _prewarm
before = [_prewarm._cached(d, s) for d, s in _prewarm._targets()]
started = _prewarm.start()
_prewarm.wait()
after = [_prewarm._cached(d, s) for d, s in _prewarm._targets()]
print(json.dumps({"before": before, "started": started, "after": after}))
"""


def _prewarm_run(env) -> dict:
    r = subprocess.run([sys.executable, "-c", _PREWARM], env=env, capture_output=True, text=True, timeout=600, cwd="/")
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the prewarm child starts only with 2 or more cores")
def test_prewarm_child_fills_the_shared_cache(tmp_path):
    """The CLI's second process compiles the diameters and component kernels into
    the same cache, so the first process then loads them instead of compiling.
    Only without the install's ahead-of-time build (here switched off at run time:
    with it, there is nothing to compile and no child starts, see below)."""
    env = _env(ROOT / "src", NUMBA_CACHE_DIR=str(tmp_path / "cache"), LIVERBURDEN_AOT="0")
    env.pop("LIVERBURDEN_NO_PREWARM", None)
    first = _prewarm_run(env)
    assert first == {"before": [False, False], "started": True, "after": [True, True]}, first
    # a later process finds both cached and starts nothing
    second = _prewarm_run(env)
    assert second == {"before": [True, True], "started": False, "after": [True, True]}, second


def test_no_prewarm_with_the_ahead_of_time_build(tmp_path):
    from liverburden.kernels import _tiered

    if not _tiered.status()["aot"]:
        pytest.skip(f"the ahead-of-time build is not in use: {_tiered.status()['aot_reason']}")
    out = _prewarm_run(_env(ROOT / "src", NUMBA_CACHE_DIR=str(tmp_path / "cache")))
    assert out["started"] is False, out
    assert not list((tmp_path / "cache").rglob("*.nbi"))


def test_prewarm_can_be_switched_off(tmp_path):
    env = _env(ROOT / "src", NUMBA_CACHE_DIR=str(tmp_path / "cache"), LIVERBURDEN_NO_PREWARM="1",
               LIVERBURDEN_AOT="0")
    out = _prewarm_run(env)
    assert out == {"before": [False, False], "started": False, "after": [False, False]}, out
    assert not list((tmp_path / "cache").rglob("*.nbi"))


def test_warmup_schema_rejects_a_missing_or_unknown_field():
    import jsonschema

    good = {"seconds": 0.1, "cache_dir": "/x", "cache_rule": "user", "loaded_from_cache": 0, "compiled": 0,
            "aot": True, "aot_reason": "in use", "aot_entries": 28}
    _WARMUP_SCHEMA.validate(good)
    for bad in ({k: v for k, v in good.items() if k != "aot"}, dict(good, extra=1), dict(good, cache_rule="disk")):
        with pytest.raises(jsonschema.ValidationError):
            _WARMUP_SCHEMA.validate(bad)
