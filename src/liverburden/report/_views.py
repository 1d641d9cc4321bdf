"""Pictures in patient orientation, whatever the array order on disk.

Volumes are reoriented to LPS-aligned axes (a lossless permutation/flip,
SimpleITK ``DICOMOrient``); views are shown in radiological convention:
axial with anterior up and the patient's right on the image's left, coronal
and sagittal with superior up. Extents are in mm so anisotropic voxels keep
their true shape, and every view carries its orientation letters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import SimpleITK as sitk

from ..geometry import Volume, ld_axis
from ..io import volume_to_sitk

LIVER_WINDOW = (150.0, 80.0)  # width, level (HU)

#: Per view: the patient axis of its normal (0 = L-R, 1 = P-A, 2 = S-I, LPS order),
#: and the patient direction (axis, sign) toward which the screen's +x (right) and
#: +y (down) run. Radiological convention: the patient's right on the image's
#: left; anterior up on an axial view; superior up on coronal and sagittal views.
VIEWS: dict[str, tuple[int, tuple[int, int], tuple[int, int]]] = {
    "axial": (2, (0, +1), (1, +1)),
    "coronal": (1, (0, +1), (2, -1)),
    "sagittal": (0, (1, +1), (2, -1)),
}
_LETTER = {(0, 1): "L", (0, -1): "R", (1, 1): "P", (1, -1): "A", (2, 1): "S", (2, -1): "I"}


def patient_axes(direction: np.ndarray) -> tuple[int, int, int]:
    """The array axis closest to each patient axis (L-R, P-A, S-I), a permutation.

    S-I first, by the LD-axis rule of ``conventions.md`` (so an "axial" view is
    always a slice of ``slice_index``), then P-A among the two others (ties to
    the lower index), and L-R is the remaining axis.
    """
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    s = ld_axis(d)
    rest = [k for k in range(3) if k != s]
    p = rest[0] if abs(d[1, rest[0]]) >= abs(d[1, rest[1]]) else rest[1]
    lr = rest[1] if p == rest[0] else rest[0]
    return lr, p, s


def _letter(vec: np.ndarray) -> str:
    k = int(np.argmax(np.abs(vec)))
    return _LETTER[(k, 1 if vec[k] > 0 else -1)]


@dataclass(frozen=True)
class Plane:
    """One slice (or projection) of a volume's array shown in patient orientation.

    No resampling: the slice is an array slice along ``normal_axis``, transposed
    and flipped so that the screen's +x and +y run as :data:`VIEWS` says. For an
    oblique grid the view is the array's own slice, labelled with the patient
    direction closest to each screen axis (``tilt_deg`` says how far off).

    Screen coordinates are in mm: ``x`` to the right, ``y`` down, voxel centre
    (0, 0) at the top-left pixel's centre, so an ``imshow`` with :attr:`extent`
    and ``origin="upper"`` keeps anisotropic voxels in their true shape.
    """

    view: str
    normal_axis: int
    index: int
    u_axis: int
    u_flip: bool
    v_axis: int
    v_flip: bool
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]
    direction: tuple[tuple[float, float, float], ...]
    letters: tuple[str, str, str, str]
    tilt_deg: float

    @classmethod
    def of(cls, vol: Volume, view: str, *, index: int | None = None, point_lps: Sequence[float] | None = None) -> "Plane":
        """The ``view`` ("axial", "coronal", "sagittal") of ``vol`` through slice ``index``
        of its normal axis, or through the slice nearest ``point_lps``, or the middle slice."""
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r}; expected one of {', '.join(VIEWS)}")
        d = np.asarray(vol.direction, dtype=np.float64)
        pa = patient_axes(d)
        n_pat, (ux, us), (vx, vs) = VIEWS[view]
        normal, u, v = pa[n_pat], pa[ux], pa[vx]
        u_flip = bool(d[ux, u] * us < 0)
        v_flip = bool(d[vx, v] * vs < 0)
        xv = d[:, u] * (-1.0 if u_flip else 1.0)
        yv = d[:, v] * (-1.0 if v_flip else 1.0)
        letters = (_letter(-xv), _letter(xv), _letter(-yv), _letter(yv))
        tilt = float(np.degrees(np.arccos(min(1.0, abs(d[n_pat, normal])))))
        shape = vol.shape
        if index is None:
            if point_lps is not None:
                c = np.asarray(point_lps, dtype=np.float64) - np.asarray(vol.origin_mm)
                index = int(round(float(d[:, normal] @ c) / vol.spacing_mm[normal]))
            else:
                index = (shape[normal] - 1) // 2
        index = min(max(int(index), 0), shape[normal] - 1)
        return cls(view, normal, index, u, u_flip, v, v_flip, shape, tuple(vol.spacing_mm), tuple(vol.origin_mm),
                   tuple(tuple(float(x) for x in row) for row in d), letters, tilt)

    # geometry ------------------------------------------------------------------
    @property
    def size_uv(self) -> tuple[int, int]:
        return self.shape[self.u_axis], self.shape[self.v_axis]

    @property
    def pixel_mm(self) -> tuple[float, float]:
        return self.spacing_mm[self.u_axis], self.spacing_mm[self.v_axis]

    @property
    def extent(self) -> list[float]:
        """``imshow`` extent (left, right, bottom, top) for ``origin="upper"``."""
        (nu, nv), (su, sv) = self.size_uv, self.pixel_mm
        return [-su / 2, (nu - 0.5) * su, (nv - 0.5) * sv, -sv / 2]

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Screen x of each column and y of each row (voxel centres, mm), for ``contour``."""
        (nu, nv), (su, sv) = self.size_uv, self.pixel_mm
        return np.arange(nu) * su, np.arange(nv) * sv

    def continuous_index(self, p_lps: Sequence[float]) -> np.ndarray:
        """(slice, row, col) continuous array index of LPS points (..., 3)."""
        d = np.asarray(self.direction)
        p = np.asarray(p_lps, dtype=np.float64) - np.asarray(self.origin_mm)
        return (p @ d) / np.asarray(self.spacing_mm)

    def to_screen(self, p_lps: Sequence[float]) -> np.ndarray:
        """Screen (x, y) in mm and the continuous slice coordinate of LPS points: (..., 3)."""
        idx = self.continuous_index(p_lps)
        (nu, nv), (su, sv) = self.size_uv, self.pixel_mm
        iu = idx[..., self.u_axis]
        iv = idx[..., self.v_axis]
        iu = (nu - 1) - iu if self.u_flip else iu
        iv = (nv - 1) - iv if self.v_flip else iv
        return np.stack([iu * su, iv * sv, idx[..., self.normal_axis]], axis=-1)

    def to_lps(self, xy: Sequence[float], slice_coord: float | None = None) -> np.ndarray:
        """LPS point of screen (x, y) (..., 2) on slice ``slice_coord`` (default: this plane's)."""
        xy = np.asarray(xy, dtype=np.float64)
        (nu, nv), (su, sv) = self.size_uv, self.pixel_mm
        iu = xy[..., 0] / su
        iv = xy[..., 1] / sv
        iu = (nu - 1) - iu if self.u_flip else iu
        iv = (nv - 1) - iv if self.v_flip else iv
        idx = np.zeros(xy.shape[:-1] + (3,))
        idx[..., self.u_axis] = iu
        idx[..., self.v_axis] = iv
        idx[..., self.normal_axis] = self.index if slice_coord is None else slice_coord
        d = np.asarray(self.direction)
        return np.asarray(self.origin_mm) + (idx * np.asarray(self.spacing_mm)) @ d.T

    # pixels ----------------------------------------------------------------------
    def _orient(self, a2: np.ndarray) -> np.ndarray:
        # a2 holds the two in-plane axes in increasing array-axis order
        if self.v_axis > self.u_axis:
            a2 = a2.T  # -> rows v, cols u
        if self.v_flip:
            a2 = a2[::-1, :]
        if self.u_flip:
            a2 = a2[:, ::-1]
        return a2

    def image(self, array: np.ndarray) -> np.ndarray:
        """The slice of ``array`` (on this plane's grid): rows run down (+y), columns right (+x)."""
        if tuple(array.shape) != tuple(self.shape):
            raise ValueError(f"array shape {array.shape} is not the plane's grid {self.shape}")
        return self._orient(np.take(array, self.index, axis=self.normal_axis))

    def projection(self, array: np.ndarray, reduce: Callable[..., np.ndarray] = np.max) -> np.ndarray:
        """``reduce`` (default maximum) of ``array`` along the normal axis, oriented as :meth:`image`."""
        if tuple(array.shape) != tuple(self.shape):
            raise ValueError(f"array shape {array.shape} is not the plane's grid {self.shape}")
        return self._orient(reduce(array, axis=self.normal_axis))


class OrientedVolume:
    """A volume reoriented so that sitk axes (x, y, z) run toward L, P, S."""

    def __init__(self, vol: Volume, array: np.ndarray | None = None):
        img = volume_to_sitk(vol, vol.array if array is None else array)
        self.img = sitk.DICOMOrient(img, "LPS")
        self.arr = sitk.GetArrayViewFromImage(self.img)  # (z, y, x): S, P, L increasing
        self.spacing = self.img.GetSpacing()  # x, y, z
        self.origin = np.asarray(self.img.GetOrigin())

    def index_of(self, p_lps: Sequence[float]) -> tuple[float, float, float]:
        """Continuous (x, y, z) index of an LPS point."""
        return self.img.TransformPhysicalPointToContinuousIndex(tuple(float(v) for v in p_lps))

    def slice(self, view: str, p_lps: Sequence[float]) -> tuple[np.ndarray, list[float], tuple[str, str, str, str]]:
        """2-D image, imshow extent (mm) and orientation letters (left, right, top, bottom)."""
        ix, iy, iz = (int(round(v)) for v in self.index_of(p_lps))
        nx, ny, nz = self.img.GetSize()
        ix, iy, iz = min(max(ix, 0), nx - 1), min(max(iy, 0), ny - 1), min(max(iz, 0), nz - 1)
        sx, sy, sz = self.spacing
        ox, oy, oz = self.origin
        if view == "axial":
            im = self.arr[iz]  # rows y (P down), cols x (L right) -> patient right on image left
            ext = [ox - sx / 2, ox + (nx - 0.5) * sx, oy + (ny - 0.5) * sy, oy - sy / 2]
            return im, ext, ("R", "L", "A", "P")
        if view == "coronal":
            im = self.arr[:, iy, :]  # rows z, cols x
            ext = [ox - sx / 2, ox + (nx - 0.5) * sx, oz - sz / 2, oz + (nz - 0.5) * sz]
            return im, ext, ("R", "L", "S", "I")
        if view == "sagittal":
            im = self.arr[:, :, ix]  # rows z, cols y (P right)
            ext = [oy - sy / 2, oy + (ny - 0.5) * sy, oz - sz / 2, oz + (nz - 0.5) * sz]
            return im, ext, ("A", "P", "S", "I")
        raise ValueError(view)

    @staticmethod
    def plane_xy(view: str, p_lps: Sequence[float]) -> tuple[float, float]:
        """Where an LPS point is drawn in a view's mm coordinates."""
        x, y, z = (float(v) for v in p_lps)
        return {"axial": (x, y), "coronal": (x, z), "sagittal": (y, z)}[view]


def show(ax, ov: OrientedVolume, view: str, p_lps, *, window=LIVER_WINDOW, masks: Sequence[tuple[OrientedVolume, str]] = ()):
    im, ext, letters = ov.slice(view, p_lps)
    w, lv = window
    origin = "upper" if view == "axial" else "lower"
    ax.imshow(im, cmap="gray", vmin=lv - w / 2, vmax=lv + w / 2, extent=ext, origin=origin, interpolation="nearest")
    for mov, colour in masks:
        m, mext, _ = mov.slice(view, p_lps)
        if np.any(m):
            ax.contour(np.asarray(m, dtype=float), levels=[0.5], colors=[colour], linewidths=1.0, extent=mext,
                       origin=origin)
    ax.set_xticks([])
    ax.set_yticks([])
    orientation_letters(ax, letters)
    return ext


def orientation_letters(ax, letters: Sequence[str], *, color: str = "yellow", fontsize: int = 9) -> None:
    """Write the orientation letters (left, right, top, bottom) at the edges of ``ax``."""
    l, r, t, b = letters
    kw = dict(transform=ax.transAxes, color=color, fontsize=fontsize, fontweight="bold")
    ax.text(0.01, 0.5, l, va="center", ha="left", **kw)
    ax.text(0.99, 0.5, r, va="center", ha="right", **kw)
    ax.text(0.5, 0.99, t, va="top", ha="center", **kw)
    ax.text(0.5, 0.01, b, va="bottom", ha="center", **kw)


def margin_figure(path, image: Volume, tumor: np.ndarray, zone: np.ndarray, tumor_result: Any, margins_mm: np.ndarray,
                  threshold_mm: float, *, window=LIVER_WINDOW, zoom_mm: float = 50.0) -> None:
    """Three orthogonal slices through the minimal-margin point with tumor (red) and
    zone (green) contours and the point marked, plus the surface-margin histogram."""
    ov = OrientedVolume(image)
    ot = OrientedVolume(image, tumor.astype(np.uint8))
    oz = OrientedVolume(image, zone.astype(np.uint8))
    p = tumor_result.min_margin_point_mm
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # here, not at import: commands that draw nothing start faster

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.8), dpi=90)
    for ax, view in zip(axes[:3], ("axial", "coronal", "sagittal")):
        show(ax, ov, view, p, window=window, masks=[(ot, "red"), (oz, "lime")])
        cx, cy = OrientedVolume.plane_xy(view, p)
        ax.plot([cx], [cy], marker="+", color="cyan", markersize=12, mew=2)
        ax.set_xlim(cx - zoom_mm, cx + zoom_mm)
        if view == "axial":
            ax.set_ylim(cy + zoom_mm, cy - zoom_mm)
        else:
            ax.set_ylim(cy - zoom_mm, cy + zoom_mm)
        ax.set_title(view, fontsize=9)
    ax = axes[3]
    ax.hist(margins_mm, bins=40, color="steelblue")
    ax.axvline(0.0, color="red", lw=1)
    ax.axvline(threshold_mm, color="orange", lw=1)
    ax.set_xlabel("surface margin (mm)")
    ax.set_ylabel("surface voxels")
    cls = tumor_result.classification.value if tumor_result.classification is not None else "not assessed"
    unc = " (uncertain)" if tumor_result.uncertain else ""
    fig.suptitle(
        f"tumor {tumor_result.id}: minimal margin {tumor_result.min_margin_mm:.1f} mm, coverage "
        f"{tumor_result.coverage_pct:.1f} %, {cls}{unc}", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
