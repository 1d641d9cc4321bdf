"""The Volume: an array in (slice, row, col) order with its LPS geometry.

Conventions (``conventions.md``): ``spacing_mm`` and ``size`` follow the array
axes; ``direction`` is 3x3 with column k the LPS unit vector of array axis k;
``origin_mm`` is the LPS centre of voxel [0, 0, 0]. A voxel index i maps to
``origin_mm + direction @ (i * spacing_mm)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._exceptions import GeometryError

#: Two voxel grids coincide when every voxel centre of one lies within this
#: fraction of a voxel of its counterpart, measured along each axis of the
#: reference grid in units of that axis' spacing (1e-2 of a voxel).
#:
#: Why 1e-2: NIfTI stores its affine (and the qform quaternion) in float32, whose
#: relative rounding is 2**-24 ~ 6e-8. A converter writing a DICOM series to NIfTI
#: therefore moves the voxel centres by up to ~6e-8 x |coordinate| for the offset
#: (origins lie up to ~500 mm from the scanner origin: 3e-5 mm) plus the rounding
#: of the direction x spacing columns and of the quaternion angles (~1e-7 rad)
#: times the grid extent (<= ~500 mm: 5e-5 mm); tools that compute the affine in
#: float32 arithmetic or re-derive it (resampling, reorientation, round trips
#: through several formats) add more: a GE oblique series 140 mm from the origin
#: was reported 2.2 um off (issue 11). Measured on the real corpus of
#: ``tests/test_converters.py`` (dcm2niix, nibabel, SimpleITK): at most 1.5e-5 of
#: a voxel. 1e-2 of a voxel is 3-10 um for 0.3-1 mm voxels and 10-50 um along
#: 1-5 mm slices: well above all of that, and still ten times below the
#: smallest real offset we must refuse (a mask shifted by a tenth of a voxel).
#: For comparison: ITK's congruence check (``ImageBase`` coordinate tolerance)
#: is 1e-6 x spacing (about 1 nm), which float32 NIfTI affines far from the
#: origin fail (origins move by ~10 nm; hence SimpleITK's "Inputs do not occupy
#: the same physical space" on converter output); highdicom compares affines with
#: an absolute 1e-5 mm (10 nm, about float32 rounding of a 200 mm coordinate);
#: nibabel users compare with ``numpy.allclose`` (rtol 1e-5 of the coordinate:
#: 1-5 um at 100-500 mm, but 1e-8 mm at the origin, so it depends on where the
#: scanner put the patient). A tolerance in voxels depends on neither. The old
#: fixed 1e-3 of the smallest spacing (about 1 um) refused correct masks.
POSITION_TOL_VOXEL = 1e-2
#: Two axis directions are the same (or opposite) when the angle between them is
#: at most this many radians (1e-4 rad = 0.0057 degree). float32 storage of the
#: direction cosines or of the qform quaternion turns an axis by ~1e-7 rad, and
#: DICOM ImageOrientationPatient written with 6 decimals by ~1e-6 rad: 1e-4 is
#: a hundred times that. Over a 500 mm grid 1e-4 rad moves the far corner by
#: 0.05 mm; whether that is still on the grid is the voxel-centre check's call.
DIRECTION_TOL = 1e-4
_AXES = ("slice", "row", "col")
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

    Two grids coincide when (1) each reference axis has a mask axis within
    ``direction_tol`` radians of it (or of its opposite), (2) sizes match along
    matched axes, spacings within ``spacing_rel_tol``, and (3) every voxel centre
    of the mask lies within ``position_tol_voxel`` voxels of the reference voxel
    it lands on, along each reference axis in units of that axis' spacing. The
    offset between two affine grids is affine in the voxel index, so its largest
    value is reached at a corner: the 8 corners are checked exactly.
    See :data:`POSITION_TOL_VOXEL` and :data:`DIRECTION_TOL` for the numbers.
    """
    md = mask.direction
    rd = ref.direction

    def _mismatch(reason: str) -> GeometryError:
        return GeometryError(
            f"{mask.source or what}: {what} is not on the image grid ({reason}); "
            f"{what}: {describe_geometry(mask)}; image: {describe_geometry(ref)}. "
            "liverburden never resamples a mask silently: write the mask on the image's grid "
            "(same size, spacing, origin and direction; any axis order or flip is fine), "
            "or resample it onto the image grid with nearest-neighbour interpolation first."
        )

    perm = [-1, -1, -1]  # ref axis k <- mask axis perm[k]
    sign = [1, 1, 1]
    for k in range(3):
        cos = md.T @ rd[:, k]
        j = int(np.argmax(np.abs(cos)))
        # angle between the axes (or their opposites), accurate near 0
        angle = float(np.arctan2(np.linalg.norm(np.cross(md[:, j], rd[:, k])), abs(cos[j])))
        if angle > direction_tol or j in perm:
            raise _mismatch(
                f"axis directions differ: image {_AXES[k]} axis is {np.degrees(angle):.4g} deg from the nearest "
                f"{what} axis (tolerance {np.degrees(direction_tol):.3g} deg)"
            )
        perm[k] = j
        sign[k] = 1 if cos[j] > 0 else -1

    for k in range(3):
        j = perm[k]
        if mask.shape[j] != ref.shape[k]:
            raise _mismatch(f"sizes differ: {mask.shape[j]} vs {ref.shape[k]} voxels along the image {_AXES[k]} axis")
        if abs(mask.spacing_mm[j] - ref.spacing_mm[k]) > spacing_rel_tol * ref.spacing_mm[k]:
            raise _mismatch(
                f"spacings differ: {mask.spacing_mm[j]:.6g} vs {ref.spacing_mm[k]:.6g} mm along the image {_AXES[k]} axis"
            )
    arr = np.transpose(mask.array, perm)
    # every corner of the reference grid must meet the mask voxel mapped onto it;
    # offsets in reference voxels along each reference axis
    spacing = np.asarray(ref.spacing_mm)
    worst, worst_mm, worst_axis = 0.0, 0.0, 0
    for corner in np.ndindex(2, 2, 2):
        ref_idx = [c * (ref.shape[k] - 1) for k, c in enumerate(corner)]
        mask_idx = [0, 0, 0]
        for k in range(3):
            i = ref_idx[k]
            mask_idx[perm[k]] = i if sign[k] > 0 else mask.shape[perm[k]] - 1 - i
        delta = mask.index_to_lps(mask_idx) - ref.index_to_lps(ref_idx)
        vox = np.abs(rd.T @ delta) / spacing
        k = int(np.argmax(vox))
        if vox[k] > worst:
            worst, worst_mm, worst_axis = float(vox[k]), float(np.linalg.norm(delta)), k
    if worst > position_tol_voxel:
        raise _mismatch(
            f"voxel centres are offset by up to {worst:.4g} voxel along the image {_AXES[worst_axis]} axis "
            f"({worst_mm:.4g} mm; tolerance {position_tol_voxel:.3g} voxel)"
        )
    slices = tuple(slice(None, None, -1) if s < 0 else slice(None) for s in sign)
    return arr[slices]


def embed_in_grid(
    part: Volume,
    ref: Volume,
    *,
    position_tol_voxel: float = POSITION_TOL_VOXEL,
    direction_tol: float = DIRECTION_TOL,
    spacing_rel_tol: float = SPACING_REL_TOL,
) -> np.ndarray | None:
    """``part`` placed in a zero array of ``ref``'s shape, or None when it does not fit.

    For masks that store only part of the image grid: a DICOM SEG omits its empty
    frames (DICOM PS3.3 C.8.20), so a liver SEG of 20 frames on a 24-slice CT
    declares its own, shorter grid. When every voxel centre of ``part`` is a voxel
    centre of ``ref`` (same tolerances as :func:`match_to_grid`: axes parallel within
    ``direction_tol``, equal spacing, centres within ``position_tol_voxel``, any
    axis order and sign) and ``part`` lies inside ``ref``, the placement is exact: no
    resampling, voxels outside ``part`` are 0 (what the omitted frames hold).
    """
    pd_, rd = part.direction, ref.direction
    rsp = np.asarray(ref.spacing_mm, dtype=np.float64)
    psp = np.asarray(part.spacing_mm, dtype=np.float64)
    perm, sign = [], []
    for k in range(3):  # for each ref axis the part axis parallel to it
        cos = pd_.T @ rd[:, k]
        j = int(np.argmax(np.abs(cos)))
        if math.acos(min(1.0, abs(float(cos[j])))) > direction_tol or j in perm:
            return None
        if abs(psp[j] - rsp[k]) > spacing_rel_tol * rsp[k]:
            return None
        perm.append(j)
        sign.append(1 if cos[j] > 0 else -1)
    arr = np.transpose(np.asarray(part.array), perm)
    for k in range(3):
        if sign[k] < 0:
            arr = np.flip(arr, axis=k)
    # index in ref of the part's first voxel after the reorientation (its corner of least index)
    size = np.asarray(part.array.shape)[perm]
    corner = np.asarray(part.origin_mm, dtype=np.float64).copy()
    for k in range(3):
        if sign[k] < 0:
            corner = corner + pd_[:, perm[k]] * psp[perm[k]] * (size[k] - 1)
    start_f = (rd.T @ (corner - np.asarray(ref.origin_mm, dtype=np.float64))) / rsp
    start = np.rint(start_f).astype(np.int64)
    if np.any(np.abs(start_f - start) > position_tol_voxel):
        return None
    # the far corner too (spacing or direction drift over the extent)
    far = corner + sum(pd_[:, perm[k]] * sign[k] * psp[perm[k]] * (size[k] - 1) for k in range(3))
    far_f = (rd.T @ (far - np.asarray(ref.origin_mm, dtype=np.float64))) / rsp
    if np.any(np.abs(far_f - (start + size - 1)) > position_tol_voxel):
        return None
    if np.any(start < 0) or np.any(start + size > np.asarray(ref.shape)):
        return None
    out = np.zeros(ref.shape, dtype=arr.dtype)
    out[start[0]:start[0] + size[0], start[1]:start[1] + size[1], start[2]:start[2] + size[2]] = arr
    return out
