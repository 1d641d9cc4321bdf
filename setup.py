"""Build hook: the measurement kernels compiled ahead of time (issue 13, README "Cold start").

Everything else about the package is in pyproject.toml. ``pip install`` runs
``src/liverburden/kernels/_aot_build.py`` to compile the kernels of the ``measure``
and ``margin`` paths into the C extension ``liverburden.kernels._aot`` (about 45 s,
once per install), so the first ``measure`` of a fresh install, container or Dask
worker does not spend ~15 s in numba's JIT (a first margin ~17 s). If that build cannot run (no C compiler,
``LIVERBURDEN_AOT=0``) the install still succeeds and the kernels compile on
first use, as before; the numbers are the same either way.
"""

import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

KERNELS = Path(__file__).resolve().parent / "src" / "liverburden" / "kernels"


class optional_build_ext(build_ext):
    """A failed ahead-of-time build is a warning, never a failed install."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any failure: fall back to the JIT
            print(f"liverburden: ahead-of-time kernels not built ({exc}); they compile on first use",
                  file=sys.stderr)

    def build_extension(self, ext):
        try:
            if hasattr(ext, "_prepare_object_files"):  # numba.pycc: LLVM-compile the kernels to objects
                ext._prepare_object_files(self)
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            print(f"liverburden: ahead-of-time kernels not built ({exc}); they compile on first use",
                  file=sys.stderr)


def _extensions():
    if os.environ.get("LIVERBURDEN_AOT", "1") == "0":
        return []
    sys.path.insert(0, str(KERNELS))
    try:
        import _aot_build

        return [_aot_build.extension()]
    except Exception as exc:  # noqa: BLE001 - e.g. numba missing from the build environment
        print(f"liverburden: ahead-of-time kernels not built ({exc}); they compile on first use", file=sys.stderr)
        return []
    finally:
        sys.path.remove(str(KERNELS))


setup(ext_modules=_extensions(), cmdclass={"build_ext": optional_build_ext})
