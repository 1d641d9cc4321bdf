"""Liver anatomy and the future liver remnant (``clinical-reference.md`` 2-3,
``conventions.md`` "Anatomy and FLR").

Everything is counted on the voxel grid: the total liver volume TLV is the
liver mask union the hepatic lesions; a voxel belongs to the segment its
segment-map value names; liver voxels with no segment are ``unassigned``
(reported, warned, never counted in the FLR). Contiguity is measured as shared
face area between segment masks, never read from an anatomical table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .. import kernels as K
from .._exceptions import ConfigError, InputError, MaskError

SEGMENT_KEYS = ("1", "2", "3", "4", "4a", "4b", "5", "6", "7", "8")
RIGHT = ("5", "6", "7", "8")
LEFT = ("2", "3", "4", "4a", "4b")
CAUDATE = ("1",)

#: Named resection plans (issue "Liver anatomy"): the segments each removes.
NAMED_PLANS: dict[str, tuple[str, ...]] = {
    "right-hepatectomy": ("5", "6", "7", "8"),
    "left-hepatectomy": ("2", "3", "4"),
    "extended-right": ("4", "5", "6", "7", "8"),
    "extended-left": ("2", "3", "4", "5", "8"),
    "left-lateral": ("2", "3"),
}

_ROMAN = {"i": "1", "ii": "2", "iii": "3", "iv": "4", "iva": "4a", "ivb": "4b", "v": "5", "vi": "6", "vii": "7", "viii": "8"}


def lobe_of(seg: str) -> str:
    if seg in RIGHT:
        return "right"
    if seg in LEFT:
        return "left"
    return "caudate"


def parse_plan(text: str) -> tuple[str, tuple[str, ...]]:
    """``"5,6,7,8"``, ``"V-VIII"``-free lists, or a named plan -> (name, segments).

    Raises
    ------
    ConfigError
        An unknown plan name or segment.
    """
    t = text.strip().lower()
    if t in NAMED_PLANS:
        return t, NAMED_PLANS[t]
    segs = []
    for part in t.replace(";", ",").split(","):
        p = part.strip()
        if not p:
            continue
        p = _ROMAN.get(p, p)
        if p not in SEGMENT_KEYS:
            raise ConfigError(
                f"--resect: unknown segment '{part.strip()}' (segments 1..8, 4a/4b, roman I..VIII; "
                f"or a plan: {', '.join(NAMED_PLANS)})"
            )
        segs.append(p)
    if not segs:
        raise ConfigError("--resect: no segment given")
    return "custom", tuple(dict.fromkeys(segs))


def bsa_mosteller(height_cm: float, weight_kg: float) -> float:
    """BSA (m²) = sqrt(height[cm] x weight[kg] / 3600) (Mosteller 1987)."""
    return math.sqrt(height_cm * weight_kg / 3600.0)


def slv_vauthey(bsa_m2: float) -> float:
    """SLV (mL) = -794.41 + 1267.28 x BSA (Vauthey et al. 2002)."""
    return -794.41 + 1267.28 * bsa_m2


def slv_urata(bsa_m2: float) -> float:
    """SLV (mL) = 706.2 x BSA + 2.4 (Urata et al. 1995)."""
    return 706.2 * bsa_m2 + 2.4


@dataclass(frozen=True)
class Body:
    height_cm: float | None
    weight_kg: float | None
    height_source: str | None
    weight_source: str | None


def segment_names(cfg: Mapping[str, Any]) -> dict[int, str]:
    """Map segment-map values to segment keys under the configured convention."""
    names = {v: str(v) for v in range(1, 9)}
    extra = {int(k): v for k, v in cfg["segments"]["extra"].items()}
    names.update(extra)
    if "4b" in extra.values() and "4a" not in extra.values():
        names[4] = "4a"
    if "4a" in extra.values() and "4b" not in extra.values():
        names[4] = "4b"
    return names


def _components_count(mask: np.ndarray, connectivity: int) -> int:
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    lut_l = np.zeros(256, dtype=np.uint8)
    lut_e = np.zeros(256, dtype=np.int64)
    lut_e[1] = 1
    runs, *_ = K.scan_runs(m, m, lut_l, lut_e, 0, m.shape[0])
    if runs.shape[0] == 0:
        return 0
    _, n = K._connect_runs(runs, np.array(m.shape[:2], dtype=np.int64), connectivity, False)
    return int(n)


def _block_connected(segs: Sequence[str], adjacency: Mapping[tuple[str, str], float], min_area: float) -> bool:
    segs = list(segs)
    if not segs:
        return False
    seen = {segs[0]}
    stack = [segs[0]]
    while stack:
        a = stack.pop()
        for b in segs:
            if b not in seen and adjacency.get(tuple(sorted((a, b))), 0.0) >= min_area:  # type: ignore[arg-type]
                seen.add(b)
                stack.append(b)
    return len(seen) == len(segs)


def _key(a: str, b: str) -> str:
    x, y = sorted((a, b), key=lambda s: SEGMENT_KEYS.index(s))
    return f"{x}-{y}"


def anatomy_and_flr(
    *,
    liver: np.ndarray,
    lesion_ids: np.ndarray,
    segments: np.ndarray,
    spacing_mm: Sequence[float],
    lesions: Sequence[Any],
    cfg: Mapping[str, Any],
    truncated: bool,
    resect: str | Sequence[str] | None = None,
    remnant: np.ndarray | None = None,
    body: Body | None = None,
    liver_condition: str | None = None,
    remnant_outside_crop: int = 0,
    seen_values: np.ndarray | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None, list[str]]:
    """Per-segment and per-lobe burden, ENETS pattern, and the FLR of a plan.

    Parameters
    ----------
    liver : bool array, the liver mask (configured liver labels).
    lesion_ids : integer array, lesion id per voxel (0 = none).
    segments : integer array, the segment map, all on one grid (any crop of it).
    lesions : the measured lesions (ids, location, ld_mm).
    resect : a plan ("5,6,7,8", a named plan, or a sequence of segment keys).
    remnant : bool array, a remnant mask (non-anatomical plan), instead of ``resect``.
    body : height/weight with their sources, for BSA and sFLR.
    """
    warnings: list[str] = []
    sp = np.asarray(spacing_mm, dtype=np.float64)
    voxel_ml = float(np.prod(sp)) / 1000.0
    names = segment_names(cfg)
    hepatic = {les.id for les in lesions if les.location == "liver"}
    ld_of = {les.id: les.ld_mm for les in lesions}

    seg = np.asarray(segments)
    seen = np.flatnonzero(np.bincount(np.ravel(seg), minlength=1)) if seen_values is None else seen_values
    bad = [int(v) for v in seen if v != 0 and int(v) not in names]
    if bad:
        raise MaskError(
            f"segment map: values {bad[:10]} are outside the '{cfg['segments']['convention']}' convention "
            f"(allowed: {sorted(names)})"
        )
    max_id = int(lesion_ids.max()) if lesion_ids.size else 0
    hep_lut = np.zeros(max_id + 1, dtype=bool)
    for i in hepatic:
        if i <= max_id:
            hep_lut[i] = True
    tumor = hep_lut[lesion_ids]
    tlv = liver | tumor
    n_values = max(names) + 1
    seg_tlv = np.where(tlv, seg, 0).astype(np.uint8 if n_values <= 256 else np.uint16)
    vox = np.bincount(seg_tlv.ravel(), minlength=n_values)
    tum = np.bincount(seg_tlv[tumor], minlength=n_values)
    outside = int(np.count_nonzero(seg)) - int(np.count_nonzero(seg_tlv))
    present = sorted({names[v] for v in range(1, n_values) if vox[v] > 0 and v in names}, key=SEGMENT_KEYS.index)

    # lesion -> segment voxel counts
    pairs = np.unique(
        lesion_ids[tumor].astype(np.int64) * n_values + seg_tlv[tumor].astype(np.int64), return_counts=True
    )
    lesion_segs: dict[int, dict[str, int]] = {}
    for code, cnt in zip(*pairs):
        lid, v = divmod(int(code), n_values)
        key = names.get(v, "unassigned") if v else "unassigned"
        lesion_segs.setdefault(lid, {})[key] = int(cnt)

    segments_out: dict[str, Any] = {}
    for v in sorted(names):
        key = names[v]
        if vox[v] == 0 and key not in ("1", "2", "3", "4", "5", "6", "7", "8"):
            continue
        vol = vox[v] * voxel_ml
        t = tum[v] * voxel_ml
        segments_out[key] = {
            "volume_ml": vol,
            "tumor_volume_ml": t,
            "involvement_pct": 100.0 * tum[v] / vox[v] if vox[v] else 0.0,
            "lesion_ids": sorted(lid for lid, d in lesion_segs.items() if key in d),
            "present": bool(vox[v] > 0),
        }
    missing = [k for k in ("1", "2", "3", "4", "5", "6", "7", "8") if k in segments_out and not segments_out[k]["present"]]
    if "4" in missing and any(k in segments_out and segments_out[k]["present"] for k in ("4a", "4b")):
        missing.remove("4")
    no_seg = seg == 0
    unassigned_vox = int(np.count_nonzero(tlv & no_seg))
    unassigned_tum = int(np.count_nonzero(tumor & no_seg))
    if unassigned_vox:
        warnings.append(
            f"segment map does not cover the liver: {unassigned_vox * voxel_ml:.2f} mL of liver "
            f"({100.0 * unassigned_vox / max(1, int(tlv.sum())):.2f} %) has no segment; it is reported as "
            "'unassigned' and not counted in the FLR"
        )
    if outside:
        warnings.append(f"segment map labels {outside * voxel_ml:.2f} mL outside the liver; ignored")
    if missing:
        warnings.append(f"segment(s) {', '.join(missing)} absent from the segment map")

    # lobes
    lobes: dict[str, Any] = {}
    for lobe, keys in (("right", RIGHT), ("left", LEFT), ("caudate", CAUDATE)):
        vs = [v for v, k in names.items() if k in keys]
        lv = int(sum(vox[v] for v in vs))
        lt = int(sum(tum[v] for v in vs))
        lobes[lobe] = {
            "segments": [k for k in keys if k in present],
            "volume_ml": lv * voxel_ml,
            "tumor_volume_ml": lt * voxel_ml,
            "involvement_pct": 100.0 * lt / lv if lv else 0.0,
        }

    # adjacency measured on the map, inside the liver
    area = K.shared_face_area_mm2(seg_tlv, n_values, sp)
    adjacency: dict[str, float] = {}
    adj_pairs: dict[tuple[str, str], float] = {}
    for a in range(1, n_values):
        for b in range(a + 1, n_values):
            if area[a, b] > 0 and a in names and b in names:
                k = _key(names[a], names[b])
                adjacency[k] = float(area[a, b])
                adj_pairs[tuple(sorted((names[a], names[b])))] = float(area[a, b])  # type: ignore[index]
    min_area = float(cfg["anatomy"]["contiguity_min_area_mm2"])

    # majority segment and lobe of each hepatic lesion
    major: dict[int, str] = {}
    for lid in sorted(hepatic):
        d = {k: c for k, c in lesion_segs.get(lid, {}).items() if k != "unassigned"}
        if d:
            best = max(d.values())
            major[lid] = sorted((k for k, c in d.items() if c == best), key=SEGMENT_KEYS.index)[0]
    lesion_lobes = {lid: lobe_of(s) for lid, s in major.items()}
    bilobar = {"right", "left"} <= set(lesion_lobes.values())

    # ENETS pattern
    an = cfg["anatomy"]
    enets: str | None
    reason: str
    total_t = int(tum.sum())
    if not major:
        enets, reason = None, "no hepatic lesion with a segment"
    else:
        lobeset = set(lesion_lobes.values())
        segset = sorted(set(major.values()), key=SEGMENT_KEYS.index)
        two_adjacent = len(segset) == 2 and adj_pairs.get(tuple(sorted(segset)), 0.0) >= min_area  # type: ignore[arg-type]
        if len(lobeset) == 1:
            enets, reason = "I", f"all hepatic lesions in one lobe ({next(iter(lobeset))})"
        elif len(segset) == 1 or two_adjacent:
            enets, reason = "I", f"all hepatic lesions in at most two adjacent segments ({', '.join(segset)})"
        else:
            enets, reason = "III", "disseminated: neither type I nor type II"
            for lobe in ("right", "left"):
                frac = lobes[lobe]["tumor_volume_ml"] / (total_t * voxel_ml) if total_t else 0.0
                others = [lid for lid, lb in lesion_lobes.items() if lb != lobe]
                if frac >= an["enets_dominant_lobe_fraction"] and all(
                    ld_of[lid] < an["enets_satellite_max_ld_mm"] for lid in others
                ):
                    enets = "II"
                    reason = (
                        f"{lobe} lobe holds {100 * frac:.1f} % of the tumor volume (>= "
                        f"{100 * an['enets_dominant_lobe_fraction']:.0f} %) and every other lesion has LD < "
                        f"{an['enets_satellite_max_ld_mm']:g} mm"
                    )
                    break
    anatomy = {
        "convention": cfg["segments"]["convention"],
        "segments": segments_out,
        "lobes": lobes,
        "unassigned": {"volume_ml": unassigned_vox * voxel_ml, "tumor_volume_ml": unassigned_tum * voxel_ml},
        "adjacency_mm2": adjacency,
        "lesion_segments": {str(lid): major.get(lid) for lid in sorted(hepatic)},
        "bilobar": bool(bilobar),
        "enets_pattern": enets,
        "enets_reason": reason,
        "reliable": not truncated,
    }

    if resect is None and remnant is None:
        return anatomy, None, warnings
    flr = _flr(
        seg_tlv=seg_tlv, tlv=tlv, tumor=tumor, names=names, present=present, vox=vox, tum=tum,
        voxel_ml=voxel_ml, adj_pairs=adj_pairs, min_area=min_area, cfg=cfg, resect=resect,
        remnant=remnant, body=body, liver_condition=liver_condition, truncated=truncated, warnings=warnings,
        remnant_outside_crop=remnant_outside_crop,
    )
    return anatomy, flr, warnings


def _flr(*, seg_tlv, tlv, tumor, names, present, vox, tum, voxel_ml, adj_pairs, min_area, cfg, resect, remnant,
         body, liver_condition, truncated, warnings, remnant_outside_crop=0) -> dict[str, Any]:
    fc = cfg["flr"]
    tlv_vox = int(np.count_nonzero(tlv))
    tumor_vox = int(np.count_nonzero(tumor))
    functional_vox = tlv_vox - tumor_vox
    key_to_vals: dict[str, list[int]] = {}
    for v, k in names.items():
        key_to_vals.setdefault(k, []).append(v)
    if remnant is None:
        if isinstance(resect, str):
            plan_name, plan = parse_plan(resect)
        else:
            plan_name, plan = "custom", tuple(resect)  # type: ignore[arg-type]
        split4 = any(k in present for k in ("4a", "4b"))
        expanded: list[str] = []
        for s in plan:
            if s == "4" and split4:
                expanded += [k for k in ("4a", "4b") if k in present]
            else:
                expanded.append(s)
        absent = [s for s in expanded if s not in present]
        if absent:
            raise InputError(
                f"--resect: plan '{plan_name}' names segment(s) {', '.join(absent)} absent from the segment map "
                f"(present: {', '.join(present)})"
            )
        resected = sorted(set(expanded), key=SEGMENT_KEYS.index)
        remnant_segs = [s for s in present if s not in resected]  # segment order
        rem_vals = [v for s in remnant_segs for v in key_to_vals[s]]
        res_vals = [v for s in resected for v in key_to_vals[s]]
        rem_vox = int(sum(vox[v] for v in rem_vals))
        rem_tum = int(sum(tum[v] for v in rem_vals))
        res_tum = int(sum(tum[v] for v in res_vals))
        source = "segments"
        contiguous = len(remnant_segs) >= fc["min_segments"] and _block_connected(remnant_segs, adj_pairs, min_area)
        mask_connected = None
    else:
        plan_name = "remnant-mask"
        rem = np.asarray(remnant, dtype=bool)
        n_rem = int(np.count_nonzero(rem)) + int(remnant_outside_crop)
        if n_rem == 0:
            raise MaskError("remnant mask is empty")
        out_frac = 1.0 - int(np.count_nonzero(rem & tlv)) / n_rem
        if out_frac > fc["remnant_mask_max_outside_fraction"]:
            raise MaskError(
                f"remnant mask: {100 * out_frac:.1f} % of it lies outside the liver "
                f"(limit {100 * fc['remnant_mask_max_outside_fraction']:.1f} %)"
            )
        if out_frac > 0:
            warnings.append(f"remnant mask: {100 * out_frac:.2f} % of it lies outside the liver; ignored")
        rem &= tlv
        rem_vox = int(np.count_nonzero(rem))
        rem_tum = int(np.count_nonzero(rem & tumor))
        res_tum = int(np.count_nonzero(tumor & ~rem))
        rem_seg_vox = np.bincount(seg_tlv[rem], minlength=len(vox))
        remnant_segs = [
            k for k in present
            if sum(rem_seg_vox[v] for v in key_to_vals[k]) >= fc["remnant_mask_segment_fraction"] * sum(vox[v] for v in key_to_vals[k])
        ]
        resected = [k for k in present if k not in remnant_segs]
        source = "mask"
        mask_connected = _components_count(rem, 6) == 1
        contiguous = bool(mask_connected) and len(remnant_segs) >= fc["min_segments"] and _block_connected(
            remnant_segs, adj_pairs, min_area
        )
    flr_vox = rem_vox - rem_tum
    flr_ml = flr_vox * voxel_ml
    flr_pct = 100.0 * flr_vox / functional_vox if functional_vox else 0.0

    condition = liver_condition or fc["liver_condition"]
    if condition not in ("normal", "chemotherapy", "cirrhosis"):
        raise ConfigError(f"--liver-condition: '{condition}' is not one of normal, chemotherapy, cirrhosis")
    threshold = float(fc[f"adequacy_{condition}_pct"])
    bsa = None
    slv = {"vauthey": None, "urata": None}
    sflr = {"vauthey": None, "urata": None}
    if body is not None and body.height_cm is not None:
        lo, hi = fc["height_cm_range"]
        if not lo <= body.height_cm <= hi:
            raise InputError(f"height {body.height_cm:g} cm (from {body.height_source}) is outside the physiological range {lo:g}-{hi:g} cm")
    if body is not None and body.weight_kg is not None:
        lo, hi = fc["weight_kg_range"]
        if not lo <= body.weight_kg <= hi:
            raise InputError(f"weight {body.weight_kg:g} kg (from {body.weight_source}) is outside the physiological range {lo:g}-{hi:g} kg")
    if body is not None and body.height_cm is not None and body.weight_kg is not None:
        bsa = bsa_mosteller(body.height_cm, body.weight_kg)
        slv = {"vauthey": slv_vauthey(bsa), "urata": slv_urata(bsa)}
        sflr = {k: 100.0 * flr_ml / v for k, v in slv.items()}
    if sflr["vauthey"] is not None:
        basis, value = "sflr_vauthey", float(sflr["vauthey"])
    else:
        basis, value = "flr_pct", flr_pct
    reasons = []
    vol_ok = value >= threshold
    reasons.append(
        f"{'adequate' if vol_ok else 'inadequate'} volume: {basis} = {value:.1f} % "
        f"{'>=' if vol_ok else '<'} {threshold:g} % ({condition} liver)"
    )
    if len(remnant_segs) < fc["min_segments"]:
        reasons.append(f"fewer than {fc['min_segments']} remnant segments ({len(remnant_segs)})")
    elif not contiguous:
        if mask_connected is False:
            reasons.append("remnant mask is not one connected piece")
        else:
            reasons.append(
                f"remnant segments {', '.join(remnant_segs)} do not form one contiguous block "
                f"(shared face >= {min_area:g} mm²)"
            )
    else:
        reasons.append(f"{len(remnant_segs)} contiguous remnant segments ({', '.join(remnant_segs)})")
    if truncated:
        reasons.append("liver mask is truncated by the field of view: volumes are underestimates (unreliable)")
    adequate = bool(vol_ok and contiguous)
    rem_adj = {
        _key(a, b): adj_pairs.get(tuple(sorted((a, b))), 0.0)  # type: ignore[arg-type]
        for i, a in enumerate(remnant_segs) for b in remnant_segs[i + 1:]
        if adj_pairs.get(tuple(sorted((a, b))), 0.0) > 0  # type: ignore[arg-type]
    }
    cyto = 100.0 * res_tum / tumor_vox if tumor_vox else None
    return {
        "plan": plan_name,
        "source": source,
        "resected_segments": resected,
        "remnant_segments": remnant_segs,
        "remnant_volume_ml": rem_vox * voxel_ml,
        "remnant_tumor_volume_ml": rem_tum * voxel_ml,
        "flr_ml": flr_ml,
        "flr_pct": flr_pct,
        "height_cm": None if body is None else body.height_cm,
        "weight_kg": None if body is None else body.weight_kg,
        "height_source": None if body is None else body.height_source,
        "weight_source": None if body is None else body.weight_source,
        "bsa_m2": bsa,
        "slv_ml": slv,
        "sflr_pct": sflr,
        "liver_condition": condition,
        "threshold_pct": threshold,
        "adequacy_basis": basis,
        "contiguous": bool(contiguous),
        "adjacency_mm2": rem_adj,
        "contiguity_min_area_mm2": min_area,
        "adequate": adequate,
        "reasons": reasons,
        "cytoreduction_pct": cyto,
        "cytoreduction_resection_threshold_pct": float(fc["cytoreduction_resection_pct"]),
        "cytoreduction_resection_met": None if cyto is None else bool(cyto >= fc["cytoreduction_resection_pct"]),
        "cytoreduction_debulking_threshold_pct": float(fc["cytoreduction_debulking_pct"]),
        "cytoreduction_debulking_met": None if cyto is None else bool(cyto >= fc["cytoreduction_debulking_pct"]),
        "tumor_removed_ml": res_tum * voxel_ml,
        "tumor_left_ml": (tumor_vox - res_tum) * voxel_ml,
        "reliable": not truncated,
    }
