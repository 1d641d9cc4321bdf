"""Synthetic CT pairs with a known rigid motion, for registration and margin tests.

The phantom is an analytic function of the LPS point: air, a body ellipsoid,
a spine, and a liver with low-frequency texture and vessels (tubes). The post
scan sees the same patient moved: ``post(q) = f(T^-1 q)`` where ``T`` maps a
pre point to the post point of the same anatomy (ITK's fixed-to-moving map).
"""

from __future__ import annotations

import numpy as np

from liverburden.geometry import Volume

LIVER_C = np.array([-60.0, -10.0, 0.0])  # LPS: patient right, anterior
LIVER_R = np.array([75.0, 55.0, 50.0])


def rotation(ax_deg: float, ay_deg: float, az_deg: float) -> np.ndarray:
    a, b, c = np.radians([ax_deg, ay_deg, az_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _vessels(seed: int):
    rng = np.random.default_rng(seed)
    segs = []
    for _ in range(14):
        a = LIVER_C + rng.uniform(-0.7, 0.7, 3) * LIVER_R
        b = LIVER_C + rng.uniform(-0.7, 0.7, 3) * LIVER_R
        segs.append((a, b, rng.uniform(1.5, 4.0)))
    return segs


def liver_inside(p: np.ndarray) -> np.ndarray:
    return np.sum(((p - LIVER_C) / LIVER_R) ** 2, axis=-1) <= 1.0


def phantom_hu(p: np.ndarray, seed: int = 7, *, tumors=(), zones=(), liver_shift_hu: float = 0.0) -> np.ndarray:
    """HU at LPS points ``p`` (..., 3).

    ``tumors`` and ``zones``: sequences of ``(centre, radii)`` ellipsoids (LPS mm,
    radii a float or 3 floats) in the anatomy's (pre) frame: a tumor is drawn
    hypodense (55 HU), an ablation zone as a hypodense cavity (30 HU) with a
    2 mm hyperdense rim (120 HU), as on a control CT. ``liver_shift_hu`` adds a
    constant to the liver parenchyma (another contrast phase). With the
    defaults the values are those of the original phantom.
    """
    hu = np.full(p.shape[:-1], -1000.0)
    body = np.sum((p / np.array([160.0, 120.0, 400.0])) ** 2, axis=-1) <= 1.0
    hu[body] = 30.0 + 15.0 * np.sin(p[..., 0][body] / 9.0) * np.cos(p[..., 1][body] / 13.0)
    spine = ((p[..., 0] / 18.0) ** 2 + ((p[..., 1] - 80.0) / 18.0) ** 2) <= 1.0
    hu[spine & body] = 450.0
    kid = np.sum(((p - np.array([70.0, 50.0, -20.0])) / np.array([25.0, 20.0, 45.0])) ** 2, axis=-1) <= 1.0
    hu[kid & body] = 160.0
    liv = liver_inside(p)
    q = p[liv]  # the liver's texture, vessels and lesions are evaluated on liver points only
    h = 95.0 + liver_shift_hu + 12.0 * np.sin(q[:, 0] / 7.0 + 1.0) * np.sin(q[:, 1] / 5.0) * np.cos(q[:, 2] / 6.0)
    for a, b, r in _vessels(seed):
        ab = b - a
        t = np.clip(np.sum((q - a) * ab, axis=-1) / np.dot(ab, ab), 0.0, 1.0)
        d = np.linalg.norm(q - (a + t[..., None] * ab), axis=-1)
        h[d <= r] = 190.0
    for c, r in tumors:
        h[_ellipsoid_level(q, c, r) <= 1.0] = 55.0
    for c, r in zones:
        lev = _ellipsoid_level(q, c, r)
        rim = np.min(np.broadcast_to(np.asarray(r, dtype=float), (3,)))
        h[lev <= 1.0] = 120.0
        h[lev <= (1.0 - 2.0 / rim) ** 2] = 30.0
    hu[liv] = h
    return hu


def _ellipsoid_level(p: np.ndarray, centre, radii) -> np.ndarray:
    r = np.broadcast_to(np.asarray(radii, dtype=float), (3,))
    return np.sum(((p - np.asarray(centre, dtype=float)) / r) ** 2, axis=-1)


def grid_points(size, spacing, origin, direction) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in size], indexing="ij"), -1).astype(float)
    return np.asarray(origin) + (idx * np.asarray(spacing)) @ np.asarray(direction).T


def make_volume(size, spacing, origin, direction=np.eye(3)[:, ::-1], *, transform=None, noise=8.0, seed=0, kind="ct",
                tumors=(), zones=(), liver_shift_hu=0.0, supersample=1, chunk_slices=None, dtype=np.float32):
    """Sample the phantom on a grid. ``transform`` = (R, t) of T(p) = R p + t (pre -> post);
    the volume then shows the moved patient (post scan).

    ``tumors``, ``zones``, ``liver_shift_hu``: see :func:`phantom_hu` (CT only).
    ``supersample`` = s > 1 averages s^3 sub-voxel samples (partial volume, as a
    CT detector does) before the noise. ``chunk_slices`` evaluates that many
    slices at a time (large grids); the values do not depend on it.
    """
    size = tuple(int(v) for v in size)
    spacing = np.asarray(spacing, dtype=float)
    direction = np.asarray(direction, dtype=float)
    n = size[0] if chunk_slices is None else int(chunk_slices)
    if kind == "ct":
        arr = np.empty(size, dtype=dtype)
    elif kind == "liver":
        arr = np.empty(size, dtype=np.uint8)
    else:
        raise ValueError(kind)
    s = int(supersample)
    offs = (np.arange(s) + 0.5) / s - 0.5
    sub = np.stack(np.meshgrid(offs, offs, offs, indexing="ij"), -1).reshape(-1, 3)
    rng = np.random.default_rng(seed)
    for z0 in range(0, size[0], n):
        z1 = min(size[0], z0 + n)
        org = np.asarray(origin, dtype=float) + direction @ (np.array([z0, 0, 0]) * spacing)
        pts = grid_points((z1 - z0, size[1], size[2]), spacing, org, direction)
        if transform is not None:
            R, t = transform
            pts = (pts - t) @ R  # T^-1 q = R^T (q - t); row-vector form
        if kind == "ct":
            if s == 1:
                val = phantom_hu(pts, tumors=tumors, zones=zones, liver_shift_hu=liver_shift_hu)
            else:
                val = np.zeros(pts.shape[:-1])
                for o in sub:
                    d = direction @ (o * spacing)
                    if transform is not None:
                        d = d @ transform[0]
                    val += phantom_hu(pts + d, tumors=tumors, zones=zones, liver_shift_hu=liver_shift_hu)
                val /= len(sub)
            val += rng.normal(0.0, noise, val.shape)  # drawn slab by slab: the same sequence as at once
            arr[z0:z1] = val
        else:
            arr[z0:z1] = liver_inside(pts)
    return Volume(arr, spacing, origin, direction)


def sphere_mask(size, spacing, origin, direction, centre, radius, transform=None) -> np.ndarray:
    pts = grid_points(size, spacing, origin, direction)
    if transform is not None:
        R, t = transform
        pts = (pts - t) @ R
    return (np.linalg.norm(pts - np.asarray(centre), axis=-1) <= radius).astype(np.uint8)


def ellipsoid_mask(size, spacing, origin, direction, centre, radii, transform=None) -> np.ndarray:
    """Voxels whose centre lies in the ellipsoid (anatomy frame; ``transform`` as in make_volume)."""
    pts = grid_points(size, spacing, origin, direction)
    if transform is not None:
        R, t = transform
        pts = (pts - t) @ R
    return (_ellipsoid_level(pts, centre, radii) <= 1.0).astype(np.uint8)


# --- known motions with another post grid / field of view / spacing ---------------------

#: Pre (planning) grid: (slice, row, col), axial, covers the liver with margins.
PRE_GRID = dict(size=(50, 110, 140), spacing=(2.5, 2.0, 2.0), origin=(-140.0, -110.0, -62.0))

#: Rigid motions (rotation degrees about x, y, z; translation mm) with the post grid of each.
MOTIONS = [
    dict(name="m1", rot=(3.0, -2.0, 4.0), trans=(8.0, -6.0, 10.0),
         size=(44, 100, 120), spacing=(3.0, 2.3, 2.4), origin=(-150.0, -120.0, -60.0), iop_deg=0.0),
    dict(name="m2", rot=(-4.0, 3.0, 2.0), trans=(-12.0, 5.0, -7.0),
         size=(60, 96, 128), spacing=(2.0, 2.2, 2.1), origin=(-145.0, -100.0, -70.0), iop_deg=0.0),
    dict(name="m3", rot=(2.0, 5.0, -3.0), trans=(5.0, 12.0, -14.0),
         size=(40, 120, 120), spacing=(3.5, 1.8, 2.2), origin=(-130.0, -105.0, -80.0), iop_deg=0.0),
    dict(name="m4", rot=(-2.5, -3.5, -5.0), trans=(-6.0, -13.0, 9.0),
         size=(48, 104, 124), spacing=(2.5, 2.1, 2.3), origin=(-150.0, -112.0, -58.0), iop_deg=6.0),
]


def oblique_direction(deg: float, axis=(1.0, 0.0, 0.0)) -> np.ndarray:
    """Direction matrix of an axial grid tilted by ``deg`` about ``axis`` (columns: normal, row, col)."""
    k = np.asarray(axis, dtype=float)
    k = k / np.linalg.norm(k)
    th = np.radians(deg)
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    rot = np.eye(3) + np.sin(th) * kx + (1.0 - np.cos(th)) * (kx @ kx)
    return rot @ np.eye(3)[:, ::-1]


def motion_transform(m: dict) -> tuple[np.ndarray, np.ndarray]:
    return rotation(*m["rot"]), np.asarray(m["trans"], dtype=float)


def make_pair(m: dict, *, pre_grid: dict | None = None, tumors=(), zones=(), liver_shift_hu=0.0, supersample=1,
              seed=0, pre_volumes=None) -> dict:
    """Pre and post CT + liver masks for motion ``m`` (see :data:`MOTIONS`).

    The tumors are drawn in the pre scan, the ablation zones in the post scan (moved).
    Returns a dict: pre, post, liver_pre, liver_post (Volumes), R, t, and the pre
    liver voxel centres ``liver_points`` (LPS) for the transform error.
    ``pre_volumes`` = (pre, liver_pre) of an earlier pair on the same pre grid: reused
    (several motions of one planning scan), which saves their generation.
    """
    g = dict(PRE_GRID if pre_grid is None else pre_grid)
    d_pre = np.asarray(g.get("direction", np.eye(3)[:, ::-1]))
    R, t = motion_transform(m)
    d_post = oblique_direction(m.get("iop_deg", 0.0))
    if pre_volumes is not None:
        pre, lpre = pre_volumes
    else:
        pre = make_volume(g["size"], g["spacing"], g["origin"], d_pre, seed=seed + 1, tumors=tumors,
                          supersample=supersample)
        lpre = make_volume(g["size"], g["spacing"], g["origin"], d_pre, kind="liver")
    post = make_volume(m["size"], m["spacing"], m["origin"], d_post, transform=(R, t), seed=seed + 2, zones=zones,
                       liver_shift_hu=liver_shift_hu, supersample=supersample)
    lpost = make_volume(m["size"], m["spacing"], m["origin"], d_post, transform=(R, t), kind="liver")
    pts = grid_points(g["size"], g["spacing"], g["origin"], d_pre)[lpre.array.astype(bool)]
    return dict(pre=pre, post=post, liver_pre=lpre, liver_post=lpost, R=R, t=t, liver_points=pts)


def transform_error(matrix_lps, R, t, points) -> np.ndarray:
    """|M p - (R p + t)| (mm) at each point: the recovered pre -> post map against the truth."""
    M = np.asarray(matrix_lps, dtype=float)
    p = np.asarray(points, dtype=float)
    return np.linalg.norm(p @ M[:3, :3].T + M[:3, 3] - (p @ np.asarray(R).T + np.asarray(t)), axis=1)
