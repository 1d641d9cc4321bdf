"""Load one study: image + masks, series selection, geometry checks.

The one function the pipeline calls is :func:`load_study`. It returns masks
already reoriented onto the image grid (losslessly) or raises.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .._exceptions import GeometryError, InputError, LiverburdenError, SeriesSelectionError
from ..geometry import Volume, match_to_grid
from ._dicom import _SHOW_DESCRIPTIONS, DESCRIPTIONS_HINT, SeriesInfo, listing, read_multiframe, read_series_pixels, scan_dicom, series_geometry
from ._mask_inputs import (
    MaskSource,
    check_not_organ_map,
    combine_lesion_inputs,
    mask_sources,
    read_mask_source,
    resolve_mask,
)
from ._limits import limit_scope
from ._masks import is_volume_file, read_volume_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyHeader:
    """What the pipeline may use from DICOM headers (no direct identifiers)."""

    modality: str | None = None
    patient_size_m: float | None = None
    patient_weight_kg: float | None = None
    study_uid: str | None = field(default=None, repr=False)  # hashed before output
    frame_uid: str | None = field(default=None, repr=False)  # hashed before output
    series_number: int | None = None
    series_description: str | None = None
    source_kind: str = "volume-file"  # "dicom-series" | "dicom-multiframe" | "volume-file"
    sop_uids: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class Study:
    image: Volume
    liver: Volume
    lesions: Volume
    segments: Volume | None
    header: StudyHeader
    remnant: Volume | None
    warnings: tuple[str, ...]
    input_files: dict[str, list[Path]]
    #: mask role -> the inputs given for it, resolved (folders, several lesion inputs)
    mask_sources: dict[str, list[MaskSource]] = field(default_factory=dict)


def pseudonym(value: str | None, salt: str) -> str | None:
    """Salted sha256 of an identifier, 16 hex digits (conventions.md: study_key, frame_key)."""
    if not value:
        return None
    return hashlib.sha256((salt + "\x00" + value).encode()).hexdigest()[:16]


def hash_files(paths: list[Path]) -> str:
    """Content hash of a set of files, independent of their names and order."""
    digests = []
    for p in paths:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        digests.append(h.hexdigest())
    if len(digests) == 1:
        return digests[0]
    top = hashlib.sha256()
    for d in sorted(digests):
        top.update(d.encode())
    return top.hexdigest()


def _matches_series(info: SeriesInfo, selector: str) -> bool:
    if selector == info.uid:
        return True
    if selector.isdigit():  # all digits: a SeriesNumber, never a description
        return info.number is not None and int(selector) == info.number
    pat = selector if any(c in selector for c in "*?[") else f"*{selector}*"
    return fnmatch.fnmatch(info.description.lower(), pat.lower())


def _tol(config: Mapping[str, Any]) -> dict[str, float]:
    g = config["geometry"]
    return dict(position_tol_voxel=g["position_tol_voxel"], direction_tol=g["direction_tol"])


def load_image(
    image: str | Path,
    *,
    series: str | None = None,
    config: Mapping[str, Any],
    match_mask: str | Path | None = None,
    read_pixels: bool = True,
) -> tuple[Volume, StudyHeader, list[str], list[Path]]:
    """Load an image (DICOM folder or file, NIfTI/NRRD); ``match_mask`` (a volume
    file) helps choose among several DICOM series by geometry."""
    with limit_scope(config):
        img, header, w, used, _ = _load_image(image, series=series, config=config, match_mask=match_mask,
                                              read_pixels=read_pixels)
    return img, header, w, used


def _load_image(image, *, series, config, match_mask, read_pixels, mask_what="mask"):
    """:func:`load_image`, also returning the match mask it read (so it is read once)."""
    image_p = Path(image)
    mask_v = None
    if match_mask is not None and is_volume_file(Path(match_mask)):
        mask_v = read_volume_file(Path(match_mask), mask_what)
    elif match_mask is not None and mask_what == "liver mask" and Path(match_mask).is_dir():
        src = resolve_mask(match_mask, "liver", mask_what)  # a TotalSegmentator folder: its liver.nii.gz
        if src.kind in ("totalsegmentator", "folder-file"):
            mask_v = read_volume_file(src.files[0], mask_what)
    if image_p.is_file() and is_volume_file(image_p):
        return read_volume_file(image_p, "image"), StudyHeader(source_kind="volume-file"), [], [image_p], mask_v
    img, header, w, used = _load_dicom_image(image_p, series, mask_v, config, read_pixels, _tol(config))
    return img, header, w, used, mask_v


def load_mask_on(
    path: str | Path | Sequence[str | Path], image: Volume, header: StudyHeader, *, config: Mapping[str, Any],
    role: str, what: str
) -> Volume:
    """Read a mask (file, folder, or several lesion inputs: see :mod:`._mask_inputs`) and
    reorient it onto ``image``'s grid, losslessly."""
    return load_mask_sources_on(path, image, header, config=config, role=role, what=what)[0]


def load_mask_sources_on(
    path: str | Path | Sequence[str | Path], image: Volume, header: StudyHeader, *, config: Mapping[str, Any],
    role: str, what: str, pre_read: Volume | None = None,
) -> tuple[Volume, list[MaskSource]]:
    """:func:`load_mask_on`, also returning the resolved inputs. Several inputs (lesions
    only) give an instance map: input k is lesion id k, in the given order."""
    with limit_scope(config):
        return _load_mask_sources_on(path, image, header, config=config, role=role, what=what, pre_read=pre_read)


def _load_mask_sources_on(path, image, header, *, config, role, what, pre_read=None):
    sources = mask_sources(path, role, what)
    if len(sources) > 1 and role != "lesion":
        raise InputError(f"{sources[1].path}: only --lesions takes several inputs; {what} got {len(sources)}")
    arrays = []
    for k, src in enumerate(sources):
        vol = pre_read if (pre_read is not None and k == 0) else read_mask_source(
            src, role=role, what=what, ref=image, header=header, config=config)
        if role == "liver":
            check_not_organ_map(vol, src.path, config)
        try:
            arrays.append(match_to_grid(vol, image, what=what, **_tol(config)))
        except GeometryError as exc:
            msg = str(exc)
            raise GeometryError(msg if msg.startswith(str(src.path)) else f"{src.path}: {msg}") from None
    if len(sources) == 1:
        arr = arrays[0]
    else:
        arr = combine_lesion_inputs(arrays, sources, config["labels"]["lesion"])
    return image.with_array(arr, source=str(sources[0].path)), sources


def load_study(
    image: str | Path,
    liver: str | Path,
    lesions: str | Path | Sequence[str | Path],
    segments: str | Path | None = None,
    *,
    series: str | None = None,
    config: Mapping[str, Any],
    read_pixels: bool = True,
    remnant: str | Path | None = None,
) -> Study:
    """Load and check an image and its masks; masks come back on the image grid.

    Raises
    ------
    InputError, SeriesSelectionError, GeometryError, MaskError
        With the file named and, for geometry, both geometries.
    """
    with limit_scope(config):
        img, header, warnings, used, liver_v = _load_image(
            image, series=series, config=config, match_mask=liver, read_pixels=read_pixels, mask_what="liver mask"
        )
    files: dict[str, list[Path]] = {"image": used}
    sources: dict[str, list[MaskSource]] = {}

    def on(p, role, what, key, pre_read=None):
        vol, srcs = load_mask_sources_on(p, img, header, config=config, role=role, what=what, pre_read=pre_read)
        sources[key] = srcs
        files[key] = [f for s in srcs for f in s.files]
        return vol

    # a liver already read to choose the series is reoriented, not read again
    liver_g = on(liver, "liver", "liver mask", "liver", pre_read=liver_v)
    lesion_g = on(lesions, "lesion", "lesion mask", "lesions")
    seg_g = None
    if segments is not None:
        seg_g = on(segments, "segment", "segment map", "segments")
    rem_g = None
    if remnant is not None:
        rem_g = on(remnant, "remnant", "remnant mask", "remnant")
    return Study(img, liver_g, lesion_g, seg_g, header, rem_g, tuple(warnings), files, sources)


def _load_dicom_image(path: Path, selector, liver_v, config, read_pixels, tol):
    gcfg = config["geometry"]
    all_series = scan_dicom(path)
    if selector is not None:
        chosen = [s for s in all_series if _matches_series(s, selector)]
        if len(chosen) != 1:
            found = listing(all_series)
            what = "no series matches" if not chosen else f"{len(chosen)} series match"
            raise SeriesSelectionError(f"{path}: {what} --series '{_safe(selector)}'. Series found: {found}")
        candidates = chosen
    else:
        candidates = [s for s in all_series if s.is_candidate_image()]
        if not candidates:
            raise SeriesSelectionError(f"{path}: no volumetric image series found. Series found: {listing(all_series)}")

    described = []
    fits = []
    errors = {}
    for s in candidates:
        try:
            if s.multiframe:
                if s.n_files != 1:
                    raise GeometryError(f"{s.instances[0].path}: a series of {s.n_files} multi-frame files")
                vol, ds = read_multiframe(s.instances[0].path)
                geo_desc = f"size={list(vol.shape)} spacing_mm={[round(v, 4) for v in vol.spacing_mm]}"
                entry = (s, None, vol)
                ref = vol
            else:
                g = series_geometry(
                    s,
                    slice_spacing_rel_tol=gcfg["slice_spacing_rel_tol"],
                    allow_uneven_slices=gcfg["allow_uneven_slices"],
                )
                geo_desc = g.describe()
                entry = (s, g, None)
                ref = g.empty_volume()
        except LiverburdenError as exc:
            errors[s.uid] = exc
            described.append(s.describe(f"not a regular volume: {exc}"))
            continue
        described.append(s.describe(geo_desc))
        if liver_v is None or len(candidates) == 1 and selector is not None:
            fits.append(entry)
            continue
        try:
            match_to_grid(liver_v, ref, what="liver mask", **tol)
            fits.append(entry)
        except GeometryError:
            pass
    if len(fits) != 1:
        if len(candidates) == 1 and candidates[0].uid in errors:
            raise errors[candidates[0].uid]
        if not fits and len(candidates) == 1 and liver_v is not None:
            pass  # fall through: the mask check below gives the precise mismatch
        else:
            why = "no series has the geometry of the liver mask" if not fits else "several series fit the masks"
            raise SeriesSelectionError(
                f"{path}: cannot choose the image series ({why}); give --series UID|NUMBER|DESCRIPTION. "
                "Candidates: " + "; ".join(described) + ("" if _SHOW_DESCRIPTIONS.get() else " " + DESCRIPTIONS_HINT)
            )
    if fits:
        s, g, vol = fits[0]
    else:
        s = candidates[0]
        g = series_geometry(s, slice_spacing_rel_tol=gcfg["slice_spacing_rel_tol"], allow_uneven_slices=gcfg["allow_uneven_slices"])
        vol = None
    ds0 = s.instances[0].ds
    warnings: list[str] = []
    if not s.has_uid:
        warnings.append(
            "the image files carry no SeriesInstanceUID; they were grouped by series number, description, "
            "frame of reference, size and orientation"
        )
    if vol is None:
        arr = read_series_pixels(g) if read_pixels else np.broadcast_to(np.zeros((), np.int16), g.size)
        vol = Volume(arr, g.spacing_mm, g.origin_mm, g.direction, getattr(ds0, "FrameOfReferenceUID", None), source=str(path))
        warnings.extend(g.warnings)
        sops = tuple(str(getattr(i.ds, "SOPInstanceUID", "")) for i in g.instances)
        used = [i.path for i in g.instances]
        kind = "dicom-series"
    else:
        sops = ()
        used = [s.instances[0].path]
        kind = "dicom-multiframe"
    header = StudyHeader(
        modality=str(getattr(ds0, "Modality", "") or "") or None,
        patient_size_m=_pos_float(getattr(ds0, "PatientSize", None)),
        patient_weight_kg=_pos_float(getattr(ds0, "PatientWeight", None)),
        study_uid=str(getattr(ds0, "StudyInstanceUID", "") or "") or None,
        frame_uid=str(getattr(ds0, "FrameOfReferenceUID", "") or "") or None,
        series_number=s.number,
        series_description=s.description or None,
        source_kind=kind,
        sop_uids=sops,
    )
    return vol, header, warnings, used


def _pos_float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) and f > 0 else None


def _safe(text: str) -> str:
    return text if len(text) <= 64 else text[:61] + "..."
