"""One study from PACS: inputs by rule -> measure (+ margin) -> DICOM outputs.

Shared by the listener's worker and the Orthanc follower. Returns an explicit
outcome (house style 14): ``done`` with its outputs, ``parked`` with a reason
(missing or ambiguous inputs, bad input data), or ``failed`` (an internal
error, named by its type only).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .._exceptions import LiverburdenError
from .._version import __version__
from ._inputs import InputPlan, Parked, select_inputs, write_masks
from ._outputs import OutputSet, build_outputs, result_digest

__all__ = ["StudyOutcome", "process_study"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyOutcome:
    state: str  # "done" | "parked" | "failed"
    reason: str | None
    result_dir: Path
    outputs: OutputSet | None = None
    measured_instances: int = 0
    lesion_count: int | None = None
    notes: tuple[str, ...] = ()
    timing_s: dict[str, float] = field(default_factory=dict)

    def status(self, study_key: str, run: str, instances: int,
               pcfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``status.json``: no identifiers (keys are salted hashes); with the PACS
        settings that decided the inputs and outputs (provenance)."""
        return {
            "study_key": study_key,
            "run": run,
            "state": self.state,
            "reason": self.reason,
            "instances_received": instances,
            "instances_measured": self.measured_instances,
            "lesion_count": self.lesion_count,
            "outputs": sorted(self.outputs.paths) if self.outputs else [],
            "notes": list(self.notes),
            "timing_s": self.timing_s,
            "software": {"name": "liverburden", "version": __version__},
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "pacs_config": None if pcfg is None else {k: pcfg[k] for k in ("selection", "roles", "measure", "output")},
        }


def _seed(plan: InputPlan, seg_paths: list[Path], digest: str) -> str:
    import pydicom

    h = hashlib.sha256()
    ds0 = plan.geometry.instances[0].ds
    h.update(str(ds0.StudyInstanceUID).encode() + b"\x00")
    for uid in sorted(plan.sop_uids):
        h.update(uid.encode() + b"\n")
    for p in sorted(set(seg_paths)):
        h.update(str(pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)
                 .encode() + b"\n")
    if plan.post_geometry is not None:
        for i in plan.post_geometry.instances:
            h.update(str(i.ds.SOPInstanceUID).encode() + b"\n")
    h.update(digest.encode())
    return h.hexdigest()


def process_study(in_dir: Path, work: Path, result_dir: Path, pcfg: Mapping[str, Any]) -> StudyOutcome:
    """Measure the study whose instances are in ``in_dir``; write the bundle,
    ``margin/`` and ``dicom/`` under ``result_dir``."""
    from ..config import load_config
    from ..io import load_image
    from ..pipeline import margin_study, measure_study

    t0 = time.perf_counter()
    mpath = pcfg["measure"]["config"] or None
    mcfg = load_config(mpath)
    notes: list[str] = []
    try:
        plan = select_inputs(in_dir, pcfg, mcfg)
        notes.extend(plan.notes)
        masks = write_masks(plan, work, mcfg)
    except Parked as exc:
        return StudyOutcome("parked", exc.reason, result_dir, notes=tuple(notes))
    t_inputs = time.perf_counter()
    m = pcfg["measure"]
    resect = m["resect"] or None
    if masks.remnant is not None:
        resect = None
    if resect and masks.segments is None:
        notes.append("measure.resect is set but the study has no Couinaud segments: no FLR")
        resect = None
    try:
        run = measure_study(
            masks.image_dir, masks.liver, masks.lesions, result_dir, segments=masks.segments,
            config=mpath, threads=int(pcfg["worker"]["threads"]), input_paths=False, resect=resect,
            remnant_mask=masks.remnant, liver_condition=m["liver_condition"] or None,
        )
    except LiverburdenError as exc:
        return StudyOutcome("parked", f"the study cannot be measured: {_strip(str(exc), work)}", result_dir,
                            notes=tuple(notes))
    t_measure = time.perf_counter()
    margin_doc = None
    if masks.zone is not None and masks.post_dir is not None:
        try:
            mr = margin_study(
                masks.image_dir, masks.post_dir, masks.lesions, masks.zone, result_dir / "margin",
                liver_pre=masks.liver, liver_post=masks.liver_post, segments=masks.segments, config=mpath,
                input_paths=False, pictures=False,
            )
            margin_doc = mr.document
        except LiverburdenError as exc:
            notes.append(f"margins not measured: {_strip(str(exc), work)}")
    t_margin = time.perf_counter()
    doc = run.document
    outputs = None
    if any(pcfg["output"][k] for k in ("sr", "seg", "secondary_capture")):
        image = None
        if pcfg["output"]["secondary_capture"]:
            image = load_image(masks.image_dir, config=mcfg)[0]
        seg_paths = [r.path for r in plan.liver + plan.lesions + plan.segments + plan.remnant + plan.zone
                     + plan.liver_post]
        # the margin enters by its tumor ids only: an iterative registration may differ in the
        # last digits between runs, and a repeat must keep its UIDs (conventions.md "PACS")
        margin_key = None if margin_doc is None else {"tumors": [t["id"] for t in margin_doc["tumors"]]}
        seed = _seed(plan, seg_paths, result_digest(doc, margin_key))
        outputs = build_outputs(
            result_dir / "dicom", image_files=plan.image_files, labels=run.result.label_array(), document=doc,
            margin=margin_doc, seed=seed, output_cfg=pcfg["output"], image_volume=image,
        )
    t_out = time.perf_counter()
    timing = {"inputs": round(t_inputs - t0, 3), "measure": round(t_measure - t_inputs, 3),
              "margin": round(t_margin - t_measure, 3), "outputs": round(t_out - t_margin, 3),
              "total": round(t_out - t0, 3)}
    return StudyOutcome("done", None, result_dir, outputs, len(plan.image_files), int(doc["lesion_count"]),
                        tuple(notes), timing)


def _strip(msg: str, folder: Path) -> str:
    return msg.replace(str(folder), "<work>")
