"""``@njit`` that imports numba only when a kernel first runs on the JIT.

With the install's ahead-of-time build (``_tiered``) a ``measure`` or a ``margin``
never runs a JIT kernel, so importing numba (~0.2 s of every process start, most of
what is left of a cold start) is paid only by the calls that need it: a layout the
build does not cover, an install without the build, tests.

A :class:`LazyKernel` stands where the dispatcher would. Its first call (or any
dispatcher attribute: ``overloads``, ``compile``, ``stats``...) creates every
pending kernel with ``numba.njit(**options)`` and puts the real dispatchers in
place of the stand-ins in every kernel module's namespace, so numba's typing of
one kernel finds its callees as dispatchers, exactly as with a plain ``@njit``.
"""

from __future__ import annotations

import functools
import sys
import threading
from typing import Any, Callable

__all__ = ["njit", "materialize_all"]

_pending: list["LazyKernel"] = []
_lock = threading.Lock()


class LazyKernel:
    def __init__(self, py_func: Callable, options: dict[str, Any]):
        self.py_func = py_func
        self._options = options
        self._real: Any = None
        functools.update_wrapper(self, py_func)
        _pending.append(self)

    def _get(self) -> Any:
        if self._real is None:
            materialize_all()
        return self._real

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._get()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # only for names not set in __init__
        if name.startswith("__") or name in ("_real", "_options", "py_func"):
            raise AttributeError(name)
        return getattr(self._get(), name)

    def __repr__(self) -> str:
        return f"<kernel {self.py_func.__module__}.{self.py_func.__qualname__} ({'jit' if self._real else 'lazy'})>"


def materialize_all() -> None:
    """Create every pending kernel's numba dispatcher and bind it in the modules."""
    with _lock:
        if not _pending:
            return
        import numba

        for k in _pending:
            if k._real is None:
                k._real = numba.njit(**k._options)(k.py_func)
        _pending.clear()
        for name, mod in list(sys.modules.items()):
            if mod is None or not name.startswith(__package__ + "."):
                continue
            ns = vars(mod)
            for attr, obj in list(ns.items()):
                if isinstance(obj, LazyKernel) and obj._real is not None:
                    ns[attr] = obj._real


def njit(*args: Any, **options: Any) -> Any:
    """Drop-in for ``numba.njit`` (decorator with or without options)."""
    if args and callable(args[0]) and not options:
        return LazyKernel(args[0], {})
    return lambda f: LazyKernel(f, options)
