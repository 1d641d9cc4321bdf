"""Where numba keeps the compiled kernels, decided before any kernel is defined.

Order (first that applies):

1. ``NUMBA_CACHE_DIR`` set by the user: numba's own rule, untouched.
2. The package's ``kernels/__pycache__`` when it is writable (an editable or a
   user-owned install): numba's default, next to the source.
3. Otherwise (a read-only site-packages, a container image, a shared install):
   ``$XDG_CACHE_HOME/liverburden/numba`` (``~/.cache/liverburden/numba`` when
   ``XDG_CACHE_HOME`` is unset), created 0700.

In case 3 ``NUMBA_CACHE_DIR`` is also exported to this process's environment, so
every process it starts (Dask workers of ``batch``, the PACS worker) uses the same
directory and compiles nothing the parent compiled.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_KERNELS = Path(__file__).resolve().parent

#: (directory, rule) chosen by :func:`configure`; rule is "NUMBA_CACHE_DIR",
#: "package" or "user".
CHOICE: tuple[str, str] | None = None


def _writable(d: Path) -> bool:
    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=d):
            pass
        return True
    except OSError:
        return False


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "liverburden" / "numba"


def configure() -> tuple[str, str]:
    """Decide the cache directory (once per process) and tell numba."""
    global CHOICE
    if CHOICE is not None:
        return CHOICE
    env = os.environ.get("NUMBA_CACHE_DIR")
    if env:
        CHOICE = (env, "NUMBA_CACHE_DIR")
        return CHOICE
    if _writable(_KERNELS / "__pycache__"):
        CHOICE = (str(_KERNELS / "__pycache__"), "package")
        return CHOICE
    d = user_cache_dir()
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        pass  # numba then falls back to its own per-user locator; still no crash
    os.environ["NUMBA_CACHE_DIR"] = str(d)  # read by numba when it is imported (kernels import it lazily)
    import sys

    if "numba" in sys.modules:  # already imported by someone: tell its config too
        from numba.core import config as nconfig

        nconfig.CACHE_DIR = str(d)
    CHOICE = (str(d), "user")
    return CHOICE


def dispatchers() -> list:
    """Every numba dispatcher of :mod:`liverburden.kernels` (each kernel once)."""
    import importlib
    import pkgutil

    from numba.core.registry import CPUDispatcher

    from ._jit import materialize_all

    mods = [importlib.import_module(f"{__package__}.{m.name}") for m in pkgutil.iter_modules([str(_KERNELS)])
            if not m.name.startswith("_aot")]  # the build script and the extension hold no dispatchers
    materialize_all()  # the kernels' numba dispatchers, created on first need (``_jit``)
    out, seen = [], set()
    for mod in mods:
        for name in sorted(vars(mod)):
            obj = getattr(mod, name)
            if isinstance(obj, CPUDispatcher) and id(obj) not in seen and obj.py_func.__module__ == mod.__name__:
                seen.add(id(obj))
                out.append(obj)
    return out


def compile_counts() -> dict[str, int]:
    """Specialisations loaded from the cache and compiled, over every kernel, so far."""
    hits = misses = 0
    for d in dispatchers():
        st = d.stats
        hits += sum(st.cache_hits.values())
        misses += sum(st.cache_misses.values())
    return {"loaded_from_cache": hits, "compiled": misses}
