"""Deterministic benchmark phantom: the volume of the performance issue.

A 512 x 512 x 400 (col x row x slice) axial label volume at
0.78 x 0.78 x 1.25 mm, arrays in (slice, row, col) order:

- ``liver``: uint8, 1 inside a slightly irregular ellipsoid-like organ scaled
  to 1.7 L (the lesions lie inside it and are part of it, as in LiTS-style
  liver masks);
- ``lesions``: uint8 binary mask (0/1) of 30 drawn ellipsoids of 3-40 mm
  diameter inside the liver; a few pairs overlap by a fraction of a
  millimetre so that they touch (26-connected) and form one component each.

Everything is seeded: the same ``seed`` gives the same arrays on any machine
(numpy ``default_rng``; only elementwise float64 arithmetic is used). Every
page of both arrays is written, as for masks read from a file (see
``_materialised_zeros``).

Use::

    from phantom import build_phantom
    ph = build_phantom()
    ph.liver, ph.lesions, ph.spacing_mm, ph.direction

Nothing here imports liverburden. Only numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: Array axis 0 along LPS z (S-I), axis 1 along y (rows), axis 2 along x
#: (columns): direction column k is the LPS unit vector of array axis k.
AXIAL = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])

SHAPE = (400, 512, 512)  # (slice, row, col)
SPACING_MM = (1.25, 0.78, 0.78)  # (slice, row, col)
LIVER_ML = 1700.0
N_LESIONS = 30
N_TOUCHING_PAIRS = 3
DIAMETER_RANGE_MM = (3.0, 40.0)


@dataclass(frozen=True)
class Phantom:
    liver: np.ndarray  # uint8 (slice, row, col), 1 = liver
    lesions: np.ndarray  # uint8 (slice, row, col), 1 = lesion
    spacing_mm: tuple[float, float, float]
    direction: np.ndarray  # 3x3, column k = LPS direction of array axis k
    origin_mm: tuple[float, float, float]
    seed: int
    # the drawn lesions: centre (mm, array axis order, relative to voxel [0,0,0]),
    # semi-axes (mm), rotation (columns = lesion axes), nominal diameter (mm)
    drawn: list[dict] = field(default_factory=list, repr=False)
    touching_pairs: list[tuple[int, int]] = field(default_factory=list)

    @property
    def liver_ml(self) -> float:
        return float(np.count_nonzero(self.liver)) * float(np.prod(self.spacing_mm)) / 1000.0

    def summary(self) -> str:
        d = [les["diameter_mm"] for les in self.drawn]
        return (
            f"shape={self.liver.shape} (slice,row,col) spacing_mm={self.spacing_mm} "
            f"liver={self.liver_ml:.1f} mL lesions drawn={len(self.drawn)} "
            f"(diameters {min(d):.1f}-{max(d):.1f} mm, {len(self.touching_pairs)} touching pairs) "
            f"lesion voxels={int(np.count_nonzero(self.lesions))} seed={self.seed}"
        )


def _materialised_zeros(shape) -> np.ndarray:
    """A zero uint8 array whose every page is written.

    ``np.zeros`` leaves untouched pages mapped to the kernel's shared zero
    page. Reading those is faster than reading real memory (one physical page,
    always in cache), so a mostly-empty mask made with ``np.zeros`` would
    flatter every scan. Masks read from a file are fully materialised.
    """
    a = np.empty(shape, dtype=np.uint8)
    a.fill(0)
    return a


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """A random rotation (QR of a Gaussian matrix, sign-fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))[None, :]
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _axis_coords(lo: int, hi: int, spacing: float) -> np.ndarray:
    return np.arange(lo, hi, dtype=np.float64) * spacing


def _liver_inside(zz, yy, xx, centre, semi, scale):
    """Irregular organ: an ellipsoid whose radius is modulated by low-order
    harmonics of the direction (a lobe-ish bulge and a flattened side)."""
    dz = (zz - centre[0]) / (semi[0] * scale)
    dy = (yy - centre[1]) / (semi[1] * scale)
    dx = (xx - centre[2]) / (semi[2] * scale)
    rho2 = dz * dz + dy * dy + dx * dx
    rho = np.sqrt(rho2) + 1e-12
    uz, uy, ux = dz / rho, dy / rho, dx / rho
    # 1 + bulge toward +x/-z (right lobe), dent toward +y (posterior), wobble
    mod = 1.0 + 0.12 * ux * (1.0 - uz) - 0.08 * uy * uy * (uy > 0) + 0.05 * np.sin(3.0 * np.arctan2(uy, ux)) * (1 - uz * uz)
    return rho <= mod


def _draw_liver(shape, spacing, centre, semi, scale):
    """Rasterise the liver in its bounding box; returns (mask, box slices)."""
    reach = [1.25 * s * scale for s in semi]  # the modulation is below +25 %
    lo = [max(0, int(math.floor((centre[a] - reach[a]) / spacing[a]))) for a in range(3)]
    hi = [min(shape[a], int(math.ceil((centre[a] + reach[a]) / spacing[a])) + 1) for a in range(3)]
    zz = _axis_coords(lo[0], hi[0], spacing[0])[:, None, None]
    yy = _axis_coords(lo[1], hi[1], spacing[1])[None, :, None]
    xx = _axis_coords(lo[2], hi[2], spacing[2])[None, None, :]
    box = tuple(slice(lo[a], hi[a]) for a in range(3))
    return _liver_inside(zz, yy, xx, centre, semi, scale), box


def _draw_ellipsoid(shape, spacing, centre, semi, rot):
    """Voxels whose centre lies in the rotated ellipsoid; returns (mask, box)."""
    r = max(semi)
    lo = [max(0, int(math.floor((centre[a] - r) / spacing[a]))) for a in range(3)]
    hi = [min(shape[a], int(math.ceil((centre[a] + r) / spacing[a])) + 1) for a in range(3)]
    zz = _axis_coords(lo[0], hi[0], spacing[0])[:, None, None] - centre[0]
    yy = _axis_coords(lo[1], hi[1], spacing[1])[None, :, None] - centre[1]
    xx = _axis_coords(lo[2], hi[2], spacing[2])[None, None, :] - centre[2]
    inside = np.zeros((hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]), dtype=bool)
    acc = None
    for k in range(3):  # coordinate along lesion axis k, divided by its semi-axis
        u = (zz * rot[0, k] + yy * rot[1, k] + xx * rot[2, k]) / semi[k]
        acc = u * u if acc is None else acc + u * u
    inside |= acc <= 1.0
    return inside, tuple(slice(lo[a], hi[a]) for a in range(3))


def build_phantom(seed: int = 20240611, shape=SHAPE, spacing_mm=SPACING_MM, liver_ml: float = LIVER_ML,
                  n_lesions: int = N_LESIONS, n_touching_pairs: int = N_TOUCHING_PAIRS,
                  diameter_range_mm=DIAMETER_RANGE_MM) -> Phantom:
    """Build the phantom (a few seconds for the full size; deterministic)."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    sp = tuple(float(s) for s in spacing_mm)
    extent = [shape[a] * sp[a] for a in range(3)]
    # liver: centred a little off the middle of the field of view, semi-axes in mm
    centre = (0.52 * extent[0], 0.50 * extent[1], 0.45 * extent[2])
    semi = (70.0, 78.0, 100.0)
    voxel_ml = float(np.prod(sp)) / 1000.0
    scale = 1.0
    for _ in range(4):  # fit the volume to liver_ml (volume ~ scale^3)
        mask, box = _draw_liver(shape, sp, centre, semi, scale)
        ml = float(np.count_nonzero(mask)) * voxel_ml
        scale *= (liver_ml / ml) ** (1.0 / 3.0)
    mask, box = _draw_liver(shape, sp, centre, semi, scale)
    liver = _materialised_zeros(shape)
    liver[box] = mask
    del mask

    # lesions -------------------------------------------------------------------
    lo_d, hi_d = diameter_range_mm
    diam = np.exp(rng.uniform(math.log(lo_d), math.log(hi_d), size=n_lesions))
    diam[0], diam[1] = hi_d, lo_d  # the range's ends are always present
    diam = np.sort(diam)[::-1]  # place the big ones first
    lesions = _materialised_zeros(shape)
    drawn: list[dict] = []
    pairs: list[tuple[int, int]] = []
    # the partners of the touching pairs: lesion i (i odd, among the first ones)
    # is placed against lesion i-1
    partner_of = {2 * k + 1: 2 * k for k in range(n_touching_pairs)}
    gap_mm = 3.0  # free space between non-touching lesions (bounding spheres)
    for i, d in enumerate(diam):
        r_nom = 0.5 * float(d)
        for attempt in range(10000):
            ratios = np.array([1.0, rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0)])
            semi_l = r_nom * ratios
            rot = _rotation(rng)
            if i in partner_of:
                j = partner_of[i]
                other = drawn[j]
                v = rng.normal(size=3)
                v /= np.linalg.norm(v)
                # centre-to-surface distance of each ellipsoid along the line of
                # centres; the two overlap by 0.4 mm on that line, so they touch
                def radial(semi_, rot_, u):
                    w = rot_.T @ u
                    return float(1.0 / np.sqrt(np.sum((w / semi_) ** 2)))

                dist = radial(other["semi_mm"], other["rot"], v) + radial(semi_l, rot, -v) - 0.4
                c = np.asarray(other["centre_mm"]) + dist * v
            else:
                c = np.array([rng.uniform(0, extent[a]) for a in range(3)])
            # inside the liver with a margin, away from every other lesion
            ok = True
            for k, o in enumerate(drawn):
                if i in partner_of and k == partner_of[i]:
                    continue
                if np.linalg.norm(c - np.asarray(o["centre_mm"])) < r_nom + o["r_max"] + gap_mm:
                    ok = False
                    break
            if not ok:
                continue
            m, b = _draw_ellipsoid(shape, sp, c, semi_l, rot)
            if not m.any():
                continue
            if np.any(m & (liver[b] == 0)):
                continue
            if np.any(m & (lesions[b] != 0)) and i not in partner_of:
                continue
            break
        else:  # pragma: no cover - the parameters above always fit
            raise RuntimeError(f"could not place lesion {i} of {d:.1f} mm")
        lesions[b] |= m.astype(np.uint8)
        drawn.append({
            "diameter_mm": float(d), "centre_mm": c.tolist(), "semi_mm": semi_l, "rot": rot,
            "r_max": float(semi_l.max()), "voxels": int(np.count_nonzero(m)),
        })
        if i in partner_of:
            pairs.append((partner_of[i], i))
    return Phantom(liver=liver, lesions=lesions, spacing_mm=sp, direction=AXIAL.copy(),
                   origin_mm=(-0.5 * extent[2], -0.5 * extent[1], -0.5 * extent[0]),
                   seed=seed, drawn=drawn, touching_pairs=pairs)


def tiny_phantom() -> Phantom:
    """A small volume with the same kinds of objects (numba warm-up, smoke tests)."""
    return build_phantom(seed=1, shape=(48, 64, 64), spacing_mm=(1.25, 0.78, 0.78), liver_ml=8.0,
                         n_lesions=4, n_touching_pairs=1, diameter_range_mm=(3.0, 8.0))


if __name__ == "__main__":  # pragma: no cover
    import time

    t = time.perf_counter()
    ph = build_phantom()
    print(ph.summary())
    print(f"built in {time.perf_counter() - t:.2f} s")
