"""Label arrays: dtype normalisation and label-value checks (no geometry)."""

from __future__ import annotations

import numpy as np

from .._exceptions import MaskError

#: Largest label value liverburden accepts in a mask (look-up tables are this long).
MAX_LABEL = 65535


def as_label_array(arr: np.ndarray, what: str) -> np.ndarray:
    """Return ``arr`` as a C-contiguous uint8 or uint16 array of the same values.

    bool/uint8/uint16 pass through without a copy when already contiguous. Other
    integer and float dtypes are checked (non-negative, integral, <= 65535) and
    converted; a float mask with a fractional value is an error, never rounded.
    """
    a = np.asarray(arr)
    if a.dtype == np.bool_:
        return np.ascontiguousarray(a).view(np.uint8)
    if a.dtype in (np.uint8, np.uint16):
        return np.ascontiguousarray(a)
    if a.dtype.kind not in "uif":
        raise MaskError(f"{what}: mask has dtype {a.dtype}; expected integer labels")
    if a.size == 0:
        raise MaskError(f"{what}: mask is empty (size 0)")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)):
            raise MaskError(f"{what}: mask has NaN or infinite values")
        if np.any(a != np.round(a)):
            raise MaskError(f"{what}: mask has non-integer values (a probability map?); threshold it first")
    lo = float(a.min())
    hi = float(a.max())
    if lo < 0:
        raise MaskError(f"{what}: mask has negative label {int(lo)}")
    if hi > MAX_LABEL:
        raise MaskError(f"{what}: label {int(hi)} is above the largest supported label {MAX_LABEL}")
    return np.ascontiguousarray(a, dtype=np.uint8 if hi <= 255 else np.uint16)


def lut_size(a: np.ndarray) -> int:
    return 256 if a.dtype == np.uint8 else 65536
