"""Pictures in patient orientation, whatever the array order on disk.

Volumes are reoriented to LPS-aligned axes (a lossless permutation/flip,
SimpleITK ``DICOMOrient``); views are shown in radiological convention:
axial with anterior up and the patient's right on the image's left, coronal
and sagittal with superior up. Extents are in mm so anisotropic voxels keep
their true shape, and every view carries its orientation letters.
"""

from __future__ import annotations

from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from ..geometry import Volume  # noqa: E402
from ..io import volume_to_sitk  # noqa: E402

LIVER_WINDOW = (150.0, 80.0)  # width, level (HU)


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
    l, r, t, b = letters
    kw = dict(transform=ax.transAxes, color="yellow", fontsize=9, fontweight="bold")
    ax.text(0.01, 0.5, l, va="center", ha="left", **kw)
    ax.text(0.99, 0.5, r, va="center", ha="right", **kw)
    ax.text(0.5, 0.99, t, va="top", ha="center", **kw)
    ax.text(0.5, 0.01, b, va="bottom", ha="center", **kw)
    return ext


def margin_figure(path, image: Volume, tumor: np.ndarray, zone: np.ndarray, tumor_result: Any, margins_mm: np.ndarray,
                  threshold_mm: float, *, window=LIVER_WINDOW, zoom_mm: float = 50.0) -> None:
    """Three orthogonal slices through the minimal-margin point with tumor (red) and
    zone (green) contours and the point marked, plus the surface-margin histogram."""
    ov = OrientedVolume(image)
    ot = OrientedVolume(image, tumor.astype(np.uint8))
    oz = OrientedVolume(image, zone.astype(np.uint8))
    p = tumor_result.min_margin_point_mm
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
