"""Analytic phantoms voxelised in physical (LPS) space (house-style point 7, first oracle).

A voxel belongs to a shape when its centre ``origin + direction @ (index * spacing)``
lies inside (or on) the shape. Arrays are (slice, row, col); ``direction`` column k
is the LPS unit vector of array axis k (``conventions.md``). Nothing here imports
liverburden.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: An axial grid: array axis 0 along LPS z (S-I), axis 1 along y, axis 2 along x.
#: With this direction the LD slices are those of axis 0.
AXIAL = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
#: A sagittal-like grid: axis 0 along x (L), axis 1 along -z (rows run inferior),
#: axis 2 along y (P). The LD slices are those of axis 1.
SAGITTAL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def rotation(axis: Any, deg: float) -> np.ndarray:
    """Rotation matrix by ``deg`` degrees about ``axis`` (right hand, Rodrigues)."""
    k = np.asarray(axis, dtype=np.float64)
    k = k / np.linalg.norm(k)
    t = np.radians(deg)
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(t) * kx + (1.0 - np.cos(t)) * (kx @ kx)


def voxel_centres(shape: Any, spacing: Any, direction: Any = None, origin: Any = None) -> np.ndarray:
    """LPS mm of every voxel centre, shape ``shape + (3,)``."""
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
    o = np.zeros(3) if origin is None else np.asarray(origin, dtype=np.float64)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float64)
    return o + (idx * np.asarray(spacing, dtype=np.float64)) @ d.T


def index_to_lps(index: Any, spacing: Any, direction: Any = None, origin: Any = None) -> np.ndarray:
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
    o = np.zeros(3) if origin is None else np.asarray(origin, dtype=np.float64)
    return o + d @ (np.asarray(index, dtype=np.float64) * np.asarray(spacing, dtype=np.float64))


def grid_centre(shape: Any, spacing: Any, direction: Any = None, origin: Any = None) -> np.ndarray:
    """LPS mm of the centre of the grid (a voxel centre for odd sizes)."""
    return index_to_lps((np.asarray(shape) - 1) / 2.0, spacing, direction, origin)


def ellipsoid(shape: Any, spacing: Any, center_mm: Any, semi_axes_mm: Any, rot: Any = None,
              direction: Any = None, origin: Any = None) -> np.ndarray:
    """Voxels whose centre lies in the ellipsoid; ``rot`` columns are its axes in LPS."""
    r = np.eye(3) if rot is None else np.asarray(rot, dtype=np.float64)
    p = voxel_centres(shape, spacing, direction, origin) - np.asarray(center_mm, dtype=np.float64)
    local = p @ r  # coordinates along the ellipsoid's axes
    return ((local / np.asarray(semi_axes_mm, dtype=np.float64)) ** 2).sum(axis=-1) <= 1.0


def sphere(shape: Any, spacing: Any, center_mm: Any, radius_mm: float, direction: Any = None,
           origin: Any = None) -> np.ndarray:
    p = voxel_centres(shape, spacing, direction, origin) - np.asarray(center_mm, dtype=np.float64)
    return (p**2).sum(axis=-1) <= radius_mm**2


def box(shape: Any, spacing: Any, lo_mm: Any, hi_mm: Any, rot: Any = None, direction: Any = None,
        origin: Any = None) -> np.ndarray:
    """Voxels whose centre lies in ``lo_mm <= R^T p <= hi_mm`` (a box in LPS,
    its edges along the columns of ``rot``)."""
    r = np.eye(3) if rot is None else np.asarray(rot, dtype=np.float64)
    local = voxel_centres(shape, spacing, direction, origin) @ r
    return np.all((local >= np.asarray(lo_mm)) & (local <= np.asarray(hi_mm)), axis=-1)


def box_index(shape: Any, lo: Any, hi: Any) -> np.ndarray:
    """Voxels with ``lo <= index < hi`` on every axis."""
    m = np.zeros(tuple(shape), dtype=bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return m


def liver_around(mask: np.ndarray, margin: int = 2) -> np.ndarray:
    """A box liver mask: the bounding box of ``mask`` grown by ``margin`` voxels.

    It must stay off the edge of the grid (a truncated liver is tested on its
    own), so this raises when the grid is too small.
    """
    idx = np.argwhere(mask)
    lo = idx.min(axis=0) - margin
    hi = idx.max(axis=0) + margin + 1
    if np.any(lo < 1) or np.any(hi > np.asarray(mask.shape) - 1):
        raise ValueError(f"grid {mask.shape} too small for a liver box {lo.tolist()}..{hi.tolist()}")
    return box_index(mask.shape, lo, hi)


def interior_liver(shape: Any) -> np.ndarray:
    """A liver box filling the grid except a one-voxel border."""
    return box_index(shape, (1, 1, 1), tuple(n - 1 for n in shape))


def permuted_grid(arr: np.ndarray, spacing: Any, direction: Any, origin: Any, perm: Any, flip: Any = (False,) * 3):
    """The same physical voxels stored in another axis order and sign.

    New axis k is old axis ``perm[k]`` (reversed when ``flip[k]``). Returns
    ``(array, spacing, direction, origin)`` describing the identical grid.
    """
    perm = list(perm)
    sp = np.asarray(spacing, dtype=np.float64)
    d = np.asarray(direction, dtype=np.float64)
    o = np.asarray(origin, dtype=np.float64)
    a = np.transpose(arr, perm)
    new_sp = sp[perm]
    new_d = d[:, perm].copy()
    new_o = o.copy()
    for k, f in enumerate(flip):
        if f:
            n = a.shape[k]
            new_o = new_o + new_d[:, k] * new_sp[k] * (n - 1)
            new_d[:, k] = -new_d[:, k]
            a = np.flip(a, axis=k)
    return np.ascontiguousarray(a), new_sp, new_d, new_o
