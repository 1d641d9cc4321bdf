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


def phantom_hu(p: np.ndarray, seed: int = 7) -> np.ndarray:
    """HU at LPS points ``p`` (..., 3)."""
    hu = np.full(p.shape[:-1], -1000.0)
    body = np.sum((p / np.array([160.0, 120.0, 400.0])) ** 2, axis=-1) <= 1.0
    hu[body] = 30.0 + 15.0 * np.sin(p[..., 0][body] / 9.0) * np.cos(p[..., 1][body] / 13.0)
    spine = ((p[..., 0] / 18.0) ** 2 + ((p[..., 1] - 80.0) / 18.0) ** 2) <= 1.0
    hu[spine & body] = 450.0
    kid = np.sum(((p - np.array([70.0, 50.0, -20.0])) / np.array([25.0, 20.0, 45.0])) ** 2, axis=-1) <= 1.0
    hu[kid & body] = 160.0
    liv = liver_inside(p)
    tex = 95.0 + 12.0 * np.sin(p[..., 0] / 7.0 + 1.0) * np.sin(p[..., 1] / 5.0) * np.cos(p[..., 2] / 6.0)
    hu[liv] = tex[liv]
    for a, b, r in _vessels(seed):
        ab = b - a
        t = np.clip(np.sum((p - a) * ab, axis=-1) / np.dot(ab, ab), 0.0, 1.0)
        d = np.linalg.norm(p - (a + t[..., None] * ab), axis=-1)
        hu[(d <= r) & liv] = 190.0
    return hu


def grid_points(size, spacing, origin, direction) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in size], indexing="ij"), -1).astype(float)
    return np.asarray(origin) + (idx * np.asarray(spacing)) @ np.asarray(direction).T


def make_volume(size, spacing, origin, direction=np.eye(3)[:, ::-1], *, transform=None, noise=8.0, seed=0, kind="ct"):
    """Sample the phantom on a grid. ``transform`` = (R, t) of T(p) = R p + t (pre -> post);
    the volume then shows the moved patient (post scan)."""
    pts = grid_points(size, spacing, origin, direction)
    if transform is not None:
        R, t = transform
        pts = (pts - t) @ R  # T^-1 q = R^T (q - t); row-vector form
    if kind == "ct":
        arr = phantom_hu(pts)
        arr += np.random.default_rng(seed).normal(0.0, noise, arr.shape)
        arr = arr.astype(np.float32)
    elif kind == "liver":
        arr = liver_inside(pts).astype(np.uint8)
    else:
        raise ValueError(kind)
    return Volume(arr, spacing, origin, direction)


def sphere_mask(size, spacing, origin, direction, centre, radius, transform=None) -> np.ndarray:
    pts = grid_points(size, spacing, origin, direction)
    if transform is not None:
        R, t = transform
        pts = (pts - t) @ R
    return (np.linalg.norm(pts - np.asarray(centre), axis=-1) <= radius).astype(np.uint8)
