"""Which inputs a study holds: the image series by rule, masks from DICOM SEG.

Rules (``conventions.md`` "PACS"; config ``[selection]`` and ``[roles]``):

1. Image candidates: volumetric image series (not SEG/SR/..., not localizers,
   not written by liverburden) whose Modality is in ``selection.modalities``
   and whose SeriesDescription matches ``selection.description`` (fnmatch,
   case-insensitive).
2. SEG objects (not written by liverburden) are read from their headers; each
   segment gets a role by its SegmentLabel (regular expressions tried in
   ``roles.order``; the first match wins) or, when no label matches, by its
   Segmented Property Type code (``roles.*_codes``). Unmapped segments are
   ignored (and listed in the notes).
3. A SEG belongs to the image series it references (Referenced Series
   Sequence; without one, the candidate series sharing its frame of reference,
   if there is exactly one).
4. The measured series is the candidate holding a liver and a lesion segment;
   among several, the one with the most slices; a tie parks the study.
   Liver, lesions, Couinaud segments and a remnant each come from one SEG
   object: two SEGs offering the same role for the measured series is
   ambiguous and parks the study. Lesions: one segment for all (split into
   components) or one segment per lesion (ids 1..N in segment-number order).
5. A pre/post pair: another candidate series with an ablation-zone segment
   (and ``measure.margins``): the measured series is "pre", that one "post".

Nothing is guessed: a missing or ambiguous input raises :class:`Parked` with a
reason that names series by number, modality and slice count, never by UID.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .._exceptions import LiverburdenError
from ..geometry import Volume, match_to_grid
from ..io import SeriesGeometry, SeriesInfo, scan_dicom, series_geometry, volume_to_sitk

__all__ = ["InputPlan", "MaskFiles", "Parked", "SegmentRef", "select_inputs", "segment_role", "write_masks"]

ROLES = ("liver", "lesion", "segment", "zone", "remnant")


class Parked(Exception):
    """A study that cannot be measured as it stands; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SegmentRef:
    """One segment of one SEG object, with the role it was given."""

    path: Path
    seg_index: int  # which SEG object (for "one SEG per role")
    number: int
    role: str
    key: str | None = None  # Couinaud segment key for role "segment"


@dataclass
class _Seg:
    index: int
    path: Path
    series: SeriesInfo
    ds: Any
    refs: set[str]
    frame_uid: str
    segments: list[SegmentRef]
    unmapped: list[str]


@dataclass(frozen=True)
class InputPlan:
    image: SeriesInfo
    geometry: SeriesGeometry
    liver: tuple[SegmentRef, ...]
    lesions: tuple[SegmentRef, ...]
    segments: tuple[SegmentRef, ...]
    remnant: tuple[SegmentRef, ...]
    post: SeriesInfo | None = None
    post_geometry: SeriesGeometry | None = None
    zone: tuple[SegmentRef, ...] = ()
    liver_post: tuple[SegmentRef, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def image_files(self) -> list[Path]:
        return [i.path for i in self.geometry.instances]

    @property
    def sop_uids(self) -> list[str]:
        return [str(i.ds.SOPInstanceUID) for i in self.geometry.instances]


@dataclass(frozen=True)
class MaskFiles:
    image_dir: Path
    liver: Path
    lesions: Path
    segments: Path | None
    remnant: Path | None
    post_dir: Path | None = None
    zone: Path | None = None
    liver_post: Path | None = None
    lesion_segments: dict[int, int] = field(default_factory=dict)  # lesion value -> source segment number


def _code_key(item: Any) -> str | None:
    seq = getattr(item, "SegmentedPropertyTypeCodeSequence", None)
    if not seq:
        return None
    c = seq[0]
    return f"{getattr(c, 'CodingSchemeDesignator', '')}:{getattr(c, 'CodeValue', '')}"


def segment_role(label: str, code: str | None, roles: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(role, Couinaud key) of a segment from its label, else its coded type."""
    for role in roles["order"]:
        m = re.search(roles[role], label or "", re.I)
        if m:
            if role == "segment":
                return role, m.group("n").lower()
            return role, None
    if code:
        for role in roles["order"]:
            if role == "segment":
                if code in roles["segment_codes"]:
                    return role, str(roles["segment_codes"][code]).lower()
            elif code in roles.get(f"{role}_codes", []):
                return role, None
    return None, None


def _describe(s: SeriesInfo) -> str:
    return f"series number {s.number} ({s.modality}, {s.n_files} instance(s))"


def _seg_objects(series: list[SeriesInfo], roles: Mapping[str, Any]) -> list[_Seg]:
    out: list[_Seg] = []
    for s in series:
        if s.modality != "SEG" or s.manufacturer.strip().lower() == "liverburden":
            continue
        for inst in s.instances:
            ds = inst.ds
            refs = {str(r.SeriesInstanceUID) for r in getattr(ds, "ReferencedSeriesSequence", []) or []
                    if "SeriesInstanceUID" in r}
            segs: list[SegmentRef] = []
            unmapped: list[str] = []
            idx = len(out)
            for item in getattr(ds, "SegmentSequence", []) or []:
                label = str(getattr(item, "SegmentLabel", "") or "")
                role, key = segment_role(label, _code_key(item), roles)
                if role is None:
                    unmapped.append(label[:32] or f"#{int(item.SegmentNumber)}")
                    continue
                segs.append(SegmentRef(inst.path, idx, int(item.SegmentNumber), role, key))
            if str(getattr(ds, "SegmentationType", "BINARY")) != "BINARY" and segs:
                unmapped.append(f"FRACTIONAL SEG in {_describe(s)} ignored")
                segs = []
            out.append(_Seg(idx, inst.path, s, ds, refs, str(getattr(ds, "FrameOfReferenceUID", "") or ""), segs,
                            unmapped))
    return out


def _one_seg(refs: list[SegmentRef], role: str, where: str) -> tuple[SegmentRef, ...]:
    objs = sorted({r.seg_index for r in refs})
    if len(objs) > 1:
        raise Parked(f"ambiguous {role} input: {len(objs)} SEG objects offer a {role} segmentation for {where}")
    return tuple(sorted(refs, key=lambda r: r.number))


def select_inputs(folder: str | Path, pcfg: Mapping[str, Any], mcfg: Mapping[str, Any]) -> InputPlan:
    """Choose the image series and the SEG segments of one study folder.

    Raises
    ------
    Parked
        No candidate image, no SEG, no liver or lesion segmentation, several
        series that fit equally, or two SEGs offering one role.
    """
    try:
        series = scan_dicom(folder)
    except LiverburdenError as exc:
        raise Parked(f"the study cannot be read: {_strip(str(exc), folder)}") from None
    sel = pcfg["selection"]
    mods = {m.upper() for m in sel["modalities"]}
    pat = sel["description"].lower()
    cands = [s for s in series if s.is_candidate_image() and s.modality.upper() in mods
             and fnmatch.fnmatch(s.description.lower(), pat)]
    others = [s for s in series if s not in cands and s.modality != "SEG"
              and s.manufacturer.strip().lower() != "liverburden"]
    if not cands:
        raise Parked(
            f"no image series matches the selection (modalities {sorted(mods)}, description '{sel['description']}'); "
            f"the study holds {len(series)} series" + (": " + "; ".join(_describe(s) for s in others) if others else "")
        )
    segs = _seg_objects(series, pcfg["roles"])
    if not segs:
        raise Parked("the study holds no DICOM SEG (liver and lesion segmentations are needed)")
    by_uid = {s.uid: s for s in cands}
    per_series: dict[str, list[SegmentRef]] = {s.uid: [] for s in cands}
    notes: list[str] = []
    for sg in segs:
        targets = [u for u in sg.refs if u in by_uid]
        if not sg.refs:
            same_for = [s.uid for s in cands if str(getattr(s.instances[0].ds, "FrameOfReferenceUID", "")) == sg.frame_uid]
            targets = same_for if len(same_for) == 1 else []
        if len(targets) != 1:
            if sg.segments:
                notes.append(f"a SEG of {_describe(sg.series)} references no single candidate image series; ignored")
            continue
        per_series[targets[0]].extend(sg.segments)
        if sg.unmapped:
            notes.append("SEG segments without a role, ignored: " + ", ".join(sg.unmapped[:8]))

    def has(uid: str, role: str) -> bool:
        return any(r.role == role for r in per_series[uid])

    measurable = [s for s in cands if has(s.uid, "liver") and has(s.uid, "lesion")]
    if not measurable:
        missing = []
        if not any(has(s.uid, "liver") for s in cands):
            missing.append("liver")
        if not any(has(s.uid, "lesion") for s in cands):
            missing.append("lesion")
        what = " and ".join(missing) or "liver and lesion (on the same series)"
        raise Parked(f"no {what} segmentation in a SEG referencing a candidate image series "
                     f"(candidates: {'; '.join(_describe(s) for s in cands)})")
    most = max(s.n_files for s in measurable)
    best = [s for s in measurable if s.n_files == most]
    if len(best) > 1:
        raise Parked("ambiguous image series: " + "; ".join(_describe(s) for s in best)
                     + " all have a liver and a lesion SEG and the same number of slices")
    image = best[0]
    refs = per_series[image.uid]
    where = _describe(image)
    liver = _one_seg([r for r in refs if r.role == "liver"], "liver", where)
    if len(liver) > 1:
        raise Parked(f"ambiguous liver input: {len(liver)} liver segments in one SEG for {where}")
    lesions = _one_seg([r for r in refs if r.role == "lesion"], "lesion", where)
    segments = _one_seg([r for r in refs if r.role == "segment"], "segment", where)
    keys = [r.key for r in segments]
    if len(set(keys)) != len(keys):
        raise Parked(f"ambiguous Couinaud map: a segment appears twice in the SEG for {where}")
    remnant = _one_seg([r for r in refs if r.role == "remnant"], "remnant", where)
    if remnant and not segments:
        raise Parked(f"a remnant (FLR plan) segmentation needs Couinaud segments, and the SEG for {where} has none")
    if any(r.role == "zone" for r in refs):
        notes.append("an ablation zone on the measured series itself is not a pre/post pair; ignored")
    try:
        geom = series_geometry(image, slice_spacing_rel_tol=mcfg["geometry"]["slice_spacing_rel_tol"],
                               allow_uneven_slices=mcfg["geometry"]["allow_uneven_slices"])
    except LiverburdenError as exc:
        raise Parked(f"the image series ({where}) is not a regular volume: {_strip(str(exc), folder)}") from None
    if image.multiframe:
        raise Parked(f"the image series ({where}) is multi-frame; the PACS hook measures single-frame series")
    post = post_geom = None
    zone: tuple[SegmentRef, ...] = ()
    liver_post: tuple[SegmentRef, ...] = ()
    if pcfg["measure"]["margins"]:
        posts = [s for s in cands if s.uid != image.uid and has(s.uid, "zone")]
        if len(posts) > 1:
            raise Parked("ambiguous pre/post pair: " + "; ".join(_describe(s) for s in posts)
                         + " each have an ablation-zone SEG")
        if posts:
            post = posts[0]
            pw = _describe(post)
            zone = _one_seg([r for r in per_series[post.uid] if r.role == "zone"], "ablation zone", pw)
            liver_post = _one_seg([r for r in per_series[post.uid] if r.role == "liver"], "liver", pw)
            if len(liver_post) > 1:
                raise Parked(f"ambiguous liver input: {len(liver_post)} liver segments in one SEG for {pw}")
            try:
                post_geom = series_geometry(post, slice_spacing_rel_tol=mcfg["geometry"]["slice_spacing_rel_tol"],
                                            allow_uneven_slices=mcfg["geometry"]["allow_uneven_slices"])
            except LiverburdenError as exc:
                raise Parked(f"the post-ablation series ({pw}) is not a regular volume: {_strip(str(exc), folder)}") \
                    from None
    return InputPlan(image, geom, liver, lesions, segments, remnant, post, post_geom, zone, liver_post, tuple(notes))


def _strip(msg: str, folder: str | Path) -> str:
    return msg.replace(str(folder), "<study>")


# ------------------------------------------------------------------------------ masks


def _grid(geom: SeriesGeometry) -> Volume:
    ds0 = geom.instances[0].ds
    return Volume(np.broadcast_to(np.zeros((), np.uint8), geom.size), geom.spacing_mm, geom.origin_mm,
                  geom.direction, getattr(ds0, "FrameOfReferenceUID", None))


class _SegCache:
    def __init__(self) -> None:
        self._segs: dict[Path, Any] = {}

    def get(self, path: Path) -> Any:
        import highdicom as hd

        if path not in self._segs:
            try:
                self._segs[path] = hd.seg.segread(str(path))
            except Exception as exc:
                raise Parked(f"a SEG cannot be read ({type(exc).__name__})") from None
        return self._segs[path]


def _segment_array(cache: _SegCache, ref: SegmentRef, geom: SeriesGeometry, mcfg: Mapping[str, Any]) -> np.ndarray:
    """One segment as a bool array on the series grid: by referenced instance,
    else by the SEG's own geometry (which must then lie on the grid)."""
    seg = cache.get(ref.path)
    sops = [str(i.ds.SOPInstanceUID) for i in geom.instances]
    try:
        arr = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=sops, segment_numbers=[ref.number], combine_segments=True, relabel=True,
            assert_missing_frames_are_empty=False)
        return np.ascontiguousarray(arr) > 0
    except Exception:
        pass
    try:
        hv = seg.get_volume(segment_numbers=[ref.number], combine_segments=True, relabel=True)
    except Exception as exc:
        raise Parked(f"SEG segment {ref.number} ({ref.role}) cannot be placed on the image "
                     f"({type(exc).__name__})") from None
    aff = np.asarray(hv.affine, dtype=np.float64)
    sp = np.linalg.norm(aff[:3, :3], axis=0)
    vol = Volume(np.asarray(hv.array), tuple(sp), tuple(aff[:3, 3]), aff[:3, :3] / sp[None, :])
    g = mcfg["geometry"]
    try:
        return np.asarray(match_to_grid(vol, _grid(geom), what=f"SEG segment {ref.number}",
                                        position_tol_voxel=g["position_tol_voxel"], direction_tol=g["direction_tol"])) > 0
    except LiverburdenError as exc:
        raise Parked(f"SEG segment {ref.number} ({ref.role}) is not on the image grid: {exc}") from None


def _link_files(files: list[Path], dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True, mode=0o700)
    for k, p in enumerate(files):
        target = dest / f"{k:06d}.dcm"
        try:
            os.link(p, target)
        except OSError:
            shutil.copy2(p, target)
    return dest


def write_masks(plan: InputPlan, work: Path, mcfg: Mapping[str, Any]) -> MaskFiles:
    """Masks as NIfTI on the image grid(s) in ``work``, and folders holding just
    the image series (hard links), for :func:`liverburden.pipeline.measure_study`."""
    import SimpleITK as sitk

    from ..measure._anatomy import segment_names

    work.mkdir(parents=True, exist_ok=True, mode=0o700)
    cache = _SegCache()
    grid = _grid(plan.geometry)

    def save(name: str, arr: np.ndarray, g: Volume = grid) -> Path:
        p = work / name
        sitk.WriteImage(volume_to_sitk(g, np.ascontiguousarray(arr)), str(p), useCompression=True)
        return p

    liver = np.zeros(grid.shape, dtype=bool)
    for r in plan.liver:
        liver |= _segment_array(cache, r, plan.geometry, mcfg)
    lesions = np.zeros(grid.shape, dtype=np.uint16 if len(plan.lesions) > 255 else np.uint8)
    values: dict[int, int] = {}
    for k, r in enumerate(plan.lesions, start=1):
        m = _segment_array(cache, r, plan.geometry, mcfg)
        if np.any(m & (lesions > 0)):
            raise Parked(f"lesion segments overlap (segment {r.number} overlaps an earlier lesion segment)")
        lesions[m] = k
        values[k] = r.number
    seg_path = rem_path = None
    if plan.segments:
        inv = {name: v for v, name in segment_names(mcfg).items()}
        smap = np.zeros(grid.shape, dtype=np.uint8)
        for r in plan.segments:
            if r.key not in inv:
                raise Parked(f"the SEG names Couinaud segment '{r.key}' but the measure config "
                             "(segments.extra) gives it no value")
            smap[_segment_array(cache, r, plan.geometry, mcfg)] = inv[r.key]
        seg_path = save("segments.nii.gz", smap)
    if plan.remnant:
        rem = np.zeros(grid.shape, dtype=bool)
        for r in plan.remnant:
            rem |= _segment_array(cache, r, plan.geometry, mcfg)
        rem_path = save("remnant.nii.gz", rem.astype(np.uint8))
    image_dir = _link_files(plan.image_files, work / "image")
    out = dict(
        image_dir=image_dir,
        liver=save("liver.nii.gz", liver.astype(np.uint8)),
        lesions=save("lesions.nii.gz", lesions),
        segments=seg_path,
        remnant=rem_path,
        lesion_segments=values,
    )
    if plan.post is not None and plan.post_geometry is not None:
        pgrid = _grid(plan.post_geometry)
        zone = np.zeros(pgrid.shape, dtype=bool)
        for r in plan.zone:
            zone |= _segment_array(cache, r, plan.post_geometry, mcfg)
        out["post_dir"] = _link_files([i.path for i in plan.post_geometry.instances], work / "post")
        out["zone"] = save("zone.nii.gz", zone.astype(np.uint8), pgrid)
        if plan.liver_post:
            lp = np.zeros(pgrid.shape, dtype=bool)
            for r in plan.liver_post:
                lp |= _segment_array(cache, r, plan.post_geometry, mcfg)
            out["liver_post"] = save("liver_post.nii.gz", lp.astype(np.uint8), pgrid)
    return MaskFiles(**out)
