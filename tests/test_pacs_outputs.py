"""DICOM outputs of a PACS run, checked against ``measure`` on the same inputs.

Oracle: :func:`liverburden.pipeline.measure_study` run directly on the CT folder
and the phantom's SEG (read by liverburden's own loader); the SR is parsed back
with highdicom and its numbers must equal the JSON's exactly (highdicom writes
the float as FloatingPointValue next to the DS).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes as dcodes

import dicomgen as dg
import test_pacs_phantom as ph
from liverburden.pacs import codes as C
from liverburden.pacs import load_pacs_config, process_study
from liverburden.pipeline import measure_study


def _folder(tmp: Path, files, name="in") -> Path:
    d = tmp / name
    d.mkdir(parents=True)
    for k, p in enumerate(files):
        os.link(p, d / f"{k:04d}")
    return d


def _run(tmp: Path, files, cfg=None, name="run"):
    cfg = cfg or load_pacs_config(None)
    return process_study(_folder(tmp, files, name + "_in"), tmp / (name + "_work"), tmp / (name + "_res"), cfg)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("outputs")
    st = ph.make_study(tmp / "study")
    out = _run(tmp, st.files)
    direct = measure_study(st.ct.folder, st.seg_path, st.seg_path, tmp / "direct", input_paths=False)
    return st, out, direct, tmp


def _groups(sr_path: Path):
    sr = hd.sr.srread(sr_path)
    rep = sr.content
    return sr, rep.get_volumetric_roi_measurement_groups(), rep.get_image_measurement_groups()


def _value(group, name, derivation=None):
    ms = [m for m in group.get_measurements(name=name)
          if derivation is None or (m.derivation is not None and m.derivation == derivation)]
    assert len(ms) == 1, name
    return ms[0].value, ms[0].unit.value


def test_run_is_done_with_three_outputs(measured):
    st, out, direct, _ = measured
    assert out.state == "done", out.reason
    assert sorted(out.outputs.paths) == ["sc", "seg", "sr"]
    assert out.measured_instances == len(st.ct.paths) and out.lesion_count == 3
    assert json.loads((out.result_dir / "measurements.json").read_text())["lesion_count"] == 3


def test_sr_numbers_equal_those_of_measure(measured):
    st, out, direct, _ = measured
    doc = direct.document
    _, vols, study = _groups(out.outputs.paths["sr"])
    assert [g.tracking_identifier for g in vols] == [str(les["id"]) for les in doc["lesions"]]
    for g, les in zip(vols, doc["lesions"]):
        assert g.finding_type == C.NEOPLASM
        assert _value(g, C.VOLUME) == (les["volume_ml"], "mL")
        assert _value(g, C.LONG_AXIS) == (les["ld_mm"], "mm")
        assert _value(g, C.SHORT_AXIS) == (les["sa_mm"], "mm")
        assert _value(g, C.DIAMETER, derivation=C.MAXIMUM) == (les["max3d_mm"], "mm")
    by_id = {g.tracking_identifier: g for g in study}
    liver = doc["liver"]
    assert _value(by_id["liver"], C.VOLUME) == (liver["volume_ml"], "mL")
    burden = by_id["hepatic tumor burden"]
    assert _value(burden, C.VOLUME) == (liver["tumor_volume_ml"], "mL")
    assert _value(burden, C.INVOLVEMENT_PCT) == (liver["involvement_pct"], "%")
    assert _value(burden, C.SOD_ALL_MM) == (doc["sum_diameters"]["all_mm"], "mm")
    assert _value(burden, C.SOD_RECIST_MM) == (doc["sum_diameters"]["recist_mm"], "mm")
    assert "future liver remnant" not in by_id  # no plan, no FLR


def test_seg_tracking_ids_equal_json_ids(measured):
    st, out, direct, _ = measured
    doc = json.loads((out.result_dir / "measurements.json").read_text())
    seg = hd.seg.segread(out.outputs.paths["seg"])
    items = list(seg.SegmentSequence)
    assert [int(s.SegmentNumber) for s in items] == list(range(1, len(doc["lesions"]) + 1))
    assert [s.TrackingID for s in items] == [str(les["id"]) for les in doc["lesions"]]
    _, vols, _ = _groups(out.outputs.paths["sr"])
    for s, g in zip(items, vols):
        assert g.tracking_uid == s.TrackingUID
        ref = g.referenced_segment
        assert ref.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert list(ref.referenced_segment_numbers) == [int(s.SegmentNumber)]
    # the SEG's pixels are the JSON's instance map (lesion_labels.nii.gz)
    import SimpleITK as sitk

    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out.result_dir / "lesion_labels.nii.gz")))
    px = seg.get_pixels_by_source_instance(st.ct.sop_uids, combine_segments=True, relabel=False)
    ids = np.array([0] + [les["id"] for les in doc["lesions"]])
    assert np.array_equal(ids[px], labels)


def test_outputs_carry_the_source_identity_and_reference_the_source(measured):
    st, out, _, _ = measured
    src = pydicom.dcmread(st.ct.paths[0])
    for kind, number in (("sr", 9901), ("seg", 9902), ("sc", 9903)):
        ds = pydicom.dcmread(out.outputs.paths[kind])
        assert ds.Manufacturer == "liverburden", kind
        assert ds.PatientName == src.PatientName and ds.PatientID == src.PatientID, kind
        assert ds.StudyInstanceUID == st.study_uid, kind
        assert int(ds.SeriesNumber) == number
        assert ds.SeriesInstanceUID != st.ct.series_uid
    seg = pydicom.dcmread(out.outputs.paths["seg"])
    assert [r.SeriesInstanceUID for r in seg.ReferencedSeriesSequence] == [st.ct.series_uid]
    sr = pydicom.dcmread(out.outputs.paths["sr"])
    ev = {s.SeriesInstanceUID for st_ in sr.CurrentRequestedProcedureEvidenceSequence
          for s in st_.ReferencedSeriesSequence}
    assert st.ct.series_uid in ev and seg.SeriesInstanceUID in ev
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99LIVERBURDEN"
    sc = pydicom.dcmread(out.outputs.paths["sc"])
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and sc.SamplesPerPixel == 3
    assert sc.pixel_array.shape[0] > 200 and sc.pixel_array.std() > 0


def test_outputs_are_deterministic(measured):
    st, out, _, tmp = measured
    again = _run(tmp, st.files, name="again")
    assert again.outputs.sop_uids == out.outputs.sop_uids
    assert again.outputs.series_uids == out.outputs.series_uids
    for kind in ("sr", "seg"):
        a, b = pydicom.dcmread(out.outputs.paths[kind]), pydicom.dcmread(again.outputs.paths[kind])
        assert a.SOPInstanceUID == b.SOPInstanceUID
    # a different input (one instance more) gives different UIDs
    other = ph.make_study(tmp / "other")
    assert _run(tmp, other.files, name="other").outputs.sop_uids["sr"] != out.outputs.sop_uids["sr"]


def test_spool_json_has_no_identifiers(measured):
    _, out, _, _ = measured
    for name in ("measurements.json", "lesions.csv", "status.json"):
        p = out.result_dir / name
        if name == "status.json":
            continue  # written by the worker, checked in the listener tests
        text = p.read_text()
        for needle in dg.PHI_NEEDLES:
            assert needle not in text, (name, needle)
        assert dg.UID_ROOT not in text, name
    assert not (out.result_dir / "inputs.json").exists()


def test_one_segment_per_lesion_gives_instance_ids(tmp_path):
    st = ph.make_study(tmp_path / "s", n=16, rows=40, cols=40, per_lesion_segments=True)
    out = _run(tmp_path, st.files)
    doc = json.loads((out.result_dir / "measurements.json").read_text())
    assert doc["conventions"]["lesion_mode"] == "instances"
    assert [les["id"] for les in doc["lesions"]] == [1, 2, 3]
    seg = pydicom.dcmread(out.outputs.paths["seg"])
    assert [s.TrackingID for s in seg.SegmentSequence] == ["1", "2", "3"]


def test_flr_when_planned_by_a_remnant_segment(tmp_path):
    base = ph.make_study(tmp_path / "probe", n=16, rows=40, cols=40, with_seg=False)
    segmap = ph.couinaud_map(base.liver)
    extra = [(f"Segment {k}", segmap == k) for k in range(1, 9)]
    extra.append(("Future liver remnant", np.isin(segmap, [1, 2, 3, 4])))
    st = ph.make_study(tmp_path / "s", n=16, rows=40, cols=40, extra_segments=extra)
    out = _run(tmp_path, st.files)
    assert out.state == "done", out.reason
    doc = json.loads((out.result_dir / "measurements.json").read_text())
    flr = doc["flr"]
    assert flr is not None and flr["source"]
    _, _, study = _groups(out.outputs.paths["sr"])
    g = {x.tracking_identifier: x for x in study}["future liver remnant"]
    assert _value(g, C.FLR_ML) == (flr["flr_ml"], "mL")
    assert _value(g, C.FLR_PCT) == (flr["flr_pct"], "%")
    (q,) = g.get_qualitative_evaluations(name=C.FLR_ADEQUATE)
    assert q.value == (dcodes.SCT.Yes if flr["adequate"] else dcodes.SCT.No)


def test_margins_when_the_study_holds_a_pre_post_pair(tmp_path):
    st = ph.make_study(tmp_path / "s", n=20, rows=48, cols=48)
    # zone: lesion 1 grown by 3 voxels in-plane (4.5 mm) and 2 slices (5 mm); lesion 2 left outside
    from scipy import ndimage

    zone = ndimage.binary_dilation(st.lesions == 1, iterations=3)
    post = ph.make_post(st, tmp_path / "p", zone)
    out = _run(tmp_path, st.files + post)
    assert out.state == "done", out.reason
    margin = json.loads((out.result_dir / "margin" / "margin.json").read_text())
    _, vols, _ = _groups(out.outputs.paths["sr"])
    by_id = {g.tracking_identifier: g for g in vols}
    cls_code = {"A0": C.A0, "A1": C.A1, "A2": C.A2, None: C.NOT_ASSESSED}
    assert {t["id"] for t in margin["tumors"]} == {1, 2, 3}
    for t in margin["tumors"]:
        g = by_id[str(t["id"])]
        assert _value(g, C.MIN_MARGIN_MM) == (t["min_margin_mm"], "mm")
        assert _value(g, C.COVERAGE_PCT) == (t["coverage_pct"], "%")
        (q,) = g.get_qualitative_evaluations(name=C.CLASSIFICATION)
        assert q.value == cls_code[t["classification"]]
    if margin["registration"]["ok"]:
        t2 = next(t for t in margin["tumors"] if t["id"] == 2)
        assert t2["classification"] == "A2"  # outside the zone


def test_study_parked_with_a_reason_writes_nothing(tmp_path):
    st = ph.make_study(tmp_path / "s", n=10, rows=24, cols=24, with_seg=False)
    out = _run(tmp_path, st.ct.paths)
    assert out.state == "parked" and "no DICOM SEG" in out.reason and out.outputs is None
    assert not (out.result_dir / "dicom").exists()


def test_single_lesion_study(tmp_path):
    # a one-segment SEG keeps its SegmentIdentificationSequence in the shared groups
    st = ph.make_study(tmp_path / "s", n=12, rows=24, cols=24, lesion_boxes=[((6, 12, 12), (3, 4, 4))])
    out = _run(tmp_path, st.files)
    assert out.state == "done", out.reason
    _, vols, _ = _groups(out.outputs.paths["sr"])
    assert [g.tracking_identifier for g in vols] == ["1"]
    assert list(vols[0].referenced_segment.referenced_segment_numbers) == [1]


def test_malformed_optional_source_attributes_do_not_cost_the_results(tmp_path, caplog):
    """PatientBirthDate "03/02/01" and StudyTime "12:00" (not DA/TM) in every CT
    instance: the SEG writer failed the whole study before (issue 12 item 9). Now the
    values are left empty, the study is done, and the warning names the attributes,
    never their values."""
    import logging
    import warnings

    st = ph.make_study(tmp_path / "s", n=12, rows=24, cols=24, lesion_boxes=[((6, 12, 12), (3, 4, 4))])
    for p in st.ct.paths:
        ds = pydicom.dcmread(p)
        with warnings.catch_warnings():  # pydicom warns (quoting the value) when the test sets it
            warnings.simplefilter("ignore")
            ds.PatientBirthDate = "03/02/01"
            ds.StudyTime = "12:00"
            ds.save_as(p)
    caplog.clear()
    with caplog.at_level(logging.DEBUG), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = _run(tmp_path, st.files)
    assert out.state == "done", out.reason
    for kind in ("seg", "sr"):
        ds = pydicom.dcmread(out.outputs.paths[kind])
        assert ds.PatientBirthDate == "" and ds.StudyTime == ""
        assert ds.PatientID == pydicom.dcmread(st.ct.paths[0]).PatientID  # identity still carried
    ours = " ".join(r.getMessage() for r in caplog.records if r.name.startswith("liverburden"))
    assert "PatientBirthDate" in ours and "StudyTime" in ours
    # no logger (ours or a library's) and no warning quotes the values
    every = " ".join(r.getMessage() for r in caplog.records) + " ".join(str(w.message) for w in caught)
    assert "03/02/01" not in every and "12:00" not in every
