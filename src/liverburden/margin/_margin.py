"""3-D ablation margin per tumor on one voxel grid (``clinical-reference.md`` 4).

Point convention (so two implementations agree): the tumor surface is the set
of tumor voxels with at least one 6-neighbour outside the tumor (outside the
array counts as outside); the margin at a surface voxel is the signed
Euclidean distance of the zone at its centre, with anisotropic spacing: inside
the zone, the distance to the nearest voxel centre outside the zone; outside,
minus the distance to the nearest voxel centre inside it. Only voxel centres
inside the array count (as scipy's ``distance_transform_edt`` on the array).

Speed: the tumors come from one run-length scan of the tumor array; the zone is
read only near each tumor. A tumor's surface, volume and coverage come from its
runs. Its margins need the zone's signed distance at the surface voxels only:
the exact separable EDT (``kernels._margin_box._sq_dist_at``) is restricted to
the lines through those voxels, over a box that holds, around each surface
voxel, the ball of radius U, U being the distance to the other side of the
zone boundary straight along one of the six axis directions (an upper bound of
its margin), searched within the tumor's box grown by the larger of the VIC
range and twice the threshold. A margin read in a box is exact when the ball of
that radius around the surface voxel lies inside the box (or the box meets the
array edge there); otherwise the tumor's box is doubled and the tumor measured
again, so results are exact whatever the box. VIC and the subcapsular distance
use the tumor's box.
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
from ..kernels import _margin_box as _MB
from ..kernels._tiered import tiered as _wrap

# the install's ahead-of-time build where a call fits it, else the JIT (``kernels._tiered``);
# wrapped here, not in _margin_box: there the kernels also call each other as numba code
_margin_stats, _nearest_feature, _side_margins, _sq_dist_at, _tumor_surface, _vic_box = (
    _wrap(_MB._margin_stats), _wrap(_MB._nearest_feature), _wrap(_MB._side_margins), _wrap(_MB._sq_dist_at),
    _wrap(_MB._tumor_surface), _wrap(_MB._vic_box))


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
    liver_u = liver_lut = None
    sub_mm = 0.0
    if liver is not None:
        lv = np.asarray(liver)
        if lv.shape != t.shape:
            raise GeometryError(f"liver shape {lv.shape} differs from tumor shape {t.shape}")
        sub_mm = float(mc["subcapsular_exclusion_mm"])
        if sub_mm > 0:  # non-zero is liver; read in place (whole-array pass only for other dtypes)
            if lv.dtype in (np.bool_, np.uint8, np.uint16):
                liver_u = np.ascontiguousarray(lv).view(np.uint8) if lv.dtype == np.bool_ else np.ascontiguousarray(lv)
            else:
                liver_u = (lv != 0).view(np.uint8)
            liver_lut = np.ones(lut_size(liver_u), dtype=np.uint8)
            liver_lut[0] = 0
    seg_u = None if segments is None else as_label_array(np.asarray(segments), "segment map")

    vic_max = int(mc["vic_max_mm"]) if vic else 0
    base_r = max(float(vic_max), 2.0 * thr, sub_mm) + float(sp.max())
    warnings: list[str] = []
    out = []
    for g in range(G.n):
        idx = G.order[G.starts[g] : G.starts[g + 1]]
        truns = runs[idx]
        tid = int(G.ids[g])
        if G.components[g] > 1:
            warnings.append(f"tumor {tid} has {int(G.components[g])} components")
        # the surface and coverage read the zone at the tumor's voxels only
        tumor = _tumor_surface(z_u, zone_lut, truns)
        r = base_r
        whole = float(np.max(np.asarray(t_u.shape) * sp))  # a box this large is the whole array
        while True:
            res = _one_tumor(truns, tumor, tid, z_u, zone_lut, liver_u, liver_lut, seg_u, sp, geo, thr, r, vic_max,
                             sub_mm, unc, classify, int(G.components[g]))
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


def _one_tumor(truns, tumor, tid, z_u, zone_lut, liver_u, liver_lut, seg_u, sp, geo, thr, r_mm, vic_max, sub_mm, unc,
               classify, ncomp):
    """Margins of one tumor in its box grown by ``r_mm``: a TumorMargin, None when
    the box is too small for exact margins, "no-zone" when the box holds no zone voxel."""
    surf, inside, n_vox, covered = tumor
    shape = np.array(z_u.shape, dtype=np.int64)
    pad = np.ceil(r_mm / sp).astype(np.int64)
    lo = np.maximum(surf.min(axis=0) - pad, 0)  # the surface holds every extreme voxel of the tumor
    hi = np.minimum(surf.max(axis=0) + pad, shape - 1)
    n_in = int(np.count_nonzero(inside))
    n_s = surf.shape[0]
    # The zone's exact EDT, read at the surface voxels only, over a box that holds the
    # ball of radius U around each of them (U: the distance to the other side of the
    # zone boundary straight along an axis, an upper bound of the margin)
    if n_in == n_s:  # inside the zone: to the nearest voxel outside it
        margins, status = _side_margins(z_u, zone_lut, False, surf, lo, hi, sp)
        if status:
            return None
    elif n_in == 0:  # outside: to the nearest zone voxel, negative
        margins, status = _side_margins(z_u, zone_lut, True, surf, lo, hi, sp)
        if status:
            return "no-zone" if status == 1 else None
        margins = -margins
    else:
        margins = np.empty(n_s, dtype=np.float64)
        m_out, status = _side_margins(z_u, zone_lut, True, surf[~inside], lo, hi, sp)
        if status:
            return "no-zone" if status == 1 else None
        m_in, status = _side_margins(z_u, zone_lut, False, surf[inside], lo, hi, sp)
        if status:
            return None
        margins[~inside] = -m_out
        margins[inside] = m_in

    sub = None
    if sub_mm > 0:
        d_cap = np.sqrt(_sq_dist_at(liver_u, liver_lut, lo, hi - lo + 1, False, surf, sp))
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
    if sub is None:
        m = margins
        s_idx = surf
    else:
        m = margins[keep]
        s_idx = surf[keep]
    # the first minimum in C order; quartiles as np.percentile(m, [25, 50, 75])
    k, q25, q50, q75, n_neg, n_mid, n_hi = _margin_stats(m, thr)
    min_m = float(m[k])
    p_glob = s_idx[k]
    # direction to the nearest feature voxel of the box (outside the zone if inside,
    # inside if outside); every voxel at the nearest distance lies within |min_m| + 1 voxel per axis
    reach = np.ceil(abs(min_m) / sp).astype(np.int64) + 1
    fj = _nearest_feature(z_u, zone_lut, lo, hi, min_m <= 0, p_glob, sp, reach)
    vec = (fj - p_glob) * sp
    lps_vec = geo.direction @ vec
    nrm = float(np.linalg.norm(lps_vec))
    direction = tuple(float(v) for v in lps_vec / nrm) if nrm > 0 else None

    cov = 100.0 * covered / n_vox
    voxel_ml = float(np.prod(sp)) / 1000.0
    vic_ml: dict[str, float] = {}
    vic_ml["0"] = float(n_vox - covered) * voxel_ml  # VIC_0: tumor outside the zone
    if vic_max > 0:
        counts = _vic_box(z_u, zone_lut, truns, int(lo[0]), int(lo[1]), int(lo[2]), int(hi[0] - lo[0] + 1),
                          int(hi[1] - lo[1] + 1), int(hi[2] - lo[2] + 1), sp, vic_max)
        for kk in range(1, vic_max + 1):
            vic_ml[str(kk)] = float(counts[kk]) * voxel_ml
    n_m = m.shape[0]
    frac = {
        "below_0": n_neg / n_m,
        "from_0_to_threshold": n_mid / n_m,
        "at_least_threshold": n_hi / n_m,
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
        margin_quartiles_mm=(float(q25), float(q50), float(q75)),
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
