"""Run a kernel from the ahead-of-time build when one fits the call, else the JIT.

``pip install`` compiles the ``_aot_spec`` entries into the extension
``liverburden.kernels._aot`` (see ``_aot_build``). Compiled code does no type
checks of its own (a wrong dtype or a strided view would be read as raw memory),
so every call is checked here against its entry: each array argument must be an
``np.ndarray`` of exactly that dtype (native byte order) and dimension count,
C-contiguous, aligned and writeable, each scalar of the right kind. A call that
fits no entry, or any doubt about the build (missing, built from other sources,
for another CPU, ``LIVERBURDEN_AOT=0`` at run time), goes to the numba dispatcher:
the same function, so the numbers are the same either way (tested).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import _aot_spec

_HERE = Path(__file__).resolve().parent
_state: dict[str, Any] = {"mod": None, "reason": None, "loaded": False, "jit_only": False}


def _load() -> Any:
    if _state["loaded"]:
        return _state["mod"]
    _state["loaded"] = True
    if os.environ.get("LIVERBURDEN_AOT", "1") == "0":
        _state["reason"] = "switched off (LIVERBURDEN_AOT=0)"
        return None
    try:
        from . import _aot as mod  # type: ignore[attr-defined]  # the extension
    except ImportError:
        _state["reason"] = "not built (pip install compiles it; LIVERBURDEN_AOT=0 or no C compiler skips it)"
        return None
    from ._aot_build import cpu_stamp, source_stamp

    src, kind, cstamp = mod.aot_info()
    if src != source_stamp(_HERE, _aot_spec.SOURCES):
        _state["reason"] = "built from other kernel sources (re-run pip install -e .)"
        return None
    if kind == 1:
        import llvmlite.binding as ll  # not numba: a measure on the build never imports it

        if cstamp != cpu_stamp(ll.get_host_cpu_name(), ll.get_host_cpu_features().flatten()):
            _state["reason"] = "built for another CPU (build with LIVERBURDEN_AOT_CPU=generic to share a build)"
            return None
    _state["mod"] = mod
    _state["reason"] = "in use"
    return mod


def status() -> dict[str, Any]:
    """For ``liverburden warmup --json`` and the README: whether the build is used."""
    mod = _load()
    return {"aot": mod is not None, "aot_reason": _state["reason"],
            "aot_entries": len(_aot_spec.ENTRIES) if mod is not None else 0}


_SCALAR = {"int64": (int, np.integer), "float64": (float, np.floating), "bool": (bool, np.bool_)}


def _fits(arg_spec: list[tuple[str, Any, int]], args: tuple) -> bool:
    for (kind, dt, nd), a in zip(arg_spec, args):
        if kind == "array":
            if (type(a) is not np.ndarray or a.dtype != dt or a.ndim != nd or not a.dtype.isnative
                    or not a.flags.c_contiguous or not a.flags.aligned or not a.flags.writeable):
                return False
        else:
            ok = _SCALAR[dt]
            if not isinstance(a, ok):
                return False
            if dt != "bool" and isinstance(a, (bool, np.bool_)):
                return False
    return True


class Tiered:
    """Callable like the numba dispatcher ``jit``; runs the compiled entry that fits."""

    def __init__(self, jit: Any, entries: list[_aot_spec.Entry]):
        self.jit = jit
        self.py_func = jit.py_func
        self._entries = [(e, [_parse(t) for t in e.args]) for e in entries]
        self._fns: list[tuple[list, tuple, Callable]] | None = None
        self.hits = 0  # calls that ran compiled code (tests)
        self.__doc__ = jit.__doc__
        self.__name__ = getattr(jit, "__name__", "kernel")

    def _compiled(self) -> list:
        if self._fns is None:
            mod = _load()
            self._fns = [] if mod is None else [(spec, e.defaults, getattr(mod, e.name)) for e, spec in self._entries]
        return self._fns

    def _match(self, args: tuple) -> tuple[Callable, tuple] | None:
        """The compiled entry that fits ``args`` (omitted trailing defaults filled in)."""
        for spec, defaults, fn in self._compiled():
            missing = len(spec) - len(args)
            full = args + tuple(defaults[len(defaults) - missing:]) if 0 < missing <= len(defaults) else args
            if len(full) == len(spec) and _fits(spec, full):
                return fn, full
        return None

    def __call__(self, *args: Any) -> Any:
        m = None if _state["jit_only"] else self._match(args)
        if m is None:
            return self.jit(*args)
        self.hits += 1
        return m[0](*m[1])

    def fits(self, *args: Any) -> bool:
        """Whether a call with these arguments would run compiled code (tests)."""
        return self._match(args) is not None


@contextlib.contextmanager
def jit_only():
    """Within the block every kernel runs on the numba JIT (tests compare the two)."""
    old = _state["jit_only"]
    _state["jit_only"] = True
    try:
        yield
    finally:
        _state["jit_only"] = old


def _parse(t: str) -> tuple[str, Any, int]:
    kind, dt, nd = _aot_spec.parse(t)
    return (kind, np.dtype(dt), nd) if kind == "array" else (kind, dt, nd)


def tiered(jit: Any) -> Any:
    """``jit`` wrapped when the spec lists entries for it, else ``jit`` itself."""
    mod_name = jit.py_func.__module__.rsplit(".", 1)[-1]
    entries = _aot_spec.by_kernel().get((mod_name, jit.py_func.__name__), [])
    return Tiered(jit, entries) if entries else jit
