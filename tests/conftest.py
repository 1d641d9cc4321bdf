"""Test setup: a writable numba cache (conventions.md "Tests and speed") and
``tests/`` on ``sys.path`` so the helpers ``naive`` and ``phantoms`` import."""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.dirname(_HERE), ".numba_cache"))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
