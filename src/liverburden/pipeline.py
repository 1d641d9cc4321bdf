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
from typing import Any, Mapping

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


@dataclass(frozen=True)
class StudyRun:
    result: MeasureResult
    document: dict[str, Any]
    paths: dict[str, Path]
    timing_s: dict[str, float]


def measure_study(
    image: str | Path,
    liver: str | Path,
    lesions: str | Path,
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
    res = measure_volumes(
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
            "inputs": {role: [str(p) for p in paths] for role, paths in study.input_files.items()},
            "sha256": {role: v["sha256"] for role, v in hashes.items()},
        }
    paths = write_bundle(out, doc, res.label_array(), study.image, inputs_doc)
    t_write = time.perf_counter()
    timing = dict(doc["timing_s"], write=round(t_write - t_hash, 4), total=round(t_write - t0, 4))
    for w in doc["warnings"]:
        log.warning("%s", w)
    return StudyRun(res, doc, paths, timing)
