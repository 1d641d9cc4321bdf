"""SimpleITK image <-> Volume (axis order reversed, direction columns permuted)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..geometry import Volume


def volume_from_sitk(img: sitk.Image, source: str = "") -> Volume:
    """SimpleITK (x, y, z) index order -> Volume (slice, row, col) = (z, y, x)."""
    arr = sitk.GetArrayViewFromImage(img)
    d = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)  # column i = axis i (x, y, z)
    direction = d[:, ::-1]
    spacing = tuple(float(s) for s in img.GetSpacing()[::-1])
    return Volume(np.array(arr), spacing, tuple(img.GetOrigin()), direction, source=source)


def volume_to_sitk(vol: Volume, array: np.ndarray | None = None) -> sitk.Image:
    """Volume -> SimpleITK image with the same physical geometry."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(vol.array if array is None else array))
    img.SetSpacing(tuple(float(s) for s in vol.spacing_mm[::-1]))
    img.SetOrigin(tuple(float(o) for o in vol.origin_mm))
    img.SetDirection(tuple(float(v) for v in vol.direction[:, ::-1].reshape(-1)))
    return img
