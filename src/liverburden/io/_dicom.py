"""DICOM series: find, group, select, sort, check and read.

Lenient read, strict assumptions (house style 4): files in any order and any
folder depth, other series and localizers mixed in; then every assumption the
measurement relies on is checked with a documented tolerance and a failure
names the file and the values. Slice spacing comes from ImagePositionPatient
projected on the slice normal, never from SliceThickness
(``clinical-reference.md`` section 6).

Nothing here logs or raises with a patient identifier; series are described by
number, modality, slice count and geometry only. SeriesDescription is free text
that often holds patient data (names, dates typed in by the technologist): it is
printed only inside :func:`show_descriptions` (the CLI's ``--show-descriptions``).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from ._limits import check_voxels, is_regular_file
from .._exceptions import GeometryError, InputError, SeriesSelectionError
from ..geometry import Volume

log = logging.getLogger(__name__)

#: Image orientations of two slices agree when their cosines differ by less than this.
ORIENTATION_TOL = 1e-4
#: A slice position may lie off the stack's normal line by this fraction of the
#: in-plane pixel spacing before the stack counts as tilted / sheared.
IN_PLANE_OFFSET_TOL = 0.01
#: Positions closer than this fraction of the median gap are duplicates.
DUPLICATE_TOL = 0.01

_SHOW_DESCRIPTIONS: contextvars.ContextVar[bool] = contextvars.ContextVar("show_descriptions", default=False)
#: Said once after a series listing whose descriptions were withheld.
DESCRIPTIONS_HINT = "(series descriptions withheld: they may hold patient data; --show-descriptions prints them)"


@contextlib.contextmanager
def show_descriptions(enabled: bool = True):
    """Within this block, series listings in messages quote SeriesDescription."""
    token = _SHOW_DESCRIPTIONS.set(bool(enabled))
    try:
        yield
    finally:
        _SHOW_DESCRIPTIONS.reset(token)


def listing(series) -> str:
    """``"; "``-joined :meth:`SeriesInfo.describe` of ``series``, with the hint when withheld."""
    text = "; ".join(s.describe() for s in series)
    return text if _SHOW_DESCRIPTIONS.get() else f"{text} {DESCRIPTIONS_HINT}"


_NON_IMAGE_MODALITIES = {"SEG", "SR", "RTSTRUCT", "RTPLAN", "RTDOSE", "PR", "KO", "REG", "DOC"}


@dataclass
class _Instance:
    path: Path
    ds: pydicom.Dataset


@dataclass
class SeriesInfo:
    """A DICOM series found on disk (identifiers kept private, never printed)."""

    uid: str
    number: int | None
    description: str
    modality: str
    manufacturer: str
    instances: list[_Instance] = field(default_factory=list)

    @property
    def has_uid(self) -> bool:
        return not self.uid.startswith("no-series-uid:")

    @property
    def n_files(self) -> int:
        return len(self.instances)

    @property
    def multiframe(self) -> bool:
        return any(int(getattr(i.ds, "NumberOfFrames", 1) or 1) > 1 for i in self.instances)

    def is_candidate_image(self) -> bool:
        if self.modality in _NON_IMAGE_MODALITIES:
            return False
        if self.manufacturer.strip().lower() == "liverburden":
            return False  # our own outputs never trigger a run
        ds = self.instances[0].ds
        if not hasattr(ds, "Rows"):
            return False
        itype = [str(v).upper() for v in (getattr(ds, "ImageType", []) or [])]
        if "LOCALIZER" in itype:
            return False
        return self.multiframe or self.n_files >= 3

    def describe(self, geometry: str = "") -> str:
        ds = self.instances[0].ds
        size = f"{getattr(ds, 'Rows', '?')}x{getattr(ds, 'Columns', '?')}"
        frames = (
            f"{int(getattr(ds, 'NumberOfFrames', 1))} frames" if self.multiframe else f"{self.n_files} slices"
        )
        desc = ""
        if _SHOW_DESCRIPTIONS.get():
            desc = "'" + self.description.replace("\n", " ")[:64] + "', "
        return f"series number {self.number}, {desc}{self.modality}, {frames} of {size}" + (
            f", {geometry}" if geometry else ""
        )


def _is_probably_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def scan_dicom(path: str | Path) -> list[SeriesInfo]:
    """Read the headers of every DICOM file under ``path`` and group by series.

    Files that are not DICOM are skipped (a folder often holds DICOMDIR, text or
    images). A file that carries the DICOM preamble but cannot be parsed is
    corrupt: :class:`InputError` naming it.
    """
    root = Path(path)
    if not root.exists():
        raise InputError(f"{root}: no such file or folder")
    files: Iterable[Path]
    if root.is_file():
        files = [root]
    else:
        files = sorted(
            Path(dp) / f for dp, _, fs in os.walk(root) for f in fs if not f.startswith(".")
        )
        # a FIFO, socket or device named *.dcm would block the read forever: regular files only
        files = [f for f in files if is_regular_file(f)]
    series: dict[str, SeriesInfo] = {}
    skipped = 0
    for f in files:
        if f.name.upper() == "DICOMDIR":
            continue
        try:
            # pixel data deferred: skipped with a seek, its offset kept for read_series_pixels
            ds = pydicom.dcmread(f, defer_size=1024)
        except InvalidDicomError:
            if _is_probably_dicom(f):
                raise InputError(f"{f}: corrupt DICOM file (cannot be parsed)") from None
            skipped += 1
            continue
        except Exception as exc:  # truncated / malformed element data
            if _is_probably_dicom(f) or root.is_file():
                raise InputError(f"{f}: corrupt DICOM file ({type(exc).__name__})") from None
            skipped += 1
            continue
        media = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or "")
        if ("SOPClassUID" not in ds or ("SeriesInstanceUID" not in ds and "PixelData" not in ds)) \
                and _is_probably_dicom(f) and media != "1.2.840.10008.1.3.10":  # not a DICOMDIR
            # pydicom returns a partial dataset from a truncated file without raising; every
            # composite object carries these two elements (they may be empty, never absent).
            # Some exporters (3D-IRCADb's mask slices) leave SeriesInstanceUID out of complete
            # files: with its pixel data present the file is not truncated, it is grouped below.
            raise InputError(f"{f}: corrupt DICOM file (truncated or incomplete: required elements missing)")
        uid = str(getattr(ds, "SeriesInstanceUID", "") or "")
        if not uid:
            if not hasattr(ds, "Rows"):
                skipped += 1
                continue
            # Some anonymisers blank SeriesInstanceUID: group such files by what
            # a series shares (number, description, modality, frame, size, orientation).
            iop = getattr(ds, "ImageOrientationPatient", None)
            key = (
                str(getattr(ds, "SeriesNumber", "")), str(getattr(ds, "SeriesDescription", "")),
                str(getattr(ds, "Modality", "")), str(getattr(ds, "FrameOfReferenceUID", "")),
                int(getattr(ds, "Rows", 0)), int(getattr(ds, "Columns", 0)),
                tuple(round(float(v), 4) for v in iop) if iop is not None else (),
            )
            uid = "no-series-uid:" + hashlib.sha256(repr(key).encode()).hexdigest()[:16]
        num = getattr(ds, "SeriesNumber", None)
        info = series.get(uid)
        if info is None:
            info = SeriesInfo(
                uid=uid,
                number=int(num) if num not in (None, "") else None,
                description=str(getattr(ds, "SeriesDescription", "") or ""),
                modality=str(getattr(ds, "Modality", "") or ""),
                manufacturer=str(getattr(ds, "Manufacturer", "") or ""),
            )
            series[uid] = info
        info.instances.append(_Instance(f, ds))
    if skipped:
        log.debug("skipped %d non-DICOM files under the image path", skipped)
    if not series:
        raise SeriesSelectionError(f"{root}: no DICOM files found")
    return sorted(series.values(), key=lambda s: (s.number if s.number is not None else 1 << 30, s.description))


@dataclass(frozen=True)
class SeriesGeometry:
    """The checked geometry of a single-frame series: sorted instances + grid."""

    instances: tuple[_Instance, ...]
    size: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]
    direction: np.ndarray
    warnings: tuple[str, ...]

    def describe(self) -> str:
        return (
            f"size={list(self.size)} spacing_mm={[round(s, 4) for s in self.spacing_mm]} "
            f"origin_mm={[round(o, 3) for o in self.origin_mm]}"
        )

    def empty_volume(self) -> Volume:
        """A Volume with this geometry and no pixel data (a broadcast zero array)."""
        arr = np.broadcast_to(np.zeros((), dtype=np.uint8), self.size)
        return Volume(arr, self.spacing_mm, self.origin_mm, self.direction)


_FLOAT_TAGS = {"ImageOrientationPatient": 0x00200037, "PixelSpacing": 0x00280030, "ImagePositionPatient": 0x00200032}


def _floats(ds: pydicom.Dataset, name: str, n: int, path: Path) -> np.ndarray:
    # A DS element still in its raw form is parsed from its bytes: the same numbers
    # as pydicom's DSfloat (both are Python float() of each backslash-separated
    # string), without building and validating one object per value.
    e = ds._dict.get(_FLOAT_TAGS[name])
    if e is not None and isinstance(getattr(e, "value", None), bytes) and getattr(e, "VR", None) in ("DS", None):
        try:
            txt = e.value.decode("ascii").strip(" \0")
            vals = [float(v) for v in txt.split("\\")] if txt else []
        except (UnicodeDecodeError, ValueError):
            raise GeometryError(f"{path}: missing or malformed {name}") from None
        if len(vals) != n:
            raise GeometryError(f"{path}: missing or malformed {name}")
        arr = np.asarray(vals, dtype=np.float64)
    else:
        val = getattr(ds, name, None)
        if val is None or len(val) != n:
            raise GeometryError(f"{path}: missing or malformed {name}")
        arr = np.asarray([float(v) for v in val], dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise GeometryError(f"{path}: {name} has non-finite values")
    return arr


def series_geometry(
    info: SeriesInfo,
    *,
    slice_spacing_rel_tol: float = 0.01,
    allow_uneven_slices: bool = False,
) -> SeriesGeometry:
    """Sort a single-frame series along its normal and check it is one regular volume.

    Raises
    ------
    GeometryError
        Missing geometry tags, mixed orientation / size / pixel spacing,
        duplicate positions, gantry tilt (positions off the normal), missing or
        uneven slices (unless ``allow_uneven_slices``), zero or NaN spacing.
    """
    insts = info.instances
    if len(insts) < 2:
        raise GeometryError(f"{insts[0].path}: a series of {len(insts)} slice is not a volume")
    first = insts[0]
    iop0 = _floats(first.ds, "ImageOrientationPatient", 6, first.path)
    ps0 = _floats(first.ds, "PixelSpacing", 2, first.path)
    rows0 = int(getattr(first.ds, "Rows", 0))
    cols0 = int(getattr(first.ds, "Columns", 0))
    check_voxels(first.path, (len(insts), rows0, cols0), "DICOM series")
    if int(getattr(first.ds, "SamplesPerPixel", 1) or 1) != 1:
        raise InputError(f"{first.path}: colour image (SamplesPerPixel > 1); expected a grayscale CT/MR series")
    positions = []
    for inst in insts:
        iop = _floats(inst.ds, "ImageOrientationPatient", 6, inst.path)
        if np.max(np.abs(iop - iop0)) > ORIENTATION_TOL:
            raise GeometryError(
                f"{inst.path}: mixed orientation in one series: {np.round(iop, 5).tolist()} vs "
                f"{np.round(iop0, 5).tolist()} in {first.path}"
            )
        ps = _floats(inst.ds, "PixelSpacing", 2, inst.path)
        if np.max(np.abs(ps - ps0)) > 1e-4 * max(ps0):
            raise GeometryError(f"{inst.path}: pixel spacing {ps.tolist()} differs from {ps0.tolist()} in {first.path}")
        r, c = int(getattr(inst.ds, "Rows", 0)), int(getattr(inst.ds, "Columns", 0))
        if (r, c) != (rows0, cols0):
            raise GeometryError(f"{inst.path}: image size {r}x{c} differs from {rows0}x{cols0} in {first.path}")
        positions.append(_floats(inst.ds, "ImagePositionPatient", 3, inst.path))
    if np.any(ps0 <= 0):
        raise GeometryError(f"{first.path}: pixel spacing must be positive, got {ps0.tolist()}")
    col_dir = iop0[:3] / np.linalg.norm(iop0[:3])  # along a row: increasing column index
    row_dir = iop0[3:] / np.linalg.norm(iop0[3:])  # down a column: increasing row index
    if abs(float(col_dir @ row_dir)) > 1e-3:
        raise GeometryError(f"{first.path}: ImageOrientationPatient row and column are not perpendicular")
    normal = np.cross(col_dir, row_dir)
    pos = np.asarray(positions)
    proj = pos @ normal
    order = np.argsort(proj, kind="stable")
    proj = proj[order]
    pos = pos[order]
    sorted_insts = tuple(insts[i] for i in order)
    gaps = np.diff(proj)
    med = float(np.median(gaps))
    if not np.isfinite(med) or med <= 0:
        raise GeometryError(f"{first.path}: all slices share one position (zero slice spacing)")
    dup = np.flatnonzero(gaps < DUPLICATE_TOL * med)
    if dup.size:
        a, b = sorted_insts[dup[0]].path, sorted_insts[dup[0] + 1].path
        raise GeometryError(f"{a} and {b}: duplicate slice position {proj[dup[0]]:.3f} mm along the normal")
    # positions must move along the normal only (else: gantry tilt / sheared stack)
    offsets = pos - pos[0] - np.outer(proj - proj[0], normal)
    off = np.linalg.norm(offsets, axis=1)
    if off.max() > IN_PLANE_OFFSET_TOL * min(ps0):
        k = int(np.argmax(off))
        angle = float(np.degrees(np.arctan2(off[k], abs(proj[k] - proj[0]))))
        raise GeometryError(
            f"{sorted_insts[k].path}: slice positions are not along the slice normal "
            f"(in-plane offset {off[k]:.3f} mm, {angle:.2f} deg): gantry tilt or a sheared stack; "
            "liverburden does not measure on a sheared grid (correct the tilt first)"
        )
    warnings: list[str] = []
    dev = np.abs(gaps - med)
    if dev.max() > slice_spacing_rel_tol * med:
        k = int(np.argmax(dev))
        ratio = gaps / med
        missing = int(np.sum(np.round(ratio) - 1)) if np.allclose(ratio, np.round(ratio), atol=slice_spacing_rel_tol * 5) else 0
        where = f"between {sorted_insts[k].path.name} and {sorted_insts[k + 1].path.name}"
        if missing > 0:
            msg = (
                f"{first.path.parent}: {missing} missing slice(s) in the series: gap of {gaps[k]:.3f} mm "
                f"{where} where the spacing is {med:.3f} mm"
            )
        else:
            msg = (
                f"{first.path.parent}: uneven slice spacing: gap of {gaps[k]:.3f} mm {where}, "
                f"median {med:.3f} mm (tolerance {100 * slice_spacing_rel_tol:.1f} %)"
            )
        if not allow_uneven_slices:
            raise GeometryError(msg + "; set geometry.allow_uneven_slices = true to measure anyway")
        spacing_z = float((proj[-1] - proj[0]) / (len(proj) - 1))
        warnings.append(
            msg + f"; measured anyway on a regular grid of {spacing_z:.3f} mm (first to last slice over the "
            f"slice count; config allows it): volumes and distances along the slice axis are approximate "
            f"(a slice position is off by up to {dev.max():.3f} mm, voxel volume by "
            f"{100 * abs(spacing_z - med) / med:.1f} %)"
        )
    else:
        spacing_z = float((proj[-1] - proj[0]) / (len(proj) - 1))
    direction = np.stack([normal, row_dir, col_dir], axis=1)
    return SeriesGeometry(
        instances=sorted_insts,
        size=(len(sorted_insts), rows0, cols0),
        spacing_mm=(spacing_z, float(ps0[0]), float(ps0[1])),
        origin_mm=tuple(float(v) for v in pos[0]),  # type: ignore[arg-type]
        direction=direction,
        warnings=tuple(warnings),
    )


#: Uncompressed transfer syntaxes and the byte order of their pixel data.
_RAW_SYNTAXES = {"1.2.840.10008.1.2": "<", "1.2.840.10008.1.2.1": "<", "1.2.840.10008.1.2.2": ">"}
_PIXEL_TAG = 0x7FE00010


def _raw_pixel_dtype(ds: pydicom.Dataset) -> np.dtype | None:
    """dtype of uncompressed 16-bit grayscale pixel data read straight from the file, or None."""
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    order = _RAW_SYNTAXES.get(ts)
    if order is None:
        return None
    bits = int(getattr(ds, "BitsAllocated", 0) or 0)
    stored = int(getattr(ds, "BitsStored", bits) or bits)
    if bits != 16 or stored != 16 or int(getattr(ds, "SamplesPerPixel", 1) or 1) != 1:
        return None  # fewer stored bits may carry overlay bits: pydicom masks them
    signed = int(getattr(ds, "PixelRepresentation", 0) or 0) == 1
    return np.dtype(order + ("i2" if signed else "u2"))


def _raw_value(ds: pydicom.Dataset, tag: int):
    """An element's value as stored (bytes while pydicom has not converted it): a
    cheap key for comparing slices, converted once per distinct value."""
    e = ds._dict.get(tag)
    if e is None:
        return None
    v = e.value
    return v if isinstance(v, (bytes, str, int, float)) else str(v)


def _per_slice(geom: SeriesGeometry, tags: tuple[int, ...], convert, *, with_syntax: bool = False):
    """``convert(ds)`` for every slice, computed once per distinct raw value of ``tags``
    (and of the transfer syntax with ``with_syntax``)."""
    cache: dict = {}
    out = []
    for inst in geom.instances:
        key = tuple(_raw_value(inst.ds, t) for t in tags)
        if with_syntax:
            fm = getattr(inst.ds, "file_meta", None)
            key += (_raw_value(fm, 0x00020010) if fm is not None else None,)
        if key not in cache:
            cache[key] = convert(inst.ds)
        out.append(cache[key])
    return out


_NATIVE_LITTLE = np.little_endian

_PIXEL_FORMAT_TAGS = (0x00280100, 0x00280101, 0x00280103, 0x00280002)  # BitsAllocated/Stored, PixelRepresentation, SamplesPerPixel


def _read_raw_pixels(geom: SeriesGeometry, out: np.ndarray) -> bool:
    """Read uncompressed pixel data straight from the files at the offsets the
    header pass recorded (pixel data deferred, not parsed). False when any slice
    needs a decoder; the caller then uses pydicom."""
    n, rows, cols = geom.size
    plan = []
    dts = _per_slice(geom, _PIXEL_FORMAT_TAGS, _raw_pixel_dtype, with_syntax=True)
    for inst, dt in zip(geom.instances, dts):
        raw = inst.ds._dict.get(_PIXEL_TAG)
        if dt is None or raw is None or getattr(raw, "value", b"") is not None \
                or getattr(raw, "value_tell", None) is None or getattr(raw, "is_undefined_length", False):
            return False
        if int(raw.length) != rows * cols * 2:
            raise InputError(f"{inst.path}: pixel data holds {raw.length} bytes, {rows}x{cols}x2 expected")
        if dt.kind != out.dtype.kind:
            return False  # signed and unsigned slices in one series: decode, widened
        plan.append((inst.path, dt, int(raw.value_tell)))
    nbytes = rows * cols * 2
    for k, (path, dt, offset) in enumerate(plan):
        # straight into the output slice: no intermediate array, no copy
        buf = memoryview(out[k].reshape(-1).view(np.uint8))
        with open(path, "rb", buffering=0) as fh:
            fh.seek(offset)
            got = fh.readinto(buf)
            while 0 < got < nbytes:  # a short read is legal; loop until EOF
                more = fh.readinto(buf[got:])
                if not more:
                    break
                got += more
        if got != nbytes:
            raise InputError(f"{path}: pixel data truncated ({got // 2} of {rows * cols} pixels)")
        if dt.byteorder == ">" or (dt.byteorder == "=" and not _NATIVE_LITTLE):
            out[k].byteswap(inplace=True)
    return True


def read_series_pixels(geom: SeriesGeometry) -> np.ndarray:
    """Decode every slice and apply RescaleSlope/Intercept (per slice).

    Returns int16 when every slope is 1 and intercept integral and the values
    fit, else float32. Uncompressed 16-bit series are read straight from the
    files at the pixel-data offsets recorded by the header pass (one read per
    file, no parsing); everything else decodes through pydicom (compressed
    transfer syntaxes through its pylibjpeg / gdcm plugins).
    """
    n, rows, cols = geom.size
    slopes = _per_slice(geom, (0x00281053,), lambda ds: float(getattr(ds, "RescaleSlope", 1) or 1))
    inters = _per_slice(geom, (0x00281052,), lambda ds: float(getattr(ds, "RescaleIntercept", 0) or 0))
    dt0 = _raw_pixel_dtype(geom.instances[0].ds)
    raw = np.empty((n, rows, cols), dtype=dt0.newbyteorder("=")) if dt0 is not None else None
    if raw is None or not _read_raw_pixels(geom, raw):
        raw = _decode_pixels(geom)
    return _rescale(raw, slopes, inters)


def _decode_pixels(geom: SeriesGeometry) -> np.ndarray:
    """Decode slice by slice with pydicom (compressed syntaxes: pylibjpeg / gdcm)."""
    n, rows, cols = geom.size
    raw = None
    for k, inst in enumerate(geom.instances):
        try:
            ds = pydicom.dcmread(inst.path)
            px = ds.pixel_array
        except Exception as exc:
            raise InputError(
                f"{inst.path}: pixel data cannot be decoded ({type(exc).__name__}: {str(exc)[:160]})"
            ) from None
        if px.shape != (rows, cols):
            raise InputError(f"{inst.path}: pixel data shape {px.shape} is not {rows}x{cols}")
        if raw is None:
            raw = np.empty((n, rows, cols), dtype=px.dtype)
        elif not np.can_cast(px.dtype, raw.dtype, "safe"):
            raw = raw.astype(np.result_type(raw.dtype, px.dtype))  # widen, never wrap
        raw[k] = px
    assert raw is not None
    return raw


def _rescale(raw: np.ndarray, slopes, inters) -> np.ndarray:
    s = np.asarray(slopes)
    b = np.asarray(inters)
    if np.all(s == 1) and np.all(b == np.round(b)):
        rlo, rhi = float(raw.min()), float(raw.max())
        lo, hi = rlo + b.min(), rhi + b.max()
        if -32768 <= lo and hi <= 32767 and -32768 <= rlo and rhi <= 32767:
            out = raw if raw.dtype == np.int16 else raw.astype(np.int16)  # in place when already int16
            if np.any(b != 0):
                out += b.astype(np.int16)[:, None, None]
            return out
    return (raw.astype(np.float32) * s.astype(np.float32)[:, None, None] + b.astype(np.float32)[:, None, None])


def check_declared_frames(path: Path, what: str) -> None:
    """Rows x Columns x NumberOfFrames of a DICOM file, from its header, against ``limits.max_voxels``."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns", "NumberOfFrames"])
        size = (int(getattr(ds, "NumberOfFrames", 1) or 1), int(getattr(ds, "Rows", 0) or 0),
                int(getattr(ds, "Columns", 0) or 0))
    except Exception:
        return  # the full read reports the problem
    check_voxels(path, size, what)


def read_multiframe(path: Path) -> tuple[Volume, pydicom.Dataset]:
    """A multi-frame (enhanced) image as a Volume, through highdicom."""
    import highdicom as hd

    check_declared_frames(path, "multi-frame image")
    try:
        img = hd.imread(str(path))
        hv = img.get_volume()
    except Exception as exc:
        raise InputError(f"{path}: multi-frame image cannot be read as one volume ({type(exc).__name__}: {str(exc)[:160]})") from None
    aff = np.asarray(hv.affine, dtype=np.float64)
    spacing = np.linalg.norm(aff[:3, :3], axis=0)
    direction = aff[:3, :3] / spacing[None, :]
    arr = np.asarray(hv.array)
    if arr.ndim == 4:
        arr = arr[..., 0]
    # conventions.md: slices in increasing position along the normal (row dir x col dir)
    normal = np.cross(direction[:, 2], direction[:, 1])
    origin = aff[:3, 3]
    if float(direction[:, 0] @ normal) < 0:
        origin = origin + direction[:, 0] * spacing[0] * (arr.shape[0] - 1)
        direction = direction.copy()
        direction[:, 0] = -direction[:, 0]
        arr = arr[::-1]
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    vol = Volume(np.ascontiguousarray(arr), tuple(spacing), tuple(origin), direction,
                 getattr(ds, "FrameOfReferenceUID", None), source=str(path))
    return vol, ds
