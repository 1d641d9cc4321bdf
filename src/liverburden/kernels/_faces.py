"""Shared face areas between labels (numba): contiguity of Couinaud segments."""

from __future__ import annotations

import numpy as np
from ._jit import njit


@njit(cache=True, nogil=True)
def _face_counts(labels, n_values):
    """Count voxel faces shared by two different non-zero labels, per axis.

    Parameters
    ----------
    labels : 3-D integer array (slice, row, col), values < n_values.
    n_values : size of the count tables.

    Returns
    -------
    counts : int64 (3, n_values, n_values), symmetric in the last two axes;
        counts[a, i, j] = faces normal to axis a between a voxel of label i and
        one of label j (i != j, both non-zero).
    """
    nz, ny, nx = labels.shape
    counts = np.zeros((3, n_values, n_values), dtype=np.int64)
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                a = labels[z, y, x]
                if a == 0:
                    continue
                if x + 1 < nx:
                    b = labels[z, y, x + 1]
                    if b != 0 and b != a:
                        counts[2, a, b] += 1
                        counts[2, b, a] += 1
                if y + 1 < ny:
                    b = labels[z, y + 1, x]
                    if b != 0 and b != a:
                        counts[1, a, b] += 1
                        counts[1, b, a] += 1
                if z + 1 < nz:
                    b = labels[z + 1, y, x]
                    if b != 0 and b != a:
                        counts[0, a, b] += 1
                        counts[0, b, a] += 1
    return counts


def shared_face_area_mm2(labels: np.ndarray, n_values: int, spacing_mm) -> np.ndarray:
    """Symmetric (n_values, n_values) matrix of shared face areas in mm².

    A face normal to axis a has the area of the product of the other two spacings.
    """
    sp = np.asarray(spacing_mm, dtype=np.float64)
    c = _face_counts_t(np.ascontiguousarray(labels), int(n_values))
    face = np.array([sp[1] * sp[2], sp[0] * sp[2], sp[0] * sp[1]])
    return np.tensordot(face, c.astype(np.float64), axes=(0, 0))


from ._tiered import tiered as _wrap  # noqa: E402

_face_counts_t = _wrap(_face_counts)  # the install's compiled build where it fits (``_tiered``)
