"""The summary picture sent as Secondary Capture: key numbers and one annotated
slice per lesion (its LD slice, lesion contour, LD and SA calipers).

The picture carries numbers only, never an identifier: the patient and study
identity live in the DICOM header, where the PACS files it.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

__all__ = ["summary_image"]


def _fmt(v: float | None, unit: str, digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{digits}f} {unit}"


def summary_lines(doc: Mapping[str, Any], margin: Mapping[str, Any] | None) -> list[str]:
    liver = doc["liver"]
    sod = doc["sum_diameters"]
    lines = [
        f"liverburden {doc['software']['version']}: automated measurement from the study's segmentations",
        f"{doc['lesion_count']} lesion(s)   liver (TLV) {_fmt(liver['volume_ml'], 'mL')}   "
        f"tumor {_fmt(liver['tumor_volume_ml'], 'mL', 2)}   involvement {_fmt(liver['involvement_pct'], '%', 2)}",
        f"sum of diameters: all {_fmt(sod['all_mm'], 'mm')}, RECIST 1.1 targets {_fmt(sod['recist_mm'], 'mm')} "
        f"(targets {', '.join(str(i) for i in doc['recist_target_ids']) or 'none'})",
    ]
    if liver.get("truncated"):
        lines.append("liver truncated by the field of view: volumes are underestimates")
    flr = doc.get("flr")
    if flr:
        s = flr.get("sflr_pct") or {}
        sv = s.get("vauthey") if isinstance(s, dict) else None
        lines.append(f"FLR {_fmt(flr['flr_ml'], 'mL')} ({_fmt(flr['flr_pct'], '%')}"
                     + (f", sFLR {sv:.1f} %" if sv is not None else "") + "): "
                     + ("adequate" if flr["adequate"] else "NOT adequate"))
    if margin:
        parts = [f"{t['id']}: {t['classification'] or 'not assessed'} (min {t['min_margin_mm']:.1f} mm)"
                 for t in margin.get("tumors", [])]
        lines.append(f"ablation margins (threshold {margin['threshold_mm']:g} mm): " + "; ".join(parts))
    return lines


def summary_image(doc: Mapping[str, Any], margin: Mapping[str, Any] | None, image: Any, labels: np.ndarray,
                  *, max_panels: int = 12, columns: int = 4, dpi: int = 100) -> np.ndarray:
    """Render the summary as an (rows, cols, 3) uint8 RGB array.

    ``image`` is the measured :class:`~liverburden.geometry.Volume` (with pixels)
    or None (text only); ``labels`` the lesion instance map on its grid.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from ..report._views import OrientedVolume, show

    lesions = list(doc["lesions"])[:max_panels] if image is not None else []
    n = len(lesions)
    rows = math.ceil(n / columns) if n else 0
    text = summary_lines(doc, margin)
    if len(doc["lesions"]) > n and image is not None:
        text.append(f"{len(doc['lesions']) - n} more lesion(s) in the SR and SEG")
    head_in = 0.35 * (len(text) + 1)
    fig = Figure(figsize=(3.2 * columns, head_in + 3.2 * rows), dpi=dpi, facecolor="black")
    top = 1.0 - head_in / (head_in + 3.2 * rows)
    for k, line in enumerate(text):
        fig.text(0.01, 1.0 - (k + 0.8) * 0.35 / (head_in + 3.2 * rows), line, color="white", fontsize=11,
                 family="monospace", va="center")
    if n:
        ov = OrientedVolume(image)
        gs = fig.add_gridspec(rows, columns, left=0.01, right=0.99, bottom=0.01, top=top - 0.01, wspace=0.04,
                              hspace=0.12)
        for k, les in enumerate(lesions):
            ax = fig.add_subplot(gs[k // columns, k % columns])
            p1, p2 = (np.asarray(p, dtype=float) for p in les["ld_endpoints_mm"])
            centre = (p1 + p2) / 2.0
            mask = OrientedVolume(image, (labels == int(les["id"])).astype(np.uint8))
            show(ax, ov, "axial", centre, masks=[(mask, "red")])
            for pts, colour in ((les["ld_endpoints_mm"], "yellow"), (les["sa_endpoints_mm"], "cyan")):
                if pts is None:
                    continue
                xy = [OrientedVolume.plane_xy("axial", p) for p in pts]
                ax.plot([xy[0][0], xy[1][0]], [xy[0][1], xy[1][1]], color=colour, lw=1.5, marker="+")
            half = max(15.0, 0.8 * float(les["ld_mm"]))
            cx, cy = OrientedVolume.plane_xy("axial", centre)
            ax.set_xlim(cx - half, cx + half)
            ax.set_ylim(cy + half, cy - half)
            ax.set_title(f"lesion {les['id']}: LD {les['ld_mm']:.1f} mm, SA {les['sa_mm']:.1f} mm, "
                         f"{les['volume_ml']:.2f} mL", color="white", fontsize=8)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    rgb = np.ascontiguousarray(rgba[..., :3])
    h, w = rgb.shape[:2]
    return rgb[: h - h % 2, : w - w % 2]  # even sizes for codecs
