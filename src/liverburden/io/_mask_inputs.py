"""Mask arguments as users have them: a file, or a folder that some tool wrote.

A mask argument (``--liver``, ``--lesions``, ``--segments``, ``--tumor``,
``--zone``, ...) may be

* a file: NIfTI/NRRD/MHA or a DICOM SEG (:mod:`._masks`);
* a folder holding one DICOM SEG;
* a folder of DICOM image slices, one organ or tumor per folder, as 3D-IRCADb
  ships them (``MASKS_DICOM/liver/``, ``MASKS_DICOM/livertumor01/``): binary
  0/255 or 0/1 CT-like slices. They are read as a series (sorted along the
  normal, checked for gaps like an image), any non-zero value is mask, and the
  grid is then checked against the image like any mask;
* a TotalSegmentator output folder: ``liver.nii.gz`` (task ``total``) for the
  liver, ``liver_tumor.nii.gz`` (task ``liver_vessels``) for lesions, and
  ``liver_segment_1.nii.gz`` .. ``liver_segment_8.nii.gz`` (task
  ``liver_segments``) combined by name into a Couinaud label map (value N =
  segment N) for ``--segments``;
* a folder holding exactly one NIfTI/NRRD/MHA file (e.g. a multi-label map).

Several lesion inputs (``--lesions DIR1 DIR2 ...`` or a glob pattern) are one
lesion each: ids 1..N in the given order (glob matches sorted by name).
Nothing is ever resampled; a folder with nothing usable is an error naming it.
"""

from __future__ import annotations

import glob as _glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .._exceptions import InputError, MaskError, SeriesSelectionError
from ..geometry import Volume
from ._limits import is_regular_file
from ._masks import is_dicom_seg, is_volume_file, read_seg, read_volume_file

#: TotalSegmentator file names per mask role (the ``total``, ``liver_vessels`` and
#: ``liver_segments`` tasks, one file per class).
TOTALSEGMENTATOR_FILES = {
    "liver": ("liver.nii.gz", "liver.nii"),
    "lesion": ("liver_tumor.nii.gz", "liver_tumor.nii"),
    "remnant": (),
    "zone": (),
}
#: ``liver_segments`` task: file name -> Couinaud segment number (label value).
TOTALSEGMENTATOR_SEGMENTS = {f"liver_segment_{n}.nii.gz": n for n in range(1, 9)} | {
    f"liver_segment_{n}.nii": n for n in range(1, 9)
}
#: A mask used as the liver with default labels ("nonzero") whose largest value is above
#: this and which holds at least :data:`ORGAN_MAP_MIN_VALUES` distinct non-zero values is
#: a multi-label organ map (TotalSegmentator ``total``: liver = 5, 117 classes).
ORGAN_MAP_MAX_VALUE = 8
ORGAN_MAP_MIN_VALUES = 3

_GLOB_CHARS = "*?["
_USABLE = (
    "a DICOM SEG, a folder of DICOM mask slices (3D-IRCADb MASKS_DICOM/...), a TotalSegmentator output "
    "folder (liver.nii.gz, liver_tumor.nii.gz, liver_segment_1..8.nii.gz) or one NIfTI/NRRD/MHA file"
)


@dataclass(frozen=True)
class MaskSource:
    """One mask argument resolved: what it is and the files that make it."""

    path: Path
    kind: str  # "file" | "dicom-seg" | "dicom-series" | "totalsegmentator" | "folder-file"
    files: tuple[Path, ...]
    labels: tuple[int, ...] = ()  # for "totalsegmentator" segment files: the value of each file

    def to_dict(self) -> dict[str, Any]:
        from ._study import hash_files

        return {"path": str(self.path.resolve()), "kind": self.kind,
                "files": [str(f.resolve()) for f in self.files], "sha256": hash_files(list(self.files))}


def expand_mask_args(arg: str | Path | Sequence[str | Path], what: str) -> list[Path]:
    """The mask paths of an argument: one path, several, or glob patterns (matches sorted)."""
    items = [arg] if isinstance(arg, (str, Path)) else list(arg)
    out: list[Path] = []
    for it in items:
        s = str(it)
        if not Path(s).exists() and any(c in s for c in _GLOB_CHARS):
            hits = sorted(_glob.glob(os.path.expanduser(s)))
            if not hits:
                raise InputError(f"{s}: no {what} matches this pattern")
            out.extend(Path(h) for h in hits)
        else:
            out.append(Path(s))
    if not out:
        raise InputError(f"no {what} given")
    return out


def _folder_files(folder: Path) -> list[Path]:
    # regular files only: a FIFO or device in a mask folder would block a read forever
    return sorted(p for p in (Path(dp) / f for dp, _, fs in os.walk(folder) for f in fs if not f.startswith("."))
                  if is_regular_file(p))


def resolve_mask(path: str | Path, role: str, what: str) -> MaskSource:
    """What a mask argument is, without reading voxels (``role``: liver, lesion, segment, zone, remnant)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: {what} file or folder not found")
    if not p.is_dir() and not is_regular_file(p):
        raise InputError(f"{p}: {what} is not a regular file (a FIFO, socket or device)")
    if p.is_file():
        return MaskSource(p, "dicom-seg" if is_dicom_seg(p) else "file", (p,))
    names = {f.name.lower(): f for f in p.iterdir() if is_regular_file(f)}
    if role == "segment":
        segs = sorted((n, names[k]) for k, n in TOTALSEGMENTATOR_SEGMENTS.items() if k in names)
        if segs:
            return MaskSource(p, "totalsegmentator", tuple(f for _, f in segs), tuple(n for n, _ in segs))
    for k in TOTALSEGMENTATOR_FILES.get(role, ()):
        if k in names:
            return MaskSource(p, "totalsegmentator", (names[k],))
    files = _folder_files(p)
    vols = [f for f in files if is_volume_file(f)]
    if len(vols) == 1:
        return MaskSource(p, "folder-file", (vols[0],))
    if len(vols) > 1:
        shown = ", ".join(f.name for f in vols[:6]) + (", ..." if len(vols) > 6 else "")
        hint = {"liver": "liver.nii.gz", "lesion": "liver_tumor.nii.gz",
                "segment": "liver_segment_1..8.nii.gz"}.get(role)
        raise InputError(f"{p}: {what} folder holds {len(vols)} volume files ({shown}) and none named "
                         + (f"{hint}" if hint else "for this role") + "; give the file itself")
    segs = [f for f in files if is_dicom_seg(f)]
    if len(segs) == 1:
        return MaskSource(p, "dicom-seg", (segs[0],))
    if len(segs) > 1:
        raise InputError(f"{p}: {what} folder holds {len(segs)} DICOM SEG files; give one of them")
    from ._dicom import scan_dicom

    try:
        series = scan_dicom(p)
    except SeriesSelectionError:  # no DICOM file at all
        raise InputError(f"{p}: no {what} in this folder (expected {_USABLE})") from None
    series = [s for s in series if hasattr(s.instances[0].ds, "Rows")]
    if not series:
        raise InputError(f"{p}: no {what} in this folder (expected {_USABLE})")
    if len(series) > 1:
        raise InputError(f"{p}: {what} folder holds {len(series)} DICOM series; give a folder with one "
                         "(one organ or tumor per folder, as 3D-IRCADb's MASKS_DICOM/<name>/)")
    return MaskSource(p, "dicom-series", tuple(i.path for i in series[0].instances))


def _read_dicom_series_mask(src: MaskSource, what: str, config: Mapping[str, Any]) -> Volume:
    from ._dicom import read_multiframe, read_series_pixels, scan_dicom, series_geometry

    s = scan_dicom(src.path)
    s = [x for x in s if hasattr(x.instances[0].ds, "Rows")][0]
    if s.multiframe:
        if s.n_files != 1:
            raise InputError(f"{src.path}: {what} folder holds a series of {s.n_files} multi-frame files")
        vol, _ = read_multiframe(s.instances[0].path)
    else:
        g = config["geometry"]
        geo = series_geometry(s, slice_spacing_rel_tol=g["slice_spacing_rel_tol"],
                              allow_uneven_slices=g["allow_uneven_slices"])
        arr = read_series_pixels(geo)
        vol = Volume(arr, geo.spacing_mm, geo.origin_mm, geo.direction, source=str(src.path))
    a = np.asarray(vol.array)
    return vol.with_array((a != 0).astype(np.uint8), source=str(src.path))


def read_mask_source(src: MaskSource, *, role: str, what: str, ref: Volume | None, header: Any,
                     config: Mapping[str, Any]) -> Volume:
    """Read a resolved mask into a :class:`Volume` on its own grid (not yet matched to the image)."""
    if src.kind == "dicom-seg":
        sops = header.sop_uids if header is not None and getattr(header, "sop_uids", None) else None
        return read_seg(src.files[0], role=role, source_sop_uids=sops, reference=ref)
    if src.kind == "dicom-series":
        return _read_dicom_series_mask(src, what, config)
    if src.kind == "totalsegmentator" and src.labels:
        return _combine_segment_files(src, what, config)
    f = src.files[0]
    if not is_volume_file(f):
        raise InputError(f"{f}: {what} is neither NIfTI/NRRD/MHA nor a DICOM SEG")
    return read_volume_file(f, what, expect_shape=None if ref is None else ref.shape)


def _combine_segment_files(src: MaskSource, what: str, config: Mapping[str, Any]) -> Volume:
    """TotalSegmentator ``liver_segments``: one file per segment -> one label map (value = segment)."""
    from ..geometry import match_to_grid

    g = config["geometry"]
    first: Volume | None = None
    out: np.ndarray | None = None
    for f, n in zip(src.files, src.labels):
        v = read_volume_file(f, what)
        if first is None:
            first = v
            out = np.zeros(v.shape, dtype=np.uint8)
            a = np.asarray(v.array)
        else:
            a = np.asarray(match_to_grid(v, first, what=f"{what} file {f.name}",
                                         position_tol_voxel=g["position_tol_voxel"], direction_tol=g["direction_tol"]))
        m = a != 0
        both = m & (out != 0)
        if both.any():
            raise MaskError(f"{f}: {what}: segment {n} overlaps segment {int(out[both].flat[0])} "
                            f"in {int(both.sum())} voxels")
        out[m] = n
    assert first is not None and out is not None
    return first.with_array(out, source=str(src.path))


def check_not_organ_map(vol: Volume, path: Path, config: Mapping[str, Any]) -> None:
    """A multi-label organ map used as the liver with the default labels would count every
    organ as liver: refuse it and name the fix (``--liver-label 5`` for TotalSegmentator)."""
    if config["labels"]["liver"] != "nonzero":
        return
    a = np.asarray(vol.array)
    if a.size == 0 or not np.issubdtype(a.dtype, np.integer) and not np.issubdtype(a.dtype, np.floating):
        return
    top = a.max()
    if not top > ORGAN_MAP_MAX_VALUE:
        return
    if np.issubdtype(a.dtype, np.integer) and a.min() >= 0 and top < 1 << 16:
        values = np.flatnonzero(np.bincount(a.ravel()))
    else:
        values = np.unique(a)
    values = values[values != 0]
    if len(values) >= ORGAN_MAP_MIN_VALUES:
        raise MaskError(
            f"{path}: liver mask is a multi-label map ({len(values)} labels, up to {int(top)}), and every non-zero "
            "value would count as liver; for a TotalSegmentator 'total' map give --liver-label 5 "
            "--ignore-other-labels (or its liver.nii.gz)"
        )


def mask_sources(arg: str | Path | Sequence[str | Path], role: str, what: str) -> list[MaskSource]:
    """Every input of a mask argument, resolved (globs expanded, folders looked into)."""
    return [resolve_mask(p, role, what) for p in expand_mask_args(arg, what)]


def mask_files(arg: str | Path | Sequence[str | Path], role: str, what: str = "mask") -> list[Path]:
    """The files a mask argument is read from (for content hashes)."""
    return [f for s in mask_sources(arg, role, what) for f in s.files]


def combine_lesion_inputs(arrays: Sequence[np.ndarray], sources: Sequence[MaskSource], lesion_values: Any) -> np.ndarray:
    """Several lesion masks on one grid -> instance map: input k (1-based) is lesion id k.

    ``lesion_values`` is the configured ``labels.lesion`` ("nonzero" or a list). Two inputs
    sharing a voxel are an error naming both.
    """
    n = len(arrays)
    out = np.zeros(arrays[0].shape, dtype=np.uint8 if n < 256 else np.uint16)
    for k, (a, s) in enumerate(zip(arrays, sources), start=1):
        a = np.asarray(a)
        m = a != 0 if lesion_values == "nonzero" else np.isin(a, list(lesion_values))
        both = m & (out != 0)
        if both.any():
            j = int(out[both].flat[0])
            raise MaskError(f"{s.path}: lesion input {k} overlaps lesion input {j} ({sources[j - 1].path}) "
                            f"in {int(both.sum())} voxels; each input must be one lesion")
        out[m] = k
    return out
