"""A DICOM SEG that omits its empty frames (issue 12 item 12).

highdicom, dcmqi and most viewers write only the frames that hold a segment, so a
liver SEG of a 20-slice CT may have 12 frames. ``measure`` placed it by the source
instance references; ``report`` (which has no DICOM header) refused it as "not on
the image grid" and drew no liver. Now both place the frames by their own plane
positions onto the image grid, exactly, zeros elsewhere.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest

from liverburden.cli import main
from liverburden.geometry import Volume, embed_in_grid

ROOT = Path(__file__).resolve().parents[1]
S = ROOT / "sample_data" / "study"


def _ct_datasets():
    dss = [pydicom.dcmread(p) for p in sorted((S / "ct").rglob("*")) if p.is_file()]
    big = Counter(d.SeriesInstanceUID for d in dss).most_common(1)[0][0]
    dss = [d for d in dss if d.SeriesInstanceUID == big]
    return sorted(dss, key=lambda d: float(d.ImagePositionPatient[2]))


@pytest.fixture(scope="module")
def partial_seg(tmp_path_factory):
    hd = pytest.importorskip("highdicom")
    from pydicom.sr.codedict import codes

    dss = _ct_datasets()
    mask = np.zeros((len(dss), dss[0].Rows, dss[0].Columns), bool)
    mask[3:15, 200:300, 150:330] = True  # 12 of 20 slices: 12 frames
    desc = hd.seg.SegmentDescription(
        segment_number=1, segment_label="liver", segmented_property_category=codes.SCT.Organ,
        segmented_property_type=codes.SCT.Liver, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(
        source_images=dss, pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[desc], series_instance_uid=hd.UID(), series_number=99, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="test", manufacturer_model_name="t", software_versions="1",
        device_serial_number="1")
    assert int(seg.NumberOfFrames) == 12
    d = tmp_path_factory.mktemp("seg")
    seg.save_as(d / "liver_seg.dcm")
    px = float(dss[0].PixelSpacing[0]) * float(dss[0].PixelSpacing[1])
    return d / "liver_seg.dcm", int(mask.sum()), px * 2.0 / 1000.0  # 2 mm slices


def test_measure_and_report_draw_a_seg_with_fewer_frames(partial_seg, tmp_path):
    seg, nvox, voxel_ml = partial_seg
    out = tmp_path / "b"
    rc = main(["measure", "--image", str(S / "ct"), "--liver", str(seg), "--lesions", str(S / "lesions.nii.gz"),
               "--out", str(out), "--report", "--quiet"])
    assert rc == 0
    doc = json.loads((out / "measurements.json").read_text())
    assert doc["liver"]["mask_volume_ml"] == pytest.approx(nvox * voxel_ml, rel=1e-9)
    text = (out / "report.html").read_text()
    assert "liver mask could not be read" not in text and "not on the image grid" not in text
    # the same report from the standalone command (no DICOM header at hand either)
    assert main(["report", str(out), "--quiet"]) == 0
    assert "liver mask could not be read" not in (out / "report.html").read_text()


def _grid(shape, spacing, origin, direction=np.eye(3)):
    return Volume(np.zeros(shape, np.uint8), spacing, origin, direction)


def test_embed_places_a_slab_exactly_in_any_axis_order():
    ref = _grid((10, 8, 6), (2.0, 1.0, 0.5), (10.0, -20.0, 30.0), np.eye(3)[:, [2, 1, 0]])
    rng = np.random.default_rng(3)
    truth = np.zeros(ref.shape, np.uint8)
    truth[3:7, 1:6, 2:5] = rng.integers(1, 4, (4, 5, 3))
    # the slab stored with axes reversed and the first flipped: origin at its own [0,0,0]
    block = truth[3:7, 1:6, 2:5]
    stored = np.flip(np.transpose(block, (2, 1, 0)), axis=0)  # (col, row, slice), col flipped
    d = ref.direction
    first = ref.index_to_lps((3, 1, 4))  # stored[0,0,0] = truth[3, 1, 4] (col axis flipped)
    part = Volume(stored, (0.5, 1.0, 2.0), tuple(first), np.column_stack([-d[:, 2], d[:, 1], d[:, 0]]))
    got = embed_in_grid(part, ref)
    assert got is not None and np.array_equal(got, truth)


@pytest.mark.parametrize("shift_voxel", [0.1, 0.5])
def test_embed_refuses_an_offset_slab(shift_voxel):
    ref = _grid((10, 8, 6), (2.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    part = Volume(np.ones((4, 8, 6), np.uint8), (2.0, 1.0, 1.0), (2.0 * (3 + shift_voxel), 0.0, 0.0), np.eye(3))
    assert embed_in_grid(part, ref) is None


def test_embed_refuses_a_slab_outside_or_with_other_spacing():
    ref = _grid((10, 8, 6), (2.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    outside = Volume(np.ones((4, 8, 6), np.uint8), (2.0, 1.0, 1.0), (2.0 * 8, 0.0, 0.0), np.eye(3))
    assert embed_in_grid(outside, ref) is None
    other = Volume(np.ones((4, 8, 6), np.uint8), (2.5, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))
    assert embed_in_grid(other, ref) is None
