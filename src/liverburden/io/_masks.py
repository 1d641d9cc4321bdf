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

from .._exceptions import GeometryError, InputError, MaskError
from ..geometry import Volume
from ._limits import check_path_text, check_voxels, is_regular_file
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


def read_volume_file(path: str | Path, what: str, expect_shape: Sequence[int] | None = None) -> Volume:
    """Read a NIfTI/NRRD/MHA file into an LPS :class:`Volume`.

    The size its header declares is checked first, before any voxel is read: against
    ``limits.max_voxels`` and, when ``expect_shape`` (the image grid, slice/row/col) is
    given, against that grid up to axis order (masks are only ever reoriented)."""
    p = Path(path)
    check_path_text(p, what)
    if p.exists() and not p.is_dir() and not is_regular_file(p):
        raise InputError(f"{p}: {what} is not a regular file (a FIFO, socket or device)")
    if not p.exists():
        raise InputError(f"{p}: {what} file not found")
    if p.is_dir():
        raise InputError(f"{p}: {what} must be a file, got a folder")
    name = p.name.lower()
    if name.endswith(".nii") or name.endswith(".nii.gz"):
        hdr = _check_nifti_header(p, what)
        _check_declared(p, _nifti_dims(hdr), what, expect_shape)
        vol = _read_nifti_direct(p, hdr, what)
        if vol is not None:
            return vol
    else:
        info = sitk.ImageFileReader()
        info.SetFileName(str(p))
        try:
            info.ReadImageInformation()
        except RuntimeError:
            pass  # the full read below reports the problem
        else:
            size = list(info.GetSize())
            if len(size) == 4 and size[3] == 1:
                size = size[:3]
            _check_declared(p, size[::-1], what, expect_shape if len(size) == 3 else None)
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


def _check_declared(p: Path, size_zyx: Sequence[int] | None, what: str, expect: Sequence[int] | None) -> None:
    if size_zyx is None:
        return
    check_voxels(p, size_zyx, what)
    if expect is not None and len(size_zyx) == 3 and sorted(int(d) for d in size_zyx) != sorted(int(d) for d in expect):
        raise GeometryError(f"{p}: {what} declares size {[int(d) for d in size_zyx]} (slice, row, col), not the "
                            f"image grid's {[int(d) for d in expect]} in any axis order; refused before reading "
                            "its voxels (masks are reoriented, never resampled)")


def _nifti_dims(raw: bytes) -> list[int] | None:
    """Declared size (slice, row, col) = (nz, ny, nx) x extra dims of a NIfTI-1/2 header."""
    for order in ("<", ">"):
        if len(raw) >= 348 and np.frombuffer(raw[:4], dtype=order + "i4")[0] == 348:
            dim = np.frombuffer(raw[40:56], dtype=order + "i2").astype(np.int64)
        elif len(raw) >= 540 and np.frombuffer(raw[:4], dtype=order + "i4")[0] == 540:
            dim = np.frombuffer(raw[16:80], dtype=order + "i8").astype(np.int64)
        else:
            continue
        nd = int(min(max(dim[0], 1), 7))
        d = [max(int(v), 1) for v in dim[1 : nd + 1]]
        extra = 1
        for v in d[3:]:
            extra *= v
        xyz = (d + [1, 1, 1])[:3]
        return [xyz[2], xyz[1], xyz[0]] + ([extra] if extra > 1 else [])
    return None


def _check_nifti_header(p: Path, what: str) -> bytes:
    """ITK replaces a NaN or zero pixdim by 1 mm without a word: check it first.
    Returns the raw header bytes (up to 540)."""
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
    return raw


# NIfTI datatype code -> numpy kind + size (the pixel type ITK gives them too)
_NIFTI_DTYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4"}
_CHUNK = 1 << 22


def _nifti_layout(raw: bytes):
    """(dtype, (nx, ny, nz), vox_offset) of a plain single-file NIfTI-1 header, or
    None when ITK would do more than copy the voxels (scaling, >3-D, other types).
    (NIfTI-2 is not handled: ITK does not read it, and neither does liverburden.)"""
    for order in ("<", ">"):
        if len(raw) < 348 or np.frombuffer(raw[:4], dtype=order + "i4")[0] != 348 or raw[344:347] != b"n+1":
            continue
        dim = np.frombuffer(raw[40:56], dtype=order + "i2").astype(np.int64)
        code = int(np.frombuffer(raw[70:72], dtype=order + "i2")[0])
        offset = float(np.frombuffer(raw[108:112], dtype=order + "f4")[0])
        slope, inter = (float(v) for v in np.frombuffer(raw[112:120], dtype=order + "f4"))
        kind = _NIFTI_DTYPES.get(code)
        if kind is None or dim[0] < 3 or dim[0] > 7 or np.any(dim[4 : dim[0] + 1] != 1) or np.any(dim[1:4] < 1):
            return None
        if not (slope in (0.0, 1.0) and inter == 0.0) or offset != int(offset) or offset < 348:
            return None
        return np.dtype(order + kind), tuple(int(d) for d in dim[1:4]), int(offset)
    return None


def _inflate_into(p: Path, offset: int, out: np.ndarray) -> int:
    """Decompress ``p`` (gzip), skip ``offset`` bytes, fill ``out``'s bytes; returns
    the number of bytes written (short when the file ends early)."""
    try:
        from zlib_ng import zlib_ng as zl
    except ImportError:  # pragma: no cover - zlib-ng is a dependency; stdlib fallback
        import zlib as zl
    data = p.read_bytes()
    d = zl.decompressobj(31)
    head = b""
    tail = data
    while len(head) < offset:
        chunk = d.decompress(tail, offset - len(head))
        tail = d.unconsumed_tail
        if not chunk:
            return 0
        head += chunk
    mv = memoryview(out.reshape(-1).view(np.uint8))
    pos = 0
    while pos < mv.nbytes:
        chunk = d.decompress(tail, min(_CHUNK, mv.nbytes - pos))
        tail = d.unconsumed_tail
        if not chunk:
            break
        mv[pos : pos + len(chunk)] = chunk
        pos += len(chunk)
    return pos


def _read_nifti_direct(p: Path, raw: bytes, what: str) -> Volume | None:
    """A plain NIfTI-1 file read without SimpleITK's voxel copy: the geometry from ITK's
    own header reading (so the LPS conventions are ITK's), the voxels inflated
    straight into the output array. None when the header needs ITK's full reader."""
    layout = _nifti_layout(raw)
    if layout is None:
        return None
    dtype, (nx, ny, nz), offset = layout
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None  # the full read reports the problem
    if reader.GetDimension() != 3 or tuple(reader.GetSize()) != (nx, ny, nz) \
            or reader.GetNumberOfComponents() != 1:
        return None
    out = np.empty((nz, ny, nx), dtype=dtype.newbyteorder("="))
    try:
        if p.name.lower().endswith(".gz"):
            got = _inflate_into(p, offset, out)
        else:
            with open(p, "rb", buffering=0) as fh:
                fh.seek(offset)
                got = fh.readinto(memoryview(out.reshape(-1).view(np.uint8)))
    except (OSError, EOFError, ValueError) as exc:
        raise InputError(f"{p}: cannot read {what} ({type(exc).__name__}: {str(exc)[:160]})") from None
    if got != out.nbytes:
        raise InputError(f"{p}: {what} is truncated ({got} of {out.nbytes} voxel bytes)")
    if dtype.byteorder == ">" or (dtype.byteorder == "=" and not np.little_endian):
        out.byteswap(inplace=True)
    d = np.asarray(reader.GetDirection(), dtype=np.float64).reshape(3, 3)
    return Volume(out, tuple(float(s) for s in reader.GetSpacing()[::-1]), tuple(reader.GetOrigin()), d[:, ::-1],
                  source=str(p))


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
    from ._dicom import check_declared_frames

    check_declared_frames(p, "DICOM SEG")
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
    vol = Volume(np.asarray(hv.array), tuple(spacing), tuple(aff[:3, 3]), direction, source=str(p))
    if reference is not None and vol.shape != reference.shape:
        # a SEG omits its empty frames: its own grid is then a slab of the image grid.
        # Placed by the frames' own positions, exactly (no resampling), zeros elsewhere.
        from ..geometry import embed_in_grid

        placed = embed_in_grid(vol, reference)
        if placed is not None:
            return reference.with_array(placed, source=str(p))
    return vol


def is_dicom_seg(path: Path) -> bool:
    if is_volume_file(path) or not is_regular_file(path):
        return False
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality", "SOPClassUID"])
    except Exception:
        return False
    return str(getattr(ds, "Modality", "")) == "SEG"
