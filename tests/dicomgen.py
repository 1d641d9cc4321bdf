"""Write small synthetic DICOM series with pydicom, with their geometry known exactly.

Test helper (house style 16: tests may write CT input series with pydicom).
Nothing here imports liverburden: the truth a test compares against is computed
here from first principles.

Geometry convention of the truth (``conventions.md``): arrays are (slice, row,
col); slices are ordered by increasing position along the normal
``n = IOP[:3] x IOP[3:]`` (as SimpleITK orders them); ``direction`` column k is
the LPS unit vector of array axis k, i.e. columns (n, IOP[3:], IOP[:3]); the
origin is the centre of voxel [0, 0, 0].

The files are written to be awkward on purpose: random names, InstanceNumbers in
random order (never the slice order), nested sub-folders, and recognisable fake
patient identifiers (:data:`PHI`) that must never reach an output.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
#: A UID root of our own so tests can search outputs for "any original UID".
UID_ROOT = "1.2.826.0.1.3680043.8.498.4242."

#: Recognisable fake identifiers: none of these strings may appear in any output
#: (stdout, stderr, logs, JSON, CSV) of liverburden.
PHI = {
    "PatientName": "ZZPHINAME^SECRETPATIENT",
    "PatientID": "ZZPHIID-4711-0815",
    "PatientBirthDate": "19010203",
    "AccessionNumber": "ZZACC998877",
    "InstitutionName": "ZZPHI Memorial Hospital",
    "ReferringPhysicianName": "ZZPHIDOC^REFERRER",
}
#: Substrings searched for in outputs (the caret-free parts too).
PHI_NEEDLES = ["ZZPHINAME", "SECRETPATIENT", "ZZPHIID-4711", "ZZACC998877", "ZZPHI Memorial", "ZZPHIDOC", "19010203"]

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def new_uid() -> str:
    return generate_uid(prefix=UID_ROOT)


def normal_of(iop: Sequence[float]) -> np.ndarray:
    """Slice normal = row direction cosine x column direction cosine (unit)."""
    r = np.asarray(iop[:3], dtype=np.float64)
    c = np.asarray(iop[3:], dtype=np.float64)
    r = r / np.linalg.norm(r)
    c = c / np.linalg.norm(c)
    n = np.cross(r, c)
    return n / np.linalg.norm(n)


def iop_rotated(axis: Sequence[float], deg: float, iop: Sequence[float] = AXIAL) -> tuple[float, ...]:
    """IOP rotated by ``deg`` degrees about ``axis`` (right hand, Rodrigues)."""
    k = np.asarray(axis, dtype=np.float64)
    k = k / np.linalg.norm(k)
    t = np.radians(deg)
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    rot = np.eye(3) + np.sin(t) * kx + (1.0 - np.cos(t)) * (kx @ kx)
    r = rot @ np.asarray(iop[:3], dtype=np.float64)
    c = rot @ np.asarray(iop[3:], dtype=np.float64)
    return tuple(float(v) for v in np.concatenate([r, c]))


@dataclass
class SeriesTruth:
    """What was written, in slice order (increasing along the normal)."""

    folder: Path
    paths: list[Path]
    stored: np.ndarray  # raw stored values, (n, rows, cols)
    slope: float
    intercept: float
    spacing_mm: tuple[float, float, float]  # (slice, row, col)
    origin_mm: tuple[float, float, float]
    direction: np.ndarray  # columns: normal, row dir (IOP[3:]), col dir (IOP[:3])
    iop: tuple[float, ...]
    positions: np.ndarray  # IPP per slice, slice order
    series_uid: str
    study_uid: str
    frame_uid: str
    series_number: int
    description: str
    sop_uids: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.stored.shape)  # type: ignore[return-value]

    @property
    def hu(self) -> np.ndarray:
        """Expected values after RescaleSlope/Intercept, float64."""
        return self.stored.astype(np.float64) * self.slope + self.intercept

    def index_to_lps(self, index: Any) -> np.ndarray:
        idx = np.asarray(index, dtype=np.float64)
        return np.asarray(self.origin_mm) + (idx * np.asarray(self.spacing_mm)) @ self.direction.T

    # -- masks on this grid ---------------------------------------------------
    def sitk_image(self, array: np.ndarray, *, spacing_mm=None, origin_mm=None, direction=None):
        """A SimpleITK image of ``array`` (slice, row, col) on this grid.

        ``spacing_mm`` / ``origin_mm`` / ``direction`` (Volume order) replace one
        field of the grid, for the one-field-at-a-time mismatch tests.
        """
        import SimpleITK as sitk

        arr = np.ascontiguousarray(array)
        img = sitk.GetImageFromArray(arr)
        sp = self.spacing_mm if spacing_mm is None else spacing_mm
        d = self.direction if direction is None else np.asarray(direction, dtype=np.float64)
        img.SetSpacing([float(s) for s in sp[::-1]])
        img.SetOrigin([float(o) for o in (self.origin_mm if origin_mm is None else origin_mm)])
        img.SetDirection([float(v) for v in d[:, ::-1].reshape(-1)])
        return img

    def write_mask(self, path: Path | str, array: np.ndarray, **grid: Any) -> Path:
        """Write ``array`` as NIfTI/NRRD (by suffix) on this grid (see :meth:`sitk_image`)."""
        import SimpleITK as sitk

        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(self.sitk_image(array, **grid), str(p), useCompression=p.name.endswith(".gz"))
        return p

    def box_mask(self, lo: Sequence[int], hi: Sequence[int], value: int = 1, dtype=np.uint8) -> np.ndarray:
        m = np.zeros(self.size, dtype=dtype)
        m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = value
        return m


def _base_dataset(
    *, sop_class: str, modality: str, study_uid: str, series_uid: str, frame_uid: str,
    series_number: int, description: str, phi: dict[str, str] | None, image_type: Sequence[str],
) -> tuple[pydicom.Dataset, FileMetaDataset]:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID_ROOT + "1"
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.StudyDate = "20000101"
    ds.StudyTime = "120000"
    ds.Manufacturer = "SYNTHETIC"
    ds.ImageType = list(image_type)
    for k, v in (phi or {}).items():
        setattr(ds, k, v)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    return ds, meta


def _slice_dataset(base: pydicom.Dataset, meta: FileMetaDataset, **tags: Any) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.update(base)
    ds.file_meta = FileMetaDataset(meta)
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def ds_str(v: float) -> str:
    """A DS value that round-trips exactly enough (<= 16 characters)."""
    s = f"{v:.10g}"
    return s if len(s) <= 16 else f"{v:.8g}"


def write_series(
    folder: Path | str,
    *,
    n: int = 12,
    rows: int = 32,
    cols: int = 30,
    pixel_spacing: tuple[float, float] = (0.8, 0.7),
    slice_spacing: float = 2.0,
    iop: Sequence[float] = AXIAL,
    origin: Sequence[float] = (-11.5, -22.25, -40.0),
    positions: Sequence[Sequence[float]] | None = None,
    slope: float = 1.0,
    intercept: float = -1024.0,
    stored: np.ndarray | None = None,
    modality: str = "CT",
    series_number: int = 3,
    description: str = "ABDOMEN PV 2.0 B30f",
    study_uid: str | None = None,
    frame_uid: str | None = None,
    series_uid: str | None = None,
    phi: dict[str, str] | None = PHI,
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    seed: int = 0,
    nested: bool = True,
    per_slice: Callable[[int, pydicom.Dataset], None] | None = None,
) -> SeriesTruth:
    """Write one single-frame series into ``folder`` (created) and return its truth.

    Slice k (in truth order) sits at ``origin + k * slice_spacing * normal``
    unless ``positions`` gives the IPPs explicitly (then the truth keeps the
    given order and the caller knows what it asked for). Files get random names
    and random InstanceNumbers and, with ``nested``, land in sub-folders.
    ``per_slice(k, ds)`` may edit slice k's dataset before it is written.
    """
    rng = np.random.default_rng(seed)
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or new_uid()
    frame_uid = frame_uid or new_uid()
    series_uid = series_uid or new_uid()
    iop = tuple(float(v) for v in iop)
    normal = normal_of(iop)
    if positions is None:
        pos = np.asarray(origin, dtype=np.float64)[None, :] + np.arange(n)[:, None] * slice_spacing * normal[None, :]
    else:
        pos = np.asarray(positions, dtype=np.float64)
        n = pos.shape[0]
    if stored is None:
        stored = rng.integers(0, 4096, size=(n, rows, cols), dtype=np.uint16)
    stored = np.asarray(stored, dtype=np.uint16)
    sop_class = CT_IMAGE_STORAGE if modality == "CT" else MR_IMAGE_STORAGE
    base, meta = _base_dataset(
        sop_class=sop_class, modality=modality, study_uid=study_uid, series_uid=series_uid,
        frame_uid=frame_uid, series_number=series_number, description=description, phi=phi,
        image_type=image_type,
    )
    subdirs = [root] if not nested else [root / "a", root / "a" / "b" / "c", root / "d"]
    instance_numbers = rng.permutation(n) + 1
    paths: list[Path] = []
    sops: list[str] = []
    for k in range(n):
        sop = new_uid()
        ds = _slice_dataset(
            base, meta,
            SOPInstanceUID=sop,
            InstanceNumber=int(instance_numbers[k]),
            ImagePositionPatient=[ds_str(v) for v in pos[k]],
            ImageOrientationPatient=[ds_str(v) for v in iop],
            PixelSpacing=[ds_str(v) for v in pixel_spacing],
            SliceThickness="3.0",  # deliberately not the spacing
            Rows=rows,
            Columns=cols,
            RescaleSlope=ds_str(slope),
            RescaleIntercept=ds_str(intercept),
            RescaleType="HU" if modality == "CT" else "US",
        )
        ds.PixelData = np.ascontiguousarray(stored[k]).astype("<u2").tobytes()
        if per_slice is not None:
            per_slice(k, ds)
        d = subdirs[int(rng.integers(len(subdirs)))]
        d.mkdir(parents=True, exist_ok=True)
        name = "".join(rng.choice(list("0123456789abcdef"), size=16))
        path = d / name
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
        sops.append(sop)
    row_dir = np.asarray(iop[3:]) / np.linalg.norm(iop[3:])
    col_dir = np.asarray(iop[:3]) / np.linalg.norm(iop[:3])
    return SeriesTruth(
        folder=root,
        paths=paths,
        stored=stored,
        slope=float(slope),
        intercept=float(intercept),
        spacing_mm=(float(slice_spacing), float(pixel_spacing[0]), float(pixel_spacing[1])),
        origin_mm=tuple(float(v) for v in pos[0]),  # type: ignore[arg-type]
        direction=np.stack([normal, row_dir, col_dir], axis=1),
        iop=iop,
        positions=pos,
        series_uid=series_uid,
        study_uid=study_uid,
        frame_uid=frame_uid,
        series_number=series_number,
        description=description,
        sop_uids=sops,
    )


def write_localizer(
    folder: Path | str, *, study_uid: str, frame_uid: str, series_number: int = 1, phi: dict[str, str] | None = PHI,
    seed: int = 1,
) -> list[Path]:
    """Two localizer images (coronal and sagittal, ImageType ...\\LOCALIZER) of one series."""
    rng = np.random.default_rng(seed)
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    base, meta = _base_dataset(
        sop_class=CT_IMAGE_STORAGE, modality="CT", study_uid=study_uid, series_uid=new_uid(), frame_uid=frame_uid,
        series_number=series_number, description="Topogram 0.6 T20f", phi=phi,
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
    )
    out = []
    for k, iop in enumerate([(1, 0, 0, 0, 0, -1), (0, 1, 0, 0, 0, -1)]):
        ds = _slice_dataset(
            base, meta, SOPInstanceUID=new_uid(), InstanceNumber=k + 1,
            ImagePositionPatient=["-100", "-100", "100"], ImageOrientationPatient=[str(v) for v in iop],
            PixelSpacing=["1.5", "1.5"], Rows=40, Columns=40, RescaleSlope="1", RescaleIntercept="-1024",
        )
        ds.PixelData = rng.integers(0, 4096, size=(40, 40), dtype=np.uint16).astype("<u2").tobytes()
        p = root / f"topogram_{k}.dcm"
        ds.save_as(p, enforce_file_format=True)
        out.append(p)
    return out


def write_junk(folder: Path | str) -> list[Path]:
    """Non-DICOM files that real exports carry: a text file and a small binary."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    a = root / "README.txt"
    a.write_text("Exported by a PACS viewer. Patient: see header.\n")
    b = root / "a" / "thumbs.db"
    b.parent.mkdir(parents=True, exist_ok=True)
    b.write_bytes(bytes(range(256)) * 2)
    return [a, b]


def edit(path: Path | str, **tags: Any) -> None:
    """Rewrite a DICOM file with tags set (value ``None`` deletes the tag)."""
    ds = pydicom.dcmread(path)
    for k, v in tags.items():
        if v is None:
            if k in ds:
                delattr(ds, k)
        else:
            setattr(ds, k, v)
    ds.save_as(path, enforce_file_format=True)


def truncate(path: Path | str, nbytes: int) -> None:
    """Keep only the first ``nbytes`` bytes of a file (negative: drop that many from the end)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:nbytes])


def pixel_data_offset(path: Path | str) -> int:
    """File offset of the first byte of the PixelData value."""
    data = Path(path).read_bytes()
    tag = struct.pack("<HH", 0x7FE0, 0x0010)
    i = data.rfind(tag)
    assert i >= 0, "no PixelData element"
    # explicit VR OW: tag(4) VR(2) reserved(2) length(4)
    return i + 12


def write_nifti_raw_pixdim(
    path: Path | str, array: np.ndarray, spacing_xyz: Sequence[float], origin_lps: Sequence[float],
    *, bad_axis: int, bad_value: float, qform: bool = True, sform: bool = False,
) -> Path:
    """A NIfTI-1 (.nii) whose pixdim[1 + bad_axis] is ``bad_value`` (NaN, 0, ...).

    nibabel refuses to derive such a header from an affine, so the header is
    written by nibabel from a sane grid and then patched byte by byte: pixdim at
    offset 76 (8 float32), qform_code at 252, sform_code at 254, srow_* at
    280/296/312 (NIfTI-1 standard). ``array`` is (slice, row, col) on an axial
    LPS-identity grid; NIfTI's RAS is LPS with x and y negated.
    """
    import nibabel as nib

    data = np.ascontiguousarray(np.transpose(array, (2, 1, 0)))  # (x, y, z)
    aff = np.diag([-spacing_xyz[0], -spacing_xyz[1], spacing_xyz[2], 1.0])
    aff[:3, 3] = [-origin_lps[0], -origin_lps[1], origin_lps[2]]
    img = nib.Nifti1Image(data, aff)
    img.header.set_qform(aff, code=1)
    img.header.set_sform(aff, code=1)
    p = Path(path)
    nib.save(img, p)
    raw = bytearray(p.read_bytes())
    pix = list(struct.unpack("<8f", raw[76:108]))
    pix[1 + bad_axis] = bad_value
    raw[76:108] = struct.pack("<8f", *pix)
    raw[252:254] = struct.pack("<h", 1 if qform else 0)
    raw[254:256] = struct.pack("<h", 1 if sform else 0)
    if sform:
        off = 280 + 16 * bad_axis
        srow = list(struct.unpack("<4f", raw[off:off + 16]))
        srow[bad_axis] = bad_value * (-1 if bad_axis < 2 else 1)
        raw[off:off + 16] = struct.pack("<4f", *srow)
    p.write_bytes(bytes(raw))
    return p


def iter_files(folder: Path | str) -> list[Path]:
    return sorted(Path(dp) / f for dp, _, fs in os.walk(folder) for f in fs)
