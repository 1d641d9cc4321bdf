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
) -> StudyRun:
    """Measure one study from files and write its bundle to ``out``."""
    t0 = time.perf_counter()
    cfg = load_config(config, overrides)
    t_cfg = time.perf_counter()
    study = load_study(image, liver, lesions, segments, series=series, config=cfg)
    t_load = time.perf_counter()
    res = measure_volumes(study.liver, study.lesions, study.segments, cfg, threads=threads)
    t_measure = time.perf_counter()
    doc = res.to_dict()
    salt = cfg["privacy"]["salt"]
    hashes = {role: {"sha256": hash_files(paths), "files": len(paths)} for role, paths in study.input_files.items()}
    h = study.header
    doc["software"]["packages"] = package_versions()
    doc["study_key"] = pseudonym(h.study_uid, salt) or hashes["image"]["sha256"][:16]
    doc["frame_key"] = pseudonym(h.frame_uid, salt)
    doc["source"] = {
        "kind": h.source_kind,
        "modality": h.modality,
        "series_number": h.series_number,
        "patient_size_m": h.patient_size_m,
        "patient_weight_kg": h.patient_weight_kg,
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
