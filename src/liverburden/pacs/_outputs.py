"""DICOM outputs of one study, written with highdicom (house style 16).

* SEG of the lesion instances: segment numbers 1..N in lesion-id order, each
  segment's Tracking ID is the lesion id and it has a Tracking UID; the SR
  uses the same pair, so SR, SEG and ``measurements.json`` agree.
* SR, TID 1500 Measurement Report (Comprehensive 3D SR): one volumetric ROI
  group per lesion (volume, long axis, short axis, maximal 3-D diameter;
  TID 1411 allows no coordinates there: the end points are in
  ``measurements.json`` and drawn on the summary picture; margins per tumor with A0/A1/A2 when a pre/post pair
  was measured) referencing its SEG segment, and study-level groups (total
  liver volume; hepatic tumor burden: tumor volume, involvement, sums of
  diameters; the FLR when planned).
* A Secondary Capture summary for viewers without SR/SEG.

Every object carries the source patient and study identity and references the
source series (``conventions.md`` "Identifiers": the exception for DICOM
objects sent to the configured destination), Manufacturer "liverburden".

UIDs are derived deterministically from the input study, the input instances
and the result (``2.25.`` + 128 bits of a sha256), so a run repeated after a
crash produces the same objects and the PACS files a resend as a duplicate.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pydicom

from .._version import __version__
from . import codes as C

__all__ = ["OutputSet", "UidFactory", "build_outputs", "result_digest"]

log = logging.getLogger(__name__)

MANUFACTURER = "liverburden"
#: Type 2 attributes highdicom copies from the source and needs present (possibly empty).
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber",
          "ReferringPhysicianName", "StudyDate", "StudyTime")


class UidFactory:
    """Deterministic UIDs: ``2.25.<128-bit integer>`` of sha256(seed, name).

    Not ``pydicom.uid.generate_uid(prefix=None, entropy_srcs=...)``: in pydicom 3
    that form ignores ``entropy_srcs`` and returns a random UUID-derived UID
    (checked in ``tests/test_pacs_units.py``).
    """

    def __init__(self, seed: str):
        self.seed = seed

    def __call__(self, name: str) -> str:
        d = hashlib.sha256((self.seed + "\x00" + name).encode()).digest()[:16]
        return "2.25." + str(int.from_bytes(d, "big"))


def result_digest(*docs: Mapping[str, Any] | None) -> str:
    """sha256 of the result documents without run-dependent parts (timing, file
    hashes of intermediate files, warnings that may name paths)."""
    h = hashlib.sha256()
    for doc in docs:
        if doc is None:
            h.update(b"null")
            continue
        d = {k: v for k, v in doc.items() if k not in ("timing_s", "inputs", "warnings")}
        h.update(json.dumps(d, sort_keys=True, default=str).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class OutputSet:
    """The written objects: kind -> path (``sr``, ``seg``, ``sc``)."""

    paths: dict[str, Path]
    sop_classes: dict[str, str]
    series_uids: dict[str, str]
    sop_uids: dict[str, str]


#: Optional source attributes copied into the outputs, validated (the Type 2 ones above too).
_OPTIONAL = ("PatientAge", "PatientSize", "PatientWeight", "StudyDescription", "SeriesDate", "SeriesTime",
             "AcquisitionDate", "AcquisitionTime", "ContentDate", "ContentTime", "InstitutionName")


def _patched(ds: pydicom.Dataset, dropped: set[str] | None = None) -> pydicom.Dataset:
    """A copy carrying every Type 2 attribute highdicom copies (empty when absent),
    with every copied optional attribute whose value breaks its VR (a PatientBirthDate
    of ``03/02/01``, a StudyTime ``12:00``) emptied (Type 2) or removed: a malformed
    optional value must not cost the study its results. ``dropped`` collects the
    keywords (never the values: they are patient data)."""
    from pydicom import config as pconfig
    from pydicom.valuerep import validate_value

    out = copy.deepcopy(ds)
    for kw in _TYPE2 + _OPTIONAL:
        if kw in out and out[kw].value not in (None, ""):
            el = out[kw]
            try:
                for v in (el.value if el.VM > 1 else [el.value]):
                    validate_value(el.VR, str(v) if el.VR != "PN" else v, pconfig.RAISE)
            except (ValueError, TypeError):
                if kw in _TYPE2:
                    out[kw].value = ""
                else:
                    del out[kw]
                if dropped is not None:
                    dropped.add(kw)
    for kw in _TYPE2:
        if kw not in out:
            setattr(out, kw, "")
    return out


def _source_datasets(files: Sequence[Path]) -> list[pydicom.Dataset]:
    dropped: set[str] = set()
    out = [_patched(pydicom.dcmread(p, stop_before_pixels=True), dropped) for p in files]
    if dropped:
        log.warning("source attribute(s) %s have values invalid for their VR: left empty or out of the DICOM "
                    "outputs", ", ".join(sorted(dropped)))
    return out


def _seg(sources, labels: np.ndarray, lesions: Sequence[Mapping[str, Any]], uid: UidFactory, series_number: int):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    ids = [int(les["id"]) for les in lesions]
    dtype = np.uint8 if len(ids) < 256 else np.uint16
    lut = np.zeros(int(labels.max(initial=0)) + 1, dtype=dtype)
    for k, lid in enumerate(ids, start=1):
        lut[lid] = k
    pixel = lut[labels]
    alg = hd.AlgorithmIdentificationSequence(
        name="liverburden", family=codes.cid7162.MorphologicalOperations, version=__version__)
    descs = []
    for k, les in enumerate(lesions, start=1):
        descs.append(hd.seg.SegmentDescription(
            segment_number=k,
            segment_label=f"Lesion {int(les['id'])}",
            segmented_property_category=C.ABNORMAL,
            segmented_property_type=C.NEOPLASM,
            algorithm_type="AUTOMATIC",
            algorithm_identification=alg,
            tracking_id=str(int(les["id"])),
            tracking_uid=uid(f"lesion/{int(les['id'])}"),
            anatomic_regions=[C.LIVER] if les["location"] == "liver" else None,
        ))
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixel,
        segmentation_type="BINARY",
        segment_descriptions=descs,
        series_instance_uid=uid("seg/series"),
        series_number=series_number,
        sop_instance_uid=uid("seg/sop"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name="liverburden",
        software_versions=__version__,
        device_serial_number="0",
        series_description="liverburden lesions",
        content_label="LESIONS",
        content_description="lesion instances; Tracking ID = lesion id of measurements.json",
    )


def _num(name, value, unit, **kw):
    import highdicom as hd

    return hd.sr.Measurement(name=name, value=float(value), unit=unit, **kw)


def _sr(sources, seg, doc: Mapping[str, Any], margin: Mapping[str, Any] | None, uid: UidFactory,
        series_number: int, modality: str):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    device = hd.sr.ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=UidFactory("liverburden-device")("device"), name="liverburden", manufacturer_name=MANUFACTURER,
            model_name="liverburden " + __version__),
    )
    ctx = hd.sr.ObservationContext(observer_device_context=device)
    algo = hd.sr.AlgorithmIdentification(name="liverburden", version=__version__)
    liver_site = [hd.sr.FindingSite(C.LIVER)]
    margins = {int(t["id"]): t for t in (margin or {}).get("tumors", [])}
    groups = []
    for k, les in enumerate(doc["lesions"], start=1):
        lid = int(les["id"])
        tid = hd.sr.TrackingIdentifier(uid=uid(f"lesion/{lid}"), identifier=str(lid))
        ms = [
            _num(C.VOLUME, les["volume_ml"], C.UNIT_ML, method=C.VOXEL_SUM, algorithm_id=algo),
            _num(C.LONG_AXIS, les["ld_mm"], C.UNIT_MM, algorithm_id=algo),
        ]
        if les["sa_endpoints_mm"] is not None:
            ms.append(_num(C.SHORT_AXIS, les["sa_mm"], C.UNIT_MM, algorithm_id=algo))
        ms.append(_num(C.DIAMETER, les["max3d_mm"], C.UNIT_MM, derivation=C.MAXIMUM, algorithm_id=algo))
        quals = []
        t = margins.get(lid)
        if t is not None:
            ms.append(_num(C.MIN_MARGIN_MM, t["min_margin_mm"], C.UNIT_MM, algorithm_id=algo))
            ms.append(_num(C.COVERAGE_PCT, t["coverage_pct"], C.UNIT_PCT, algorithm_id=algo))
            ms.append(_num(C.MARGIN_THRESHOLD_MM, margin["threshold_mm"], C.UNIT_MM))  # type: ignore[index]
            value = {"A0": C.A0, "A1": C.A1, "A2": C.A2}.get(t["classification"] or "", C.NOT_ASSESSED)
            quals.append(hd.sr.QualitativeEvaluation(C.CLASSIFICATION, value))
        common = dict(
            tracking_identifier=tid, finding_type=C.NEOPLASM, algorithm_id=algo,
            finding_sites=liver_site if les["location"] == "liver" else None, measurements=ms,
            qualitative_evaluations=quals or None,
        )
        if seg is not None:
            # ReferencedSegment.from_segmentation fails on a one-segment SEG (highdicom 0.28
            # looks for a per-frame SegmentIdentificationSequence, which is shared then), and
            # would list every source frame per lesion: reference the source series instead.
            ref = hd.sr.ReferencedSegment(
                sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=k,
                source_series=hd.sr.SourceSeriesForSegmentation(str(sources[0].SeriesInstanceUID)))
            groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(referenced_segment=ref, **common))
        else:
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(**common))
    liver = doc["liver"]
    sod = doc["sum_diameters"]
    groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uid("group/liver"), identifier="liver"),
        finding_type=C.LIVER, algorithm_id=algo,
        measurements=[_num(C.VOLUME, liver["volume_ml"], C.UNIT_ML, method=C.VOXEL_SUM, finding_sites=liver_site)],
    ))
    groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uid("group/burden"), identifier="hepatic tumor burden"),
        finding_type=C.NEOPLASM, algorithm_id=algo,
        measurements=[
            _num(C.VOLUME, liver["tumor_volume_ml"], C.UNIT_ML, method=C.VOXEL_SUM, finding_sites=liver_site),
            _num(C.INVOLVEMENT_PCT, liver["involvement_pct"], C.UNIT_PCT, finding_sites=liver_site),
            _num(C.SOD_ALL_MM, sod["all_mm"], C.UNIT_MM),
            _num(C.SOD_RECIST_MM, sod["recist_mm"], C.UNIT_MM),
        ],
    ))
    flr = doc.get("flr")
    if flr:
        ms = [_num(C.FLR_ML, flr["flr_ml"], C.UNIT_ML), _num(C.FLR_PCT, flr["flr_pct"], C.UNIT_PCT)]
        sflr = (flr.get("sflr_pct") or {}).get("vauthey") if isinstance(flr.get("sflr_pct"), dict) else None
        if sflr is not None:
            ms.append(_num(C.SFLR_PCT, sflr, C.UNIT_PCT))
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=uid("group/flr"), identifier="future liver remnant"),
            finding_type=C.LIVER, algorithm_id=algo, measurements=ms,
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(
                C.FLR_ADEQUATE, codes.SCT.Yes if flr["adequate"] else codes.SCT.No)],
        ))
    procedure = codes.cid100.MRIUnspecifiedBodyRegion if modality == "MR" else codes.cid100.CTUnspecifiedBodyRegion
    report = hd.sr.MeasurementReport(observation_context=ctx, procedure_reported=procedure, imaging_measurements=groups)
    evidence = list(sources) + ([seg] if seg is not None else [])
    scheme = hd.coding_schemes.CodingSchemeIdentificationItem(
        designator=C.SCHEME, name=C.SCHEME_NAME, responsible_organization="liverburden")
    return hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report, series_instance_uid=uid("sr/series"), series_number=series_number,
        sop_instance_uid=uid("sr/sop"), instance_number=1, manufacturer=MANUFACTURER, is_complete=True,
        series_description="liverburden measurements", coding_schemes=[scheme],
    )


def build_outputs(
    out_dir: Path,
    *,
    image_files: Sequence[Path],
    labels: np.ndarray,
    document: Mapping[str, Any],
    margin: Mapping[str, Any] | None,
    seed: str,
    output_cfg: Mapping[str, Any],
    image_volume: Any = None,
) -> OutputSet:
    """Write SEG, SR and Secondary Capture for one measured study.

    Parameters
    ----------
    image_files : the image series' instances in the volume's slice order.
    labels : (slice, row, col) lesion instance map on that grid (ids as in ``document``).
    document, margin : ``measurements.json`` and ``margin.json`` (or None).
    seed : identifies input study + instances + result (UIDs derive from it).
    """
    sources = _source_datasets(image_files)
    if labels.shape != (len(sources), int(sources[0].Rows), int(sources[0].Columns)):
        raise ValueError(f"lesion map shape {labels.shape} is not the series' "
                         f"{(len(sources), int(sources[0].Rows), int(sources[0].Columns))}")
    uid = UidFactory(seed)
    base = int(output_cfg["series_number_base"])
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths: dict[str, Path] = {}
    classes: dict[str, str] = {}
    series: dict[str, str] = {}
    sops: dict[str, str] = {}
    seg = None
    lesions = document["lesions"]
    if output_cfg["seg"] and lesions:
        seg = _seg(sources, labels, lesions, uid, base + 2)
    objs: list[tuple[str, Any]] = []
    if seg is not None:
        objs.append(("seg", seg))
    if output_cfg["sr"]:
        objs.append(("sr", _sr(sources, seg, document, margin, uid, base + 1, str(sources[0].Modality))))
    if output_cfg["secondary_capture"]:
        from ._summary import summary_image

        rgb = summary_image(document, margin, image_volume, labels, max_panels=int(output_cfg["max_lesion_panels"]))
        objs.append(("sc", _sc(sources[0], rgb, uid, base + 3)))
    for kind, ds in objs:
        p = out_dir / f"{kind}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths[kind] = p
        classes[kind] = str(ds.SOPClassUID)
        series[kind] = str(ds.SeriesInstanceUID)
        sops[kind] = str(ds.SOPInstanceUID)
    return OutputSet(paths, classes, series, sops)


def _sc(ref: pydicom.Dataset, rgb: np.ndarray, uid: UidFactory, series_number: int):
    import highdicom as hd

    return hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ref, pixel_array=np.ascontiguousarray(rgb, dtype=np.uint8), photometric_interpretation="RGB",
        bits_allocated=8, coordinate_system="PATIENT", series_instance_uid=uid("sc/series"),
        series_number=series_number, sop_instance_uid=uid("sc/sop"), instance_number=1, manufacturer=MANUFACTURER,
        patient_orientation=("L", "P"), series_description="liverburden summary",
        transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian,
    )
