"""3-D ablation margin per tumor on one voxel grid (``clinical-reference.md`` 4).

Point convention (so two implementations agree): the tumor surface is the set
of tumor voxels with at least one 6-neighbour outside the tumor (outside the
array counts as outside); the margin at a surface voxel is the signed
Euclidean distance of the zone at its centre, with anisotropic spacing: inside
the zone, the distance to the nearest voxel centre outside the zone; outside,
minus the distance to the nearest voxel centre inside it. Only voxel centres
inside the array count (as scipy's ``distance_transform_edt`` on the array).

Speed: each tumor is measured in a box around it, grown by the larger of the
VIC range and twice the threshold. A margin read in a box is exact when the
ball of that radius around the surface voxel lies inside the box (or the box
meets the array edge there); otherwise the box is doubled and the tumor
measured again, so results are exact whatever the box.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .. import kernels as K
from .._exceptions import GeometryError, MaskError
from ..config import resolve_config
from ..geometry import Volume
from ..measure._components import group_runs
from ..measure._labels import as_label_array, lut_size
from ..measure._measure import _value_lut
from ..kernels._edt import INF, _sq_edt, _surface_voxels


class Classification(str, enum.Enum):
    """Ablation result (Putzer et al. 2020): A0 complete with >= threshold margin all
    around; A1 complete with a smaller margin; A2 incomplete (tumor outside the zone)."""

    A0 = "A0"
    A1 = "A1"
    A2 = "A2"


@dataclass(frozen=True)
class TumorMargin:
    id: int
    volume_ml: float
    voxel_count: int
    surface_voxels: int
    min_margin_mm: float
    margin_quartiles_mm: tuple[float, float, float]
    surface_fraction: dict[str, float]
    coverage_pct: float
    vic_ml: dict[str, float]
    min_margin_point_mm: tuple[float, float, float]
    min_margin_index: tuple[int, int, int]
    min_margin_direction: tuple[float, float, float] | None
    min_margin_segment: str | None
    classification: Classification | None
    uncertain: bool
    uncertainty_mm: float
    components: int
    subcapsular: dict[str, Any] | None = None
    surface_margins_mm: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "volume_ml": self.volume_ml,
            "voxel_count": self.voxel_count,
            "surface_voxels": self.surface_voxels,
            "min_margin_mm": self.min_margin_mm,
            "margin_quartiles_mm": list(self.margin_quartiles_mm),
            "surface_fraction": dict(self.surface_fraction),
            "coverage_pct": self.coverage_pct,
            "vic_ml": dict(self.vic_ml),
            "min_margin_point_mm": list(self.min_margin_point_mm),
            "min_margin_index": list(self.min_margin_index),
            "min_margin_direction": None if self.min_margin_direction is None else list(self.min_margin_direction),
            "min_margin_segment": self.min_margin_segment,
            "classification": None if self.classification is None else self.classification.value,
            "uncertain": self.uncertain,
            "uncertainty_mm": self.uncertainty_mm,
            "components": self.components,
            "subcapsular": self.subcapsular,
        }


@dataclass(frozen=True)
class MarginResult:
    tumors: tuple[TumorMargin, ...]
    threshold_mm: float
    warnings: tuple[str, ...]
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold_mm": self.threshold_mm,
            "tumors": [t.to_dict() for t in self.tumors],
            "warnings": list(self.warnings),
        }


def margins_arrays(
    tumor: np.ndarray,
    zone: np.ndarray,
    spacing_mm: Any,
    direction: Any = None,
    origin_mm: Any = None,
    liver: np.ndarray | None = None,
    config: Mapping[str, Any] | str | None = None,
    *,
    segments: np.ndarray | None = None,
    registration_error_mm: float | None = None,
    classify: bool = True,
    vic: bool = True,
) -> MarginResult:
    """Per-tumor 3-D margins against the union of ablation zones, on one grid.

    Parameters
    ----------
    tumor : ndarray (slice, row, col)
        Tumor mask: binary (components are tumors) or instance labels.
    zone : ndarray, same shape
        Ablation zone mask; every non-zero voxel is zone (their union).
    spacing_mm, direction, origin_mm : grid geometry, as in ``measure_arrays``.
    liver : ndarray, optional
        Liver mask, for the subcapsular exclusion (config ``margin.subcapsular_exclusion_mm``).
    segments : ndarray, optional
        Couinaud map: names the segment of the minimal-margin point.
    registration_error_mm : float, optional
        e_reg of the uncertainty; default ``margin.default_registration_error_mm``.
    classify : bool
        False gives ``classification = None`` (a failed registration: not assessed).
    vic : bool
        Compute the volumes of insufficient coverage VIC_0..VIC_max.

    Returns
    -------
    MarginResult
        ``min_margin_mm`` (signed), quartiles over the surface voxels, surface
        fractions below 0 / from 0 to the threshold / at least the threshold,
        ``coverage_pct``, ``vic_ml`` ("0".."10": tumor dilated by k mm minus the
        zone, Kaye et al. 2019), the minimal-margin point, A0/A1/A2 and
        ``uncertain`` when the margin is within ``uncertainty_mm`` of 0 or of
        the threshold, ``uncertainty_mm = sqrt(e_reg^2 + (0.5 x largest spacing)^2)``.

    Raises
    ------
    MaskError
        Empty tumor or zone mask.
    """
    cfg = resolve_config(config)
    mc = cfg["margin"]
    t = np.asarray(tumor)
    z = np.asarray(zone)
    if t.ndim != 3 or t.shape != z.shape:
        raise GeometryError(f"tumor shape {t.shape} and zone shape {z.shape} must be equal and 3-D")
    geo = Volume(t, spacing_mm, (0.0, 0.0, 0.0) if origin_mm is None else origin_mm,
                 np.eye(3) if direction is None else direction, source="arrays")
    t_u = as_label_array(t, "tumor mask")
    z_u = as_label_array(z, "ablation zone mask")
    sp = np.asarray(geo.spacing_mm, dtype=np.float64)
    thr = float(mc["threshold_mm"])
    e_reg = float(mc["default_registration_error_mm"] if registration_error_mm is None else registration_error_mm)
    unc = math.sqrt(e_reg**2 + (0.5 * float(sp.max())) ** 2)

    # tumors: run table over the tumor array only (the zone is read only near tumors)
    t_lut = np.zeros(lut_size(t_u), dtype=np.uint8)
    e_lut = np.zeros(lut_size(t_u), dtype=np.int64)
    e_lut[1:] = np.arange(1, lut_size(t_u))
    runs, _, _, _, _ = K.scan_runs(None, t_u, t_lut, e_lut, 0, t_u.shape[0])
    if runs.shape[0] == 0:
        raise MaskError("tumor mask is empty")
    zone_lut = _value_lut(cfg["labels"]["zone"], lut_size(z_u), ids=False)
    zone_spec = cfg["labels"]["zone"]

    def _zone_empty() -> bool:  # read the whole zone only when a tumor box has none of it
        return not (np.any(z_u) if zone_spec == "nonzero" else np.any(zone_lut[z_u]))

    G = group_runs(runs, t_u.shape[:2], cfg["labels"]["lesion_mode"], int(cfg["lesions"]["connectivity"]))
    liver_b = None if liver is None else np.asarray(liver) != 0
    if liver_b is not None and liver_b.shape != t.shape:
        raise GeometryError(f"liver shape {liver_b.shape} differs from tumor shape {t.shape}")
    seg_u = None if segments is None else as_label_array(np.asarray(segments), "segment map")

    vic_max = int(mc["vic_max_mm"]) if vic else 0
    sub_mm = float(mc["subcapsular_exclusion_mm"]) if liver_b is not None else 0.0
    base_r = max(float(vic_max), 2.0 * thr, sub_mm) + float(sp.max())
    warnings: list[str] = []
    out = []
    for g in range(G.n):
        idx = G.order[G.starts[g] : G.starts[g + 1]]
        truns = runs[idx]
        tid = int(G.ids[g])
        if G.components[g] > 1:
            warnings.append(f"tumor {tid} has {int(G.components[g])} components")
        r = base_r
        whole = float(np.max(np.asarray(t_u.shape) * sp))  # a box this large is the whole array
        while True:
            res = _one_tumor(truns, tid, z_u, zone_lut, liver_b, seg_u, sp, geo, thr, r, vic_max, sub_mm,
                             unc, classify, int(G.components[g]))
            if isinstance(res, str):  # no zone voxel in this tumor's box
                if _zone_empty():
                    raise MaskError("ablation zone mask is empty")
                res = None
            if res is not None:
                out.append(res)
                break
            if r > whole:
                raise MaskError(
                    f"tumor {tid}: no voxel on the other side of the ablation-zone boundary in the whole array "
                    "(the zone covers the whole field of view): the margin cannot be measured"
                )
            r *= 2.0
    return MarginResult(tuple(out), thr, tuple(warnings), cfg)


def _one_tumor(truns, tid, z_u, zone_lut, liver_b, seg_u, sp, geo, thr, r_mm, vic_max, sub_mm, unc, classify, ncomp):
    shape = np.array(z_u.shape)
    lo_t = np.array([truns[:, K.RUN_Z].min(), truns[:, K.RUN_Y].min(), truns[:, K.RUN_X0].min()])
    hi_t = np.array([truns[:, K.RUN_Z].max(), truns[:, K.RUN_Y].max(), truns[:, K.RUN_X1].max()])
    pad = np.ceil(r_mm / sp).astype(np.int64)
    lo = np.maximum(lo_t - pad, 0)
    hi = np.minimum(hi_t + pad, shape - 1)
    box = tuple(slice(int(lo[a]), int(hi[a]) + 1) for a in range(3))
    bshape = tuple(int(hi[a] - lo[a] + 1) for a in range(3))
    tb = np.zeros(bshape, dtype=np.uint8)
    K._paint_runs(tb, truns, np.ones(truns.shape[0], dtype=np.int64), int(lo[0]), int(lo[1]), int(lo[2]))
    tb = tb.astype(bool)
    zb = zone_lut[z_u[box]].astype(bool)

    if not zb.any():
        return "no-zone"
    # surface: tumor voxels with a 6-neighbour outside the tumor. The box is cut only
    # by the array edge, where the missing neighbour is outside too.
    surf = _surface_voxels(tb)
    inside = zb[surf[:, 0], surf[:, 1], surf[:, 2]]
    margins = np.empty(surf.shape[0], dtype=np.float64)
    if inside.any():
        d_out = _sq_edt(~zb, sp)
        v = d_out[surf[inside, 0], surf[inside, 1], surf[inside, 2]]
        margins[inside] = np.sqrt(v)
        if np.any(v >= INF):
            return None
    if (~inside).any():
        d_in = _sq_edt(zb, sp)
        v = d_in[surf[~inside, 0], surf[~inside, 1], surf[~inside, 2]]
        if np.any(v >= INF):
            return None
        margins[~inside] = -np.sqrt(v)
    # exactness: the ball of radius |m| around each surface voxel must lie in the box
    # (or the box must meet the array edge on that side)
    reach = np.abs(margins)[:, None] / sp[None, :]
    gl = surf + lo[None, :]
    short_lo = (gl - reach < lo[None, :]) & (lo[None, :] > 0)
    short_hi = (gl + reach > hi[None, :]) & (hi[None, :] < shape[None, :] - 1)
    if np.any(short_lo | short_hi):
        return None

    sub = None
    keep = np.ones(surf.shape[0], dtype=bool)
    if sub_mm > 0 and liver_b is not None:
        lb = liver_b[box]
        d_cap = np.sqrt(_sq_edt(~lb, sp))[surf[:, 0], surf[:, 1], surf[:, 2]]
        excl = d_cap <= sub_mm
        keep = ~excl
        sub = {
            "exclusion_mm": sub_mm,
            "excluded_surface_fraction": float(excl.mean()),
            "excluded_min_margin_mm": float(margins[excl].min()) if excl.any() else None,
        }
        if not keep.any():
            keep = np.ones_like(keep)
            sub["note"] = "the whole surface is subcapsular; statistics use every surface voxel"
    m = margins[keep]
    s_idx = surf[keep]
    k = int(np.argmin(m))  # argwhere is C order: ties go to the first voxel in C order
    min_m = float(m[k])
    p_box = s_idx[k]
    p_glob = p_box + lo
    # direction to the nearest feature voxel (outside the zone if inside, inside if outside)
    feat = ~zb if min_m > 0 else zb
    fi = np.argwhere(feat)
    d2 = np.sum(((fi - p_box[None, :]) * sp[None, :]) ** 2, axis=1)
    j = int(np.argmin(d2))
    vec = (fi[j] - p_box) * sp
    lps_vec = geo.direction @ vec
    nrm = float(np.linalg.norm(lps_vec))
    direction = tuple(float(v) for v in lps_vec / nrm) if nrm > 0 else None

    n_vox = int(tb.sum())
    covered = int((tb & zb).sum())
    cov = 100.0 * covered / n_vox
    voxel_ml = float(np.prod(sp)) / 1000.0
    vic_ml: dict[str, float] = {}
    vic_ml["0"] = float(n_vox - covered) * voxel_ml  # VIC_0: tumor outside the zone
    if vic_max > 0:
        d_t = _sq_edt(tb, sp)
        for kk in range(1, vic_max + 1):
            dil = d_t <= kk * kk + 1e-9
            vic_ml[str(kk)] = float(np.count_nonzero(dil & ~zb)) * voxel_ml
    q = np.percentile(m, [25, 50, 75])
    frac = {
        "below_0": float(np.mean(m < 0)),
        "from_0_to_threshold": float(np.mean((m >= 0) & (m < thr))),
        "at_least_threshold": float(np.mean(m >= thr)),
        "threshold_mm": thr,
    }
    cls = None
    if classify:
        if covered < n_vox:
            cls = Classification.A2
        elif min_m >= thr:
            cls = Classification.A0
        else:
            cls = Classification.A1
    uncertain = bool(classify and (abs(min_m - thr) <= unc or abs(min_m) <= unc))
    seg_name = None
    if seg_u is not None:
        v = int(seg_u[tuple(p_glob)])
        seg_name = str(v) if v else None
    return TumorMargin(
        id=tid,
        volume_ml=n_vox * voxel_ml,
        voxel_count=n_vox,
        surface_voxels=int(surf.shape[0]),
        min_margin_mm=min_m,
        margin_quartiles_mm=(float(q[0]), float(q[1]), float(q[2])),
        surface_fraction=frac,
        coverage_pct=cov,
        vic_ml=vic_ml,
        min_margin_point_mm=tuple(float(v) for v in geo.index_to_lps(p_glob)),  # type: ignore[arg-type]
        min_margin_index=tuple(int(v) for v in p_glob),  # type: ignore[arg-type]
        min_margin_direction=direction,  # type: ignore[arg-type]
        min_margin_segment=seg_name,
        classification=cls,
        uncertain=uncertain,
        uncertainty_mm=unc,
        components=ncomp,
        subcapsular=sub,
        surface_margins_mm=margins,
    )
