"""One study, stage by stage: load -> validate geometry -> measure -> report.

Each stage is timed; the document written is validated against its schema.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ._exceptions import ExportError
from ._version import __version__
from .config import load_config
from .io import hash_files, load_study, pseudonym
from .measure import MeasureResult, measure_volumes
from .report import write_bundle

log = logging.getLogger(__name__)

_PACKAGES = ("numpy", "numba", "SimpleITK", "pydicom", "highdicom", "nibabel", "jsonschema")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _named(fn, files: Mapping[str, Any]):
    """Call ``fn``; a MaskError about "liver mask" etc. gets that file's path in front."""
    from ._exceptions import MaskError

    def call(*a, **kw):
        try:
            return fn(*a, **kw)
        except MaskError as exc:
            msg = str(exc)
            for what, path in files.items():
                if path is not None and msg.startswith(what):
                    raise MaskError(f"{path}: {msg}") from None
            raise

    return call


@dataclass(frozen=True)
class StudyRun:
    result: MeasureResult
    document: dict[str, Any]
    paths: dict[str, Path]
    timing_s: dict[str, float]


def measure_study(
    image: str | Path,
    liver: str | Path,
    lesions: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    segments: str | Path | None = None,
    series: str | None = None,
    config: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    threads: int = 1,
    input_paths: bool = True,
    resect: str | None = None,
    remnant_mask: str | Path | None = None,
    height_cm: float | None = None,
    weight_kg: float | None = None,
    liver_condition: str | None = None,
) -> StudyRun:
    """Measure one study from files and write its bundle to ``out``.

    Height and weight follow the precedence of ``conventions.md``: argument
    (CLI flag) > DICOM header (PatientSize in m, PatientWeight in kg); the
    output names the source of each.
    """
    t0 = time.perf_counter()
    cfg = load_config(config, overrides)
    t_cfg = time.perf_counter()
    study = load_study(image, liver, lesions, segments, series=series, config=cfg, remnant=remnant_mask)
    t_load = time.perf_counter()
    if len(study.mask_sources.get("lesions", ())) > 1:
        # several lesion inputs were combined into an instance map (input k = id k):
        # read it as instances, whatever the single-mask lesion settings say
        cfg = dict(cfg, labels=dict(cfg["labels"], lesion="nonzero", lesion_mode="instances"))
    lesion_name = lesions if isinstance(lesions, (str, Path)) else ", ".join(str(x) for x in lesions)
    h = study.header
    body: dict[str, Any] = {}
    hsrc = wsrc = None
    if height_cm is not None:
        body["height_cm"], hsrc = float(height_cm), "cli"
    elif h.patient_size_m is not None:
        body["height_cm"], hsrc = 100.0 * h.patient_size_m, "dicom"
    if weight_kg is not None:
        body["weight_kg"], wsrc = float(weight_kg), "cli"
    elif h.patient_weight_kg is not None:
        body["weight_kg"], wsrc = h.patient_weight_kg, "dicom"
    res = _named(measure_volumes, {"liver mask": liver, "lesion mask": lesion_name, "segment map": segments,
                                   "remnant mask": remnant_mask})(
        study.liver,
        study.lesions,
        study.segments,
        cfg,
        threads=threads,
        resect=resect,
        remnant=None if study.remnant is None else study.remnant.array,
        liver_condition=liver_condition,
        **body,
    )
    if res.flr is not None:
        res.flr["height_source"] = hsrc if res.flr["height_cm"] is not None else None
        res.flr["weight_source"] = wsrc if res.flr["weight_kg"] is not None else None
    t_measure = time.perf_counter()
    doc = res.to_dict()
    salt = cfg["privacy"]["salt"]
    hashes = {role: {"sha256": hash_files(paths), "files": len(paths)} for role, paths in study.input_files.items()}
    doc["software"]["packages"] = package_versions()
    doc["study_key"] = pseudonym(h.study_uid, salt) or hashes["image"]["sha256"][:16]
    doc["frame_key"] = pseudonym(h.frame_uid, salt)
    doc["source"] = {
        "kind": h.source_kind,
        "modality": h.modality,
        "series_number": h.series_number,
    }
    doc["inputs"] = hashes
    doc["warnings"] = list(study.warnings) + doc["warnings"]
    t_hash = time.perf_counter()
    doc["timing_s"] = {
        "load": round(t_load - t_cfg, 4),
        "measure": round(t_measure - t_load, 4),
        "hash": round(t_hash - t_measure, 4),
    }
    inputs_doc = None
    if input_paths:
        inputs_doc = {
            "note": "local file: input paths may reveal patient data; never export it",
            "inputs": {role: [str(Path(p).resolve()) for p in paths] for role, paths in study.input_files.items()},
            "sha256": {role: v["sha256"] for role, v in hashes.items()},
            "sources": {role: [s.to_dict() for s in srcs] for role, srcs in study.mask_sources.items()},
        }
        for role, srcs in study.mask_sources.items():  # a mask role lists its arguments (file or folder)
            inputs_doc["inputs"][role] = [str(s.path.resolve()) for s in srcs]
    paths = write_bundle(out, doc, res.label_array(), study.image, inputs_doc)
    t_write = time.perf_counter()
    timing = dict(doc["timing_s"], write=round(t_write - t_hash, 4), total=round(t_write - t0, 4))
    for w in doc["warnings"]:
        log.warning("%s", w)
    return StudyRun(res, doc, paths, timing)


# --------------------------------------------------------------------------- margin


def read_landmarks(path: str | Path) -> np.ndarray:
    """Landmarks CSV ``x_pre,y_pre,z_pre,x_post,y_post,z_post`` (LPS mm, conventions.md)."""
    import csv

    from ._exceptions import InputError

    p = Path(path)
    cols = ["x_pre", "y_pre", "z_pre", "x_post", "y_post", "z_post"]
    try:
        with open(p, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise InputError(f"{p}: cannot read landmarks ({exc.strerror})") from None
    if not rows or any(c not in rows[0] for c in cols):
        raise InputError(f"{p}: landmarks CSV needs the columns {','.join(cols)}")
    try:
        arr = np.array([[float(r[c]) for c in cols] for r in rows])
    except (TypeError, ValueError):
        raise InputError(f"{p}: landmarks CSV has a value that is not a number") from None
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{p}: landmarks CSV has a non-finite value")
    return arr


@dataclass(frozen=True)
class MarginRun:
    document: dict[str, Any]
    paths: dict[str, Path]
    timing_s: dict[str, float]


MARGIN_CSV_COLUMNS = [
    "id", "volume_ml", "min_margin_mm", "margin_q1_mm", "margin_median_mm", "margin_q3_mm",
    "surface_below_0", "surface_from_0_to_threshold", "surface_at_least_threshold", "threshold_mm",
    "coverage_pct", "classification", "uncertain", "uncertainty_mm",
    "min_margin_x_mm", "min_margin_y_mm", "min_margin_z_mm", "min_margin_segment",
] + [f"vic_{k}_ml" for k in range(11)]


def margin_study(
    pre: str | Path,
    post: str | Path,
    tumor: str | Path,
    zone: str | Path,
    out: str | Path,
    *,
    liver_pre: str | Path | None = None,
    liver_post: str | Path | None = None,
    registration: str | None = None,
    margin_mm: float | None = None,
    landmarks: str | Path | None = None,
    segments: str | Path | None = None,
    series_pre: str | None = None,
    series_post: str | None = None,
    config: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    input_paths: bool = True,
    pictures: bool = True,
) -> MarginRun:
    """Register post to pre, carry the zone into the pre grid, measure margins, write outputs."""
    import csv
    import io as _io

    import SimpleITK as sitk

    from ._exceptions import MaskError
    from .io import load_image, load_mask_on
    from .margin import margins_arrays
    from .register import register_volumes, resample_mask_into
    from .report import write_json_atomic
    from .report._bundle import _atomic_write
    from .report._margin_schema import validate_margin

    t0 = time.perf_counter()
    ov = dict(overrides or {})
    if registration is not None:
        ov.setdefault("registration", {})["method"] = registration
    if margin_mm is not None:
        ov.setdefault("margin", {})["threshold_mm"] = float(margin_mm)
    cfg = load_config(config, ov)
    lm = read_landmarks(landmarks) if landmarks is not None else None
    pre_img, pre_h, w_pre, pre_files = load_image(pre, series=series_pre, config=cfg, match_mask=tumor)
    post_img, post_h, w_post, post_files = load_image(post, series=series_post, config=cfg, match_mask=zone)
    tumor_v = load_mask_on(tumor, pre_img, pre_h, config=cfg, role="lesion", what="tumor mask")
    zone_v = load_mask_on(zone, post_img, post_h, config=cfg, role="zone", what="ablation zone mask")
    lpre = load_mask_on(liver_pre, pre_img, pre_h, config=cfg, role="liver", what="pre liver mask") if liver_pre else None
    lpost = load_mask_on(liver_post, post_img, post_h, config=cfg, role="liver", what="post liver mask") if liver_post else None
    seg = load_mask_on(segments, pre_img, pre_h, config=cfg, role="segment", what="segment map") if segments else None
    if not np.any(tumor_v.array):
        raise MaskError(f"{tumor}: tumor mask is empty")
    if not np.any(zone_v.array):
        raise MaskError(f"{zone}: ablation zone mask is empty")
    t_load = time.perf_counter()
    method = cfg["registration"]["method"]
    from ._exceptions import RegistrationError

    try:
        reg = register_volumes(pre_img, post_img, method=method, liver_pre=lpre, liver_post=lpost, landmarks=lm,
                               config=cfg)
    except RegistrationError as exc:
        raise RegistrationError(f"{post}: {exc}") from None
    t_reg = time.perf_counter()
    zone_pre = resample_mask_into(zone_v, pre_img, reg.transform, mode=cfg["registration"]["zone_resampling"])
    if not zone_pre.any():
        raise MaskError(f"{zone}: the ablation zone falls outside the pre scan after registration")
    e_reg = reg.error_mm
    res = margins_arrays(
        tumor_v.array, zone_pre, pre_img.spacing_mm, pre_img.direction, pre_img.origin_mm,
        liver=None if lpre is None else lpre.array, config=cfg,
        segments=None if seg is None else seg.array,
        registration_error_mm=e_reg, classify=reg.ok,
    )
    t_margin = time.perf_counter()
    warnings = list(w_pre) + list(w_post) + list(reg.warnings) + list(res.warnings)
    if not reg.ok:
        warnings.append(f"registration failed its quality check ({reg.reason}): no A0/A1/A2 verdict is issued")
    salt = cfg["privacy"]["salt"]
    from .io._mask_inputs import mask_files

    files = {"pre": pre_files, "post": post_files, "tumor": mask_files(tumor, "lesion", "tumor mask"),
             "zone": mask_files(zone, "zone", "ablation zone mask")}
    for role, p, r in (("liver_pre", liver_pre, "liver"), ("liver_post", liver_post, "liver"),
                       ("landmarks", landmarks, None), ("segments", segments, "segment")):
        if p:
            files[role] = [Path(p)] if r is None else mask_files(p, r)
    hashes = {role: {"sha256": hash_files(ps), "files": len(ps)} for role, ps in files.items()}
    doc: dict[str, Any] = {
        "schema_version": "1.0.0",
        "software": {"name": "liverburden", "version": __version__, "packages": package_versions()},
        "axes": ["slice", "row", "col"],
        "pre_image": pre_img.geometry_dict(),
        "post_image": post_img.geometry_dict(),
        "study_key_pre": pseudonym(pre_h.study_uid, salt),
        "study_key_post": pseudonym(post_h.study_uid, salt),
        "frame_key_pre": pseudonym(pre_h.frame_uid, salt),
        "frame_key_post": pseudonym(post_h.frame_uid, salt),
        "conventions": {
            "margin": "signed Euclidean distance of the zone at tumor surface voxel centres (6-neighbour surface), "
            "positive inside the zone; anisotropic spacing; clinical-reference section 4",
            "zone_resampling": cfg["registration"]["zone_resampling"],
            "matrix_lps": "maps a pre-scan LPS point to the post scan (ITK fixed to moving), 4x4 homogeneous",
            "uncertainty": "sqrt(e_reg^2 + (0.5 x largest spacing)^2); e_reg = landmark error, else liver MSD, "
            f"else {cfg['margin']['default_registration_error_mm']:g} mm",
        },
        "registration": reg.to_dict(),
        "threshold_mm": res.threshold_mm,
        "tumors": [t.to_dict() for t in res.tumors],
        "warnings": warnings,
        "config": cfg,
        "inputs": hashes,
        "timing_s": {
            "load": round(t_load - t0, 4), "register": round(t_reg - t_load, 4), "margin": round(t_margin - t_reg, 4),
        },
    }
    validate_margin(doc)
    outp = Path(out)
    from .report._bundle import begin_outputs

    begin_outputs(outp, "margin.json")  # margin.json is written last: its presence means complete
    paths: dict[str, Path] = {}
    if reg.transform is not None:
        paths["transform"] = outp / "transform_pre_to_post.tfm"
        try:
            sitk.WriteTransform(reg.transform, str(paths["transform"]))
        except RuntimeError:
            raise ExportError(f"{paths['transform']}: cannot write") from None
    paths["zone_in_pre"] = outp / "zone_in_pre.nii.gz"
    from .io import volume_to_sitk

    try:
        sitk.WriteImage(volume_to_sitk(pre_img, zone_pre.astype(np.uint8)), str(paths["zone_in_pre"]),
                        useCompression=True)
    except RuntimeError:
        raise ExportError(f"{paths['zone_in_pre']}: cannot write") from None
    buf = _io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(MARGIN_CSV_COLUMNS)
    for t in doc["tumors"]:
        sf = t["surface_fraction"]
        wr.writerow([
            t["id"], t["volume_ml"], t["min_margin_mm"], *t["margin_quartiles_mm"], sf["below_0"],
            sf["from_0_to_threshold"], sf["at_least_threshold"], sf["threshold_mm"], t["coverage_pct"],
            t["classification"] or "", int(t["uncertain"]), t["uncertainty_mm"], *t["min_margin_point_mm"],
            t["min_margin_segment"] or "", *[t["vic_ml"].get(str(k), "") for k in range(11)],
        ])
    paths["csv"] = outp / "margin.csv"
    _atomic_write(paths["csv"], buf.getvalue().encode())
    if pictures:
        from .report._views import margin_figure

        for t in res.tumors:
            p = outp / f"margin_tumor_{t.id}.png"
            vals = np.asarray(tumor_v.array)
            ids = vals != 0  # every tumor outlined; the cross marks this tumor's minimal margin
            margin_figure(p, pre_img, ids, zone_pre, t, t.surface_margins_mm, res.threshold_mm)
            paths[f"png_{t.id}"] = p
    if input_paths:
        paths["inputs"] = outp / "inputs.json"
        write_json_atomic(paths["inputs"], {
            "note": "local file: input paths may reveal patient data; never export it",
            "inputs": {role: [str(Path(p).resolve()) for p in ps] for role, ps in files.items()}
            | {role: [str(Path(p).resolve())] for role, p in (("tumor", tumor), ("zone", zone), ("liver_pre", liver_pre),
                                                               ("liver_post", liver_post), ("segments", segments)) if p},
        })
    paths["json"] = outp / "margin.json"
    write_json_atomic(paths["json"], doc)
    timing = dict(doc["timing_s"], total=round(time.perf_counter() - t0, 4))
    return MarginRun(doc, paths, timing)


def warmup() -> dict[str, Any]:
    """Compile (or load from the cache) every kernel specialisation the commands use.

    Runs the real entry points on tiny phantoms, so the specialisations are exactly
    those of a real run: uint8 and uint16 masks (the two label dtypes every mask is
    normalised to), rows that are whole uint64 words and rows that are not, segments
    with an FLR plan, and ablation margins. Calls that the install's ahead-of-time
    build covers run compiled code and need no JIT (``aot`` in the result says
    whether the build is in use). Returns the time, the cache directory, the counts
    of JIT specialisations compiled and loaded, and the build's status; the shape is
    ``schemas/warmup.schema.json``.
    """
    import time

    from .kernels import _cache
    from .margin import margins_arrays
    from .measure import measure_arrays

    t0 = time.perf_counter()
    for nx in (16, 13):  # 16: word-tested rows; 13: the per-voxel scan
        liver = np.zeros((6, 12, nx), np.uint8)
        liver[1:5, 2:10, :] = 1
        seg = np.zeros_like(liver)  # Couinaud 1..8 in bands along the columns
        for k in range(8):
            seg[:, :, k * nx // 8:(k + 1) * nx // 8] = k + 1
        seg[liver == 0] = 0
        for dtype, value in ((np.uint8, 1), (np.uint16, 300)):
            les = np.zeros(liver.shape, dtype)
            les[2:4, 3:6, 3:6] = value
            les[2:4, 7:9, 3:5] = value + 1
            for liv in (liver, liver.astype(np.uint16)):
                measure_arrays(liv, les, (2.0, 0.8, 0.8), segments=seg, resect="right-hepatectomy")
    tumor = np.zeros((12, 12, 12), np.uint8)
    tumor[4:8, 4:8, 4:8] = 1
    zone = np.zeros_like(tumor)
    zone[2:10, 2:10, 2:10] = 1
    margins_arrays(tumor, zone, (1.0, 1.0, 1.0), liver=np.ones_like(tumor))
    seconds = time.perf_counter() - t0
    directory, rule = _cache.configure()
    from .kernels import _tiered

    return {"seconds": seconds, "cache_dir": directory, "cache_rule": rule, **_cache.compile_counts(),
            **_tiered.status()}
