"""The Volume: an array in (slice, row, col) order with its LPS geometry.

Conventions (``conventions.md``): ``spacing_mm`` and ``size`` follow the array
axes; ``direction`` is 3x3 with column k the LPS unit vector of array axis k;
``origin_mm`` is the LPS centre of voxel [0, 0, 0]. A voxel index i maps to
``origin_mm + direction @ (i * spacing_mm)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._exceptions import GeometryError

#: Two voxel grids coincide when every voxel centre lies within this fraction
#: of the smallest voxel spacing of its counterpart (1e-3 of a voxel: well below
#: any rounding a DICOM or NIfTI writer does to geometry, far above float error).
POSITION_TOL_VOXEL = 1e-3
#: Two axis directions are the same (or opposite) when the absolute cosine of
#: their angle is above ``1 - DIRECTION_TOL``.
DIRECTION_TOL = 1e-6
#: Two spacings are the same when they differ by less than this fraction.
SPACING_REL_TOL = 1e-4
#: A direction matrix is orthonormal when ``|D^T D - I|`` is below this.
ORTHONORMAL_TOL = 1e-3


def _as_vec3(value: Any, what: str) -> np.ndarray:
    try:
        v = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise GeometryError(f"{what} must be 3 numbers, got {value!r}") from None
    if v.shape != (3,):
        raise GeometryError(f"{what} must be 3 numbers, got shape {v.shape}")
    return v


def _as_direction(direction: Any) -> np.ndarray:
    try:
        d = np.asarray(direction, dtype=np.float64)
    except (TypeError, ValueError):
        raise GeometryError("direction must be a 3x3 matrix of numbers") from None
    if d.shape != (3, 3):
        raise GeometryError(f"direction must be a 3x3 matrix, got shape {d.shape}")
    if not np.all(np.isfinite(d)):
        raise GeometryError("direction matrix has non-finite values")
    if np.max(np.abs(d.T @ d - np.eye(3))) > ORTHONORMAL_TOL:
        raise GeometryError(
            "direction matrix is not orthonormal (sheared grid, e.g. gantry tilt): "
            f"{np.round(d, 5).tolist()}"
        )
    return d


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3-D array with its physical geometry; valid by construction.

    Parameters
    ----------
    array : ndarray, shape (n_slice, n_row, n_col)
    spacing_mm : 3 positive finite floats, same axis order.
    origin_mm : LPS centre of voxel [0, 0, 0].
    direction : 3x3, column k = LPS unit vector of array axis k, orthonormal.
    frame_of_reference : FrameOfReferenceUID where known (never written out;
        only its salted hash is).
    source : short description of where the volume came from (no PHI).
    """

    array: np.ndarray
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    frame_of_reference: str | None = None
    source: str = ""

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim != 3:
            raise GeometryError(f"{self.source or 'volume'}: expected a 3-D array, got shape {arr.shape}")
        name = self.source or "volume"
        sp = tuple(float(s) for s in _as_vec3(self.spacing_mm, f"{name}: spacing_mm"))
        if not all(np.isfinite(s) and s > 0 for s in sp):
            raise GeometryError(f"{self.source or 'volume'}: spacing must be positive and finite, got {sp}")
        org = tuple(float(o) for o in _as_vec3(self.origin_mm, f"{name}: origin_mm"))
        if not all(np.isfinite(o) for o in org):
            raise GeometryError(f"{self.source or 'volume'}: origin is not finite: {org}")
        try:
            d = _as_direction(self.direction)
        except GeometryError as exc:
            raise GeometryError(f"{self.source or 'volume'}: {exc}") from None
        d.setflags(write=False)
        object.__setattr__(self, "array", arr)
        object.__setattr__(self, "spacing_mm", sp)
        object.__setattr__(self, "origin_mm", org)
        object.__setattr__(self, "direction", d)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def affine(self) -> np.ndarray:
        """4x4 index (slice, row, col) -> LPS mm."""
        a = np.eye(4)
        a[:3, :3] = self.direction * np.asarray(self.spacing_mm)[None, :]
        a[:3, 3] = self.origin_mm
        return a

    def index_to_lps(self, index: Any) -> np.ndarray:
        """LPS mm of voxel indices (..., 3) in (slice, row, col) order."""
        idx = np.asarray(index, dtype=np.float64)
        return np.asarray(self.origin_mm) + (idx * np.asarray(self.spacing_mm)) @ self.direction.T

    def geometry_dict(self) -> dict[str, Any]:
        return {
            "axes": ["slice", "row", "col"],
            "size": list(self.shape),
            "spacing_mm": [float(s) for s in self.spacing_mm],
            "origin_mm": [float(o) for o in self.origin_mm],
            "direction": [[float(v) for v in row] for row in self.direction],
        }

    def with_array(self, array: np.ndarray, source: str | None = None) -> "Volume":
        """A volume on the same grid holding another array."""
        return Volume(
            array,
            self.spacing_mm,
            self.origin_mm,
            self.direction,
            self.frame_of_reference,
            self.source if source is None else source,
        )


def describe_geometry(vol: Volume) -> str:
    """One-line geometry for error messages (no identifiers)."""
    return (
        f"size={list(vol.shape)} spacing_mm={[round(s, 5) for s in vol.spacing_mm]} "
        f"origin_mm={[round(o, 4) for o in vol.origin_mm]} "
        f"direction(cols)={np.round(vol.direction.T, 4).tolist()}"
    )


def ld_axis(direction: np.ndarray) -> int:
    """Array axis whose direction is closest to the patient's S-I axis (LPS z).

    ``clinical-reference.md`` section 1: the LD slices are those of this axis.
    Ties (an exactly 45-degree oblique) go to the lower axis index.
    """
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    return int(np.argmax(np.abs(d[2, :])))


def match_to_grid(
    mask: Volume,
    ref: Volume,
    *,
    position_tol_voxel: float = POSITION_TOL_VOXEL,
    direction_tol: float = DIRECTION_TOL,
    spacing_rel_tol: float = SPACING_REL_TOL,
    what: str = "mask",
) -> np.ndarray:
    """Return ``mask``'s array reoriented onto ``ref``'s grid, losslessly.

    The mask is on the reference grid when its voxel centres coincide with the
    reference's in some axis order and sign: then the array is permuted and
    flipped (a view, no copy, no interpolation). Any other difference raises
    :class:`GeometryError` naming both geometries. Never resamples.
    """
    md = mask.direction
    rd = ref.direction
    perm = [-1, -1, -1]  # ref axis k <- mask axis perm[k]
    sign = [1, 1, 1]
    for k in range(3):
        cos = md.T @ rd[:, k]
        j = int(np.argmax(np.abs(cos)))
        if abs(abs(cos[j]) - 1.0) > direction_tol or j in perm:
            perm = None  # type: ignore[assignment]
            break
        perm[k] = j
        sign[k] = 1 if cos[j] > 0 else -1

    def _mismatch(reason: str) -> GeometryError:
        return GeometryError(
            f"{mask.source or what}: {what} is not on the image grid ({reason}); "
            f"{what}: {describe_geometry(mask)}; image: {describe_geometry(ref)}. "
            "liverburden never resamples a mask silently: resample it onto the image grid first."
        )

    if perm is None:
        raise _mismatch("axis directions differ")
    for k in range(3):
        j = perm[k]
        if mask.shape[j] != ref.shape[k]:
            raise _mismatch("sizes differ")
        if abs(mask.spacing_mm[j] - ref.spacing_mm[k]) > spacing_rel_tol * ref.spacing_mm[k]:
            raise _mismatch("spacings differ")
    arr = np.transpose(mask.array, perm)
    tol = position_tol_voxel * min(ref.spacing_mm)
    # every corner of the reference grid must meet the mask voxel mapped onto it
    worst = 0.0
    for corner in np.ndindex(2, 2, 2):
        ref_idx = [c * (ref.shape[k] - 1) for k, c in enumerate(corner)]
        mask_idx = [0, 0, 0]
        for k in range(3):
            i = ref_idx[k]
            mask_idx[perm[k]] = i if sign[k] > 0 else mask.shape[perm[k]] - 1 - i
        worst = max(worst, float(np.linalg.norm(mask.index_to_lps(mask_idx) - ref.index_to_lps(ref_idx))))
    if worst > tol:
        raise _mismatch(f"voxel centres are offset by up to {worst:.4g} mm (tolerance {tol:.3g} mm)")
    slices = tuple(slice(None, None, -1) if s < 0 else slice(None) for s in sign)
    return arr[slices]
