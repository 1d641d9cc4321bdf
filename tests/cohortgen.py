"""Phantom studies for compare/batch tests: NIfTI image + liver + lesion masks.

An axial 1 mm grid (axis 0 = S-I) so LD is the in-plane diagonal of a box
lesion: a box of a x b voxels in-plane has LD = sqrt((a-1)^2 + (b-1)^2) mm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from liverburden.geometry import Volume
from liverburden.io import volume_to_sitk

SIZE = (30, 80, 80)
SPACING = (1.0, 1.0, 1.0)
DIRECTION = np.eye(3)[:, ::-1]  # axis0 -> z (S), axis1 -> y, axis2 -> x
ORIGIN = (-40.0, -40.0, -15.0)


def box_ld(a: int, b: int) -> float:
    return float(np.hypot(a - 1, b - 1))


def write_study(folder: Path, boxes, *, origin=ORIGIN, frame_shift=(0, 0, 0)) -> dict[str, Path]:
    """``boxes``: list of (z0, y0, x0, dz, dy, dx) lesion boxes (voxel units) inside the liver."""
    folder.mkdir(parents=True, exist_ok=True)
    vol = Volume(np.zeros(SIZE, np.int16), SPACING, origin, DIRECTION)
    img = np.full(SIZE, -100, np.int16)
    liver = np.zeros(SIZE, np.uint8)
    liver[2:28, 5:75, 5:75] = 1
    img[liver > 0] = 100
    les = np.zeros(SIZE, np.uint8)
    for z0, y0, x0, dz, dy, dx in boxes:
        les[z0:z0 + dz, y0:y0 + dy, x0:x0 + dx] = 1
    img[les > 0] = 40
    paths = {"image": folder / "ct.nii.gz", "liver": folder / "liver.nii.gz", "lesions": folder / "lesions.nii.gz"}
    sitk.WriteImage(volume_to_sitk(vol, img), str(paths["image"]))
    sitk.WriteImage(volume_to_sitk(vol, liver), str(paths["liver"]))
    sitk.WriteImage(volume_to_sitk(vol, les), str(paths["lesions"]))
    return paths
