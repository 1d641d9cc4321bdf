#!/usr/bin/env python
"""Build the partly synthetic liverburden sample study in ``sample_data/``.

This is a developer tool; the liverburden package never reads ``../shared``.

Input (read-only, Apache-2.0, from wasserth/TotalSegmentator
``tests/reference_files``, copied to ``<shared>/totalsegmentator/``):

* ``example_ct_dicom/``: a real 20-slice CT series (512x512, 0.9766 mm pixels,
  JPEG 2000 lossless).
* ``example_seg_dicom.nii.gz``: the TotalSegmentator ``total`` label map on that
  DICOM grid (liver = label 5), stored with the row axis flipped (LAS).

Output (in ``<out>/study/``):

* ``ct/``: the CT re-written as uncompressed DICOM (Explicit VR Little Endian),
  one file per slice, hashed file names, new UIDs, de-identified by an
  allow-list of attributes, with synthetic hypodense lesions written into the
  pixel values; plus a 2-image "Topogram" localizer series (other
  SeriesInstanceUID, coronal + sagittal) mixed into the same folder.
* ``liver.nii.gz``: binary liver mask (label 5, plus any intrahepatic lesion
  voxel), with the source NIfTI's header/affine (LAS, flipped rows) unchanged.
* ``lesions.nii.gz``: binary lesion mask, same header/affine.
* ``segments.nii.gz``: a synthetic Couinaud segment map (values 1..8, every
  liver voxel labelled), same header/affine. A GEOMETRIC APPROXIMATION by a few
  planes in LPS (see ``couinaud_map``), NOT anatomy: it exists so that the FLR
  commands (``--segments``, ``--resect``) can be tried on the sample.
* ``truth.json``: brute-force reference values computed here (see README).

Lesions are analytic shapes in physical DICOM patient coordinates (LPS, mm);
a voxel belongs to a lesion iff its centre lies strictly inside the shape.
Lesion pixels get LESION_HU + Gaussian noise (fixed seed); voxels whose centre
is outside every shape but which are partly covered by one get a partial-volume
blend (coverage estimated by 5x5x5 supersampling), so the edge looks soft in the
image while the masks stay the exact centre-inside voxel sets.

Everything is deterministic: fixed seed, name-based UIDs ``2.25.<uuid5>``
derived from a fixed root (see ``uid()``), fixed dummy dates, gzip mtime 0.
Run from the repository root:

    python sample_data/make_sample_data.py --shared ../shared/data --out sample_data

``--verify-only`` re-checks existing outputs against a fresh in-memory rebuild
without writing anything.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import itertools
import json
import math
import sys
import uuid
from collections import deque
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian

REPO_ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------- constants
UID_ROOT = "liverburden/sample_data/v1"  # name root of every UID written
SEED = 20240611  # lesion noise
LESION_HU = 40.0  # hypodense lesion, liver is ~90 HU in this (contrast) CT
LESION_NOISE_SD_HU = 12.0
SUPERSAMPLE = 5  # per axis, for the partial-volume edge only (not the masks)
LIVER_LABEL = 5  # TotalSegmentator task "total"
SPLEEN_LABEL = 1
CONTAIN_MARGIN_MM = 2.0  # shape grown by this must stay inside its host organ
TIE_EPS = 1e-6  # no voxel centre may lie this close to a shape surface
DUMMY_DATE = "20000101"
DUMMY_TIME = "120000"
PATIENT_NAME = "LIVERBURDEN^SAMPLE"
PATIENT_ID = "LB-SAMPLE-001"
PATIENT_SIZE_M = "1.72"

SRC_CT_DIR = "totalsegmentator/example_ct_dicom"
SRC_SEG = "totalsegmentator/example_seg_dicom.nii.gz"


def _unit(v):
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def _rot_z(deg):
    """Columns = the shape's local axes in LPS, rotated in the axial plane."""
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a), 0.0],
                     [math.sin(a), math.cos(a), 0.0],
                     [0.0, 0.0, 1.0]])


# Touching pair: two spheres (r = 6 and 4.5 mm) whose centres are exactly
# r1 + r2 = 10.5 mm apart in the axial plane (tangent).  Voxelised, they form a
# single connected component (checked below for 6-, 18- and 26-connectivity).
_PAIR_A = np.array([-95.2, -198.3, -779.9])
_PAIR_DIR = _unit([math.sin(math.radians(30)), -math.cos(math.radians(30)), 0.0])
_PAIR_B = _PAIR_A + (6.0 + 4.5) * _PAIR_DIR

# Lesion design, physical LPS mm.  Centres were chosen from the liver's
# distance map (thick right lobe) and are checked below: every shape grown by
# CONTAIN_MARGIN_MM lies inside its host organ, and no lesion voxel is in the
# first or last slice.  "group" = shapes meant to form one component.
SHAPES = [
    dict(name="sphere_d22", group="sphere_d22", centre=[-93.3, -123.1, -785.3],
         semi_axes=[11.0, 11.0, 11.0], axes=np.eye(3), host="liver"),
    dict(name="sphere_d14", group="sphere_d14", centre=[-42.5, -220.7, -783.4],
         semi_axes=[7.0, 7.0, 7.0], axes=np.eye(3), host="liver"),
    dict(name="sphere_d8", group="sphere_d8", centre=[-81.5, -93.8, -776.6],
         semi_axes=[4.0, 4.0, 4.0], axes=np.eye(3), host="liver"),
    dict(name="ellipsoid_15x9x6_rot30", group="ellipsoid_15x9x6_rot30",
         centre=[-112.8, -169.0, -790.7], semi_axes=[15.0, 9.0, 6.0],
         axes=_rot_z(30.0), rotation_deg_axial=30.0, host="liver"),
    dict(name="touching_pair_sphere_d12", group="touching_pair",
         centre=_PAIR_A.tolist(), semi_axes=[6.0, 6.0, 6.0], axes=np.eye(3),
         host="liver"),
    dict(name="touching_pair_sphere_d9", group="touching_pair",
         centre=_PAIR_B.tolist(), semi_axes=[4.5, 4.5, 4.5], axes=np.eye(3),
         host="liver"),
    dict(name="extrahepatic_sphere_d10", group="extrahepatic_sphere_d10",
         centre=[82.5, -98.6, -788.9], semi_axes=[5.0, 5.0, 5.0], axes=np.eye(3),
         host="spleen"),
]


GROUP_NOTES = {
    "touching_pair": ("two tangent spheres (d 12 and 9 mm, centres exactly 10.5 mm apart "
                      "in the axial plane): one connected component (6-, 18- and "
                      "26-connectivity); its diameters span both spheres"),
    "extrahepatic_sphere_d10": "in the spleen, outside the liver mask (extrahepatic)",
    "ellipsoid_15x9x6_rot30": ("semi-axes 15 x 9 x 6 mm, long axis rotated 30 deg "
                               "in the axial plane from +x (L) towards +y (P)"),
}


# ------------------------------------------------------------------ geometry
class Grid:
    """The DICOM grid as a (slice, row, col) array, slices sorted by increasing
    position along n = cross(row dir, col dir) of ImageOrientationPatient
    (the order SimpleITK uses)."""

    def __init__(self, origin, row_dir, col_dir, normal, spacing, shape):
        self.origin = np.asarray(origin, float)  # LPS of voxel (0, 0, 0)
        # unit vector along which each array index increases
        self.dir_slice = np.asarray(normal, float)
        self.dir_row = np.asarray(col_dir, float)  # IOP[3:6]: down the rows
        self.dir_col = np.asarray(row_dir, float)  # IOP[0:3]: along a row
        self.spacing = np.asarray(spacing, float)  # (slice, row, col) mm
        self.shape = tuple(int(s) for s in shape)

    @property
    def matrix(self):
        """3x3 M with LPS = origin + M @ (k, r, c)."""
        return np.column_stack([self.dir_slice * self.spacing[0],
                                self.dir_row * self.spacing[1],
                                self.dir_col * self.spacing[2]])

    def to_lps(self, idx):
        idx = np.asarray(idx, float)
        return self.origin + idx @ self.matrix.T

    def to_index(self, lps):
        lps = np.asarray(lps, float)
        return (lps - self.origin) @ np.linalg.inv(self.matrix).T

    @property
    def voxel_volume_mm3(self):
        return float(abs(np.linalg.det(self.matrix)))


# ----------------------------------------------------------------- reading
def read_source_ct(ct_dir: Path):
    files = sorted(p for p in ct_dir.iterdir() if p.is_file())
    dss = [pydicom.dcmread(p) for p in files]
    iop = np.array(dss[0].ImageOrientationPatient, float)
    for ds in dss:
        if not np.allclose(np.array(ds.ImageOrientationPatient, float), iop):
            raise SystemExit("source series has mixed orientations")
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    dss.sort(key=lambda d: float(np.dot(np.array(d.ImagePositionPatient, float), normal)))
    pos = np.array([np.dot(np.array(d.ImagePositionPatient, float), normal) for d in dss])
    steps = np.diff(pos)
    if not np.allclose(steps, steps[0], atol=1e-3) or steps[0] <= 0:
        raise SystemExit(f"irregular slice positions: {steps}")
    ps = [float(v) for v in dss[0].PixelSpacing]  # [between rows, between cols]
    raw = np.stack([d.pixel_array for d in dss]).astype(np.uint16)
    slope = float(dss[0].RescaleSlope)
    inter = float(dss[0].RescaleIntercept)
    for d in dss:
        if float(d.RescaleSlope) != slope or float(d.RescaleIntercept) != inter:
            raise SystemExit("per-slice rescale differs; not handled")
    grid = Grid(origin=np.array(dss[0].ImagePositionPatient, float), row_dir=row_dir,
                col_dir=col_dir, normal=normal,
                spacing=(float(steps[0]), ps[0], ps[1]), shape=raw.shape)
    return dss, raw, slope, inter, grid


def nifti_axis_map(nii, grid: Grid):
    """Describe how the NIfTI voxel grid maps onto the DICOM (k, r, c) grid.

    Returns, for each DICOM axis a, (nifti axis, flipped).  Asserts that the
    NIfTI grid is the DICOM grid up to an axis permutation and flips (no
    resampling), by mapping every DICOM axis step into NIfTI voxel space."""
    ras2lps = np.diag([-1.0, -1.0, 1.0])
    inv = np.linalg.inv(nii.affine)

    def nifti_index(dicom_idx):
        lps = grid.to_lps(dicom_idx)
        ras = ras2lps @ lps
        return inv[:3, :3] @ ras + inv[:3, 3]

    o = nifti_index([0, 0, 0])
    mapping = []
    for a in range(3):
        e = np.zeros(3)
        e[a] = 1
        d = nifti_index(e) - o
        j = int(np.argmax(np.abs(d)))
        if not (np.isclose(abs(d[j]), 1.0, atol=1e-4)
                and np.allclose(np.delete(d, j), 0, atol=1e-4)):
            raise SystemExit(f"NIfTI is not on the DICOM grid (axis {a}: {d})")
        mapping.append((j, bool(d[j] < 0)))
    if sorted(m[0] for m in mapping) != [0, 1, 2]:
        raise SystemExit("NIfTI axes do not form a permutation")
    for a, (j, flip) in enumerate(mapping):
        expect = (nii.shape[j] - 1) if flip else 0
        if not np.isclose(o[j], expect, atol=1e-4) or nii.shape[j] != grid.shape[a]:
            raise SystemExit(f"NIfTI origin/size mismatch on DICOM axis {a}")
    return mapping


def nifti_to_dicom_grid(arr, mapping):
    out = np.transpose(arr, [m[0] for m in mapping])
    for a, (_, flip) in enumerate(mapping):
        if flip:
            out = np.flip(out, axis=a)
    return np.ascontiguousarray(out)


def dicom_to_nifti_grid(arr, mapping):
    out = arr
    for a, (_, flip) in enumerate(mapping):
        if flip:
            out = np.flip(out, axis=a)
    perm = [m[0] for m in mapping]  # out axis a -> nifti axis perm[a]
    return np.ascontiguousarray(np.transpose(out, np.argsort(perm)))


# ----------------------------------------------------------------- lesions
def shape_q(shape, lps):
    """Quadratic form: < 1 strictly inside the ellipsoid."""
    u = (np.asarray(lps) - np.asarray(shape["centre"])) @ shape["axes"]
    return np.sum((u / np.asarray(shape["semi_axes"])) ** 2, axis=-1)


def shape_bbox(shape, grid: Grid, grow_mm=0.0, pad=1):
    """Index bounding box of the (grown) shape, padded by `pad` voxels."""
    axes, semi = shape["axes"], np.asarray(shape["semi_axes"]) + grow_mm
    half = np.sqrt(((axes * semi) ** 2).sum(axis=1))  # LPS half extents
    c = np.asarray(shape["centre"])
    corners = np.array([c + np.array(s) * half for s in itertools.product([-1, 1], repeat=3)])
    idx = grid.to_index(corners)
    lo = np.maximum(np.floor(idx.min(0)).astype(int) - pad, 0)
    hi = np.minimum(np.ceil(idx.max(0)).astype(int) + pad + 1, grid.shape)
    return tuple(slice(a, b) for a, b in zip(lo, hi))


def voxelise(shape, grid: Grid, grow_mm=0.0, check_ties=False):
    """Boolean volume: voxel centre strictly inside the (grown) shape."""
    out = np.zeros(grid.shape, bool)
    bb = shape_bbox(shape, grid, grow_mm)
    k, r, c = np.meshgrid(*[np.arange(s.start, s.stop) for s in bb], indexing="ij")
    lps = grid.to_lps(np.stack([k, r, c], -1))
    g = dict(shape, semi_axes=list(np.asarray(shape["semi_axes"]) + grow_mm))
    q = shape_q(g, lps)
    if check_ties and np.any(np.abs(q - 1.0) < TIE_EPS):
        raise SystemExit(f"{shape['name']}: a voxel centre lies on the surface")
    out[bb] = q < 1.0
    return out


def coverage(shapes, grid: Grid):
    """Fraction of each voxel covered by the union of `shapes` (supersampled)."""
    frac = np.zeros(grid.shape, np.float32)
    n = SUPERSAMPLE
    offs = (np.arange(n) + 0.5) / n - 0.5
    sub = np.stack(np.meshgrid(offs, offs, offs, indexing="ij"), -1).reshape(-1, 3)
    bbs = [shape_bbox(s, grid) for s in shapes]
    lo = np.min([[b.start for b in bb] for bb in bbs], axis=0)
    hi = np.max([[b.stop for b in bb] for bb in bbs], axis=0)
    k, r, c = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij")
    centres = np.stack([k, r, c], -1).reshape(-1, 1, 3).astype(float)
    inside = np.zeros(centres.shape[0] * sub.shape[0], bool)
    pts = grid.to_lps((centres + sub[None]).reshape(-1, 3))
    for s in shapes:
        inside |= shape_q(s, pts) < 1.0
    f = inside.reshape(-1, sub.shape[0]).mean(1).reshape(k.shape)
    frac[tuple(slice(a, b) for a, b in zip(lo, hi))] = f
    return frac


# --------------------------------------------------- brute-force reference
def components(mask, connectivity=26):
    """Plain BFS labelling (independent of scipy/cc3d/SimpleITK).  Labels are
    1..N in C order of each component's first voxel in the (k, r, c) array."""
    if connectivity == 26:
        offs = [d for d in itertools.product((-1, 0, 1), repeat=3) if any(d)]
    elif connectivity == 18:
        offs = [d for d in itertools.product((-1, 0, 1), repeat=3)
                if any(d) and sum(map(abs, d)) <= 2]
    elif connectivity == 6:
        offs = [d for d in itertools.product((-1, 0, 1), repeat=3) if sum(map(abs, d)) == 1]
    else:
        raise ValueError(connectivity)
    vox = [tuple(int(x) for x in v) for v in np.argwhere(mask)]  # C order
    todo = set(vox)
    labels = np.zeros(mask.shape, np.int32)
    n = 0
    for v in vox:
        if v not in todo:
            continue
        n += 1
        todo.discard(v)
        q = deque([v])
        while q:
            p = q.popleft()
            labels[p] = n
            for d in offs:
                nb = (p[0] + d[0], p[1] + d[1], p[2] + d[2])
                if nb in todo:
                    todo.discard(nb)
                    q.append(nb)
    return labels, n


def max_pair_distance(pts):
    """Max Euclidean distance over all pairs of points, all n^2 pairs."""
    best = 0.0
    for i in range(0, len(pts), 256):
        d = np.sqrt(((pts[i:i + 256, None, :] - pts[None, :, :]) ** 2).sum(-1))
        best = max(best, float(d.max()))
    return best


def brute_force_diameters(idx, grid: Grid):
    pts = grid.to_lps(idx)
    max3d = max_pair_distance(pts)
    ld, ld_slice = 0.0, None
    for k in np.unique(idx[:, 0]):
        d = max_pair_distance(pts[idx[:, 0] == k])
        if d > ld:
            ld, ld_slice = d, int(k)
    return max3d, ld, ld_slice


# ------------------------------------------------- synthetic Couinaud map
# A GEOMETRIC APPROXIMATION of Couinaud's segments, NOT anatomy. Every liver
# voxel gets one segment from the side of a few planes its centre lies on
# (physical LPS mm; x -> patient left, y -> posterior, z -> superior). The
# vertical planes are given by two points of their trace in the axial plane.
# The source has no hepatic-vein or gallbladder labels; the positions below
# were read off its TotalSegmentator labels (IVC = label 63, mean axis about
# (-37.1, -152.7); portal vein = label 64, hilum about (-50, -183) in slices
# 0-13) and chosen so that all 8 segments appear in the 40 mm field of view.
COUINAUD_IVC_XY = (-37.0, -153.0)       # IVC axis (vertical line)
COUINAUD_CANTLIE_ANT_XY = (-55.0, -250.0)  # anterior end of the Cantlie line (gallbladder fossa, assumed)
COUINAUD_UMBILICAL_XY = ((-15.0, -150.0), (-8.0, -250.0))  # umbilical fissure / falciform line
COUINAUD_RHV_LAT_XY = (-150.0, -185.0)  # lateral end of the right hepatic vein line (from the IVC)
COUINAUD_PORTAL_Z = -785.5              # horizontal portal plane (between slices 9 and 10)
COUINAUD_S2S3_POINT_YZ = (-200.0, -785.5)  # plane splitting II (postero-superior) from III
COUINAUD_S2S3_TILT_DEG = 30.0           # its normal: +z tilted 30 deg towards +y (posterior)
COUINAUD_CAUDATE_XY = (-24.0, -166.0)   # caudate (I): vertical cylinder left-anterior of the IVC
COUINAUD_CAUDATE_R_MM = 12.0
COUINAUD_RULES = [
    "1 (caudate): axial distance to (x, y) = (-24, -166) mm below 12 mm (a vertical cylinder "
    "left-anterior of the IVC, behind the hilum); this rule wins over all others",
    "right (5-8) vs left (2-4): vertical plane through the IVC axis (-37, -153) and the assumed "
    "gallbladder fossa (-55, -250) (Cantlie line / middle hepatic vein plane)",
    "right posterior (6, 7) vs anterior (5, 8): vertical plane through the IVC axis and "
    "(-150, -185) (right hepatic vein plane); posterior = larger y",
    "inferior (5, 6) vs superior (7, 8): horizontal portal plane z = -785.5 mm",
    "left: 4 (medial) vs lateral (2, 3): vertical plane through (-15, -150) and (-8, -250) "
    "(umbilical fissure / falciform ligament); lateral = larger x",
    "lateral: 2 vs 3: plane through y = -200, z = -785.5 whose normal is +z tilted 30 deg towards "
    "+y; 2 = postero-superior side, 3 = antero-inferior side",
]
COUINAUD_EXPECTED_ADJACENT = {
    (1, 2), (1, 4), (2, 3), (2, 4), (3, 4), (4, 5), (4, 8), (5, 6), (5, 8), (6, 7), (7, 8)}


def _left_of(x, y, p0, p1):
    """Signed distance (mm) of (x, y) from the axial line p0 -> p1; > 0 on the
    side of larger x when the line runs anterior (towards -y)."""
    d = np.asarray(p1, float) - np.asarray(p0, float)
    n = np.array([-d[1], d[0]]) / np.linalg.norm(d)
    return (x - p0[0]) * n[0] + (y - p0[1]) * n[1]


def couinaud_map(liver, grid: Grid):
    """Synthetic Couinaud map (uint8 1..8 on every liver voxel, 0 elsewhere) by
    the planes above. Raises when a voxel centre lies within TIE_EPS of a plane,
    when a segment is empty, or when a segment is not one 6-connected piece."""
    idx = np.argwhere(liver)
    p = grid.to_lps(idx)
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    cantlie = _left_of(x, y, COUINAUD_IVC_XY, COUINAUD_CANTLIE_ANT_XY)
    rhv = _left_of(x, y, COUINAUD_IVC_XY, COUINAUD_RHV_LAT_XY)
    umb = _left_of(x, y, *COUINAUD_UMBILICAL_XY)
    portal = z - COUINAUD_PORTAL_Z
    t = math.radians(COUINAUD_S2S3_TILT_DEG)
    s23 = (y - COUINAUD_S2S3_POINT_YZ[0]) * math.sin(t) + (z - COUINAUD_S2S3_POINT_YZ[1]) * math.cos(t)
    caud = np.hypot(x - COUINAUD_CAUDATE_XY[0], y - COUINAUD_CAUDATE_XY[1]) - COUINAUD_CAUDATE_R_MM
    for name, d in [("cantlie", cantlie), ("rhv", rhv), ("umbilical", umb), ("portal", portal),
                    ("II/III", s23), ("caudate", caud)]:
        if np.any(np.abs(d) < TIE_EPS):
            raise SystemExit(f"couinaud_map: a voxel centre lies on the {name} plane")
    left = cantlie > 0
    # the RHV line runs from the IVC to the right (towards -x): the posterior
    # side (larger y) is where _left_of is negative
    posterior = rhv < 0
    superior = portal > 0
    seg = np.zeros(len(x), np.uint8)
    seg[~left & ~posterior & ~superior] = 5
    seg[~left & posterior & ~superior] = 6
    seg[~left & posterior & superior] = 7
    seg[~left & ~posterior & superior] = 8
    seg[left & (umb <= 0)] = 4
    seg[left & (umb > 0) & (s23 > 0)] = 2
    seg[left & (umb > 0) & (s23 <= 0)] = 3
    seg[caud < 0] = 1
    out = np.zeros(grid.shape, np.uint8)
    out[tuple(idx.T)] = seg
    for v in range(1, 9):
        n = components(out == v, 6)[1]
        if n != 1:
            raise SystemExit(f"couinaud_map: segment {v} has {n} 6-connected pieces")
    adj = set(segment_face_areas(out, grid))
    if adj != COUINAUD_EXPECTED_ADJACENT:
        raise SystemExit(f"couinaud_map: adjacency {sorted(adj)} is not the expected pattern")
    return out


def segment_face_areas(seg, grid: Grid):
    """Shared face area (mm2) of every pair of different non-zero labels, by
    comparing each voxel with its next neighbour along each axis (brute force).
    A face normal to axis a has the area of the product of the other two spacings."""
    sp = grid.spacing
    face = [sp[1] * sp[2], sp[0] * sp[2], sp[0] * sp[1]]
    areas = {}
    for ax in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax] = slice(0, -1)
        hi[ax] = slice(1, None)
        a, b = seg[tuple(lo)], seg[tuple(hi)]
        m = (a != b) & (a > 0) & (b > 0)
        pairs, counts = np.unique(np.sort(np.stack([a[m], b[m]], 1), axis=1), axis=0, return_counts=True)
        for (u, v), n in zip(pairs.tolist(), counts.tolist()):
            areas[(u, v)] = areas.get((u, v), 0.0) + n * face[ax]
    return dict(sorted(areas.items()))


# ----------------------------------------------------------------- DICOM out
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, UID_ROOT)


def uid(*parts):
    """Deterministic UUID-derived UID (2.25.<uuid as int>, ISO/IEC 9834-8).

    Note: pydicom 3's ``generate_uid(prefix=None, entropy_srcs=...)`` ignores
    ``entropy_srcs`` and returns a *random* uuid4-based UID, so it is not used;
    a name-based uuid5 of the fixed root and the parts is used instead."""
    return UID(f"2.25.{uuid.uuid5(_UID_NAMESPACE, '/'.join(parts)).int}")


STUDY_UID = uid("study")
FOR_UID = uid("frame-of-reference")
CT_SERIES_UID = uid("series", "ct")
LOC_SERIES_UID = uid("series", "topogram")
IMPLEMENTATION_UID = uid("implementation")

# Attributes copied unchanged from the source (allow-list de-identification;
# everything else, including private tags, is dropped).
COPY_KEYWORDS = [
    "SpecificCharacterSet", "Modality", "Manufacturer", "ManufacturerModelName",
    "PatientWeight", "ContrastBolusAgent", "BodyPartExamined", "SliceThickness",
    "KVP", "DataCollectionDiameter", "ReconstructionDiameter",
    "GantryDetectorTilt", "TableHeight", "ExposureTime", "XRayTubeCurrent",
    "Exposure", "FilterType", "ConvolutionKernel", "PatientPosition",
    "SpiralPitchFactor", "CTDIvol", "AcquisitionNumber",
    "ImagePositionPatient", "ImageOrientationPatient", "SliceLocation",
    "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns",
    "PixelSpacing", "BitsAllocated", "BitsStored", "HighBit",
    "PixelRepresentation", "WindowCenter", "WindowWidth",
    "WindowCenterWidthExplanation", "RescaleIntercept", "RescaleSlope",
    "RescaleType",
]


def base_dataset(sop_uid):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    meta.ImplementationVersionName = "LIVERBURDEN_S1"
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = DUMMY_DATE
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = DUMMY_TIME
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "liverburden sample (partly synthetic)"
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PatientAge = ""
    ds.PatientSize = PATIENT_SIZE_M
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "liverburden allow-list; new UIDs; dummy dates"
    ds.StudyInstanceUID = STUDY_UID
    ds.StudyID = "1"
    ds.FrameOfReferenceUID = FOR_UID
    ds.PositionReferenceIndicator = ""
    ds.BurnedInAnnotation = "NO"
    return ds


def file_name(sop_uid):
    return hashlib.sha256(sop_uid.encode()).hexdigest()[:16]


def write_dataset(ds, path: Path):
    ds.save_as(path, enforce_file_format=True)


def build_ct_datasets(src_dss, raw_new):
    """One dataset per slice; index k = SimpleITK slice order."""
    # InstanceNumber follows the source numbering (it increases head to feet,
    # i.e. opposite to the k order): 1 = the source's lowest InstanceNumber.
    order = sorted(range(len(src_dss)), key=lambda k: int(src_dss[k].InstanceNumber))
    inst = {k: i + 1 for i, k in enumerate(order)}
    out = []
    for k, src in enumerate(src_dss):
        sop = uid("ct", str(k))
        ds = base_dataset(sop)
        for kw in COPY_KEYWORDS:
            if kw in src:
                setattr(ds, kw, src[kw].value)
        ds.ImageType = ["DERIVED", "PRIMARY", "AXIAL"]
        ds.DerivationDescription = (
            "Synthetic hypodense lesions inserted by liverburden make_sample_data.py")
        ds.ImageComments = "Partly synthetic sample data. Not for clinical use."
        ds.SeriesInstanceUID = CT_SERIES_UID
        ds.SeriesNumber = 2
        ds.SeriesDescription = str(src.get("SeriesDescription", "CT"))
        ds.InstanceNumber = inst[k]
        px = raw_new[k].astype("<u2")
        ds.SmallestImagePixelValue = int(px.min())
        ds.LargestImagePixelValue = int(px.max())
        ds.PixelData = px.tobytes()
        out.append((k, ds))
    return out


def build_localizer_datasets(src0, hu, grid: Grid, slope, inter):
    """Two 512x512 'Topogram' images (AP and lateral), each the mean HU of the
    volume projected through the body, drawn as a 20-row band (2 mm rows) in
    an otherwise empty image.  A decoy: the loader must pick the volume."""
    rows, cols = grid.shape[1], grid.shape[2]
    z_top = float(grid.to_lps([grid.shape[0] - 1, 0, 0])[2])
    top_row = 246  # image row of the highest CT slice
    ipp_z = z_top + 2.0 * top_row
    views = [
        ("AP", [1, 0, 0, 0, 0, -1], np.mean(hu, axis=1),  # (k, c): mean over rows
         [float(grid.origin[0]), -188.0, ipp_z]),
        ("LAT", [0, 1, 0, 0, 0, -1], np.mean(hu, axis=2),  # (k, r): mean over cols
         [0.0, float(grid.origin[1]), ipp_z]),
    ]
    out = []
    for i, (view, iop, proj, ipp) in enumerate(views):
        img = np.full((rows, cols), -1024.0)
        band = proj[::-1]  # highest slice first (rows go feet-wards)
        img[top_row:top_row + band.shape[0], :band.shape[1]] = band
        px = np.clip(np.rint((img - inter) / slope), 0, 4095).astype("<u2")
        sop = uid("topogram", view)
        ds = base_dataset(sop)
        for kw in ["SpecificCharacterSet", "Modality", "Manufacturer",
                   "ManufacturerModelName", "PatientWeight", "BodyPartExamined",
                   "KVP", "PatientPosition", "SamplesPerPixel",
                   "PhotometricInterpretation", "BitsAllocated", "BitsStored",
                   "HighBit", "PixelRepresentation", "RescaleIntercept",
                   "RescaleSlope", "RescaleType"]:
            if kw in src0:
                setattr(ds, kw, src0[kw].value)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.SeriesInstanceUID = LOC_SERIES_UID
        ds.SeriesNumber = 1
        ds.SeriesDescription = "Topogram"
        ds.InstanceNumber = i + 1
        ds.AcquisitionNumber = 1
        ds.ImageComments = f"Synthetic {view} topogram (projection of the sample CT)."
        ds.ImageOrientationPatient = iop
        ds.ImagePositionPatient = ipp
        ds.PixelSpacing = [2.0, float(grid.spacing[2])]
        ds.SliceThickness = "1"
        ds.Rows, ds.Columns = rows, cols
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.SmallestImagePixelValue = int(px.min())
        ds.LargestImagePixelValue = int(px.max())
        ds.PixelData = px.tobytes()
        out.append(ds)
    return out


def nifti_bytes(data, src_nii):
    """Source header and affine unchanged; only the data (uint8) differs."""
    img = nib.Nifti1Image(data.astype(np.uint8), src_nii.affine, header=src_nii.header.copy())
    img.set_data_dtype(np.uint8)
    return gzip.compress(img.to_bytes(), compresslevel=9, mtime=0)


# -------------------------------------------------------------------- build
def build(shared: Path):
    src_dss, raw, slope, inter, grid = read_source_ct(shared / SRC_CT_DIR)
    hu_src = raw.astype(np.float64) * slope + inter
    src_nii = nib.load(str(shared / SRC_SEG))
    mapping = nifti_axis_map(src_nii, grid)
    labels = nifti_to_dicom_grid(np.asarray(src_nii.dataobj), mapping)
    assert np.array_equal(dicom_to_nifti_grid(labels, mapping), np.asarray(src_nii.dataobj))
    hosts = {"liver": labels == LIVER_LABEL, "spleen": labels == SPLEEN_LABEL}

    shapes = [dict(s, centre=list(map(float, s["centre"])),
                   semi_axes=list(map(float, s["semi_axes"])),
                   axes=np.asarray(s["axes"], float)) for s in SHAPES]
    shape_masks = []
    for s in shapes:
        m = voxelise(s, grid, check_ties=True)
        ks = np.unique(np.nonzero(m)[0])
        if ks.min() < 1 or ks.max() > grid.shape[0] - 2:
            raise SystemExit(f"{s['name']} touches the first/last slice ({ks})")
        grown = voxelise(s, grid, grow_mm=CONTAIN_MARGIN_MM)
        if np.any(grown & ~hosts[s["host"]]):
            raise SystemExit(f"{s['name']} (+{CONTAIN_MARGIN_MM} mm) leaves the {s['host']}")
        if s["host"] != "liver" and np.any(grown & hosts["liver"]):
            raise SystemExit(f"{s['name']} (+{CONTAIN_MARGIN_MM} mm) touches the liver")
        shape_masks.append(m)
    lesions = np.logical_or.reduce(shape_masks)

    # intensities: centre-inside voxels -> lesion HU + noise; outside voxels
    # partly covered -> partial-volume blend; everything else untouched
    rng = np.random.default_rng(SEED)
    noise = rng.normal(0.0, LESION_NOISE_SD_HU, size=grid.shape)
    groups = {}
    for s in shapes:
        groups.setdefault(s["group"], []).append(s)
    frac = np.zeros(grid.shape, np.float32)
    for gshapes in groups.values():
        frac = np.maximum(frac, coverage(gshapes, grid))
    lesion_value = LESION_HU + noise
    hu = hu_src.copy()
    hu[lesions] = lesion_value[lesions]
    rim = (~lesions) & (frac > 0)
    hu[rim] = (1 - frac[rim]) * hu_src[rim] + frac[rim] * lesion_value[rim]
    bits_max = 2 ** int(src_dss[0].BitsStored) - 1
    raw_new = np.clip(np.rint((hu - inter) / slope), 0, bits_max).astype(np.uint16)
    changed = raw_new != raw
    assert not np.any(changed & ~(lesions | rim)), "pixels changed outside lesions+rim"
    hu_new = raw_new.astype(np.float64) * slope + inter

    liver = hosts["liver"].copy()
    lab26, n26 = components(lesions, 26)
    comp_in_liver = []
    for i in range(1, n26 + 1):
        c = lab26 == i
        frac_liver = float((c & hosts["liver"]).sum() / c.sum())
        comp_in_liver.append(frac_liver)
        if frac_liver > 0.5:  # intrahepatic lesion: liver masks include tumour
            liver |= c
    return dict(grid=grid, src_dss=src_dss, raw=raw, raw_new=raw_new, hu_new=hu_new,
                slope=slope, inter=inter, src_nii=src_nii, mapping=mapping,
                labels=labels, liver=liver, lesions=lesions, shapes=shapes,
                shape_masks=shape_masks, lab26=lab26, n26=n26, rim=rim,
                comp_in_liver=comp_in_liver, segments=couinaud_map(liver, grid))


def shape_record(s, m):
    rec = dict(
        name=s["name"],
        type="sphere" if len(set(s["semi_axes"])) == 1 else "ellipsoid",
        centre_lps_mm=[round(v, 9) for v in s["centre"]],
        semi_axes_mm=s["semi_axes"],
        axes_lps=[[round(float(v), 9) for v in s["axes"][:, j]] for j in range(3)],
    )
    if "rotation_deg_axial" in s:
        rec["rotation_deg_axial"] = s["rotation_deg_axial"]
    rec.update(
        analytic_volume_ml=4 / 3 * math.pi * float(np.prod(s["semi_axes"])) / 1000,
        analytic_max_diameter_mm=2 * max(s["semi_axes"]),
        host=s["host"],
        voxel_count=int(m.sum()),
    )
    return rec


def make_truth(b):
    grid, lesions, liver = b["grid"], b["lesions"], b["liver"]
    vv = grid.voxel_volume_mm3
    n6 = components(lesions, 6)[1]
    n18 = components(lesions, 18)[1]
    comps = []
    for i in range(1, b["n26"] + 1):
        c = b["lab26"] == i
        idx = np.argwhere(c)  # C order: idx[0] is the first voxel
        members = [j for j, m in enumerate(b["shape_masks"]) if np.any(m & c)]
        group = b["shapes"][members[0]]["group"]
        max3d, ld, ld_slice = brute_force_diameters(idx, grid)
        comps.append(dict(
            id=i,
            name=group,
            note=GROUP_NOTES.get(group, ""),
            first_voxel_slice_row_col=[int(v) for v in idx[0]],
            voxel_count=int(c.sum()),
            volume_ml=int(c.sum()) * vv / 1000.0,
            in_liver=bool(b["comp_in_liver"][i - 1] == 1.0),
            fraction_in_liver=b["comp_in_liver"][i - 1],
            slices=[int(idx[:, 0].min()), int(idx[:, 0].max())],
            max3d_mm=max3d,
            ld_mm=ld,
            ld_slice=ld_slice,
            mean_hu=round(float(b["hu_new"][c].mean()), 2),
            shapes=[shape_record(b["shapes"][j], b["shape_masks"][j]) for j in members],
        ))
    intra = [c for c in comps if c["in_liver"]]
    liver_vox = int(liver.sum())
    intra_vox = sum(c["voxel_count"] for c in intra)
    ks_liver = np.unique(np.nonzero(liver)[0])
    sp = [float(v) for v in grid.spacing]
    sitk_dir = np.column_stack([grid.dir_col, grid.dir_row, grid.dir_slice])
    geometry = dict(
        array_axes=["slice", "row", "col"],
        slice_order=("increasing position along cross(IOP row dir, IOP col dir) "
                     "(SimpleITK order)"),
        size=list(grid.shape),
        spacing_mm=sp,
        spacing_note=("slice spacing from ImagePositionPatient; the SliceThickness "
                      f"tag says {b['src_dss'][0].SliceThickness} mm"),
        origin_mm=[float(v) for v in grid.origin],
        direction_columns=dict(slice=grid.dir_slice.tolist(), row=grid.dir_row.tolist(),
                               col=grid.dir_col.tolist()),
        voxel_volume_mm3=vv,
        sitk=dict(size=list(grid.shape[::-1]), spacing=sp[::-1],
                  origin=[float(v) for v in grid.origin],
                  direction=sitk_dir.ravel().tolist()),
    )
    return dict(
        description=(
            "Reference values for sample_data/study, computed by the generator "
            "sample_data/make_sample_data.py by brute force: components by plain "
            "BFS, diameters over all pairs of voxel centres in physical LPS mm. "
            "Partly synthetic: real CT anatomy and TotalSegmentator liver mask, "
            "synthetic lesions."),
        computed_by="sample_data/make_sample_data.py (generator, brute force)",
        source=dict(
            credit="wasserth/TotalSegmentator tests/reference_files",
            licence="Apache-2.0",
            files=["example_ct_dicom/", "example_seg_dicom.nii.gz (label 5 = liver)"]),
        coordinate_system="DICOM patient LPS, mm",
        geometry=geometry,
        series=dict(study_uid=str(STUDY_UID),
                    ct_series_uid=str(CT_SERIES_UID),
                    ct_series_description=str(b["src_dss"][0].SeriesDescription),
                    localizer_series_uid=str(LOC_SERIES_UID),
                    frame_of_reference_uid=str(FOR_UID)),
        masks=dict(
            stored_orientation="".join(nib.aff2axcodes(b["src_nii"].affine)),
            note=("liver.nii.gz and lesions.nii.gz keep the source NIfTI header/affine "
                  "(LAS: row axis flipped relative to the DICOM); reorient, do not "
                  "resample"),
        ),
        liver=dict(
            voxel_count=liver_vox,
            volume_ml=liver_vox * vv / 1000.0,
            includes_lesions=True,
            slices=[int(ks_liver.min()), int(ks_liver.max())],
            touches_first_and_last_slice=bool(
                ks_liver.min() == 0 and ks_liver.max() == grid.shape[0] - 1),
            mean_hu_excluding_lesions=round(float(b["hu_new"][liver & ~lesions].mean()), 2),
        ),
        lesion_hu=dict(
            value=LESION_HU, noise_sd=LESION_NOISE_SD_HU, seed=SEED,
            edge=("voxels with centre outside every shape are blended by their "
                  f"{SUPERSAMPLE}^3-supersampled coverage (not part of the mask)")),
        voxelisation="voxel centre strictly inside the analytic shape (physical LPS mm)",
        volume_definition="voxel_count x voxel_volume_mm3 / 1000",
        connectivity_counts={"6": n6, "18": n18, "26": b["n26"]},
        lesion_numbering=(
            "components of lesions.nii.gz under 26-connectivity, numbered 1..N in C "
            "order of each component's first voxel in the (slice,row,col) array"),
        diameter_definitions=dict(
            max3d_mm="max Euclidean distance over all pairs of voxel centres",
            ld_mm="max over slices of the max in-slice pair distance of voxel centres"),
        lesions=comps,
        totals=dict(
            n_lesions=len(comps), n_intrahepatic=len(intra),
            n_extrahepatic=len(comps) - len(intra),
            intrahepatic_lesion_voxels=intra_vox,
            intrahepatic_lesion_volume_ml=intra_vox * vv / 1000.0,
            burden_percent=100.0 * intra_vox / liver_vox,
            burden_definition=("intrahepatic lesion volume / liver volume "
                               "(liver incl. lesions) x 100")),
        segments=segments_truth(b, comps),
    )


def segments_truth(b, comps):
    """Brute-force reference values of the synthetic Couinaud map: voxel counts
    per segment, tumor voxels per segment, shared face areas, and the FLR of a
    right hepatectomy (resect 5-8), all by plain numpy counting."""
    grid, liver, seg = b["grid"], b["liver"], b["segments"]
    vv = grid.voxel_volume_mm3
    intra_ids = [c["id"] for c in comps if c["in_liver"]]
    tumor = np.isin(b["lab26"], intra_ids)
    tlv = liver | tumor  # = liver here: every intrahepatic lesion lies in the liver mask
    tlv_vox, tumor_vox = int(tlv.sum()), int(tumor.sum())
    per = {}
    for v in range(1, 9):
        m = (seg == v) & tlv
        t = m & tumor
        per[str(v)] = dict(
            voxel_count=int(m.sum()), volume_ml=int(m.sum()) * vv / 1000.0,
            tumor_voxel_count=int(t.sum()), tumor_volume_ml=int(t.sum()) * vv / 1000.0,
            lesion_ids=sorted(int(i) for i in np.unique(b["lab26"][t]) if i),
        )
    majority = {}
    for i in intra_ids:
        vals, cnt = np.unique(seg[b["lab26"] == i], return_counts=True)
        majority[str(i)] = str(int(vals[np.argmax(cnt)]))
    lobes = {name: dict(segments=[str(v) for v in vs],
                        voxel_count=int(sum(per[str(v)]["voxel_count"] for v in vs)),
                        tumor_voxel_count=int(sum(per[str(v)]["tumor_voxel_count"] for v in vs)))
             for name, vs in [("right", (5, 6, 7, 8)), ("left", (2, 3, 4)), ("caudate", (1,))]}
    resect = (5, 6, 7, 8)
    remnant = tlv & (seg > 0) & ~np.isin(seg, resect)
    rem_vox, rem_tum = int(remnant.sum()), int((remnant & tumor).sum())
    removed = int((tumor & np.isin(seg, resect)).sum())
    flr_vox = rem_vox - rem_tum
    h_cm, w_kg = 100.0 * float(PATIENT_SIZE_M), float(b["src_dss"][0].PatientWeight)
    bsa = math.sqrt(h_cm * w_kg / 3600.0)
    slv_v, slv_u = -794.41 + 1267.28 * bsa, 706.2 * bsa + 2.4
    flr_ml = flr_vox * vv / 1000.0
    return dict(
        file="segments.nii.gz",
        note=("GEOMETRIC APPROXIMATION of Couinaud segments by a few planes in LPS, NOT anatomy; "
              "values 1..8 = segments I..VIII on every liver voxel (no IVa/IVb split); same "
              "header/affine (LAS) as liver.nii.gz"),
        rules=COUINAUD_RULES,
        voxel_volume_mm3=vv,
        labelled_voxels=int((seg > 0).sum()),
        unassigned_liver_voxels=int((tlv & (seg == 0)).sum()),
        per_segment=per,
        lobes=lobes,
        adjacency_mm2={f"{u}-{v}": a for (u, v), a in segment_face_areas(seg, grid).items()},
        adjacency_definition=("shared face area between two segments: number of face-neighbour "
                              "voxel pairs x area of that face (product of the other two spacings)"),
        lesion_majority_segment=majority,
        flr_right_hepatectomy=dict(
            resected_segments=[str(v) for v in resect],
            remnant_segments=["1", "2", "3", "4"],
            tlv_voxels=tlv_vox,
            tumor_voxels=tumor_vox,
            functional_voxels=tlv_vox - tumor_vox,
            remnant_voxels=rem_vox,
            remnant_tumor_voxels=rem_tum,
            flr_voxels=flr_vox,
            flr_ml=flr_ml,
            flr_pct=100.0 * flr_vox / (tlv_vox - tumor_vox),
            tumor_removed_voxels=removed,
            cytoreduction_pct=100.0 * removed / tumor_vox,
            body=dict(height_cm=h_cm, weight_kg=w_kg, source="DICOM PatientSize / PatientWeight"),
            bsa_m2=bsa,
            slv_ml=dict(vauthey=slv_v, urata=slv_u),
            sflr_pct=dict(vauthey=100.0 * flr_ml / slv_v, urata=100.0 * flr_ml / slv_u),
            note="the liver is truncated by the 40 mm field of view: these are not a real FLR",
        ),
    )


# ------------------------------------------------------------------- write
def write(b, truth, out: Path):
    study = out / "study"
    ct_dir = study / "ct"
    ct_dir.mkdir(parents=True, exist_ok=True)
    for p in ct_dir.iterdir():  # our own previous output only
        if p.is_file():
            p.unlink()
    names = []
    for k, ds in build_ct_datasets(b["src_dss"], b["raw_new"]):
        name = file_name(ds.SOPInstanceUID)
        write_dataset(ds, ct_dir / name)
        names.append(name)
    assert names != sorted(names) and names[::-1] != sorted(names), "names follow slice order"
    hu = b["hu_new"]
    for ds in build_localizer_datasets(b["src_dss"][0], hu, b["grid"], b["slope"], b["inter"]):
        write_dataset(ds, ct_dir / file_name(ds.SOPInstanceUID))
    for fname, arr in [("liver.nii.gz", b["liver"]), ("lesions.nii.gz", b["lesions"]),
                       ("segments.nii.gz", b["segments"])]:
        data = dicom_to_nifti_grid(arr.astype(np.uint8), b["mapping"])
        (study / fname).write_bytes(nifti_bytes(data, b["src_nii"]))
    (study / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")


# ------------------------------------------------------------------ verify
def verify(b, truth, out: Path):
    study = out / "study"
    ct_dir = str(study / "ct")
    grid = b["grid"]
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(ct_dir)
    assert set(ids) == {str(CT_SERIES_UID), str(LOC_SERIES_UID)}, ids
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(ct_dir, str(CT_SERIES_UID))
    assert len(files) == grid.shape[0], len(files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    ct = reader.Execute()
    g = truth["geometry"]["sitk"]
    assert list(ct.GetSize()) == g["size"]
    assert np.allclose(ct.GetSpacing(), g["spacing"], atol=1e-6), ct.GetSpacing()
    assert np.allclose(ct.GetOrigin(), g["origin"], atol=1e-4)
    assert np.allclose(ct.GetDirection(), g["direction"], atol=1e-6)
    ct_arr = sitk.GetArrayFromImage(ct).astype(np.float64)  # (k, r, c)
    assert np.array_equal(ct_arr, b["hu_new"]), "CT pixels differ from the build"

    # pydicom view: de-identification and tags
    for f in files:
        ds = pydicom.dcmread(f)
        assert str(ds.PatientName) == PATIENT_NAME and ds.PatientID == PATIENT_ID
        assert ds.PatientBirthDate == "" and "InstitutionName" not in ds
        assert "InstitutionAddress" not in ds and ds.AccessionNumber == ""
        assert float(ds.PatientSize) == float(PATIENT_SIZE_M) and float(ds.PatientWeight) > 0
        assert not any(e.tag.is_private for e in ds)

    results = {}
    for name in ["liver", "lesions", "segments"]:
        p = study / f"{name}.nii.gz"
        n = nib.load(str(p))
        assert nib.aff2axcodes(n.affine) == nib.aff2axcodes(b["src_nii"].affine)
        assert np.allclose(n.affine, b["src_nii"].affine)
        assert n.get_data_dtype() == np.uint8
        img = sitk.ReadImage(str(p))
        # (a) physical points: index (c, r, k) of the CT and the point it maps
        # to in the raw (LAS) mask image
        arr_raw = sitk.GetArrayFromImage(img)
        sample = np.argwhere(b[name])[:: max(1, int(np.count_nonzero(b[name])) // 500)]
        for k, r, c in sample:
            pt = ct.TransformIndexToPhysicalPoint((int(c), int(r), int(k)))
            ix = img.TransformPhysicalPointToIndex(pt)
            assert arr_raw[ix[2], ix[1], ix[0]] == b[name][k, r, c]
        # (b) lossless reorientation to the DICOM (LPS) grid
        lps = sitk.DICOMOrient(img, "LPS")
        assert np.allclose(lps.GetOrigin(), ct.GetOrigin(), atol=1e-4)
        assert np.allclose(lps.GetSpacing(), ct.GetSpacing(), atol=1e-5)
        assert np.allclose(lps.GetDirection(), ct.GetDirection(), atol=1e-6)
        arr = sitk.GetArrayFromImage(lps).astype(b[name].dtype)
        assert np.array_equal(arr, b[name]), f"{name} mask differs after DICOMOrient"
        results[name] = arr
    liver, lesions = results["liver"], results["lesions"]
    seg = results["segments"]
    assert np.array_equal(seg > 0, liver), "segment map must label exactly the liver voxels"
    st = truth["segments"]
    for v in range(1, 9):
        assert int(((seg == v) & liver).sum()) == st["per_segment"][str(v)]["voxel_count"] > 0
    assert int(liver.sum()) == truth["liver"]["voxel_count"]
    intra = lesions & liver
    extra = lesions & ~liver
    summary = dict(
        liver_hu=float(ct_arr[liver & ~lesions].mean()),
        intrahepatic_lesion_hu=float(ct_arr[intra].mean()),
        extrahepatic_lesion_hu=float(ct_arr[extra].mean()) if extra.any() else None,
    )
    assert abs(summary["intrahepatic_lesion_hu"] - LESION_HU) < 3
    assert summary["liver_hu"] > LESION_HU + 30
    for c in truth["lesions"]:
        m = b["lab26"] == c["id"]
        assert int((m & lesions).sum()) == c["voxel_count"]
    # localizer series is readable and is not a volume of this grid
    loc = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(ct_dir, str(LOC_SERIES_UID))
    assert len(loc) == 2
    return summary


def du(path: Path):
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=REPO_ROOT.parent / "shared" / "data",
                    help="shared data folder (default: ../shared/data from the repo root)")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "sample_data",
                    help="output folder; writes <out>/study/ (default: sample_data)")
    ap.add_argument("--verify-only", action="store_true",
                    help="rebuild in memory and check the existing outputs; write nothing")
    args = ap.parse_args(argv)

    b = build(args.shared)
    truth = make_truth(b)
    if args.verify_only:
        on_disk = json.loads((args.out / "study" / "truth.json").read_text())
        assert on_disk == json.loads(json.dumps(truth)), "truth.json differs from a rebuild"
    else:
        write(b, truth, args.out)
    s = verify(b, truth, args.out)

    g = truth["geometry"]
    print(f"grid (slice,row,col) {g['size']}, spacing {g['spacing_mm']} mm "
          f"({g['spacing_note']})")
    print(f"liver: {truth['liver']['voxel_count']} voxels, {truth['liver']['volume_ml']:.2f} ml, "
          f"slices {truth['liver']['slices']} (touches first and last: "
          f"{truth['liver']['touches_first_and_last_slice']})")
    print(f"{'id':>2} {'name':<26} {'vox':>6} {'ml':>8} {'ld_mm':>8} {'max3d_mm':>8} "
          f"{'slices':>8} {'liver':>5} {'HU':>6}")
    for c in truth["lesions"]:
        print(f"{c['id']:>2} {c['name']:<26} {c['voxel_count']:>6} {c['volume_ml']:>8.4f} "
              f"{c['ld_mm']:>8.3f} {c['max3d_mm']:>8.3f} {str(c['slices']):>8} "
              f"{str(c['in_liver']):>5} {c['mean_hu']:>6.1f}")
    print(f"components 6/18/26-connected: {truth['connectivity_counts']}")
    print(f"burden: {truth['totals']['burden_percent']:.4f} % "
          f"({truth['totals']['intrahepatic_lesion_volume_ml']:.4f} ml)")
    print(f"mean HU: liver (excl. lesions) {s['liver_hu']:.1f}, intrahepatic lesions "
          f"{s['intrahepatic_lesion_hu']:.1f}, extrahepatic {s['extrahepatic_lesion_hu']:.1f}")
    st = truth["segments"]
    print("synthetic Couinaud map (geometric approximation, NOT anatomy):")
    print("  " + "  ".join(f"{k}: {v['voxel_count']} vox {v['volume_ml']:.2f} ml"
                           for k, v in st["per_segment"].items()))
    print("  adjacency mm2: " + ", ".join(f"{k} {a:.1f}" for k, a in st["adjacency_mm2"].items()))
    f = st["flr_right_hepatectomy"]
    print(f"  right hepatectomy: FLR {f['flr_ml']:.2f} ml = {f['flr_pct']:.2f} %, sFLR Vauthey "
          f"{f['sflr_pct']['vauthey']:.2f} %, Urata {f['sflr_pct']['urata']:.2f} % (BSA {f['bsa_m2']:.4f}), "
          f"cytoreduction {f['cytoreduction_pct']:.2f} %")
    print(f"{args.out / 'study'}: {du(args.out / 'study') / 1e6:.2f} MB; verification OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
