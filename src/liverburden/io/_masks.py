"""Masks: NIfTI (.nii/.nii.gz), NRRD (.nrrd/.nhdr), MHA, and DICOM SEG.

NIfTI's RAS is converted to LPS here, at the boundary (SimpleITK reads
NIfTI and NRRD into LPS), so only one convention lives inside. A mask on the
image grid in another axis order or sign is reoriented losslessly later by
:func:`liverburden.geometry.match_to_grid`; nothing is ever resampled.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from .._exceptions import InputError, MaskError
from ..geometry import Volume
from ._sitk import volume_from_sitk

#: Default role mapping of DICOM SEG segments by SegmentLabel (case-insensitive), conventions.md "PACS".
SEG_ROLE_PATTERNS = {
    "liver": re.compile(r"^\s*liver\s*$", re.I),
    "lesion": re.compile(r"lesion|tumou?r|metasta|neoplasm", re.I),
    "segment": re.compile(r"^\s*(liver\s+)?segment\s+([1-8]|4a|4b)\s*$", re.I),
    "zone": re.compile(r"ablation", re.I),
}

_VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def is_volume_file(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in _VOLUME_SUFFIXES)


def read_volume_file(path: str | Path, what: str) -> Volume:
    """Read a NIfTI/NRRD/MHA file into an LPS :class:`Volume`."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: {what} file not found")
    if p.is_dir():
        raise InputError(f"{p}: {what} must be a file, got a folder")
    name = p.name.lower()
    if name.endswith(".nii") or name.endswith(".nii.gz"):
        _check_nifti_header(p, what)
    try:
        img = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        msg = str(exc).strip().splitlines()
        detail = next((m for m in msg if "orthonormal" in m.lower()), msg[-1] if msg else "")
        raise InputError(f"{p}: cannot read {what} ({detail.strip()[:200]})") from None
    if img.GetDimension() == 4 and img.GetSize()[3] == 1:
        img = img[:, :, :, 0]
    if img.GetDimension() != 3:
        raise InputError(f"{p}: {what} must be a 3-D image, got {img.GetDimension()}-D")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{p}: {what} has {img.GetNumberOfComponentsPerPixel()} components per voxel; expected 1")
    try:
        return volume_from_sitk(img, source=str(p))
    except Exception as exc:
        raise InputError(f"{p}: {what}: {exc}") from None


def _check_nifti_header(p: Path, what: str) -> None:
    """ITK replaces a NaN or zero pixdim by 1 mm without a word: check it first."""
    import gzip

    try:
        opener = gzip.open if p.name.lower().endswith(".gz") else open
        with opener(p, "rb") as fh:
            raw = fh.read(540)
    except (OSError, EOFError) as exc:
        raise InputError(f"{p}: cannot read {what} ({type(exc).__name__}: {str(exc)[:160]})") from None
    # nibabel would repair a zero pixdim to 1 before we see it: read the raw field
    zooms = None
    for order in ("<", ">"):
        if len(raw) >= 348 and np.frombuffer(raw[:4], dtype=order + "i4")[0] == 348:
            zooms = np.frombuffer(raw[76:108], dtype=order + "f4")[1:4].astype(np.float64)
        elif len(raw) >= 540 and np.frombuffer(raw[:4], dtype=order + "i4")[0] == 540:
            zooms = np.frombuffer(raw[104:168], dtype=order + "f8")[1:4].astype(np.float64)
    if zooms is None:
        raise InputError(f"{p}: {what} is not a NIfTI file (bad header size)")
    if not np.all(np.isfinite(zooms)):
        raise InputError(f"{p}: {what} has a NaN or infinite voxel spacing (pixdim {zooms.tolist()})")
    if np.any(zooms == 0):
        raise InputError(f"{p}: {what} has a zero voxel spacing (pixdim {zooms.tolist()})")


def _seg_segments_for_role(seg, role: str | None, path: Path) -> list[int]:
    numbers = [int(s.SegmentNumber) for s in seg.SegmentSequence]
    if role is None or len(numbers) == 1:
        return numbers
    pat = SEG_ROLE_PATTERNS.get(role)
    chosen = [int(s.SegmentNumber) for s in seg.SegmentSequence if pat and pat.search(str(s.SegmentLabel))]
    if role == "lesion":
        chosen = [n for n in chosen if not SEG_ROLE_PATTERNS["liver"].search(
            str(seg.get_segment_description(n).SegmentLabel))]
    return chosen or numbers


def read_seg(
    path: str | Path,
    *,
    role: str | None = None,
    source_sop_uids: Sequence[str] | None = None,
    reference: Volume | None = None,
) -> Volume:
    """Read a DICOM SEG as a label :class:`Volume` (value = segment number).

    When ``source_sop_uids`` (the image's instances, sorted as the image's
    slices) are given and the SEG references them, frames are placed on the
    image's slices by reference; otherwise the SEG's own plane positions define
    its grid, which must then match the image grid.
    """
    import highdicom as hd

    p = Path(path)
    try:
        seg = hd.seg.segread(str(p))
    except Exception as exc:
        raise InputError(f"{p}: not a readable DICOM SEG ({type(exc).__name__}: {str(exc)[:160]})") from None
    numbers = _seg_segments_for_role(seg, role, p)
    if str(getattr(seg, "SegmentationType", "BINARY")) == "FRACTIONAL":
        raise MaskError(f"{p}: FRACTIONAL SEG is not supported as a label mask; export a BINARY SEG")
    if source_sop_uids is not None and reference is not None:
        try:
            arr = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=list(source_sop_uids),
                segment_numbers=numbers,
                combine_segments=True,
                relabel=False,
                assert_missing_frames_are_empty=False,
            )
            return reference.with_array(np.ascontiguousarray(arr).astype(np.uint16 if max(numbers) > 255 else np.uint8), source=str(p))
        except Exception:
            pass  # fall back to the SEG's own geometry
    try:
        hv = seg.get_volume(segment_numbers=numbers, combine_segments=True, relabel=False)
    except Exception as exc:
        raise InputError(f"{p}: DICOM SEG cannot be read as a volume ({type(exc).__name__}: {str(exc)[:160]})") from None
    aff = np.asarray(hv.affine, dtype=np.float64)
    spacing = np.linalg.norm(aff[:3, :3], axis=0)
    direction = aff[:3, :3] / spacing[None, :]
    return Volume(np.asarray(hv.array), tuple(spacing), tuple(aff[:3, 3]), direction, source=str(p))


def is_dicom_seg(path: Path) -> bool:
    if is_volume_file(path) or not path.is_file():
        return False
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality", "SOPClassUID"])
    except Exception:
        return False
    return str(getattr(ds, "Modality", "")) == "SEG"
