"""Build-time only: compile the ``_aot_spec`` kernels into ``liverburden.kernels._aot``.

Run by ``setup.py`` (``pip install``), never imported by the package at run time.
numba's ahead-of-time compiler (``numba.pycc``) turns the same ``@njit`` functions
into a C extension, so a fresh install, a new container, a Dask worker or a
read-only site-packages measures without the ~15 s first-call compile.

Build switches (environment):

- ``LIVERBURDEN_AOT=0``: build nothing (the kernels then compile on first use).
- ``LIVERBURDEN_AOT_CPU``: ``host`` (default: this machine's CPU model and the
  features it reports, as numba's JIT uses) or ``generic`` (the architecture's
  baseline, for an image or wheel built on one machine and run on others). A
  ``host`` build is used only on a machine reporting the same CPU and features;
  elsewhere the JIT takes over (``_aot.status()`` says why).

The extension also exports ``aot_info()``: the SHA-256 (first 63 bits) of the
kernel sources it was built from, the CPU kind and the CPU stamp, so an edited
source tree (an editable install) never runs stale code.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import tempfile
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent


def source_stamp(kernels_dir: Path, sources) -> int:
    h = hashlib.sha256()
    for name in sources:
        h.update(name.encode() + b"\0" + (kernels_dir / name).read_bytes() + b"\0")
    return int.from_bytes(h.digest()[:8], "little") >> 1


def cpu_stamp(name: str, features: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{name}|{features}".encode()).digest()[:8], "little") >> 1


def _load_kernel_modules():
    """Import the kernel modules as ``liverburden.kernels.*`` without running the
    package ``__init__`` files (the build environment has numba and numpy only)."""
    for name, path in (("liverburden", HERE.parent), ("liverburden.kernels", HERE)):
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(path)]
            sys.modules[name] = pkg
    spec = importlib.import_module("liverburden.kernels._aot_spec")
    mods = {m: importlib.import_module(f"liverburden.kernels.{m}") for m in {e.module for e in spec.ENTRIES}}
    return spec, mods


def make_cc():
    """The ``numba.pycc.CC`` with every entry of the spec exported."""
    if "NUMBA_CACHE_DIR" not in os.environ:  # the build's JIT of the callees: cached nowhere that stays
        import atexit
        import shutil

        tmp = tempfile.mkdtemp(prefix="liverburden-aot-cache-")
        atexit.register(shutil.rmtree, tmp, True)
        os.environ["NUMBA_CACHE_DIR"] = tmp
    import warnings

    warnings.filterwarnings("ignore", message=".*pycc.*")
    from numba.core import codegen as _codegen
    from numba.pycc import CC
    from numba.pycc import compiler as _pycc_compiler

    kind = os.environ.get("LIVERBURDEN_AOT_CPU", "host")
    if kind not in ("host", "generic"):
        raise ValueError(f"LIVERBURDEN_AOT_CPU must be 'host' or 'generic', got {kind!r}")
    spec, mods = _load_kernel_modules()
    importlib.import_module("liverburden.kernels._jit").materialize_all()  # real dispatchers as callees

    # The JIT kernels are nogil; the exported wrappers release the GIL too, so the
    # threaded scan (``measure.threads``) runs in parallel as before.
    base_flags = _pycc_compiler.Flags

    class _NoGilFlags(base_flags):  # type: ignore[misc, valid-type]
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.release_gil = True

    _pycc_compiler.Flags = _NoGilFlags
    if kind == "host":
        # pycc takes the host's CPU *model* but its default features; use the
        # features the machine reports (a VM may mask some), as the JIT does.
        host_features = _codegen.get_host_cpu_features()
        _codegen.AOTCPUCodegen._customize_tm_features = (
            lambda self: host_features if self._cpu_name == "host" else "")
        import llvmlite.binding as ll

        # the stamp from llvmlite's own report, which the run-time check reads without numba
        cstamp = cpu_stamp(ll.get_host_cpu_name(), ll.get_host_cpu_features().flatten())
    else:
        cstamp = 0

    cc = CC("_aot", source_module=spec)
    cc.target_cpu = "host" if kind == "host" else ""
    for e in spec.ENTRIES:
        fn = getattr(mods[e.module], e.func).py_func
        cc.export(e.name, f"{e.ret}({', '.join(e.args)})")(fn)
    stamp = source_stamp(HERE, spec.SOURCES)
    ns: dict = {}
    exec(f"def aot_info():\n    return ({stamp}, {1 if kind == 'host' else 0}, {cstamp})\n", ns)
    cc.export("aot_info", "UniTuple(i8, 3)()")(ns["aot_info"])
    return cc


def extension():
    """A setuptools Extension for ``setup(ext_modules=[...])``."""
    ext = make_cc().distutils_extension()
    ext.optional = True
    return ext


if __name__ == "__main__":  # python src/liverburden/kernels/_aot_build.py: build in place
    import time

    t0 = time.perf_counter()
    cc = make_cc()
    cc.output_dir = str(HERE)
    cc.compile()
    print(f"built {HERE / cc.output_file} in {time.perf_counter() - t0:.1f} s")
