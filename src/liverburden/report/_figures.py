"""The pictures of the QC report, each drawn from the numbers it illustrates.

Every function returns a :class:`Picture`: the PNG bytes, a caption, and
``drawn``, a record of what was drawn where (screen mm, LPS mm, PNG pixels),
so a test can check that a caliper lies on the end points of the JSON.

Images are in patient orientation whatever the array order on disk (see
:class:`~liverburden.report._views.Plane`): no resampling, radiological
convention, orientation letters on every anatomical image. Figures are built
with :class:`matplotlib.figure.Figure` and the Agg canvas (no pyplot state), at
a fixed DPI, without ``bbox_inches="tight"``, so the axes transform at draw time
is the one of the saved PNG.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from ..geometry import Volume
from ._views import LIVER_WINDOW, Plane, orientation_letters

#: Dots per inch of every PNG; figure sizes are chosen so that pixel sizes are integers.
DPI = 100
#: Colour of the LD caliper (pure cyan: absent from a grey CT and from the other overlays).
LD_COLOUR = (0.0, 1.0, 1.0)
#: Colour of the SA caliper (pure magenta).
SA_COLOUR = (1.0, 0.0, 1.0)
LESION_COLOUR = (1.0, 0.2, 0.2)
OTHER_LESION_COLOUR = (1.0, 0.65, 0.0)
LIVER_COLOUR = (1.0, 0.85, 0.3)
TUMOR_COLOUR = (1.0, 0.15, 0.15)
ZONE_COLOUR = (0.2, 1.0, 0.2)
POINT_COLOUR = (0.0, 1.0, 1.0)
#: Background grey when no CT is available (masks drawn on a blank image).
BLANK_GREY = 0.12

#: Couinaud segment colours (qualitative, distinguishable in print).
SEGMENT_COLOURS: dict[str, str] = {
    "1": "#8c564b", "2": "#1f77b4", "3": "#17becf", "4": "#9467bd", "4a": "#9467bd", "4b": "#c5b0d5",
    "5": "#2ca02c", "6": "#ff7f0e", "7": "#d62728", "8": "#e377c2",
}
EXTRAHEPATIC_COLOUR = "#7f7f7f"
UNASSIGNED_COLOUR = "#ffffff"
_ROMAN = {"1": "I", "2": "II", "3": "III", "4": "IV", "4a": "IVa", "4b": "IVb", "5": "V", "6": "VI", "7": "VII",
          "8": "VIII"}
#: Remnant (kept) segments in greens, resected segments in reds (FLR plan).
REMNANT_SHADES = ["#1b9e77", "#66c2a5", "#238b45", "#a1d99b", "#41ab5d", "#00441b", "#74c476", "#005a32"]
RESECTED_SHADES = ["#d7301f", "#fc8d59", "#b30000", "#fdbb84", "#ef6548", "#7f0000", "#e34a33", "#fdd49e"]
RESPONSE_COLOURS = {"CR": "#1a9850", "PR": "#91cf60", "SD": "#fee08b", "PD": "#d73027", None: "#bdbdbd"}


def roman(seg: str | None) -> str:
    """Couinaud segment key ("1".."8", "4a", "4b") as a Roman numeral; other keys unchanged."""
    if seg is None:
        return "-"
    return _ROMAN.get(str(seg), str(seg))


@dataclass(frozen=True)
class Picture:
    """One PNG of the report with what it shows."""

    name: str
    title: str
    caption: str
    png: bytes = field(repr=False)
    drawn: Mapping[str, Any] = field(default_factory=dict, repr=False)


# --------------------------------------------------------------------------- helpers


def _figure(width_px: int, height_px: int) -> Figure:
    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure, *, drawn: bool = False) -> bytes:
    """The figure as PNG bytes; ``drawn=True`` reuses the canvas of a ``fig.canvas.draw()`` made after
    the last artist was added (the one whose transforms gave the pixel positions)."""
    from PIL import Image

    if not drawn:
        fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    buf = io.BytesIO()
    Image.fromarray(rgba[..., :3]).save(buf, format="PNG")
    return buf.getvalue()


def _pixels(fig: Figure, ax, xy: np.ndarray) -> list[list[float]]:
    """PNG pixel (column, row) of data points ``xy`` (n, 2) of ``ax``; call after ``fig.canvas.draw()``."""
    disp = ax.transData.transform(np.asarray(xy, dtype=float).reshape(-1, 2))
    h = fig.get_size_inches()[1] * DPI
    # display coordinates count from the bottom-left corner of the canvas, pixel edges at integers
    return [[float(x) - 0.5, float(h - y) - 0.5] for x, y in disp]


def _window_of(window: tuple[float, float] | None) -> tuple[float, float]:
    return LIVER_WINDOW if window is None else (float(window[0]), float(window[1]))


def _background(ax, plane: Plane, ct: np.ndarray | None, window, *, projection: bool = False) -> None:
    if ct is None:
        nu, nv = plane.size_uv
        ax.imshow(np.full((nv, nu), BLANK_GREY), cmap="gray", vmin=0.0, vmax=1.0, extent=plane.extent, origin="upper",
                  interpolation="nearest")
        ax.text(0.02, 0.02, "no CT: masks only", transform=ax.transAxes, color="white", fontsize=7, ha="left",
                va="bottom")
    else:
        w, lv = _window_of(window)
        img = plane.projection(ct) if projection else plane.image(ct)
        ax.imshow(img, cmap="gray", vmin=lv - w / 2, vmax=lv + w / 2, extent=plane.extent, origin="upper",
                  interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_facecolor("black")


def _contour(ax, plane: Plane, mask2d: np.ndarray, colour, lw: float = 1.2, ls: str = "solid") -> bool:
    m = np.asarray(mask2d, dtype=bool)
    if not m.any():
        return False
    rows = np.flatnonzero(m.any(axis=1))
    cols = np.flatnonzero(m.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    su, sv = plane.pixel_mm
    # the mask's bounding box, padded by one voxel so a mask touching the edge still closes its contour
    xp = np.arange(c0 - 1, c1 + 1) * su
    yp = np.arange(r0 - 1, r1 + 1) * sv
    ax.contour(xp, yp, np.pad(m[r0:r1, c0:c1], 1).astype(float), levels=[0.5], colors=[colour], linewidths=lw,
               linestyles=ls)
    return True


def _crop(plane: Plane, mask3d: np.ndarray | None, margin_mm: float = 15.0) -> tuple[float, float, float, float]:
    """Screen box (x0, x1, y_top, y_bottom) of ``mask3d`` projected on the plane, widened by
    ``margin_mm`` and clipped to the image; the whole image when the mask is empty or None."""
    ext = plane.extent
    full = (ext[0], ext[1], ext[3], ext[2])
    if mask3d is None:
        return full
    proj = plane.projection(np.asarray(mask3d, dtype=bool))
    if not proj.any():
        return full
    rr, cc = np.nonzero(proj)
    su, sv = plane.pixel_mm
    return (max(ext[0], cc.min() * su - margin_mm), min(ext[1], cc.max() * su + margin_mm),
            max(ext[3], rr.min() * sv - margin_mm), min(ext[2], rr.max() * sv + margin_mm))


def _row_figure(aspects: Sequence[float], *, max_width_px: int = 1200, panel_height_px: int = 420,
                top_px: int = 28, bottom_px: int = 8, gap_px: int = 10, right_px: int = 0):
    """A figure with one row of image panels of the given width/height ratios (true mm shape).

    Panels get about the same area (a thin slab's coronal view is wide and low,
    not a strip), are centred vertically, and no panel is higher than
    ``panel_height_px``. Returns the figure, the axes, and the left edge (figure
    fraction) of the space left on the right (legends).
    """
    a = [min(max(float(v), 0.05), 20.0) for v in aspects]
    n = len(a)
    room = max_width_px - gap_px * (n - 1) - right_px
    unit = room / sum(math.sqrt(v) for v in a)  # sqrt(area) of each panel
    unit = min(unit, panel_height_px * min(math.sqrt(v) for v in a))
    widths = [unit * math.sqrt(v) for v in a]
    heights = [unit / math.sqrt(v) for v in a]
    hmax = max(heights)
    width = int(math.ceil(max(sum(widths) + gap_px * (n - 1) + right_px, 400)))
    height = int(math.ceil(hmax + top_px + bottom_px))
    fig = _figure(width, height)
    axes = []
    x = 0.0
    for w, h in zip(widths, heights):
        y = bottom_px + (hmax - h) / 2
        axes.append(fig.add_axes((x / width, y / height, w / width, h / height)))
        x += w + gap_px
    return fig, axes, (x - gap_px + 6) / width


def _set_box(ax, box: tuple[float, float, float, float]) -> None:
    ax.set_xlim(box[0], box[1])
    ax.set_ylim(box[3], box[2])


def _finish_view(ax, plane: Plane) -> None:
    ext = plane.extent
    ax.set_xlim(ext[0], ext[1])
    ax.set_ylim(ext[2], ext[3])
    orientation_letters(ax, plane.letters)


def _zoom(ax, cx: float, cy: float, half_mm: float) -> None:
    ax.set_xlim(cx - half_mm, cx + half_mm)
    ax.set_ylim(cy + half_mm, cy - half_mm)


def _view_title(plane: Plane, extra: str = "") -> str:
    t = f"{plane.view} (slice {plane.index})" + extra
    if plane.tilt_deg > 1.0:
        t += f", oblique {plane.tilt_deg:.0f}°"
    return t


def label_mask(array: np.ndarray, spec: Any) -> np.ndarray:
    """Boolean mask of the configured label values (``"nonzero"`` or a list of values)."""
    a = np.asarray(array)
    if spec == "nonzero" or spec is None:
        return a != 0
    return np.isin(a, np.asarray(list(spec)))


# --------------------------------------------------------------------------- study


def lesion_picture(
    grid: Volume,
    ct: np.ndarray | None,
    labels: np.ndarray,
    liver: np.ndarray | None,
    lesion: Mapping[str, Any],
    *,
    window: tuple[float, float] | None = None,
) -> Picture:
    """The axial slice of a lesion's LD: the whole slice, and a zoom with the calipers.

    The LD and SA are drawn exactly between ``ld_endpoints_mm`` and
    ``sa_endpoints_mm`` of the JSON (LPS voxel centres), mapped onto the slice
    ``slice_index`` of the LD axis. ``drawn`` holds, per caliper, the screen
    coordinates (mm), the continuous slice coordinate of each end point, and
    the PNG pixel of each end point in the zoom panel.
    """
    lid = int(lesion["id"])
    plane = Plane.of(grid, "axial", index=int(lesion["slice_index"]))
    this = plane.image(labels) == lid
    others = (plane.image(labels) != 0) & ~this
    liv = None if liver is None else plane.image(liver)
    ld = np.asarray(lesion["ld_endpoints_mm"], dtype=float)
    sa = None if lesion.get("sa_endpoints_mm") is None else np.asarray(lesion["sa_endpoints_mm"], dtype=float)
    ld_s = plane.to_screen(ld)
    sa_s = None if sa is None else plane.to_screen(sa)
    notes: list[str] = []
    off = float(np.max(np.abs(ld_s[:, 2] - plane.index)))
    if sa_s is not None:
        off = max(off, float(np.max(np.abs(sa_s[:, 2] - plane.index))))
    if off > 1e-3:
        notes.append(f"caliper end points lie {off:.3f} slices off the LD slice")

    fig = _figure(1000, 500)
    ax_full = fig.add_axes((0.005, 0.01, 0.49, 0.90))
    ax = fig.add_axes((0.505, 0.01, 0.49, 0.90))
    half = max(25.0, 0.8 * float(lesion["ld_mm"]) + 10.0)
    cx, cy = (ld_s[0, :2] + ld_s[1, :2]) / 2.0
    for a in (ax_full, ax):
        _background(a, plane, ct, window)
        if liv is not None:
            _contour(a, plane, liv, LIVER_COLOUR, lw=0.8)
        _contour(a, plane, others, OTHER_LESION_COLOUR, lw=0.8)
        _contour(a, plane, this, LESION_COLOUR, lw=1.4)
        _finish_view(a, plane)
    ax_full.add_patch(Rectangle((cx - half, cy - half), 2 * half, 2 * half, fill=False, ec=LD_COLOUR, lw=1.0))
    ax_full.set_title(_view_title(plane), fontsize=9)
    _zoom(ax, cx, cy, half)

    def caliper(pts, colour, name, length):
        ax.plot(pts[:, 0], pts[:, 1], color=colour, lw=1.6, solid_capstyle="butt", zorder=5)
        ax.plot(pts[:, 0], pts[:, 1], ls="none", marker="+", ms=11, mew=1.6, color=colour, zorder=6)
        d = pts[1, :2] - pts[0, :2]
        n = float(np.hypot(*d))
        u = d / n if n > 0 else np.array([1.0, 0.0])
        tx, ty = pts[1, :2] + u * 4.0
        ax.text(tx, ty, f"{name} {length:.1f} mm", color=colour, fontsize=9, fontweight="bold",
                ha="left" if u[0] >= 0 else "right", va="top" if u[1] >= 0 else "bottom", zorder=7, clip_on=True,
                bbox=dict(boxstyle="round,pad=0.15", fc="black", ec="none", alpha=0.6))

    caliper(ld_s, LD_COLOUR, "LD", float(lesion["ld_mm"]))
    if sa_s is not None:
        caliper(sa_s, SA_COLOUR, "SA", float(lesion["sa_mm"]))
    seg = lesion.get("segment")
    where = "extrahepatic" if lesion.get("location") == "extrahepatic" else f"segment {roman(seg)}"
    ax.set_title(f"lesion {lid}: LD {float(lesion['ld_mm']):.1f} mm, SA "
                 + ("-" if lesion.get("sa_mm") is None else f"{float(lesion['sa_mm']):.1f}")
                 + f" mm, {float(lesion['volume_ml']):.2f} mL, {where}", fontsize=9)
    fig.canvas.draw()
    drawn = {
        "lesion_id": lid,
        "view": plane.view,
        "slice_index": plane.index,
        "normal_axis": plane.normal_axis,
        "letters": list(plane.letters),
        "ld_screen_mm": ld_s[:, :2].tolist(),
        "ld_slice_coord": ld_s[:, 2].tolist(),
        "ld_png_px": _pixels(fig, ax, ld_s[:, :2]),
        "sa_screen_mm": None if sa_s is None else sa_s[:, :2].tolist(),
        "sa_png_px": None if sa_s is None else _pixels(fig, ax, sa_s[:, :2]),
        "ld_colour": list(LD_COLOUR),
        "sa_colour": list(SA_COLOUR),
        "notes": notes,
    }
    png = _png(fig, drawn=True)
    caption = (f"Lesion {lid}, axial slice {plane.index} of its longest diameter. Left: the whole slice (box: zoom). "
               "Right: lesion contour (red), other lesions (orange), liver (yellow); LD (cyan) and SA (magenta) drawn "
               "between the end points of measurements.json.")
    return Picture(f"lesion_{lid}", f"Lesion {lid}", caption, png, drawn)


def _centre_index(mask: np.ndarray | None, shape: Sequence[int]) -> np.ndarray:
    if mask is not None and np.any(mask):
        return np.argwhere(mask).mean(axis=0)
    return (np.asarray(shape) - 1) / 2.0


def overview_picture(
    grid: Volume,
    ct: np.ndarray | None,
    labels: np.ndarray,
    liver: np.ndarray | None,
    lesions: Sequence[Mapping[str, Any]],
    *,
    window: tuple[float, float] | None = None,
) -> Picture:
    """Coronal and axial mid-liver views with every lesion, coloured by Couinaud segment.

    The CT and the liver outline are the slices through the liver's centre; the
    lesions are their projection through the whole volume (so none is hidden),
    filled in the colour of their segment (grey: extrahepatic; white: no segment).
    Each view is cropped to the liver and the lesions.
    """
    from matplotlib.colors import to_rgba

    centre = _centre_index(liver if liver is not None else labels != 0, grid.shape)
    p = grid.index_to_lps(centre)
    colour = {}
    for les in lesions:
        if les.get("location") == "extrahepatic":
            colour[int(les["id"])] = EXTRAHEPATIC_COLOUR
        else:
            colour[int(les["id"])] = SEGMENT_COLOURS.get(str(les.get("segment")), UNASSIGNED_COLOUR)
    roi = labels != 0
    if liver is not None:
        roi = roi | (liver != 0)
    planes = [Plane.of(grid, view, point_lps=p) for view in ("coronal", "axial")]
    boxes = [_crop(pl, roi, 20.0) for pl in planes]
    fig, axes, legend_x = _row_figure([(b[1] - b[0]) / (b[3] - b[2]) for b in boxes], max_width_px=1150,
                                      panel_height_px=460, right_px=190)
    drawn: dict[str, Any] = {"centre_lps_mm": p.tolist(), "views": {}}
    for ax, plane, box in zip(axes, planes, boxes):
        _background(ax, plane, ct, window)
        if liver is not None:
            _contour(ax, plane, plane.image(liver), LIVER_COLOUR, lw=0.8)
        proj = plane.projection(labels)
        rgba = np.zeros(proj.shape + (4,))
        shown = []
        for lid, c in colour.items():
            m = proj == lid
            if not m.any():
                continue
            rgba[m] = to_rgba(c, 0.75)
            _contour(ax, plane, m, c, lw=1.2)
            shown.append(lid)
        ax.imshow(rgba, extent=plane.extent, origin="upper", interpolation="nearest")
        xc, yc = plane.centres()
        for lid in shown:
            rr, cc = np.nonzero(proj == lid)
            ax.text(xc[int(round(cc.mean()))], yc[int(rr.min())] - 2.0, str(lid), color="white", fontsize=8,
                    ha="center", va="bottom", fontweight="bold")
        _finish_view(ax, plane)
        _set_box(ax, box)
        ax.set_title(_view_title(plane, ", lesions projected"), fontsize=9)
        drawn["views"][plane.view] = {"slice_index": plane.index, "letters": list(plane.letters), "lesions": shown}
    handles = []
    segs_present = sorted({str(les.get("segment")) for les in lesions
                           if les.get("location") != "extrahepatic" and les.get("segment")},
                          key=lambda s: list(SEGMENT_COLOURS).index(s) if s in SEGMENT_COLOURS else 99)
    for s in segs_present:
        handles.append(Patch(color=SEGMENT_COLOURS.get(s, UNASSIGNED_COLOUR), label=f"segment {roman(s)}"))
    if any(les.get("location") != "extrahepatic" and not les.get("segment") for les in lesions):
        handles.append(Patch(fc=UNASSIGNED_COLOUR, ec="black", label="hepatic, no segment"))
    if any(les.get("location") == "extrahepatic" for les in lesions):
        handles.append(Patch(color=EXTRAHEPATIC_COLOUR, label="extrahepatic"))
    handles.append(Patch(fc="none", ec=LIVER_COLOUR, label="liver outline"))
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(legend_x, 0.95), fontsize=8, frameon=False,
               title="lesions by segment", title_fontsize=8)
    caption = ("Overview: coronal and axial CT slices through the liver's centre with the liver outline; every lesion "
               "is projected through the volume and filled in the colour of its Couinaud segment, labelled by id.")
    return Picture("overview", "Overview", caption, _png(fig), drawn)


def flr_picture(
    grid: Volume,
    ct: np.ndarray | None,
    segments: np.ndarray,
    names: Mapping[int, str],
    liver: np.ndarray | None,
    remnant_segments: Sequence[str],
    resected_segments: Sequence[str],
    *,
    remnant_mask: np.ndarray | None = None,
    window: tuple[float, float] | None = None,
) -> Picture:
    """The FLR plan: remnant segments in greens, resected segments in reds.

    A coronal slice through the liver's centre and three axial slices at 25, 50
    and 75 % of the liver's cranio-caudal extent, each segment labelled by its
    Roman numeral. With a remnant mask (non-anatomical plan) the remnant is the
    mask and the rest of the liver is resected; the segment outlines are drawn.
    """
    seg_mask = segments != 0
    liv = liver if liver is not None else seg_mask
    centre = _centre_index(liv, grid.shape)
    p = grid.index_to_lps(centre)
    rem = [str(s) for s in remnant_segments]
    res = [str(s) for s in resected_segments]
    colour_of: dict[int, str] = {}
    for v, name in names.items():
        if name in rem:
            colour_of[v] = REMNANT_SHADES[rem.index(name) % len(REMNANT_SHADES)]
        elif name in res:
            colour_of[v] = RESECTED_SHADES[res.index(name) % len(RESECTED_SHADES)]
    ax_plane = Plane.of(grid, "axial", point_lps=p)
    n_ax = grid.shape[ax_plane.normal_axis]
    idx = np.argwhere(np.any(liv, axis=tuple(a for a in range(3) if a != ax_plane.normal_axis))).ravel()
    lo, hi = (int(idx.min()), int(idx.max())) if idx.size else (0, n_ax - 1)
    levels = [int(round(lo + f * (hi - lo))) for f in (0.25, 0.5, 0.75)]
    planes = [Plane.of(grid, "coronal", point_lps=p)] + [Plane.of(grid, "axial", index=i) for i in levels]
    boxes = [_crop(pl, liv, 12.0) for pl in planes]
    fig, axes, _ = _row_figure([(b[1] - b[0]) / (b[3] - b[2]) for b in boxes], max_width_px=1200,
                               panel_height_px=360, bottom_px=30)
    from matplotlib.colors import to_rgba

    drawn: dict[str, Any] = {"views": []}
    for ax, plane, box in zip(axes, planes, boxes):
        _background(ax, plane, ct, window)
        sl = plane.image(segments)
        rgba = np.zeros(sl.shape + (4,))
        if remnant_mask is not None:
            rm = plane.image(remnant_mask) != 0
            lv = plane.image(liv) != 0
            rgba[lv & ~rm] = to_rgba(RESECTED_SHADES[0], 0.5)
            rgba[rm] = to_rgba(REMNANT_SHADES[0], 0.5)
        else:
            for v, c in colour_of.items():
                rgba[sl == v] = to_rgba(c, 0.55)
        ax.imshow(rgba, extent=plane.extent, origin="upper", interpolation="nearest")
        xc, yc = plane.centres()
        shown = []
        for v, name in names.items():
            m = sl == v
            if m.sum() < 30:
                continue
            _contour(ax, plane, m, "white", lw=0.5)
            rr, cc = np.nonzero(m)
            ax.text(xc[int(round(cc.mean()))], yc[int(round(rr.mean()))], roman(name), color="white", fontsize=8,
                    fontweight="bold", ha="center", va="center")
            shown.append(name)
        _finish_view(ax, plane)
        _set_box(ax, box)
        ax.set_title(_view_title(plane), fontsize=9)
        drawn["views"].append({"view": plane.view, "slice_index": plane.index, "letters": list(plane.letters),
                               "segments": shown})
    fig.legend(handles=[Patch(color=REMNANT_SHADES[0], label="remnant (kept)"),
                        Patch(color=RESECTED_SHADES[0], label="resected")],
               loc="lower center", ncol=2, fontsize=8, frameon=False)
    caption = ("FLR plan: remnant segments in greens, resected segments in reds (Roman numerals: Couinaud segments); "
               "coronal slice through the liver's centre and axial slices at 25, 50 and 75 % of its height.")
    return Picture("flr_plan", "FLR plan", caption, _png(fig), drawn)


def involvement_picture(value_pct: float, favourable_pct: float, milan_pct: float) -> Picture:
    """A 0-100 % bar with the involvement bands (< favourable, < Milan, above) and the value marked."""
    fig = _figure(700, 110)
    ax = fig.add_axes((0.03, 0.42, 0.94, 0.3))
    ax.axvspan(0, favourable_pct, color="#a6d96a")
    ax.axvspan(favourable_pct, milan_pct, color="#fee08b")
    ax.axvspan(milan_pct, 100, color="#f4a582")
    ax.axvline(value_pct, color="black", lw=2.5)
    ax.plot([value_pct], [1.0], marker="v", color="black", ms=9, clip_on=False)
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_xticks([0, favourable_pct, milan_pct, 100])
    ax.set_xticklabels(["0 %", f"{favourable_pct:g} %", f"{milan_pct:g} %", "100 %"], fontsize=8)
    for x0, x1, t in ((0, favourable_pct, "favourable"), (favourable_pct, milan_pct, "within Milan"),
                      (milan_pct, 100, "beyond Milan")):
        ax.text((x0 + x1) / 2, 0.5, t, ha="center", va="center", fontsize=8)
    ax.set_title(f"hepatic involvement {value_pct:.2f} %", fontsize=9)
    fig.canvas.draw()
    drawn = {"value_px": _pixels(fig, ax, [[value_pct, 0.5]])[0]}
    caption = (f"Hepatic involvement against its bands: < {favourable_pct:g} % (most cited favourable group), "
               f"< {milan_pct:g} % (Milan criteria), and above.")
    return Picture("involvement", "Involvement", caption, _png(fig, drawn=True), drawn)


# --------------------------------------------------------------------------- margin


def margin_picture(
    grid: Volume,
    ct: np.ndarray | None,
    tumor: np.ndarray,
    zone: np.ndarray,
    tumor_doc: Mapping[str, Any],
    surface_margins_mm: np.ndarray | None,
    threshold_mm: float,
    *,
    window: tuple[float, float] | None = None,
    zoom_mm: float = 40.0,
) -> Picture:
    """Axial, coronal and sagittal slices through the minimal-margin point with the tumor
    (red) and ablation-zone (green) contours and the point (cyan +), and the histogram of
    the surface margins with the 0 mm and threshold lines."""
    tid = int(tumor_doc["id"])
    pt = np.asarray(tumor_doc["min_margin_point_mm"], dtype=float)
    fig = _figure(1400, 400)
    drawn: dict[str, Any] = {"tumor_id": tid, "views": {}}
    axes = []
    for k, view in enumerate(("axial", "coronal", "sagittal")):
        ax = fig.add_axes((0.005 + 0.2 * k, 0.03, 0.195, 0.82))
        plane = Plane.of(grid, view, point_lps=pt)
        _background(ax, plane, ct, window)
        _contour(ax, plane, plane.image(zone), ZONE_COLOUR, lw=1.3)
        _contour(ax, plane, plane.image(tumor), TUMOR_COLOUR, lw=1.3)
        s = plane.to_screen(pt)
        ax.plot([s[0]], [s[1]], marker="+", color=POINT_COLOUR, ms=14, mew=2, zorder=6)
        _finish_view(ax, plane)
        _zoom(ax, float(s[0]), float(s[1]), zoom_mm)
        ax.set_title(_view_title(plane), fontsize=9)
        axes.append((ax, plane, s))
    ax = fig.add_axes((0.64, 0.16, 0.345, 0.69))
    if surface_margins_mm is not None and len(surface_margins_mm):
        m = np.asarray(surface_margins_mm, dtype=float)
        ax.hist(m, bins=min(40, max(10, int(math.sqrt(m.size)))), color="steelblue")
        drawn["histogram_n"] = int(m.size)
    else:
        ax.text(0.5, 0.5, "surface margins not available", ha="center", va="center", transform=ax.transAxes)
    ax.axvline(0.0, color="red", lw=1.2, label="0 mm")
    ax.axvline(threshold_mm, color="orange", lw=1.2, label=f"{threshold_mm:g} mm")
    ax.axvline(float(tumor_doc["min_margin_mm"]), color="black", lw=1, ls="--", label="minimal margin")
    ax.legend(fontsize=7, loc="upper right")
    ax.set_xlabel("surface margin (mm)", fontsize=8)
    ax.set_ylabel("tumor surface voxels", fontsize=8)
    ax.tick_params(labelsize=7)
    cls = tumor_doc.get("classification") or "not assessed"
    unc = ", uncertain" if tumor_doc.get("uncertain") else ""
    fig.suptitle(f"tumor {tid}: minimal margin {float(tumor_doc['min_margin_mm']):.1f} mm, coverage "
                 f"{float(tumor_doc['coverage_pct']):.1f} %: {cls}{unc}", fontsize=10)
    fig.canvas.draw()
    for vax, plane, s in axes:
        drawn["views"][plane.view] = {"slice_index": plane.index, "letters": list(plane.letters),
                                      "point_screen_mm": s[:2].tolist(), "point_slice_coord": float(s[2]),
                                      "point_png_px": _pixels(fig, vax, [s[:2]])[0]}
    caption = (f"Tumor {tid}: slices through the minimal-margin point (cyan +) with the tumor (red) and the ablation "
               f"zone carried into the pre scan (green); histogram of the signed margin at every tumor surface voxel "
               f"with the 0 mm and {threshold_mm:g} mm lines.")
    return Picture(f"margin_tumor_{tid}", f"Tumor {tid}", caption, _png(fig, drawn=True), drawn)


def registration_picture(
    grid: Volume,
    pre: np.ndarray,
    post_in_pre: np.ndarray,
    point_lps: Sequence[float],
    *,
    liver_pre: np.ndarray | None = None,
    liver_post_in_pre: np.ndarray | None = None,
    window: tuple[float, float] | None = None,
    tile_mm: float = 20.0,
) -> Picture:
    """Checkerboard of the pre scan and the registered post scan (tiles of ``tile_mm``),
    with the liver outlines of both (pre yellow, registered post cyan, dashed)."""
    w, lv = _window_of(window)
    planes = [Plane.of(grid, view, point_lps=point_lps) for view in ("axial", "coronal", "sagittal")]
    boxes = [_crop(pl, liver_pre, 20.0) for pl in planes]
    fig, axes, _ = _row_figure([(b[1] - b[0]) / (b[3] - b[2]) for b in boxes], max_width_px=1200,
                               panel_height_px=420)
    drawn: dict[str, Any] = {"views": {}}
    for ax, plane, box in zip(axes, planes, boxes):
        a = plane.image(pre).astype(float)
        b = plane.image(post_in_pre).astype(float)
        xc, yc = plane.centres()
        checker = ((np.floor(yc / tile_mm)[:, None] + np.floor(xc / tile_mm)[None, :]) % 2).astype(bool)
        img = np.where(checker, b, a)
        ax.imshow(img, cmap="gray", vmin=lv - w / 2, vmax=lv + w / 2, extent=plane.extent, origin="upper",
                  interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if liver_pre is not None:
            _contour(ax, plane, plane.image(liver_pre), LIVER_COLOUR, lw=1.0)
        if liver_post_in_pre is not None:
            _contour(ax, plane, plane.image(liver_post_in_pre), POINT_COLOUR, lw=1.0, ls="dashed")
        for xv in np.arange(math.ceil(xc[0] / tile_mm), math.floor(xc[-1] / tile_mm) + 1) * tile_mm:
            ax.axvline(xv - plane.pixel_mm[0] / 2, color="white", lw=0.4, alpha=0.3)
        for yv in np.arange(math.ceil(yc[0] / tile_mm), math.floor(yc[-1] / tile_mm) + 1) * tile_mm:
            ax.axhline(yv - plane.pixel_mm[1] / 2, color="white", lw=0.4, alpha=0.3)
        _finish_view(ax, plane)
        _set_box(ax, box)
        ax.set_title(_view_title(plane), fontsize=9)
        drawn["views"][plane.view] = {"slice_index": plane.index, "letters": list(plane.letters)}
    caption = (f"Registration check: checkerboard of the pre scan and the post scan registered onto it ({tile_mm:g} mm "
               "tiles; edges should continue across tiles), liver outlines of the pre scan (yellow) and of the "
               "registered post scan (cyan, dashed).")
    return Picture("registration", "Registration", caption, _png(fig), drawn)


# --------------------------------------------------------------------------- follow-up and cohort


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def sod_picture(timepoints: Sequence[Mapping[str, Any]], *, pr_decrease_pct: float = 30.0,
                pd_increase_pct: float = 20.0, pd_increase_min_mm: float = 5.0) -> Picture:
    """Target SoD over time with the PR line (-30 % from baseline), the PD lines (+20 % and
    +5 mm above the nadir before each time point; PD needs both), the nadir marked and
    each time point's response. The nadir of a time point is its ``nadir_mm`` when the
    file gives it, else the smallest SoD before it; thresholds as configured."""
    labels = [str(t.get("label")) for t in timepoints]
    sod = [_num(t.get("target_sod_mm")) for t in timepoints]
    x = np.arange(len(timepoints), dtype=float)
    fig = _figure(820, 420)
    ax = fig.add_axes((0.09, 0.14, 0.62, 0.76))
    ok = [i for i, v in enumerate(sod) if v is not None]
    ax.plot([x[i] for i in ok], [sod[i] for i in ok], "-o", color="black", lw=1.5, ms=5, label="target SoD")
    drawn: dict[str, Any] = {"x": x.tolist(), "sod_mm": sod}
    base = sod[0] if sod and sod[0] is not None else None
    if base is not None:
        ax.axhline((1 - pr_decrease_pct / 100.0) * base, color="#1a9850", ls="--", lw=1,
                   label=f"PR: -{pr_decrease_pct:g} % from baseline")
        drawn["pr_line_mm"] = (1 - pr_decrease_pct / 100.0) * base
    pd_pct, pd_mm = [], []
    for i in range(1, len(sod)):
        nad = _num(timepoints[i].get("nadir_mm"))
        if nad is None:
            prev = [v for v in sod[:i] if v is not None]
            if not prev:
                continue
            nad = min(prev)
        pd_pct.append((i, (1 + pd_increase_pct / 100.0) * nad))
        pd_mm.append((i, nad + pd_increase_min_mm))
    for pts, c, ls, lab in ((pd_pct, "#d73027", "--", f"PD: +{pd_increase_pct:g} % from nadir"),
                            (pd_mm, "#f46d43", ":", f"PD: +{pd_increase_min_mm:g} mm from nadir")):
        for j, (i, yv) in enumerate(pts):
            ax.plot([i - 0.45, i + 0.45], [yv, yv], color=c, ls=ls, lw=1.4, label=lab if j == 0 else None)
    drawn["pd20_mm"] = pd_pct
    drawn["pd5_mm"] = pd_mm
    nadir = None
    if ok:
        i_n = min(ok, key=lambda i: (sod[i], i))
        nadir = (i_n, sod[i_n])
        ax.plot([i_n], [sod[i_n]], marker="v", color="#2166ac", ms=11, ls="none", label="nadir", zorder=5)
    drawn["nadir"] = nadir
    ymax = max([v for v in sod if v is not None] + [y for _, y in pd_pct] + [0.0])
    for i, t in enumerate(timepoints):
        r = t.get("response")
        if r and sod[i] is not None:
            ax.annotate(str(r), (i, sod[i]), xytext=(0, 8), textcoords="offset points", ha="center", fontsize=9,
                        fontweight="bold", color=RESPONSE_COLORS_TEXT.get(r, "black"))
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=8, rotation=0 if len(labels) < 8 else 45)
    ax.set_xlim(-0.6, max(len(x) - 0.4, 0.6))
    ax.set_ylim(0, max(1.0, ymax * 1.15 + 6.0))
    ax.set_ylabel("sum of target diameters (mm)", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title("target SoD over time (RECIST 1.1)", fontsize=10)
    caption = (f"Sum of the baseline targets' diameters at each time point; PR line at -{pr_decrease_pct:g} % of "
               f"baseline; PD needs +{pd_increase_pct:g} % and +{pd_increase_min_mm:g} mm above the nadir before the "
               "time point (dashed and dotted steps), or a new lesion; nadir marked.")
    return Picture("sod_over_time", "SoD over time", caption, _png(fig), drawn)


RESPONSE_COLORS_TEXT = {"CR": "#1a9850", "PR": "#4d9221", "SD": "#8c6d00", "PD": "#d73027"}


def waterfall_picture(best: Sequence[tuple[str, float, str | None]]) -> Picture:
    """Waterfall of the best change of target SoD from baseline per patient, sorted,
    bars coloured by response, with the -30 % and +20 % lines."""
    rows = sorted(best, key=lambda r: -r[1])
    fig = _figure(900, 420)
    ax = fig.add_axes((0.09, 0.2, 0.75, 0.7))
    x = np.arange(len(rows))
    ax.bar(x, [r[1] for r in rows], color=[RESPONSE_COLOURS.get(r[2], "#bdbdbd") for r in rows], edgecolor="black",
           lw=0.4)
    ax.axhline(0, color="black", lw=0.8)
    ax.axhline(-30, color="#1a9850", ls="--", lw=1, label="-30 % (PR)")
    ax.axhline(20, color="#d73027", ls="--", lw=1, label="+20 % (PD)")
    ax.set_xticks(x)
    ax.set_xticklabels([r[0] for r in rows], rotation=90 if len(rows) > 12 else 45, fontsize=7, ha="center")
    ax.set_ylabel("best change of target SoD from baseline (%)", fontsize=8)
    ax.tick_params(labelsize=7)
    handles = [Patch(color=RESPONSE_COLOURS[k], label=k) for k in ("CR", "PR", "SD", "PD")]
    lines, labs = ax.get_legend_handles_labels()
    ax.legend(handles=handles + lines, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title("best response per patient", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    caption = ("Waterfall: per patient the largest decrease (or smallest increase) of the target SoD from baseline "
               "over the follow-up time points, coloured by the response at that time point.")
    return Picture("waterfall", "Waterfall", caption, _png(fig), {"order": [r[0] for r in rows]})


def spider_picture(series: Mapping[str, Sequence[tuple[str, float]]]) -> Picture:
    """Change of target SoD from baseline per patient over the time points, with -30/+20 % lines."""
    fig = _figure(900, 420)
    ax = fig.add_axes((0.09, 0.14, 0.75, 0.76))
    from matplotlib.ticker import MaxNLocator

    for patient, pts in series.items():
        ax.plot(range(len(pts)), [p[1] for p in pts], "-o", ms=3, lw=1, label=str(patient))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.axhline(-30, color="#1a9850", ls="--", lw=1)
    ax.axhline(20, color="#d73027", ls="--", lw=1)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("time point (0 = baseline)", fontsize=8)
    ax.set_ylabel("change of target SoD from baseline (%)", fontsize=8)
    ax.tick_params(labelsize=7)
    if len(series) <= 20:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(alpha=0.3)
    ax.set_title("change from baseline per patient", fontsize=10)
    caption = "Spider plot: change of the target SoD from baseline at each time point, one line per patient."
    return Picture("spider", "Spider plot", caption, _png(fig), {"patients": list(series)})


def km_picture(survival: Mapping[str, Any]) -> Picture:
    """Kaplan-Meier curves per group (step functions), with the log-rank p and the hazard ratio."""
    fig = _figure(760, 420)
    ax = fig.add_axes((0.09, 0.13, 0.87, 0.78))
    groups = survival.get("groups") or {}
    colours = {"high": "#d73027", "low": "#4575b4"}
    drawn: dict[str, Any] = {"groups": []}
    for name, g in groups.items():
        t = [_num(v) for v in g.get("time", [])]
        s = [_num(v) for v in g.get("survival", [])]
        pts = [(a, b) for a, b in zip(t, s) if a is not None and b is not None]
        if not pts:
            continue
        tt = [0.0] + [a for a, _ in pts] if pts[0][0] != 0.0 else [a for a, _ in pts]
        ss = [1.0] + [b for _, b in pts] if pts[0][0] != 0.0 else [b for _, b in pts]
        n = g.get("n")
        lab = f"{name} remnant burden" if name in colours else str(name)
        if n is not None:
            lab += f" (n={n}" + (f", {g['events']} events" if g.get("events") is not None else "") + ")"
        ax.step(tt, ss, where="post", color=colours.get(name), lw=1.6, label=lab)
        drawn["groups"].append(str(name))
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlim(left=0)
    ax.set_xlabel("time (months)", fontsize=9)
    ax.set_ylabel("overall survival", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    txt = []
    if _num(survival.get("logrank_p")) is not None:
        txt.append(f"log-rank p = {float(survival['logrank_p']):.3g}")
    if _num(survival.get("hazard_ratio")) is not None:
        txt.append(f"HR = {float(survival['hazard_ratio']):.2f}")
    ax.legend(fontsize=8, loc="lower left", frameon=True, framealpha=0.9,
              title=", ".join(txt) if txt else None, title_fontsize=8)
    ax.set_title("Kaplan-Meier", fontsize=10)
    caption = "Kaplan-Meier survival by remnant tumor burden group" + (f" ({', '.join(txt)})." if txt else ".")
    return Picture("kaplan_meier", "Kaplan-Meier", caption, _png(fig), drawn)
