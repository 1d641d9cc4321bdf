"""Lesions and liver burden from label arrays (``clinical-reference.md`` 1, 2, 6).

:func:`measure_arrays` is the public entry: it validates, calls the numba
kernels in :mod:`liverburden.kernels` and assembles a frozen
:class:`MeasureResult` whose :meth:`MeasureResult.to_dict` is the body of
``measurements.json``.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .. import kernels as K
from .._exceptions import GeometryError, InputError, MaskError
from .._version import __version__
from ..config import resolve_config
from ..geometry import Volume, ld_axis
from ._anatomy import SEGMENT_KEYS, Body, anatomy_and_flr, segment_names
from ._components import group_runs
from ._labels import as_label_array, lut_size

SCHEMA_VERSION = "1.0.0"

POINT_CONVENTION = (
    "Distances are between voxel centres in physical space (spacing and direction applied). "
    "LD/SA are measured in the slices of the array axis closest to the patient's S-I axis."
)


@dataclass(frozen=True)
class Lesion:
    """One lesion (``clinical-reference.md`` section 1). Points are LPS mm;
    ``*_index`` are (slice, row, col) voxel indices of the input array."""

    id: int
    location: str
    voxel_count: int
    volume_ml: float
    voxels_outside_liver: int
    liver_fraction: float
    ld_mm: float
    sa_mm: float
    max3d_mm: float
    slice_index: int
    ld_endpoints_mm: tuple[tuple[float, float, float], tuple[float, float, float]]
    sa_endpoints_mm: tuple[tuple[float, float, float], tuple[float, float, float]] | None
    max3d_endpoints_mm: tuple[tuple[float, float, float], tuple[float, float, float]]
    ld_endpoints_index: tuple[tuple[int, int, int], tuple[int, int, int]]
    sa_endpoints_index: tuple[tuple[int, int, int], tuple[int, int, int]] | None
    centroid_mm: tuple[float, float, float]
    centroid_index: tuple[float, float, float]
    bbox_index_min: tuple[int, int, int]
    bbox_index_max: tuple[int, int, int]
    components: int
    segment: str | None = None
    segment_voxels: dict[str, int] | None = None
    recist_measurable: bool = False
    recist_target: bool = False
    location_reliable: bool = True  # False: extrahepatic, yet overlapping the liver beyond the configured limits

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "location": self.location,
            "location_reliable": self.location_reliable,
            "voxel_count": self.voxel_count,
            "volume_ml": self.volume_ml,
            "voxels_outside_liver": self.voxels_outside_liver,
            "liver_fraction": self.liver_fraction,
            "ld_mm": self.ld_mm,
            "sa_mm": self.sa_mm,
            "max3d_mm": self.max3d_mm,
            "slice_index": self.slice_index,
            "ld_endpoints_mm": _pts(self.ld_endpoints_mm),
            "sa_endpoints_mm": _pts(self.sa_endpoints_mm),
            "max3d_endpoints_mm": _pts(self.max3d_endpoints_mm),
            "ld_endpoints_index": _ipts(self.ld_endpoints_index),
            "sa_endpoints_index": _ipts(self.sa_endpoints_index),
            "centroid_mm": list(self.centroid_mm),
            "centroid_index": list(self.centroid_index),
            "bbox_index": {"min": list(self.bbox_index_min), "max": list(self.bbox_index_max)},
            "components": self.components,
            "segment": self.segment,
            "segment_voxels": self.segment_voxels,
            "recist_measurable": self.recist_measurable,
            "recist_target": self.recist_target,
        }


def _pts(p: Any) -> Any:
    return None if p is None else [list(map(float, q)) for q in p]


def _ipts(p: Any) -> Any:
    return None if p is None else [list(map(int, q)) for q in p]


@dataclass(frozen=True)
class LiverBurden:
    """Per-study liver numbers (``clinical-reference.md`` section 2, CONV "Lesions")."""

    volume_ml: float  # TLV = liver mask union hepatic lesions
    mask_volume_ml: float  # the liver mask alone
    tumor_volume_ml: float  # all voxels of hepatic lesions
    involvement_pct: float
    functional_volume_ml: float  # TLV - tumor volume
    truncated: bool
    truncated_edges: tuple[str, ...]
    unreliable_reasons: tuple[str, ...] = ()

    @property
    def reliable(self) -> bool:
        return not self.unreliable_reasons

    def to_dict(self) -> dict[str, Any]:
        return {
            "volume_ml": self.volume_ml,
            "mask_volume_ml": self.mask_volume_ml,
            "tumor_volume_ml": self.tumor_volume_ml,
            "involvement_pct": self.involvement_pct,
            "functional_volume_ml": self.functional_volume_ml,
            "truncated": self.truncated,
            "truncated_edges": list(self.truncated_edges),
            "reliable": self.reliable,
            "unreliable_reasons": list(self.unreliable_reasons),
        }


@dataclass(frozen=True, eq=False)
class MeasureResult:
    """The measurement of one study. ``to_dict()`` is ``measurements.json``'s body."""

    geometry: dict[str, Any]
    ld_axis: int
    lesion_mode: str
    lesions: tuple[Lesion, ...]
    liver: LiverBurden
    sum_diameters: dict[str, Any]
    recist_target_ids: tuple[int, ...]
    flags: tuple[dict[str, Any], ...]
    warnings: tuple[str, ...]
    config: dict[str, Any]
    anatomy: dict[str, Any] | None = None
    flr: dict[str, Any] | None = None
    # private: what is needed to paint the lesion label map
    _runs: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]
    _run_ids: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]
    _perm: tuple[int, int, int] = field(repr=False, default=(0, 1, 2))

    @property
    def lesion_count(self) -> int:
        return len(self.lesions)

    def label_array(self) -> np.ndarray:
        """The lesion instance map on the input grid: each voxel holds its lesion ``id``."""
        size = tuple(self.geometry["size"])
        scanned_shape = tuple(size[a] for a in self._perm)
        max_id = max((les.id for les in self.lesions), default=0)
        dtype = np.uint8 if max_id <= 255 else np.uint16 if max_id <= 65535 else np.uint32
        out = np.zeros(scanned_shape, dtype=dtype)
        K._paint_runs(out, self._runs, self._run_ids.astype(np.int64))
        inv = np.argsort(self._perm)
        return np.ascontiguousarray(np.transpose(out, inv))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "software": {"name": "liverburden", "version": __version__},
            "axes": ["slice", "row", "col"],
            "image": dict(self.geometry, ld_axis=self.ld_axis),
            "conventions": {
                "points": POINT_CONVENTION,
                "lesion_mode": self.lesion_mode,
                "connectivity": self.config["lesions"]["connectivity"],
                "sum_diameters_all": "sum of LD of every lesion, hepatic and extrahepatic (Du et al. 2015)",
                "sum_diameters_recist": "sum of LD of the RECIST 1.1 target lesions (recist_target_ids)",
                "involvement": "hepatic tumor volume / (liver mask union hepatic lesions) x 100",
            },
            "lesion_count": self.lesion_count,
            "lesions": [les.to_dict() for les in self.lesions],
            "liver": self.liver.to_dict(),
            "sum_diameters": dict(self.sum_diameters),
            "recist_target_ids": list(self.recist_target_ids),
            "anatomy": self.anatomy,
            "flr": self.flr,
            "flags": [dict(f) for f in self.flags],
            "warnings": list(self.warnings),
            "config": self.config,
        }


# --------------------------------------------------------------------------- helpers


def _value_lut(spec: Any, size: int, *, ids: bool) -> np.ndarray:
    lut = np.zeros(size, dtype=np.int64 if ids else np.uint8)
    if spec == "nonzero":
        lut[1:] = np.arange(1, size) if ids else 1
    else:
        for v in spec:
            if v < size:
                lut[v] = v if ids else 1
    return lut


def _scan(liver: np.ndarray, lesion: np.ndarray, liver_lut: np.ndarray, lesion_lut: np.ndarray, threads: int,
          need_liver_seen: bool = True, need_lesion_seen: bool = True):
    nz = liver.shape[0]
    threads = max(1, min(int(threads), nz))
    if threads == 1:
        return K.scan_runs(liver, lesion, liver_lut, lesion_lut, 0, nz, need_liver_seen, need_lesion_seen)
    bounds = np.linspace(0, nz, threads + 1).astype(int)
    with ThreadPoolExecutor(max_workers=threads) as ex:
        parts = list(
            ex.map(
                lambda i: K.scan_runs(liver, lesion, liver_lut, lesion_lut, int(bounds[i]), int(bounds[i + 1]),
                                      need_liver_seen, need_lesion_seen),
                range(threads),
            )
        )
    runs = np.concatenate([p[0] for p in parts])
    count = sum(p[1] for p in parts)
    lseen = np.bitwise_or.reduce([p[2] for p in parts])
    eseen = np.bitwise_or.reduce([p[3] for p in parts])
    bb = np.stack([p[4] for p in parts])
    bbox = np.concatenate([bb[:, :3].min(axis=0), bb[:, 3:].max(axis=0)])
    return runs, count, lseen, eseen, bbox


_EDGE_NAMES = (("first slice", "last slice"), ("first row", "last row"), ("first column", "last column"))


# --------------------------------------------------------------------------- public


def measure_arrays(
    liver: np.ndarray,
    lesions: np.ndarray,
    spacing_mm: Any,
    direction: Any = None,
    origin_mm: Any = None,
    segments: np.ndarray | None = None,
    config: Mapping[str, Any] | str | None = None,
    *,
    threads: int = 1,
    resect: str | Sequence[str] | None = None,
    remnant: np.ndarray | None = None,
    height_cm: float | None = None,
    weight_kg: float | None = None,
    liver_condition: str | None = None,
    body_source: str = "argument",
) -> MeasureResult:
    """Measure every lesion and the liver burden from label arrays.

    Parameters
    ----------
    liver, lesions : ndarray, shape (n_slice, n_row, n_col)
        Label arrays on one grid. Which values are liver / lesion is
        configuration (``[labels]``); a lesion mask with several lesion values is
        read as instance labels in ``"auto"`` mode.
    spacing_mm : 3 floats, mm, in the arrays' (slice, row, col) order.
    direction : 3x3, optional
        Column k is the LPS unit vector of array axis k (default identity). It
        chooses the LD slice axis and maps points to LPS; distances do not
        depend on it.
    origin_mm : 3 floats, optional. LPS centre of voxel [0, 0, 0] (default 0).
    segments : ndarray, optional. Couinaud map on the same grid.
    config : mapping, path or None. A (partial) configuration; see
        ``configs/default.toml``.
    threads : int
        Threads for the volume scan (the kernels release the GIL).
    resect : str or sequence, optional
        Resection plan for the FLR: segments ("5,6,7,8") or a named plan
        ("right-hepatectomy", ...). Needs ``segments``.
    remnant : ndarray, optional
        A remnant mask (non-anatomical plan) on the same grid, instead of ``resect``.
    height_cm, weight_kg : float, optional
        For BSA (Mosteller) and the standardized FLR (Vauthey, Urata).
    liver_condition : "normal" | "chemotherapy" | "cirrhosis", optional
        Chooses the adequacy threshold (config ``[flr]``).

    Returns
    -------
    MeasureResult

    Raises
    ------
    GeometryError, MaskError, ConfigError
        Shapes differ, spacing is not positive, the liver mask is empty, or a
        mask holds values outside the configured sets.

    Notes
    -----
    Volume = voxel count x voxel volume. LD = longest distance between two voxel
    centres of the lesion in one slice, maximised over slices; SA = longest such
    segment within the configured angle of perpendicular to LD, in LD's slice;
    max3d = largest distance between two voxel centres. All exact maxima
    (``clinical-reference.md`` section 1, ``conventions.md`` "Diameters").
    """
    cfg = resolve_config(config)
    liver_a = np.asarray(liver)
    lesion_a = np.asarray(lesions)
    if liver_a.ndim != 3 or lesion_a.ndim != 3:
        raise GeometryError(f"liver and lesion arrays must be 3-D, got shapes {liver_a.shape} and {lesion_a.shape}")
    if liver_a.shape != lesion_a.shape:
        raise GeometryError(f"liver shape {liver_a.shape} differs from lesion shape {lesion_a.shape}")
    geo = Volume(
        liver_a,
        spacing_mm,
        (0.0, 0.0, 0.0) if origin_mm is None else origin_mm,
        np.eye(3) if direction is None else direction,
        source="arrays",
    )
    liver_u = as_label_array(liver_a, "liver mask")
    lesion_u = as_label_array(lesion_a, "lesion mask")
    seg_u = None
    if segments is not None:
        seg_a = np.asarray(segments)
        if seg_a.shape != liver_a.shape:
            raise GeometryError(f"segment map shape {seg_a.shape} differs from liver shape {liver_a.shape}")
        seg_u = as_label_array(seg_a, "segment map")

    ax = ld_axis(geo.direction)
    perm = (ax,) + tuple(a for a in range(3) if a != ax)
    spacing = np.asarray(geo.spacing_mm, dtype=np.float64)
    if ax != 0:
        same = lesion_u is liver_u  # one label map as both masks: transpose it once
        liver_u = np.ascontiguousarray(np.transpose(liver_u, perm))
        lesion_u = liver_u if same else np.ascontiguousarray(np.transpose(lesion_u, perm))
        if seg_u is not None:
            seg_u = np.ascontiguousarray(np.transpose(seg_u, perm))
    sp_scan = spacing[list(perm)]
    rem_u = None
    if remnant is not None:
        rem_a = np.asarray(remnant)
        if rem_a.shape != liver_a.shape:
            raise GeometryError(f"remnant mask shape {rem_a.shape} differs from liver shape {liver_a.shape}")
        rem_u = as_label_array(rem_a, "remnant mask")
        if ax != 0:
            rem_u = np.ascontiguousarray(np.transpose(rem_u, perm))
    if (resect is not None or remnant is not None) and seg_u is None:
        raise InputError("an FLR plan (resect / remnant mask) needs a segment map")
    if resect is not None and remnant is not None:
        raise InputError("give either a resection plan or a remnant mask, not both")
    plan = dict(
        resect=resect,
        remnant=rem_u,
        body=Body(
            height_cm=None if height_cm is None else float(height_cm),
            weight_kg=None if weight_kg is None else float(weight_kg),
            height_source=None if height_cm is None else body_source,
            weight_source=None if weight_kg is None else body_source,
        )
        if (height_cm is not None or weight_kg is not None)
        else None,
        liver_condition=liver_condition,
    )
    return _measure_scanned(liver_u, lesion_u, seg_u, sp_scan, perm, geo, cfg, threads, plan)


def _measure_scanned(liver_u, lesion_u, seg_u, sp_scan, perm, geo: Volume, cfg, threads, plan) -> MeasureResult:
    warnings: list[str] = []
    labels = cfg["labels"]
    liver_lut = _value_lut(labels["liver"], lut_size(liver_u), ids=False)
    lesion_lut = _value_lut(labels["lesion"], lut_size(lesion_u), ids=True)
    # which non-liver values occur matters only when they are an error
    need_seen = labels["liver"] != "nonzero" and labels["other_liver_values"] == "error"
    need_lesion_seen = labels["lesion"] != "nonzero" and labels["other_lesion_values"] == "error"
    runs, liver_count, liver_seen, lesion_seen, liver_bbox = _scan(
        liver_u, lesion_u, liver_lut, lesion_lut, threads, need_seen, need_lesion_seen
    )

    # label checks -----------------------------------------------------------
    seen_l = np.flatnonzero(liver_seen)
    if labels["liver"] != "nonzero":
        other = sorted(set(seen_l.tolist()) - set(labels["liver"]))
        if other and labels["other_liver_values"] == "error":
            raise MaskError(
                f"liver mask: values {other[:10]} are not configured liver labels {labels['liver']} "
                "(--ignore-other-labels, or labels.other_liver_values = \"ignore\", for multi-label organ maps)"
            )
    seen_e = np.flatnonzero(lesion_seen)
    if labels["lesion"] != "nonzero":
        other = sorted(set(seen_e.tolist()) - set(labels["lesion"]))
        if other and labels["other_lesion_values"] == "error":
            raise MaskError(
                f"lesion mask: values {other[:10]} are not configured lesion labels {labels['lesion']} "
                "(--ignore-other-labels for multi-label maps)"
            )
    if liver_count == 0:
        raise MaskError(
            "liver mask is empty" + (f" (no voxel with a value in {labels['liver']})" if labels["liver"] != "nonzero" else "")
        )

    # components / instances ----------------------------------------------------
    nz, ny, nx = liver_u.shape
    from ..kernels import _prewarm

    _prewarm.wait()  # the CLI may be compiling the next kernels in a second process
    G = group_runs(runs, (nz, ny), labels["lesion_mode"], int(cfg["lesions"]["connectivity"]), perm, geo.shape)
    mode, group, n_groups, ncomp_per_group, order, starts = G.mode, G.group, G.n, G.components, G.order, G.starts
    tol_deg = float(cfg["diameters"]["sa_perpendicular_tolerance_deg"])
    tie = float(cfg["diameters"]["tie_tolerance_mm"])
    stats, floats, ends = K._lesion_geometry(
        runs, order, starts, np.ascontiguousarray(sp_scan), math.cos(math.radians(tol_deg)), tie
    )

    seg_counts = None
    seg_names = segment_names(cfg)
    if seg_u is not None and n_groups:
        n_values = int(max(seg_names) + 2)
        seg_counts = K._run_value_counts(seg_u, runs, group.astype(np.int64), n_groups, n_values)

    voxel_ml = float(np.prod(sp_scan)) / 1000.0
    min_ml = float(cfg["lesions"]["min_lesion_volume_ml"])
    hep_frac = float(cfg["lesions"]["hepatic_fraction"])
    xo_frac = float(cfg["lesions"]["extrahepatic_overlap_warn_fraction"])
    xo_ml = float(cfg["lesions"]["extrahepatic_overlap_warn_ml"])
    inv_perm = np.argsort(perm)

    keep = np.flatnonzero(stats[:, K.S_COUNT] * voxel_ml >= min_ml) if n_groups else np.zeros(0, dtype=np.int64)
    dropped = n_groups - len(keep)
    if dropped:
        warnings.append(f"{dropped} component(s) below min_lesion_volume_ml = {min_ml} mL were not counted as lesions")
    # every lesion's points at once, in the input's (slice, row, col) order and in LPS mm
    counts = stats[keep, K.S_COUNT]
    inls = stats[keep, K.S_IN_LIVER]
    ends_in = ends[keep][..., inv_perm]  # (n, 3 = LD/SA/max3d, 2, 3)
    cent_in = (floats[keep][:, [K.F_SUM_Z, K.F_SUM_Y, K.F_SUM_X]] / counts[:, None])[:, inv_perm]
    ends_mm = geo.index_to_lps(ends_in).tolist()
    cent_mm = geo.index_to_lps(cent_in).tolist()
    bbox_in = stats[keep, K.S_BBOX : K.S_BBOX + 6].reshape(-1, 2, 3)[..., inv_perm].tolist()
    ends_l = ends_in.tolist()
    cent_l = cent_in.tolist()
    fl = floats[keep].tolist()
    slices = stats[keep, K.S_SLICE].tolist()
    ids = [int(G.ids[g]) if mode == "instances" else rank + 1 for rank, g in enumerate(keep.tolist())]
    locs = ["liver" if inl / cnt >= hep_frac else "extrahepatic" for inl, cnt in zip(inls.tolist(), counts.tolist())]

    # RECIST 1.1 selection --------------------------------------------------------
    rc = cfg["recist"]
    slice_spacing = float(sp_scan[0])
    min_ld = max(float(rc["min_measurable_ld_mm"]), float(rc["slice_spacing_multiple"]) * slice_spacing)
    lds = [row[K.F_LD] for row in fl]
    measurable = {lid for lid, ld in zip(ids, lds) if ld >= min_ld}
    ld_of = dict(zip(ids, lds))
    loc_of = dict(zip(ids, locs))
    ranked = sorted(measurable, key=lambda i: (-ld_of[i], i))
    targets: list[int] = []
    per_organ: dict[str, int] = {}
    for lid in ranked:
        if len(targets) >= rc["max_targets_total"]:
            break
        loc = loc_of[lid]
        if per_organ.get(loc, 0) >= rc["max_targets_per_organ"]:
            continue
        per_organ[loc] = per_organ.get(loc, 0) + 1
        targets.append(lid)
    target_set = set(targets)

    def pts(p: list) -> Any:
        return (tuple(p[0]), tuple(p[1]))

    run_ids = np.zeros(runs.shape[0], dtype=np.int64)
    lesions: list[Lesion] = []
    for k, g in enumerate(keep.tolist()):
        lid = ids[k]
        count = int(counts[k])
        inl = int(inls[k])
        frac = inl / count
        ld_idx, sa_idx, m3_idx = ends_l[k]
        ld_mm, sa_mm, m3_mm = ends_mm[k]
        sa_ok = sa_idx[0][0] >= 0
        if tuple(m3_idx[1]) < tuple(m3_idx[0]):  # smallest end point first, in the input's C order
            m3_mm = m3_mm[::-1]
        seg = None
        seg_vox = None
        if seg_counts is not None:
            row = seg_counts[g]
            seg_vox = {}
            for v, cnt in enumerate(row[:-1]):
                if v and cnt:
                    seg_vox[seg_names.get(v, str(v))] = int(cnt)
            if row[-1]:
                seg_vox["other"] = int(row[-1])
            if row[0]:
                seg_vox["none"] = int(row[0])
            labelled = {kk: c for kk, c in seg_vox.items() if kk not in ("none", "other")}
            if labelled:
                best = max(labelled.values())
                seg = sorted((kk for kk, c in labelled.items() if c == best), key=SEGMENT_KEYS.index)[0]
        if ncomp_per_group[g] > 1:
            warnings.append(f"instance {lid} has {int(ncomp_per_group[g])} components")
        if count - inl and frac >= hep_frac:
            warnings.append(f"lesion {lid}: {count - inl} voxel(s) lie outside the liver mask")
        # extrahepatic by the 50 % rule, yet partly in the liver: the verdict (and with it
        # involvement, which leaves the lesion out) is only as good as the mask edges
        loc_ok = True
        if frac < hep_frac and inl and (inl / count > xo_frac or inl * voxel_ml > xo_ml):
            loc_ok = False
            warnings.append(
                f"lesion {lid} is extrahepatic ({100.0 * frac:.1f} % of it in the liver mask, < "
                f"{100.0 * hep_frac:g} %) but overlaps the liver by {inl * voxel_ml:.3f} mL: its location is "
                "unreliable, and involvement, which leaves it out, is marked unreliable (check the masks; limits: "
                "lesions.extrahepatic_overlap_warn_fraction / _ml)")
        lesions.append(
            Lesion(
                id=lid,
                location=locs[k],
                voxel_count=count,
                volume_ml=count * voxel_ml,
                voxels_outside_liver=count - inl,
                liver_fraction=frac,
                ld_mm=fl[k][K.F_LD],
                sa_mm=fl[k][K.F_SA],
                max3d_mm=fl[k][K.F_MAX3D],
                slice_index=slices[k],
                ld_endpoints_mm=pts(ld_mm),
                sa_endpoints_mm=pts(sa_mm) if sa_ok else None,
                max3d_endpoints_mm=pts(m3_mm),
                ld_endpoints_index=pts(ld_idx),
                sa_endpoints_index=pts(sa_idx) if sa_ok else None,
                centroid_mm=tuple(cent_mm[k]),  # type: ignore[arg-type]
                centroid_index=tuple(cent_l[k]),  # type: ignore[arg-type]
                bbox_index_min=tuple(bbox_in[k][0]),  # type: ignore[arg-type]
                bbox_index_max=tuple(bbox_in[k][1]),  # type: ignore[arg-type]
                components=int(ncomp_per_group[g]),
                segment=seg,
                segment_voxels=seg_vox,
                recist_measurable=lid in measurable,
                recist_target=lid in target_set,
                location_reliable=loc_ok,
            )
        )
        if runs.shape[0]:
            run_ids[order[starts[g] : starts[g + 1]]] = lid

    # liver burden ----------------------------------------------------------------
    hepatic = [les for les in lesions if les.location == "liver"]
    tumor_vox = sum(les.voxel_count for les in hepatic)
    outside_hep = sum(les.voxels_outside_liver for les in hepatic)
    tlv_vox = int(liver_count) + outside_hep
    edges: list[str] = []
    shape_scan = liver_u.shape
    for a in range(3):
        in_axis = perm[a]
        if liver_bbox[a] == 0:
            edges.append(_EDGE_NAMES[in_axis][0])
        if liver_bbox[3 + a] == shape_scan[a] - 1:
            edges.append(_EDGE_NAMES[in_axis][1])
    edges.sort(key=lambda e: [n for pair in _EDGE_NAMES for n in pair].index(e))
    if edges:
        warnings.append(
            "liver mask touches the edge of the field of view (" + ", ".join(edges) + "): the liver is truncated; "
            "liver volume, involvement and any FLR are underestimates and marked unreliable"
        )
    liver_res = LiverBurden(
        volume_ml=tlv_vox * voxel_ml,
        mask_volume_ml=int(liver_count) * voxel_ml,
        tumor_volume_ml=tumor_vox * voxel_ml,
        involvement_pct=100.0 * tumor_vox / tlv_vox,
        functional_volume_ml=(tlv_vox - tumor_vox) * voxel_ml,
        truncated=bool(edges),
        truncated_edges=tuple(edges),
        unreliable_reasons=tuple(
            (["liver mask truncated by the field of view"] if edges else [])
            + [f"extrahepatic lesion {les.id} overlaps the liver" for les in lesions if not les.location_reliable]
        ),
    )

    sod_all = float(sum(les.ld_mm for les in lesions))
    sod_hep = float(sum(les.ld_mm for les in lesions if les.location == "liver"))
    sod_rec = float(sum(les.ld_mm for les in lesions if les.id in targets))
    sums = {
        "all_mm": sod_all,
        "hepatic_mm": sod_hep,
        "extrahepatic_mm": sod_all - sod_hep,
        "recist_mm": sod_rec,
        "recist_min_measurable_ld_mm": min_ld,
        "all_includes": "every lesion, hepatic and extrahepatic",
        "recist_includes": "RECIST 1.1 targets: measurable lesions, at most "
        f"{rc['max_targets_per_organ']} per organ (liver / extrahepatic) and {rc['max_targets_total']} in total",
    }

    anatomy = flr = None
    if seg_u is not None:
        # crop to the liver and lesions: anatomy works on plain numpy arrays
        lo = [int(liver_bbox[a]) for a in range(3)]
        hi = [int(liver_bbox[3 + a]) for a in range(3)]
        for les in range(n_groups):
            bb = stats[les, K.S_BBOX : K.S_BBOX + 6]
            lo = [min(lo[a], int(bb[a])) for a in range(3)]
            hi = [max(hi[a], int(bb[3 + a])) for a in range(3)]
        crop = tuple(slice(lo[a], hi[a] + 1) for a in range(3))
        ids = np.zeros(tuple(hi[a] - lo[a] + 1 for a in range(3)), dtype=np.int32)
        if runs.shape[0]:
            K._paint_runs(ids, runs, run_ids, lo[0], lo[1], lo[2])
        rem = plan["remnant"]
        seen_seg = np.flatnonzero(np.bincount(seg_u.ravel(), minlength=1))  # the whole map, not the crop
        anatomy, flr, w = anatomy_and_flr(
            seen_values=seen_seg,
            liver=liver_lut[liver_u[crop]].astype(bool),
            lesion_ids=ids,
            segments=seg_u[crop],
            spacing_mm=sp_scan,
            lesions=lesions,
            cfg=cfg,
            truncated=liver_res.truncated,
            resect=plan["resect"],
            remnant=None if rem is None else rem[crop].astype(bool),
            remnant_outside_crop=0 if rem is None else int(np.count_nonzero(rem)) - int(np.count_nonzero(rem[crop])),
            body=plan["body"],
            liver_condition=plan["liver_condition"],
        )
        warnings.extend(w)

    th = cfg["thresholds"]
    reliable = liver_res.reliable
    flags = (
        _flag("involvement_pct", "<", th["involvement_favourable_pct"], liver_res.involvement_pct, reliable,
              "most cited favourable group (clinical-reference section 2)", "thresholds.involvement_favourable_pct"),
        _flag("involvement_pct", "<", th["involvement_milan_pct"], liver_res.involvement_pct, reliable,
              "Milan criteria for transplantation (clinical-reference section 2)", "thresholds.involvement_milan_pct"),
        _flag("sum_diameters.all_mm", ">", th["remnant_sod_high_mm"], sod_all, True,
              "high remnant tumor burden when this study is the first follow-up after treatment "
              "(Du et al. 2015; clinical-reference section 2)", "thresholds.remnant_sod_high_mm"),
    )
    return MeasureResult(
        geometry=geo.geometry_dict(),
        ld_axis=int(perm[0]),
        lesion_mode=mode,
        lesions=tuple(lesions),
        liver=liver_res,
        sum_diameters=sums,
        recist_target_ids=tuple(targets),
        flags=flags,
        warnings=tuple(warnings),
        config=cfg,
        anatomy=anatomy,
        flr=flr,
        _runs=runs,
        _run_ids=run_ids,
        _perm=tuple(int(p) for p in perm),  # type: ignore[arg-type]
    )


def _flag(quantity, op, threshold, value, reliable, meaning, key) -> dict[str, Any]:
    met = value < threshold if op == "<" else value > threshold
    return {
        "quantity": quantity,
        "operator": op,
        "threshold": float(threshold),
        "value": float(value),
        "met": bool(met),
        "reliable": bool(reliable),
        "meaning": meaning,
        "config_key": key,
    }


def measure_volumes(
    liver: Volume,
    lesions: Volume,
    segments: Volume | None = None,
    config: Mapping[str, Any] | str | None = None,
    **kwargs: Any,
) -> MeasureResult:
    """:func:`measure_arrays` on :class:`Volume` objects already on one grid."""
    return measure_arrays(
        liver.array,
        lesions.array,
        liver.spacing_mm,
        liver.direction,
        liver.origin_mm,
        None if segments is None else segments.array,
        config,
        **kwargs,
    )
