"""Phantom studies for compare/batch tests: NIfTI image + liver + lesion masks.

An axial 1 mm grid (axis 0 = S-I) so LD is the in-plane diagonal of a box
lesion: a box of a x b voxels in-plane has LD = sqrt((a-1)^2 + (b-1)^2) mm.
Pythagorean triples give exact integer LDs, e.g. 31 x 41 -> 50 mm,
22 x 29 -> 35 mm, 19 x 25 -> 30 mm, 13 x 36 -> 37 mm, 7 x 9 -> 10 mm.

Extensions (all keyword-only, defaults keep the original behaviour):
``size``, ``spacing`` (in-plane spacing s scales the LD: s x hypot(a-1, b-1)),
``liver_box`` (slices of the liver mask), ``frame_shift`` (the whole patient,
liver and lesions, moved by this many voxels inside the array: a patient that
lies elsewhere in the scanner), and :func:`write_manifest` / :func:`write_garbage`
for batch manifests.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from liverburden.geometry import Volume
from liverburden.io import volume_to_sitk

SIZE = (30, 80, 80)
SPACING = (1.0, 1.0, 1.0)
DIRECTION = np.eye(3)[:, ::-1]  # axis0 -> z (S), axis1 -> y, axis2 -> x
ORIGIN = (-40.0, -40.0, -15.0)
LIVER_BOX = (slice(2, 28), slice(5, 75), slice(5, 75))


def box_ld(a: int, b: int, spacing: float = 1.0) -> float:
    return float(spacing * np.hypot(a - 1, b - 1))


def _shifted(sl: slice, d: int) -> slice:
    return slice(sl.start + d, sl.stop + d)


def write_study(
    folder: Path,
    boxes,
    *,
    origin=ORIGIN,
    frame_shift=(0, 0, 0),
    size=SIZE,
    spacing=SPACING,
    liver_box=LIVER_BOX,
) -> dict[str, Path]:
    """``boxes``: list of (z0, y0, x0, dz, dy, dx) lesion boxes (voxel units) inside the liver
    (a box outside ``liver_box`` is an extrahepatic lesion)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    size = tuple(int(s) for s in size)
    sz, sy, sx = (int(v) for v in frame_shift)
    vol = Volume(np.zeros(size, np.int16), tuple(float(s) for s in spacing), tuple(float(o) for o in origin), DIRECTION)
    img = np.full(size, -100, np.int16)
    liver = np.zeros(size, np.uint8)
    lz, ly, lx = liver_box
    liver[_shifted(lz, sz), _shifted(ly, sy), _shifted(lx, sx)] = 1
    img[liver > 0] = 100
    les = np.zeros(size, np.uint8)
    for z0, y0, x0, dz, dy, dx in boxes:
        les[z0 + sz:z0 + sz + dz, y0 + sy:y0 + sy + dy, x0 + sx:x0 + sx + dx] = 1
    img[les > 0] = 40
    paths = {"image": folder / "ct.nii.gz", "liver": folder / "liver.nii.gz", "lesions": folder / "lesions.nii.gz"}
    sitk.WriteImage(volume_to_sitk(vol, img), str(paths["image"]))
    sitk.WriteImage(volume_to_sitk(vol, liver), str(paths["liver"]))
    sitk.WriteImage(volume_to_sitk(vol, les), str(paths["lesions"]))
    return paths


def write_garbage(path: Path, nbytes: int = 4096, seed: int = 0) -> Path:
    """A file named like a NIfTI that is random bytes (a corrupt study)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes())
    return path


def write_manifest(path: Path, rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None) -> Path:
    """A batch manifest CSV; ``columns`` defaults to the keys of the rows in first-seen order."""
    path = Path(path)
    cols = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    return path
