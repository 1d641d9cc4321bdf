"""Slow, obvious reference implementations (house-style point 7, second oracle).

Nothing here imports liverburden: only numpy and scipy. Everything is an
exhaustive search written to be read, not to be fast; keep the inputs small
(a lesion of a few thousand voxels at most: ``pdist`` is quadratic).

Conventions implemented (``clinical-reference.md`` section 1,
``conventions.md`` "Lesions" and "Diameters"):

- points are voxel centres; physical offsets are ``index * spacing`` (an
  orthonormal direction matrix does not change a distance, so it is not needed
  for any length);
- components: ``scipy.ndimage.label`` with the 6/18/26 structuring element,
  renumbered 1..N in C (raster) order of each component's first voxel; a mask
  with more than one non-zero value is read as instances (id = value);
- LD: the longest distance between two voxels of one slice of the LD axis
  (the array axis whose direction is closest to LPS z), maximised over slices;
- SA: for the chosen LD pair, the longest distance between two voxels of the
  same slice whose direction lies within ``sa_tol_deg`` of perpendicular to LD;
- LD ties (within ``tie`` mm): the largest SA, then the lowest slice index,
  then the smallest end points in C order (end points of a pair are written
  smallest first);
- SA and max-3D ties: the smallest end points in C order (not in the
  conventions; the callers compare those end points only where unique);
- max3d: the largest distance between any two voxel centres of the lesion.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial.distance import pdist

TIE_MM = 1e-6
SA_TOL_DEG = 10.0
#: Slack on the SA angle test, in degrees, so that a pair lying exactly on the
#: +-10 degree boundary is not lost to rounding.
ANGLE_SLACK_DEG = 1e-9

_RANK = {6: 1, 18: 2, 26: 3}


def structure(connectivity: int) -> np.ndarray:
    """3x3x3 structuring element: 6 = faces, 18 = faces + edges, 26 = all."""
    return ndimage.generate_binary_structure(3, _RANK[int(connectivity)])


def label_components(mask: np.ndarray, connectivity: int = 26) -> np.ndarray:
    """Connected components numbered 1..N in C order of their first voxel."""
    lab, n = ndimage.label(np.asarray(mask) != 0, structure=structure(connectivity))
    if n == 0:
        return np.zeros(lab.shape, dtype=np.int64)
    flat = lab.ravel()  # C order
    values, first = np.unique(flat, return_index=True)
    first = {int(v): int(f) for v, f in zip(values, first) if v != 0}
    by_first_voxel = sorted(first, key=lambda v: first[v])
    new_id = np.zeros(n + 1, dtype=np.int64)
    for rank, v in enumerate(by_first_voxel, start=1):
        new_id[v] = rank
    return new_id[lab]


def count_components(mask: np.ndarray, connectivity: int = 26) -> int:
    return int(ndimage.label(np.asarray(mask) != 0, structure=structure(connectivity))[1])


def lesion_masks(lesions: np.ndarray, connectivity: int = 26, mode: str = "auto") -> list[tuple[int, np.ndarray, int]]:
    """``(id, boolean mask, number of components)`` per lesion, in id order."""
    lesions = np.asarray(lesions)
    values = sorted(int(v) for v in np.unique(lesions) if v != 0)
    if mode == "auto":
        mode = "instances" if len(values) > 1 else "binary"
    if mode == "instances":
        out = []
        for v in values:
            m = lesions == v
            out.append((v, m, count_components(m, connectivity)))
        return out
    lab = label_components(lesions != 0, connectivity)
    return [(k, lab == k, 1) for k in range(1, int(lab.max()) + 1)]


def ld_axis(direction: Any = None) -> int:
    """The array axis at the smallest angle to the S-I axis (LPS z, either sign);
    ties go to the lower axis."""
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
    angles = [math.degrees(math.acos(min(1.0, abs(float(d[2, k]))))) for k in range(3)]
    return min(range(3), key=lambda k: (angles[k], k))


def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) in the order ``pdist`` lists its distances."""
    return np.triu_indices(n, 1)


def short_axis(sel: np.ndarray, q: np.ndarray, ld_vec: np.ndarray, sa_tol_deg: float = SA_TOL_DEG,
               tie: float = TIE_MM) -> tuple[float, Any, bool]:
    """Longest pair of ``sel`` (voxel indices, C order) whose direction is within
    ``sa_tol_deg`` of perpendicular to ``ld_vec``.

    ``q`` are the in-slice physical coordinates of ``sel``. Returns
    ``(length, (p, r), unique)``; ``(-1.0, None, False)`` when no pair qualifies.
    """
    n = len(sel)
    if n < 2:
        return -1.0, None, False
    i, j = _pairs(n)
    dv = q[j] - q[i]
    length = np.sqrt((dv**2).sum(axis=1))
    cosang = np.abs(dv @ ld_vec) / (length * np.linalg.norm(ld_vec))
    angle = np.degrees(np.arccos(np.clip(cosang, 0.0, 1.0)))  # 90 = perpendicular
    ok = angle >= 90.0 - sa_tol_deg - ANGLE_SLACK_DEG
    if not ok.any():
        return -1.0, None, False
    sa = float(length[ok].max())
    cand = np.flatnonzero(ok & (length >= sa - tie))
    ends = min((tuple(int(v) for v in sel[i[c]]), tuple(int(v) for v in sel[j[c]])) for c in cand)
    return sa, ends, cand.size == 1


def measure_lesion(mask: np.ndarray, spacing: Any, axis: int, sa_tol_deg: float = SA_TOL_DEG,
                   tie: float = TIE_MM) -> dict[str, Any]:
    """Exhaustive geometry of one lesion given as a boolean mask.

    ``axis`` is the LD slice axis of the array. End points are pairs of voxel
    indices of the input array, smallest first in C order.
    """
    sp = np.asarray(spacing, dtype=np.float64)
    idx = np.argwhere(mask)  # C (raster) order
    n = len(idx)
    assert n > 0
    pts = idx * sp
    out: dict[str, Any] = {"voxel_count": n}

    # max 3-D diameter over every pair of voxel centres
    if n == 1:
        out["max3d_mm"] = 0.0
        out["max3d_endpoints_index"] = (tuple(map(int, idx[0])),) * 2
        out["max3d_unique"] = True
    else:
        d = pdist(pts)
        i, j = _pairs(n)
        m = float(d.max())
        cand = np.flatnonzero(d >= m - tie)
        out["max3d_mm"] = m
        out["max3d_endpoints_index"] = min(
            (tuple(map(int, idx[i[c]])), tuple(map(int, idx[j[c]]))) for c in cand
        )
        out["max3d_unique"] = cand.size == 1

    # LD: every pair of every slice of the LD axis
    others = [a for a in range(3) if a != axis]
    per_slice = []
    for s in np.unique(idx[:, axis]):
        sel = idx[idx[:, axis] == s]  # still C order
        q = sel[:, others] * sp[others]
        if len(sel) == 1:
            per_slice.append((int(s), sel, q, np.zeros(1), np.zeros(1, int), np.zeros(1, int)))
        else:
            i, j = _pairs(len(sel))
            per_slice.append((int(s), sel, q, pdist(q), i, j))
    gmax = max(float(d.max()) for (_, _, _, d, _, _) in per_slice)
    cands = []  # (ld, sa, slice, ld ends, sa ends, sa unique)
    for s, sel, q, d, i, j in per_slice:
        for c in np.flatnonzero(d >= gmax - tie):
            p, r = tuple(map(int, sel[i[c]])), tuple(map(int, sel[j[c]]))
            if p == r:  # a one-voxel slice: LD 0, no SA
                cands.append((0.0, -1.0, s, (p, r), None, False))
                continue
            sa, sa_ends, sa_unique = short_axis(sel, q, q[j[c]] - q[i[c]], sa_tol_deg, tie)
            cands.append((float(d[c]), sa, s, (p, r), sa_ends, sa_unique))
    best_sa = max(c[1] for c in cands)
    cands = [c for c in cands if c[1] >= best_sa - tie]  # 1. largest SA
    low = min(c[2] for c in cands)
    cands = [c for c in cands if c[2] == low]  # 2. lowest slice
    ld, sa, s, ends, sa_ends, sa_unique = min(cands, key=lambda c: c[3])  # 3. smallest end points
    out.update(
        ld_mm=ld,
        sa_mm=max(sa, 0.0),
        slice_index=s,
        ld_endpoints_index=ends,
        sa_endpoints_index=sa_ends if sa > 0 else None,
        sa_unique=sa_unique,
        ld_candidates=len(cands),
        centroid_index=tuple(float(v) for v in idx.mean(axis=0)),
        bbox_index_min=tuple(int(v) for v in idx.min(axis=0)),
        bbox_index_max=tuple(int(v) for v in idx.max(axis=0)),
    )
    return out


def measure(liver: np.ndarray, lesions: np.ndarray, spacing: Any, direction: Any = None,
            connectivity: int = 26, mode: str = "auto", hepatic_fraction: float = 0.5) -> dict[str, Any]:
    """Every lesion and the liver burden (conventions.md "Lesions")."""
    liver_b = np.asarray(liver) != 0
    axis = ld_axis(direction)
    voxel_ml = float(np.prod(np.asarray(spacing, dtype=np.float64))) / 1000.0
    out_lesions = []
    tlv = liver_b.copy()
    tumor = 0
    for lid, m, ncomp in lesion_masks(lesions, connectivity, mode):
        g = measure_lesion(m, spacing, axis)
        inside = int((m & liver_b).sum())
        frac = inside / g["voxel_count"]
        g.update(id=lid, components=ncomp, voxels_outside_liver=g["voxel_count"] - inside,
                 location="liver" if frac >= hepatic_fraction else "extrahepatic",
                 volume_ml=g["voxel_count"] * voxel_ml)
        if g["location"] == "liver":
            tlv |= m
            tumor += g["voxel_count"]
        out_lesions.append(g)
    tlv_vox = int(tlv.sum())
    return {
        "ld_axis": axis,
        "lesions": out_lesions,
        "tlv_ml": tlv_vox * voxel_ml,
        "tumor_ml": tumor * voxel_ml,
        "involvement_pct": 100.0 * tumor / tlv_vox if tlv_vox else 0.0,
    }


def recist_targets(lesions: list[tuple[int, float, str]], slice_spacing_mm: float, min_ld_mm: float = 10.0,
                   multiple: float = 2.0, per_organ: int = 2, total: int = 5) -> tuple[set[int], list[int]]:
    """RECIST 1.1: ``(measurable ids, target ids largest LD first)`` from
    ``(id, ld_mm, organ)`` triples."""
    limit = max(min_ld_mm, multiple * slice_spacing_mm)
    measurable = {i for i, ld, _ in lesions if ld >= limit}
    targets: list[int] = []
    used: dict[str, int] = {}
    for i, ld, organ in sorted(lesions, key=lambda t: (-t[1], t[0])):
        if i in measurable and len(targets) < total and used.get(organ, 0) < per_organ:
            targets.append(i)
            used[organ] = used.get(organ, 0) + 1
    return measurable, targets
