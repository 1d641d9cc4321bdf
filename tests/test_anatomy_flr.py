"""Liver anatomy and the future liver remnant (issue "Liver anatomy and FLR";
``clinical-reference.md`` sections 2-3, ``conventions.md`` "Anatomy and FLR").

Oracle: phantom livers whose Couinaud segments are index boxes and slabs, so that
every volume, tumor volume and shared face area is a hand count. A face normal to
array axis a has the area of the product of the two other spacings. The
phantoms are measured on grids that are anisotropic, oblique (direction rotated
by a few degrees) and axis-permuted and flipped (the LD slice axis is not array
axis 0). None of these may change a number. BSA and SLV are checked against
values worked out by hand from the published formulas. The sample study's
synthetic segment map is checked against the generator's brute-force counts
(``sample_data/study/truth.json`` -> ``segments``).

Known bugs in src are marked ``xfail(strict=True)`` with a minimal reproducer.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import SimpleITK as sitk

import phantoms as ph
from liverburden import cli
from liverburden._exceptions import ConfigError, GeometryError, InputError, MaskError
from liverburden.measure import measure_arrays

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_data" / "study"
SCHEMA = json.loads((REPO / "src" / "liverburden" / "schemas" / "measurements.schema.json").read_text())

# ----------------------------------------------------------------- the phantom
#
# Grid (slice, row, col) = (14, 42, 52), spacing (2.5, 0.8, 0.7) mm. The liver is
# the index box slices 1..12, rows 1..40, cols 1..44 (12 x 40 x 44 = 21 120 voxels).
# Columns 45..51 are outside the liver (room for extrahepatic things).
#
#   slices 7..12 (upper):  | 7: cols 1-12 | 8: cols 13-24 | 4: cols 25-32 | 2: cols 33-44 |
#   slices 1..6  (lower):  | 6: cols 1-12 | 5: cols 13-24 | 4: cols 25-32 | 3: cols 33-44 |
#
# all rows 1..40, except the caudate (1): upper slices 7..12, rows 30..40, cols
# 25..28, cut out of segment 4. So 1 touches 4 and 8, not 2; 6 and 8 (and 5 and 7)
# meet along an edge only, which is no shared face.

SP = (2.5, 0.8, 0.7)
SHAPE = (14, 42, 52)
VML = SP[0] * SP[1] * SP[2] / 1000.0  # mL per voxel
LOWER, UPPER = slice(1, 7), slice(7, 13)
ROWS = slice(1, 41)
C1, C2, C3, C4 = slice(1, 13), slice(13, 25), slice(25, 33), slice(33, 45)
CAUDATE = (UPPER, slice(30, 41), slice(25, 29))

N = {"1": 6 * 11 * 4, "2": 6 * 40 * 12, "3": 6 * 40 * 12, "4": 12 * 40 * 8 - 6 * 11 * 4,
     "5": 6 * 40 * 12, "6": 6 * 40 * 12, "7": 6 * 40 * 12, "8": 6 * 40 * 12}
TLV = 12 * 40 * 44
assert sum(N.values()) == TLV

# shared faces, counted per axis: (faces normal to axis 0, to axis 1, to axis 2)
FACES = {
    "1-4": (11 * 4, 6 * 4, 6 * 11),  # slice 6|7 below it, row 29|30 in front, col 28|29 beside it
    "1-8": (0, 0, 6 * 11),  # col 24|25, rows 30..40
    "2-3": (40 * 12, 0, 0),
    "2-4": (0, 0, 6 * 40),
    "3-4": (0, 0, 6 * 40),
    "4-5": (0, 0, 6 * 40),
    "4-8": (0, 0, 6 * 29),  # rows 1..29 only: the caudate takes rows 30..40
    "5-6": (0, 0, 6 * 40),
    "5-8": (40 * 12, 0, 0),
    "6-7": (40 * 12, 0, 0),
    "7-8": (0, 0, 6 * 40),
}


def face_area(counts, sp=SP):
    a0, a1, a2 = sp[1] * sp[2], sp[0] * sp[2], sp[0] * sp[1]
    return counts[0] * a0 + counts[1] * a1 + counts[2] * a2


def segment_map() -> np.ndarray:
    seg = np.zeros(SHAPE, np.uint8)
    seg[LOWER, ROWS, C1] = 6
    seg[UPPER, ROWS, C1] = 7
    seg[LOWER, ROWS, C2] = 5
    seg[UPPER, ROWS, C2] = 8
    seg[1:13, ROWS, C3] = 4
    seg[LOWER, ROWS, C4] = 3
    seg[UPPER, ROWS, C4] = 2
    seg[CAUDATE] = 1
    return seg


def liver_mask() -> np.ndarray:
    return (segment_map() > 0).astype(np.uint8)


# Main lesions (instance labels = ids):
#  1: slices 8-10, rows 5-14, cols 3-8: in 7, 3*10*6 = 180 voxels
#  2: slices 8-10, rows 20-25, cols 21-27: 8 (cols 21-24: 72) and 4 (cols 25-27: 54)
#  3: slices 2-3, rows 5-8, cols 37-40: in 3, 32 voxels
#  4: slices 3-5, rows 10-13, cols 47-49: outside the liver (extrahepatic), 36 voxels
MAIN_LESIONS = {
    1: (slice(8, 11), slice(5, 15), slice(3, 9)),
    2: (slice(8, 11), slice(20, 26), slice(21, 28)),
    3: (slice(2, 4), slice(5, 9), slice(37, 41)),
    4: (slice(3, 6), slice(10, 14), slice(47, 50)),
}
SEG_TUMOR = {"1": 0, "2": 0, "3": 32, "4": 54, "5": 0, "6": 0, "7": 180, "8": 72}
SEG_LESIONS = {"1": [], "2": [], "3": [3], "4": [2], "5": [], "6": [], "7": [1], "8": [2]}
TUMOR = 338  # hepatic lesions 1-3; lesion 4 is extrahepatic
FUNCTIONAL = TLV - TUMOR


def lesion_map(boxes=None) -> np.ndarray:
    les = np.zeros(SHAPE, np.uint8)
    for lid, box in (MAIN_LESIONS if boxes is None else boxes).items():
        les[box] = lid
    return les


def main_lesions_in_liver() -> np.ndarray:
    """The main lesions without the extrahepatic one (keeps the liver's bounding box)."""
    return lesion_map({k: v for k, v in MAIN_LESIONS.items() if k != 4})


# ---------------------------------------------------------------- the grids

ORIGIN = np.array([-40.0, 25.0, 310.0])
OBLIQUE = ph.rotation((1.0, 2.0, 0.5), 4.0) @ ph.AXIAL
PERM, FLIP = (2, 0, 1), (True, False, True)  # new axes: old col, old slice, old row
VARIANTS = ["axial", "oblique", "permuted", "permuted_oblique"]
LD_AXIS = {"axial": 0, "oblique": 0, "permuted": 1, "permuted_oblique": 1}


def on_grid(variant: str, *arrays):
    """The same physical phantom stored on grid ``variant``.

    Returns ``(arrays, spacing, direction, origin)``; ``None`` arrays stay ``None``.
    """
    d = ph.AXIAL if variant in ("axial", "permuted") else OBLIQUE
    if not variant.startswith("permuted"):
        return list(arrays), np.array(SP), d, ORIGIN
    out, geo = [], None
    for a in arrays:
        if a is None:
            out.append(None)
            continue
        arr, sp, dd, o = ph.permuted_grid(a, SP, d, ORIGIN, PERM, FLIP)
        out.append(arr)
        geo = (sp, dd, o)
    if geo is None:
        geo = ph.permuted_grid(np.zeros(SHAPE), SP, d, ORIGIN, PERM, FLIP)[1:]
    return out, *geo


def run(variant="axial", liver=None, lesions=None, seg=None, remnant=None, config=None, **kw):
    liver = liver_mask() if liver is None else liver
    lesions = lesion_map() if lesions is None else lesions
    seg = segment_map() if seg is None else seg
    (lv, le, sg, rm), sp, d, o = on_grid(variant, liver, lesions, seg, remnant)
    return measure_arrays(lv, le, sp, d, o, sg, config, remnant=rm, **kw)


# ======================================================= per-segment anatomy


@pytest.mark.parametrize("variant", VARIANTS)
def test_segments_lobes_and_adjacency_on_every_grid(variant):
    r = run(variant)
    assert r.ld_axis == LD_AXIS[variant]
    an = r.anatomy
    assert an["convention"] == "couinaud"
    assert set(an["segments"]) == set(N)
    for k, n in N.items():
        s = an["segments"][k]
        assert s["volume_ml"] == pytest.approx(n * VML, rel=1e-12), k
        assert s["tumor_volume_ml"] == pytest.approx(SEG_TUMOR[k] * VML, rel=1e-12, abs=1e-15), k
        assert s["involvement_pct"] == pytest.approx(100.0 * SEG_TUMOR[k] / n, rel=1e-12, abs=1e-12), k
        assert s["lesion_ids"] == SEG_LESIONS[k], k
        assert s["present"] is True
    lobes = an["lobes"]
    right_v, right_t = 4 * 2880, 180 + 72
    left_v, left_t = 2880 + 2880 + N["4"], 32 + 54
    assert lobes["right"]["segments"] == ["5", "6", "7", "8"]
    assert lobes["left"]["segments"] == ["2", "3", "4"]
    assert lobes["caudate"]["segments"] == ["1"]  # the caudate belongs to neither lobe
    assert lobes["right"]["volume_ml"] == pytest.approx(right_v * VML, rel=1e-12)
    assert lobes["right"]["tumor_volume_ml"] == pytest.approx(right_t * VML, rel=1e-12)
    assert lobes["right"]["involvement_pct"] == pytest.approx(100.0 * right_t / right_v, rel=1e-12)
    assert lobes["left"]["volume_ml"] == pytest.approx(left_v * VML, rel=1e-12)
    assert lobes["left"]["tumor_volume_ml"] == pytest.approx(left_t * VML, rel=1e-12)
    assert lobes["left"]["involvement_pct"] == pytest.approx(100.0 * left_t / left_v, rel=1e-12)
    assert lobes["caudate"]["volume_ml"] == pytest.approx(264 * VML, rel=1e-12)
    assert lobes["caudate"]["tumor_volume_ml"] == 0.0
    # adjacency is measured: exactly the shared faces, nothing for edge contacts
    assert set(an["adjacency_mm2"]) == set(FACES)
    for key, counts in FACES.items():
        assert an["adjacency_mm2"][key] == pytest.approx(face_area(counts), rel=1e-12), key
    assert "6-8" not in an["adjacency_mm2"] and "5-7" not in an["adjacency_mm2"]
    # lesion 2 has 72 voxels in 8 and 54 in 4: its majority segment is 8
    assert an["lesion_segments"] == {"1": "7", "2": "8", "3": "3"}
    assert an["bilobar"] is True
    # right lobe holds 252 / 338 = 74.56 % < 75 % of the tumor: not II; three segments: not I
    assert an["enets_pattern"] == "III"
    assert an["reliable"] is True
    # the extrahepatic lesion counts nowhere in the anatomy
    assert sum(s["tumor_volume_ml"] for s in an["segments"].values()) == pytest.approx(TUMOR * VML, rel=1e-12)
    les = {x.id: x for x in r.lesions}
    assert les[4].location == "extrahepatic"
    assert les[2].segment_voxels == {"8": 72, "4": 54}


def test_face_areas_follow_the_spacing_per_axis():
    """The same index layout on another anisotropic spacing: every face area
    changes by the spacing product of its own axis pair."""
    sp = (1.5, 1.1, 0.6)
    r = measure_arrays(liver_mask(), lesion_map(), sp, ph.AXIAL, ORIGIN, segment_map())
    for key, counts in FACES.items():
        assert r.anatomy["adjacency_mm2"][key] == pytest.approx(face_area(counts, sp), rel=1e-12), key
    # e.g. 1-4: 44 faces of 1.1*0.6 + 24 of 1.5*0.6 + 66 of 1.5*1.1 mm2
    assert r.anatomy["adjacency_mm2"]["1-4"] == pytest.approx(44 * 0.66 + 24 * 0.9 + 66 * 1.65, rel=1e-12)


# ==================================================================== ENETS

ENETS_CASES = {
    # two right-lobe lesions in non-adjacent segments (6 and 8): one lobe -> I
    "I_one_lobe": (
        {1: (slice(2, 5), slice(5, 15), slice(3, 9)), 2: (slice(8, 11), slice(5, 15), slice(15, 21))},
        {}, "I", False, "one lobe"),
    # 4 and 8 share 348 mm2 of face: two adjacent segments across the lobes -> I
    "I_two_adjacent_segments_4_and_8": (
        {1: (slice(8, 11), slice(5, 15), slice(26, 31)), 2: (slice(8, 11), slice(5, 15), slice(15, 21))},
        {}, "I", True, "adjacent"),
    # the same lesions, but 4-8 (348 mm2) is below a 400 mm2 contiguity threshold;
    # right lobe holds 180 / 330 = 54.5 % -> III
    "III_when_4_8_face_below_threshold": (
        {1: (slice(8, 11), slice(5, 15), slice(26, 31)), 2: (slice(8, 11), slice(5, 15), slice(15, 21))},
        {"anatomy": {"contiguity_min_area_mm2": 400.0}}, "III", True, "disseminated"),
    # caudate + 4 (adjacent, 198.64 mm2): I; the caudate is in neither lobe: not bilobar
    "I_caudate_and_4": (
        {1: (slice(8, 11), slice(32, 38), slice(26, 28)), 2: (slice(2, 5), slice(5, 9), slice(26, 30))},
        {}, "I", False, "adjacent"),
    # 1200 voxels in 7, satellites of 18 voxels (LD 2.13 mm) in 3 and 2: 97.1 % right -> II
    "II_dominant_lobe_small_satellites": (
        {1: (slice(8, 12), slice(5, 35), slice(2, 12)), 2: (slice(2, 4), slice(5, 8), slice(36, 39)),
         3: (slice(9, 11), slice(5, 8), slice(36, 39))},
        {}, "II", True, "right lobe holds"),
    # satellite in 3 is one slice x 30 rows x 2 cols: LD = hypot(29*0.8, 1*0.7) = 23.21 mm >= 20 -> III
    "III_satellite_too_long": (
        {1: (slice(8, 12), slice(5, 35), slice(2, 12)), 2: (slice(3, 4), slice(5, 35), slice(36, 38))},
        {}, "III", True, "disseminated"),
    "II_when_satellite_limit_raised_to_25mm": (
        {1: (slice(8, 12), slice(5, 35), slice(2, 12)), 2: (slice(3, 4), slice(5, 35), slice(36, 38))},
        {"anatomy": {"enets_satellite_max_ld_mm": 25.0}}, "II", True, "right lobe holds"),
    # 48 voxels each in 6, 4 and 2: left holds 66.7 % < 75 % -> III
    "III_no_dominant_lobe": (
        {1: (slice(2, 5), slice(5, 9), slice(3, 7)), 2: (slice(2, 5), slice(5, 9), slice(26, 30)),
         3: (slice(8, 11), slice(5, 9), slice(36, 40))},
        {}, "III", True, "disseminated"),
    "II_when_dominance_lowered_to_60pct": (
        {1: (slice(2, 5), slice(5, 9), slice(3, 7)), 2: (slice(2, 5), slice(5, 9), slice(26, 30)),
         3: (slice(8, 11), slice(5, 9), slice(36, 40))},
        {"anatomy": {"enets_dominant_lobe_fraction": 0.6}}, "II", True, "left lobe holds"),
    # the main phantom: right lobe 252 / 338 = 74.56 %; with the threshold at 74 % -> II
    "II_main_phantom_threshold_74pct": (
        {k: v for k, v in MAIN_LESIONS.items()},
        {"anatomy": {"enets_dominant_lobe_fraction": 0.74}}, "II", True, "right lobe holds"),
}


@pytest.mark.parametrize("variant", ["axial", "permuted_oblique"])
@pytest.mark.parametrize("case", list(ENETS_CASES))
def test_enets_pattern(case, variant):
    boxes, config, pattern, bilobar, reason = ENETS_CASES[case]
    r = run(variant, lesions=lesion_map(boxes), config=config or None)
    assert r.anatomy["enets_pattern"] == pattern, r.anatomy["enets_reason"]
    assert r.anatomy["bilobar"] is bilobar
    assert reason in r.anatomy["enets_reason"]
    if case.startswith("III_satellite") or case.startswith("II_when_satellite"):
        les = {x.id: x for x in r.lesions}
        assert les[2].ld_mm == pytest.approx(math.hypot(29 * 0.8, 0.7), abs=1e-9)


def test_no_lesion_no_pattern():
    r = run(lesions=np.zeros(SHAPE, np.uint8), resect="right-hepatectomy")
    assert r.anatomy["enets_pattern"] is None
    assert r.anatomy["bilobar"] is False
    f = r.flr
    assert f["cytoreduction_pct"] is None
    assert f["cytoreduction_resection_met"] is None and f["cytoreduction_debulking_met"] is None
    assert f["flr_ml"] == pytest.approx(9600 * VML, rel=1e-12)
    assert f["flr_pct"] == pytest.approx(100.0 * 9600 / TLV, rel=1e-12)


# ============================================================ FLR: named plans

# plan -> (resected, remnant, remnant voxels, remnant tumor voxels, contiguous, remnant faces)
PLANS = {
    "right-hepatectomy": (["5", "6", "7", "8"], ["1", "2", "3", "4"], 264 + 2880 * 2 + N["4"], 54 + 32, True,
                          ["1-4", "2-3", "2-4", "3-4"]),
    "left-hepatectomy": (["2", "3", "4"], ["1", "5", "6", "7", "8"], 264 + 4 * 2880, 180 + 72, True,
                         ["1-8", "5-6", "5-8", "6-7", "7-8"]),
    # the caudate touches only 4 and 8: the remnant 1, 2, 3 is not one block
    "extended-right": (["4", "5", "6", "7", "8"], ["1", "2", "3"], 264 + 2 * 2880, 32, False, ["2-3"]),
    "extended-left": (["2", "3", "4", "5", "8"], ["1", "6", "7"], 264 + 2 * 2880, 180, False, ["6-7"]),
    "left-lateral": (["2", "3"], ["1", "4", "5", "6", "7", "8"], 264 + N["4"] + 4 * 2880, 180 + 72 + 54, True,
                     ["1-4", "1-8", "4-5", "4-8", "5-6", "5-8", "6-7", "7-8"]),
}
PLAN_ALIASES = [
    ("right-hepatectomy", "right-hepatectomy", "right-hepatectomy"),
    ("Right-Hepatectomy", "right-hepatectomy", "right-hepatectomy"),
    ("5,6,7,8", "right-hepatectomy", "custom"),
    ("v, vi, vii, viii", "right-hepatectomy", "custom"),
    ("left-hepatectomy", "left-hepatectomy", "left-hepatectomy"),
    ("extended-right", "extended-right", "extended-right"),
    ("4,5,6,7,8", "extended-right", "custom"),
    ("extended-left", "extended-left", "extended-left"),
    ("left-lateral", "left-lateral", "left-lateral"),
    ("II,III", "left-lateral", "custom"),
]


@pytest.mark.parametrize("variant", ["axial", "permuted_oblique"])
@pytest.mark.parametrize("text,plan,name", PLAN_ALIASES)
def test_named_plans(text, plan, name, variant):
    resected, remnant, rem_vox, rem_tum, contiguous, faces = PLANS[plan]
    f = run(variant, resect=text).flr
    assert f["plan"] == name
    assert f["source"] == "segments"
    assert f["resected_segments"] == resected
    assert f["remnant_segments"] == remnant
    assert f["remnant_volume_ml"] == pytest.approx(rem_vox * VML, rel=1e-12)
    assert f["remnant_tumor_volume_ml"] == pytest.approx(rem_tum * VML, rel=1e-12)
    flr = rem_vox - rem_tum
    assert f["flr_ml"] == pytest.approx(flr * VML, rel=1e-12)
    assert f["flr_pct"] == pytest.approx(100.0 * flr / FUNCTIONAL, rel=1e-12)
    assert f["flr_pct"] >= 20.0  # every plan here has enough volume: contiguity decides
    assert f["contiguous"] is contiguous
    assert f["adequate"] is contiguous
    assert f["adequacy_basis"] == "flr_pct"
    assert f["bsa_m2"] is None and f["sflr_pct"] == {"vauthey": None, "urata": None}
    assert sorted(f["adjacency_mm2"]) == sorted(faces)
    for key in faces:
        assert f["adjacency_mm2"][key] == pytest.approx(face_area(FACES[key]), rel=1e-12)
    assert f["contiguity_min_area_mm2"] == 100.0
    assert any(x.startswith("adequate volume: flr_pct") for x in f["reasons"]), f["reasons"]
    if contiguous:
        assert any("contiguous remnant segments" in x for x in f["reasons"]), f["reasons"]
    else:
        assert any("do not form one contiguous block" in x for x in f["reasons"]), f["reasons"]
    removed = TUMOR - rem_tum
    assert f["tumor_removed_ml"] == pytest.approx(removed * VML, rel=1e-12, abs=1e-15)
    assert f["tumor_left_ml"] == pytest.approx(rem_tum * VML, rel=1e-12)
    assert f["cytoreduction_pct"] == pytest.approx(100.0 * removed / TUMOR, rel=1e-12)
    assert f["reliable"] is True


def test_remnant_of_two_non_adjacent_segments_is_inadequate():
    """Resect everything but 6 and 8: they meet along an edge only (no face)."""
    f = run(resect="1,2,3,4,5,7").flr
    assert f["remnant_segments"] == ["6", "8"]
    flr = 2 * 2880 - 72
    assert f["flr_ml"] == pytest.approx(flr * VML, rel=1e-12)
    assert f["flr_pct"] == pytest.approx(100.0 * flr / FUNCTIONAL, rel=1e-12)  # 27.4 %: volume is enough
    assert f["adjacency_mm2"] == {}
    assert f["contiguous"] is False
    assert f["adequate"] is False
    assert any("6, 8 do not form one contiguous block" in x for x in f["reasons"]), f["reasons"]


def test_remnant_of_two_distant_segments_is_inadequate():
    f = run(resect="1,3,4,5,7,8").flr
    assert f["remnant_segments"] == ["2", "6"]
    assert f["contiguous"] is False and f["adequate"] is False
    assert any("do not form one contiguous block" in x for x in f["reasons"]), f["reasons"]


def test_remnant_of_one_segment_is_inadequate():
    # volume threshold lowered to 5 % so that only the segment count fails (8: 2808 / 20782 = 13.5 %)
    f = run(resect="1,2,3,4,5,6,7", config={"flr": {"adequacy_normal_pct": 5.0}}).flr
    assert f["remnant_segments"] == ["8"]
    assert f["flr_pct"] == pytest.approx(100.0 * (2880 - 72) / FUNCTIONAL, rel=1e-12)
    assert f["contiguous"] is False
    assert f["adequate"] is False
    assert any(x.startswith("adequate volume") for x in f["reasons"]), f["reasons"]
    assert any("fewer than 2 remnant segments (1)" in x for x in f["reasons"]), f["reasons"]


def _tiny_face_phantom():
    """5 and 6 joined only through a bridge of 3 x 4 voxels: a shared face of
    12 faces x 2.5 x 0.8 mm2 = 24 mm2 (< 100). 6 and 7 share 8 x 20 faces = 320 mm2."""
    shape = (12, 24, 40)
    seg = np.zeros(shape, np.uint8)
    seg[1:9, 1:21, 1:11] = 5
    seg[1:9, 1:21, 12:22] = 6
    seg[2:5, 2:6, 11:12] = 6  # the bridge, next to 5 at col 10|11
    seg[1:9, 1:21, 22:32] = 7
    return (seg > 0).astype(np.uint8), np.zeros(shape, np.uint8), seg


@pytest.mark.parametrize("variant", ["axial", "permuted_oblique"])
def test_tiny_shared_face_is_not_contiguous(variant):
    liver, les, seg = _tiny_face_phantom()
    (lv, le, sg), sp, d, o = on_grid(variant, liver, les, seg)
    r = measure_arrays(lv, le, sp, d, o, sg, resect="7")
    assert r.anatomy["adjacency_mm2"]["5-6"] == pytest.approx(12 * 2.5 * 0.8, rel=1e-12)
    assert r.anatomy["adjacency_mm2"]["6-7"] == pytest.approx(8 * 20 * 2.5 * 0.8, rel=1e-12)
    assert "5-7" not in r.anatomy["adjacency_mm2"]
    f = r.flr
    assert f["remnant_segments"] == ["5", "6"]
    assert f["adjacency_mm2"] == {"5-6": pytest.approx(24.0, rel=1e-12)}  # found, but below 100 mm2
    assert f["contiguous"] is False and f["adequate"] is False
    assert any("do not form one contiguous block (shared face >= 100 mm²)" in x for x in f["reasons"]), f["reasons"]
    # 6 + 7 share 320 mm2: contiguous
    assert measure_arrays(lv, le, sp, d, o, sg, resect="5").flr["contiguous"] is True
    # the threshold is configuration
    r20 = measure_arrays(lv, le, sp, d, o, sg, {"anatomy": {"contiguity_min_area_mm2": 20.0}}, resect="7")
    assert r20.flr["contiguous"] is True and r20.flr["adequate"] is True
    assert r20.flr["contiguity_min_area_mm2"] == 20.0


# ========================================================= liver condition


# remnant 1, 2, 4: (264 + 2880 + 3576 - 54) / 20782 = 32.08 %; remnant 2, 3: (5760 - 32) / 20782 = 27.56 %
@pytest.mark.parametrize(
    "resect,flr_vox,condition,threshold,adequate",
    [
        ("3,5,6,7,8", 6666, "normal", 20.0, True),
        ("3,5,6,7,8", 6666, "chemotherapy", 30.0, True),
        ("3,5,6,7,8", 6666, "cirrhosis", 40.0, False),
        ("1,4,5,6,7,8", 5728, "normal", 20.0, True),
        ("1,4,5,6,7,8", 5728, "chemotherapy", 30.0, False),
        ("1,4,5,6,7,8", 5728, "cirrhosis", 40.0, False),
    ],
)
def test_liver_condition_thresholds(resect, flr_vox, condition, threshold, adequate):
    f = run(resect=resect, liver_condition=condition).flr
    assert f["flr_pct"] == pytest.approx(100.0 * flr_vox / FUNCTIONAL, rel=1e-12)
    assert f["contiguous"] is True
    assert f["liver_condition"] == condition
    assert f["threshold_pct"] == threshold
    assert f["adequate"] is adequate
    word = "adequate" if adequate else "inadequate"
    assert any(x.startswith(f"{word} volume: flr_pct") and f"{condition} liver" in x
               for x in f["reasons"]), f["reasons"]


def test_liver_condition_default_and_thresholds_come_from_config():
    f = run(resect="3,5,6,7,8", config={"flr": {"liver_condition": "chemotherapy",
                                                 "adequacy_chemotherapy_pct": 33.0}}).flr
    assert f["liver_condition"] == "chemotherapy" and f["threshold_pct"] == 33.0
    assert f["adequate"] is False  # 32.08 % < 33 %


def test_liver_condition_must_be_known():
    with pytest.raises(ConfigError, match="steatosis"):
        run(resect="right-hepatectomy", liver_condition="steatosis")


# =========================================================== BSA, SLV, sFLR

SPB = (5.0, 4.0, 3.5)  # a phantom of adult size: 0.07 mL per voxel, TLV 1478.4 mL
VMLB = 0.07
# Hand-computed from the published formulas (clinical-reference.md section 3):
# 172 cm, 80 kg: BSA = sqrt(172 * 80 / 3600) = sqrt(3.822222...) = 1.955050439815357 m2
#   Vauthey SLV = -794.41 + 1267.28 * 1.955050439815357 = 1683.186321369206 mL
#   Urata   SLV = 706.2 * 1.955050439815357 + 2.4        = 1383.056620597606 mL
# 190 cm, 120 kg: BSA = sqrt(6.333...) = 2.516611478423583; Vauthey SLV = 2394.841394376639 mL
BSA_172_80, SLV_V_172_80, SLV_U_172_80 = 1.955050439815357, 1683.186321369206, 1383.056620597606
BSA_190_120, SLV_V_190_120 = 2.516611478423583, 2394.841394376639


def run_big(**kw):
    return measure_arrays(liver_mask(), lesion_map(), SPB, ph.AXIAL, ORIGIN, segment_map(), **kw)


def test_bsa_slv_sflr_hand_computed():
    f = run_big(resect="right-hepatectomy", height_cm=172, weight_kg=80).flr
    assert f["bsa_m2"] == pytest.approx(BSA_172_80, rel=1e-12)
    assert f["bsa_m2"] == pytest.approx(math.sqrt(172 * 80 / 3600), rel=1e-12)
    assert f["slv_ml"]["vauthey"] == pytest.approx(SLV_V_172_80, rel=1e-12)
    assert f["slv_ml"]["urata"] == pytest.approx(SLV_U_172_80, rel=1e-12)
    flr_ml = (9600 - 86) * VMLB  # 665.98 mL
    assert f["flr_ml"] == pytest.approx(665.98, rel=1e-12)
    assert f["sflr_pct"]["vauthey"] == pytest.approx(100 * flr_ml / SLV_V_172_80, rel=1e-12)  # 39.57 %
    assert f["sflr_pct"]["urata"] == pytest.approx(100 * flr_ml / SLV_U_172_80, rel=1e-12)  # 48.15 %
    assert f["sflr_pct"]["vauthey"] == pytest.approx(39.5666, abs=1e-4)
    assert f["height_cm"] == 172.0 and f["weight_kg"] == 80.0
    assert f["adequacy_basis"] == "sflr_vauthey"
    assert f["adequate"] is True
    assert any(x.startswith("adequate volume: sflr_vauthey = 39.6 %") for x in f["reasons"]), f["reasons"]


def test_adequacy_basis_is_vauthey_when_bsa_known_else_flr_pct():
    # remnant 2, 3: flr_pct = 5728 / 20782 = 27.56 % (>= 20); FLR = 400.96 mL
    plan = "1,4,5,6,7,8"
    f = run_big(resect=plan).flr
    assert f["adequacy_basis"] == "flr_pct" and f["adequate"] is True
    f = run_big(resect=plan, height_cm=190, weight_kg=120).flr
    assert f["bsa_m2"] == pytest.approx(BSA_190_120, rel=1e-12)
    assert f["slv_ml"]["vauthey"] == pytest.approx(SLV_V_190_120, rel=1e-12)
    assert f["sflr_pct"]["vauthey"] == pytest.approx(100 * 400.96 / SLV_V_190_120, rel=1e-12)  # 16.74 %
    assert f["flr_pct"] == pytest.approx(100 * 5728 / FUNCTIONAL, rel=1e-12)
    assert f["adequacy_basis"] == "sflr_vauthey"
    assert f["adequate"] is False
    assert any(x.startswith("inadequate volume: sflr_vauthey = 16.7 % < 20 %") for x in f["reasons"]), f["reasons"]
    # height without weight: no BSA, basis flr_pct
    f = run_big(resect=plan, height_cm=190).flr
    assert f["bsa_m2"] is None and f["sflr_pct"]["vauthey"] is None
    assert f["height_cm"] == 190.0 and f["weight_kg"] is None
    assert f["adequacy_basis"] == "flr_pct" and f["adequate"] is True


@pytest.mark.parametrize(
    "height,weight,match",
    [
        (1.72, 80, "height 1.72 cm .*outside the physiological range"),  # metres given as cm
        (1720, 80, "height 1720 cm .*outside the physiological range"),  # millimetres
        (172, 800, "weight 800 kg .*outside the physiological range"),
        (172, 5, "weight 5 kg .*outside the physiological range"),
    ],
)
def test_height_weight_out_of_range(height, weight, match):
    with pytest.raises(InputError, match=match):
        run(resect="right-hepatectomy", height_cm=height, weight_kg=weight)


@pytest.mark.parametrize("kw", [{"height_cm": 1720.0}, {"weight_kg": 800.0}])
def test_height_or_weight_alone_out_of_range_is_an_error(kw):
    with pytest.raises(InputError, match="physiological range"):
        run(resect="right-hepatectomy", **kw)


# ============================================================ cytoreduction


def test_cytoreduction_with_a_lesion_spanning_resected_and_remnant_segments():
    # lesion 2: 72 voxels in 8 (resected), 54 in 4 (remnant); lesion 1 (180, in 7) resected;
    # lesion 3 (32, in 3) stays; lesion 4 is extrahepatic and counts nowhere
    f = run(resect="right-hepatectomy").flr
    assert f["tumor_removed_ml"] == pytest.approx((180 + 72) * VML, rel=1e-12)
    assert f["tumor_left_ml"] == pytest.approx((54 + 32) * VML, rel=1e-12)
    assert f["remnant_tumor_volume_ml"] == pytest.approx((54 + 32) * VML, rel=1e-12)
    assert f["cytoreduction_pct"] == pytest.approx(100.0 * 252 / 338, rel=1e-12)  # 74.56 %
    assert f["cytoreduction_debulking_met"] is True and f["cytoreduction_debulking_threshold_pct"] == 70.0
    assert f["cytoreduction_resection_met"] is False and f["cytoreduction_resection_threshold_pct"] == 90.0
    f = run(resect="extended-right").flr  # + all of lesion 2: 306 / 338 = 90.53 %
    assert f["cytoreduction_pct"] == pytest.approx(100.0 * 306 / 338, rel=1e-12)
    assert f["cytoreduction_resection_met"] is True and f["cytoreduction_debulking_met"] is True
    f = run(resect="left-lateral").flr  # lesion 3 only: 32 / 338 = 9.47 %
    assert f["cytoreduction_pct"] == pytest.approx(100.0 * 32 / 338, rel=1e-12)
    assert f["cytoreduction_resection_met"] is False and f["cytoreduction_debulking_met"] is False
    f = run(resect="right-hepatectomy", config={"flr": {"cytoreduction_debulking_pct": 80.0}}).flr
    assert f["cytoreduction_debulking_met"] is False and f["cytoreduction_debulking_threshold_pct"] == 80.0


# ======================================================== IVa / IVb maps


def split4_map(value_of_lower: int = 9) -> np.ndarray:
    """Segment 4's lower slices get ``value_of_lower``; the upper part keeps 4."""
    seg = segment_map()
    seg[LOWER, ROWS, C3] = value_of_lower
    return seg


N4A, N4B = 6 * 40 * 8 - 264, 6 * 40 * 8  # upper part (minus the caudate), lower part
FACES_SPLIT = {
    "1-4a": (0, 6 * 4, 6 * 11),
    "1-4b": (11 * 4, 0, 0),
    "1-8": (0, 0, 6 * 11),
    "2-3": (40 * 12, 0, 0),
    "2-4a": (0, 0, 6 * 40),
    "3-4b": (0, 0, 6 * 40),
    "4a-4b": (40 * 8 - 11 * 4, 0, 0),
    "4b-5": (0, 0, 6 * 40),
    "4a-8": (0, 0, 6 * 29),
    "5-6": (0, 0, 6 * 40),
    "5-8": (40 * 12, 0, 0),
    "6-7": (40 * 12, 0, 0),
    "7-8": (0, 0, 6 * 40),
}
SPLIT_CFG = {"segments": {"extra": {"9": "4b"}}}
ORDER = ["1", "2", "3", "4", "4a", "4b", "5", "6", "7", "8"]


@pytest.mark.parametrize("variant", ["axial", "permuted_oblique"])
def test_iva_ivb_segments_lobes_and_adjacency(variant):
    r = run(variant, seg=split4_map(), config=SPLIT_CFG)
    segs = r.anatomy["segments"]
    assert "4" not in segs
    assert segs["4a"]["volume_ml"] == pytest.approx(N4A * VML, rel=1e-12)
    assert segs["4b"]["volume_ml"] == pytest.approx(N4B * VML, rel=1e-12)
    assert segs["4a"]["tumor_volume_ml"] == pytest.approx(54 * VML, rel=1e-12)
    assert segs["4a"]["lesion_ids"] == [2] and segs["4b"]["lesion_ids"] == []
    assert r.anatomy["lobes"]["left"]["segments"] == ["2", "3", "4a", "4b"]
    assert r.anatomy["lobes"]["left"]["volume_ml"] == pytest.approx((2 * 2880 + N4A + N4B) * VML, rel=1e-12)
    assert set(r.anatomy["adjacency_mm2"]) == set(FACES_SPLIT)
    for key, counts in FACES_SPLIT.items():
        assert r.anatomy["adjacency_mm2"][key] == pytest.approx(face_area(counts), rel=1e-12), key
    assert not any("absent" in w for w in r.warnings), r.warnings


@pytest.mark.parametrize(
    "plan,resected,remnant,rem_vox,rem_tum",
    [
        ("4", ["4a", "4b"], ["1", "2", "3", "5", "6", "7", "8"], TLV - N["4"], TUMOR - 54),
        ("IV", ["4a", "4b"], ["1", "2", "3", "5", "6", "7", "8"], TLV - N["4"], TUMOR - 54),
        ("left-hepatectomy", ["2", "3", "4a", "4b"], ["1", "5", "6", "7", "8"], 264 + 4 * 2880, 252),
        ("extended-right", ["4a", "4b", "5", "6", "7", "8"], ["1", "2", "3"], 264 + 2 * 2880, 32),
        ("4b", ["4b"], ["1", "2", "3", "4a", "5", "6", "7", "8"], TLV - N4B, TUMOR),
        ("ivb", ["4b"], ["1", "2", "3", "4a", "5", "6", "7", "8"], TLV - N4B, TUMOR),
        ("4a,5,8", ["4a", "5", "8"], ["1", "2", "3", "4b", "6", "7"], TLV - N4A - 2 * 2880, 32 + 180),
    ],
)
def test_iva_ivb_plans(plan, resected, remnant, rem_vox, rem_tum):
    f = run(seg=split4_map(), config=SPLIT_CFG, resect=plan).flr
    assert f["resected_segments"] == resected
    assert sorted(f["remnant_segments"], key=ORDER.index) == remnant  # order: see the xfail below
    assert f["remnant_volume_ml"] == pytest.approx(rem_vox * VML, rel=1e-12)
    assert f["flr_ml"] == pytest.approx((rem_vox - rem_tum) * VML, rel=1e-12)
    assert f["flr_pct"] == pytest.approx(100.0 * (rem_vox - rem_tum) / FUNCTIONAL, rel=1e-12)


def test_remnant_segments_are_listed_in_segment_order():
    f = run(seg=split4_map(), config=SPLIT_CFG, resect="4a,5,8").flr
    assert f["remnant_segments"] == ["1", "2", "3", "4b", "6", "7"]


def test_iva_ivb_plan_4b_remnant_contiguity():
    # remnant 1, 2, 3, 4b, 6, 7 after "4a,5,8": 1 touches 4b (44 faces x 0.56 = 24.6 mm2 < 100)
    # and nothing else left, so the remnant is not one block
    f = run(seg=split4_map(), config=SPLIT_CFG, resect="4a,5,8").flr
    assert f["adjacency_mm2"]["1-4b"] == pytest.approx(face_area(FACES_SPLIT["1-4b"]), rel=1e-12)
    assert f["contiguous"] is False


def test_value_4_is_4b_when_the_extra_value_is_4a():
    r = run(seg=split4_map(), config={"segments": {"extra": {"9": "4a"}}})
    segs = r.anatomy["segments"]
    assert segs["4b"]["volume_ml"] == pytest.approx(N4A * VML, rel=1e-12)  # value 4 = upper part
    assert segs["4a"]["volume_ml"] == pytest.approx(N4B * VML, rel=1e-12)  # value 9 = lower part


def test_lesion_segment_names_agree_with_anatomy_when_extra_is_4a():
    r = run(seg=split4_map(), config={"segments": {"extra": {"9": "4a"}}})
    les = {x.id: x for x in r.lesions}
    assert les[2].segment_voxels == {"8": 72, "4b": 54}


def test_lesion_majority_segment_tie_is_the_same_in_lesions_and_anatomy():
    les = lesion_map({1: (slice(8, 11), slice(20, 26), slice(21, 29))})  # 72 voxels in 8, 72 in 4a
    r = run(seg=split4_map(), lesions=les, config=SPLIT_CFG)
    assert r.lesions[0].segment_voxels == {"8": 72, "4a": 72}
    assert r.lesions[0].segment == r.anatomy["lesion_segments"]["1"]


def test_plan_4a_on_an_unsplit_map_is_an_error():
    with pytest.raises(InputError, match="4a absent from the segment map"):
        run(resect="4a")


# ============================================================ remnant masks


def wedge_remnant() -> np.ndarray:
    """A wedge between two oblique planes, in the phantom's own mm frame
    (u = index x spacing): u_col > 13.5 + 0.12 u_row and u_col > 12 + 0.25 u_slice,
    within the liver."""
    u = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(SHAPE, SP)], indexing="ij"), axis=-1)
    wedge = (u[..., 2] > 13.5 + 0.12 * u[..., 1]) & (u[..., 2] > 12.0 + 0.25 * u[..., 0])
    return (wedge & (liver_mask() > 0)).astype(np.uint8)  # drawn inside the liver


@pytest.mark.parametrize("variant", ["axial", "permuted_oblique"])
def test_remnant_mask_wedge(variant):
    rem = wedge_remnant()
    liver, les, seg = liver_mask().astype(bool), lesion_map(), segment_map()
    tumor = np.isin(les, [1, 2, 3])
    inside = rem.astype(bool) & liver
    # brute-force counts on the phantom arrays
    rem_vox, rem_tum = int(inside.sum()), int((inside & tumor).sum())
    keep = [k for k in N if int((inside & (seg == int(k))).sum()) >= 0.5 * N[k]]
    # the wedge keeps all of 2 and 3, 94 % of 4, 67 % of the caudate, and 18 % of 5 (still in the FLR)
    assert keep == ["1", "2", "3", "4"]
    assert 0 < int((inside & (seg == 5)).sum()) < 0.5 * N["5"]
    f = run(variant, remnant=rem).flr
    assert f["plan"] == "remnant-mask" and f["source"] == "mask"
    assert f["remnant_segments"] == keep
    assert f["resected_segments"] == ["5", "6", "7", "8"]
    assert f["remnant_volume_ml"] == pytest.approx(rem_vox * VML, rel=1e-12)
    assert f["flr_ml"] == pytest.approx((rem_vox - rem_tum) * VML, rel=1e-12)
    assert f["flr_pct"] == pytest.approx(100.0 * (rem_vox - rem_tum) / FUNCTIONAL, rel=1e-12)
    assert f["cytoreduction_pct"] == pytest.approx(100.0 * (TUMOR - rem_tum) / TUMOR, rel=1e-12)
    assert f["contiguous"] is True and f["adequate"] is True


def test_remnant_mask_in_two_pieces_is_not_contiguous():
    rem = np.zeros(SHAPE, np.uint8)
    rem[1:13, ROWS, C1] = 1  # 6 + 7
    rem[1:13, ROWS, C4] = 1  # 2 + 3
    f = run(remnant=rem).flr
    assert f["remnant_segments"] == ["2", "3", "6", "7"]
    flr = 4 * 2880 - 180 - 32
    assert f["flr_ml"] == pytest.approx(flr * VML, rel=1e-12)
    assert f["flr_pct"] == pytest.approx(100.0 * flr / FUNCTIONAL, rel=1e-12)  # 54.4 %: volume is enough
    assert f["contiguous"] is False and f["adequate"] is False
    assert "remnant mask is not one connected piece" in f["reasons"], f["reasons"]


def test_remnant_mask_slightly_outside_the_liver_warns():
    rem = np.zeros(SHAPE, np.uint8)
    rem[1:13, ROWS, C4] = 1
    rem[1:3, ROWS, 45] = 1  # 80 voxels outside the liver: 80 / 5840 = 1.4 % <= 5 %
    r = run(remnant=rem)
    assert r.flr["remnant_volume_ml"] == pytest.approx(5760 * VML, rel=1e-12)
    assert any("remnant mask: 1.37 % of it lies outside the liver" in w for w in r.warnings), r.warnings


@pytest.mark.parametrize(
    "cols,match",
    [
        (slice(33, 47), "remnant mask: 14.3 % of it lies outside the liver"),  # 960 of 6720 voxels
        (slice(46, 51), "remnant mask: 100.0 % of it lies outside the liver"),
    ],
)
def test_remnant_mask_outside_the_liver_is_an_error(cols, match):
    rem = np.zeros(SHAPE, np.uint8)
    rem[1:13, ROWS, cols] = 1
    with pytest.raises(MaskError, match=match):
        run(remnant=rem)


def test_remnant_mask_bad_combinations():
    rem = np.zeros(SHAPE, np.uint8)
    with pytest.raises(MaskError, match="remnant mask is empty"):
        run(remnant=rem)
    rem[1:13, ROWS, C4] = 1
    with pytest.raises(InputError, match="either a resection plan or a remnant mask"):
        run(remnant=rem, resect="left-lateral")
    with pytest.raises(InputError, match="needs a segment map"):
        measure_arrays(liver_mask(), lesion_map(), SP, remnant=rem)
    with pytest.raises(InputError, match="needs a segment map"):
        measure_arrays(liver_mask(), lesion_map(), SP, resect="left-lateral")
    with pytest.raises(GeometryError, match="remnant mask shape"):
        measure_arrays(liver_mask(), lesion_map(), SP, segments=segment_map(), remnant=rem[:, :, :-1])


# ====================================================== uncovered / absent


def test_uncovered_liver_is_reported_and_not_counted():
    seg = segment_map()
    seg[1:3, ROWS, C1] = 0  # 2 x 40 x 12 = 960 voxels of segment 6 without a label
    boxes = {k: v for k, v in MAIN_LESIONS.items() if k != 4}
    boxes[5] = (slice(1, 3), slice(30, 34), slice(3, 7))  # 32 voxels, all in the unlabelled part
    r = run(seg=seg, lesions=lesion_map(boxes), resect="left-lateral")
    an = r.anatomy
    assert an["unassigned"]["volume_ml"] == pytest.approx(960 * VML, rel=1e-12)
    assert an["unassigned"]["tumor_volume_ml"] == pytest.approx(32 * VML, rel=1e-12)
    assert an["segments"]["6"]["volume_ml"] == pytest.approx((2880 - 960) * VML, rel=1e-12)
    assert an["lesion_segments"]["5"] is None
    assert any("segment map does not cover the liver: 1.34 mL" in w for w in r.warnings), r.warnings
    f = r.flr
    tumor, rem_vox, rem_tum = TUMOR + 32, 15360 - 960, 306
    assert f["remnant_volume_ml"] == pytest.approx(rem_vox * VML, rel=1e-12)
    assert f["flr_ml"] == pytest.approx((rem_vox - rem_tum) * VML, rel=1e-12)
    assert f["flr_pct"] == pytest.approx(100.0 * (rem_vox - rem_tum) / (TLV - tumor), rel=1e-12)
    assert f["cytoreduction_pct"] == pytest.approx(100.0 * 32 / tumor, rel=1e-12)  # only lesion 3 is resected
    assert f["tumor_left_ml"] == pytest.approx((tumor - 32) * VML, rel=1e-12)


def test_fully_covered_box_liver_has_no_unassigned_volume():
    r = run(lesions=main_lesions_in_liver())
    assert r.anatomy["unassigned"] == {"volume_ml": 0.0, "tumor_volume_ml": 0.0}
    assert not any("does not cover" in w for w in r.warnings), r.warnings


@pytest.mark.parametrize("case", ["extrahepatic_lesion_widens_the_crop", "non_box_liver"])
def test_no_unassigned_volume_when_every_liver_voxel_is_labelled(case):
    if case == "extrahepatic_lesion_widens_the_crop":
        r = run()  # lesion 4 lies outside the liver box
    else:
        liver, les, seg = _tiny_face_phantom()
        r = measure_arrays(liver, les, SP, ph.AXIAL, ORIGIN, seg)
    assert r.anatomy["unassigned"]["volume_ml"] == 0.0
    assert not any("does not cover" in w for w in r.warnings), r.warnings


def test_absent_segment_is_warned_and_cannot_be_resected():
    seg = segment_map()
    seg[seg == 1] = 4  # no caudate in this map
    r = run(seg=seg, lesions=main_lesions_in_liver())
    assert r.anatomy["segments"]["1"]["present"] is False
    assert r.anatomy["segments"]["1"]["volume_ml"] == 0.0
    assert r.anatomy["segments"]["4"]["volume_ml"] == pytest.approx(12 * 40 * 8 * VML, rel=1e-12)
    assert any("segment(s) 1 absent from the segment map" in w for w in r.warnings), r.warnings
    with pytest.raises(InputError, match=r"names segment\(s\) 1 absent from the segment map"):
        run(seg=seg, resect="1,2")


def test_segment_labels_outside_the_liver_are_ignored_with_a_warning():
    seg = segment_map()
    seg[1:13, ROWS, 45] = 3  # a slab of "3" just outside the liver (inside the lesion crop)
    r = run(seg=seg)
    assert r.anatomy["segments"]["3"]["volume_ml"] == pytest.approx(2880 * VML, rel=1e-12)
    assert any("outside the liver; ignored" in w for w in r.warnings), r.warnings


# ================================================================ bad input


def test_segment_map_of_another_shape():
    with pytest.raises(GeometryError, match="segment map shape"):
        measure_arrays(liver_mask(), lesion_map(), SP, segments=segment_map()[:, :, :-1])


@pytest.mark.parametrize(
    "value,config",
    [(9, None), (12, SPLIT_CFG), (255, None)],
)
def test_segment_labels_outside_the_convention(value, config):
    seg = segment_map()
    seg[2:4, 2:4, 2:4] = value  # inside the liver
    with pytest.raises(MaskError, match=rf"segment map: values \[{value}\] are outside the 'couinaud' convention"):
        run(seg=seg, config=config)


def test_segment_labels_outside_the_convention_anywhere_in_the_map():
    seg = segment_map()
    seg[12, 40, 51] = 9  # far from the liver's bounding box
    with pytest.raises(MaskError, match="outside the 'couinaud' convention"):
        run(seg=seg, lesions=main_lesions_in_liver())


@pytest.mark.parametrize(
    "plan,match",
    [
        ("9", "unknown segment '9'"),
        ("5,6,x", "unknown segment 'x'"),
        ("right-hepatectomie", "unknown segment 'right-hepatectomie'"),
        (" , ", "no segment given"),
    ],
)
def test_unknown_plan(plan, match):
    with pytest.raises(ConfigError, match=match):
        run(resect=plan)


# =============================================================== the CLI


def _sitk_image(arr, sp, d, o):
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    img.SetSpacing([float(v) for v in sp[::-1]])
    img.SetOrigin([float(v) for v in o])
    img.SetDirection([float(v) for v in np.asarray(d)[:, ::-1].ravel()])
    return img


def write_case(tmp_path, variant="oblique", liver=None, lesions=None, seg=None, remnant=None):
    """NIfTI phantom files (image, liver, lesions, segments[, remnant]) on grid ``variant``."""
    liver = liver_mask() if liver is None else liver
    lesions = lesion_map() if lesions is None else lesions
    seg = segment_map() if seg is None else seg
    (lv, le, sg, rm), sp, d, o = on_grid(variant, liver, lesions, seg, remnant)
    paths = {}
    for name, arr in [("image", np.zeros(lv.shape, np.int16)), ("liver", lv), ("lesions", le), ("segments", sg),
                      ("remnant", rm)]:
        if arr is None:
            continue
        p = tmp_path / f"{name}.nii.gz"
        sitk.WriteImage(_sitk_image(arr, sp, d, o), str(p))
        paths[name] = str(p)
    return paths


def cli_args(paths, out, *extra, segments=True):
    args = ["measure", "--image", paths["image"], "--liver", paths["liver"], "--lesions", paths["lesions"],
            "--out", str(out), "--quiet"]
    if segments:
        args += ["--segments", paths["segments"]]
    return args + list(extra)


def read_doc(out):
    doc = json.loads((Path(out) / "measurements.json").read_text())
    jsonschema.validate(doc, SCHEMA)
    return doc


def test_cli_right_hepatectomy_json_is_valid_and_exact(tmp_path):
    paths = write_case(tmp_path)
    out = tmp_path / "out"
    code = cli.main(cli_args(paths, out, "--resect", "right-hepatectomy", "--height-cm", "172", "--weight-kg", "80",
                             "--liver-condition", "chemotherapy"))
    assert code == 0
    doc = read_doc(out)
    an, f = doc["anatomy"], doc["flr"]
    # NIfTI stores spacing as float32: compare to 1e-6
    vml = float(np.prod(np.float32(SP))) / 1000.0
    for k, n in N.items():
        assert an["segments"][k]["volume_ml"] == pytest.approx(n * vml, rel=1e-6)
        assert an["segments"][k]["tumor_volume_ml"] == pytest.approx(SEG_TUMOR[k] * vml, rel=1e-6, abs=1e-12)
        assert an["segments"][k]["involvement_pct"] == pytest.approx(100.0 * SEG_TUMOR[k] / n, rel=1e-9, abs=1e-12)
        assert an["segments"][k]["lesion_ids"] == SEG_LESIONS[k]
    for key, counts in FACES.items():
        assert an["adjacency_mm2"][key] == pytest.approx(face_area(counts), rel=1e-6)
    assert an["lobes"]["right"]["volume_ml"] == pytest.approx(4 * 2880 * vml, rel=1e-6)
    assert an["bilobar"] is True and an["enets_pattern"] == "III"
    assert f["remnant_segments"] == ["1", "2", "3", "4"]
    assert f["flr_ml"] == pytest.approx(9514 * vml, rel=1e-6)
    assert f["flr_pct"] == pytest.approx(100.0 * 9514 / FUNCTIONAL, rel=1e-9)
    assert f["bsa_m2"] == pytest.approx(BSA_172_80, rel=1e-12)
    assert f["sflr_pct"]["vauthey"] == pytest.approx(100 * 9514 * vml / SLV_V_172_80, rel=1e-6)
    assert f["sflr_pct"]["urata"] == pytest.approx(100 * 9514 * vml / SLV_U_172_80, rel=1e-6)
    assert f["height_source"] == "cli" and f["weight_source"] == "cli"
    assert f["liver_condition"] == "chemotherapy" and f["threshold_pct"] == 30.0
    assert f["adequacy_basis"] == "sflr_vauthey" and f["adequate"] is False  # a 13 mL phantom vs SLV 1683 mL
    assert f["contiguous"] is True
    assert f["cytoreduction_pct"] == pytest.approx(100.0 * 252 / 338, rel=1e-9)


def test_cli_remnant_mask_in_two_pieces(tmp_path):
    rem = np.zeros(SHAPE, np.uint8)
    rem[1:13, ROWS, C1] = 1
    rem[1:13, ROWS, C4] = 1
    paths = write_case(tmp_path, "permuted_oblique", remnant=rem)
    out = tmp_path / "out"
    assert cli.main(cli_args(paths, out, "--remnant-mask", paths["remnant"])) == 0
    f = read_doc(out)["flr"]
    assert f["plan"] == "remnant-mask" and f["remnant_segments"] == ["2", "3", "6", "7"]
    assert f["contiguous"] is False and f["adequate"] is False
    assert "remnant mask is not one connected piece" in f["reasons"]


def test_cli_iva_ivb_config_file(tmp_path):
    paths = write_case(tmp_path, "axial", seg=split4_map())
    cfg = tmp_path / "split.toml"
    cfg.write_text('[segments]\nextra = { "9" = "4b" }\n')
    out = tmp_path / "out"
    assert cli.main(cli_args(paths, out, "--config", str(cfg), "--resect", "4")) == 0
    doc = read_doc(out)
    assert "4a" in doc["anatomy"]["segments"] and "4b" in doc["anatomy"]["segments"]
    assert doc["flr"]["resected_segments"] == ["4a", "4b"]


def test_cli_segment_map_stored_in_another_axis_order(tmp_path):
    """A segment map on the image grid but stored permuted and flipped is
    reoriented losslessly: the same numbers."""
    paths = write_case(tmp_path, "oblique")
    (sg,), sp, d, o = on_grid("oblique", segment_map())
    arr, sp2, d2, o2 = ph.permuted_grid(sg, sp, d, o, (1, 2, 0), (True, True, False))
    p = tmp_path / "segments_permuted.nii.gz"
    sitk.WriteImage(_sitk_image(arr, sp2, d2, o2), str(p))
    out1, out2 = tmp_path / "a", tmp_path / "b"
    assert cli.main(cli_args(paths, out1, "--resect", "left-lateral")) == 0
    paths2 = dict(paths, segments=str(p))
    assert cli.main(cli_args(paths2, out2, "--resect", "left-lateral")) == 0
    a, b = read_doc(out1), read_doc(out2)
    assert a["anatomy"]["segments"] == b["anatomy"]["segments"]
    assert a["anatomy"]["adjacency_mm2"] == pytest.approx(b["anatomy"]["adjacency_mm2"], rel=1e-9)
    assert a["flr"]["flr_ml"] == b["flr"]["flr_ml"]


def test_cli_uncovered_liver_warns(tmp_path):
    seg = segment_map()
    seg[1:3, ROWS, C1] = 0
    paths = write_case(tmp_path, "axial", seg=seg, lesions=main_lesions_in_liver())
    out = tmp_path / "out"
    assert cli.main(cli_args(paths, out, "--resect", "left-lateral")) == 0
    doc = read_doc(out)
    vml = float(np.prod(np.float32(SP))) / 1000.0
    assert doc["anatomy"]["unassigned"]["volume_ml"] == pytest.approx(960 * vml, rel=1e-6)
    assert any("segment map does not cover the liver" in w for w in doc["warnings"])


def _bad_cases(tmp_path):
    """name -> (files overrides, extra CLI args, stderr fragment)."""
    (sg,), sp, d, o = on_grid("oblique", segment_map())
    other_spacing = tmp_path / "seg_other_spacing.nii.gz"
    sitk.WriteImage(_sitk_image(sg, np.asarray(sp) * 1.5, d, o), str(other_spacing))
    label9 = segment_map()
    label9[2:4, 2:4, 2:4] = 9
    (s9,), *_ = on_grid("oblique", label9)
    p9 = tmp_path / "seg_label9.nii.gz"
    sitk.WriteImage(_sitk_image(s9, sp, d, o), str(p9))
    rem = np.zeros(SHAPE, np.uint8)
    rem[1:13, ROWS, 45:51] = 1
    (rm,), *_ = on_grid("oblique", rem)
    prem = tmp_path / "remnant_outside.nii.gz"
    sitk.WriteImage(_sitk_image(rm, sp, d, o), str(prem))
    prem_grid = tmp_path / "remnant_other_grid.nii.gz"
    sitk.WriteImage(_sitk_image(rm, sp, d, o + 7.3), str(prem_grid))
    return {
        "segment_map_other_spacing": ({"segments": str(other_spacing)}, ["--resect", "5"], "segment map"),
        "segment_label_outside_convention": ({"segments": str(p9)}, [], "outside the 'couinaud' convention"),
        "plan_names_absent_segment": ({}, ["--resect", "4a"], "absent from the segment map"),
        "plan_unknown_segment": ({}, ["--resect", "9"], "unknown segment '9'"),
        "remnant_outside_liver": ({}, ["--remnant-mask", str(prem)], "outside the liver"),
        "remnant_other_grid": ({}, ["--remnant-mask", str(prem_grid)], "remnant mask"),
        "height_in_metres": ({}, ["--resect", "5", "--height-cm", "1.72", "--weight-kg", "80"], "physiological range"),
        "weight_too_high": ({}, ["--resect", "5", "--height-cm", "172", "--weight-kg", "900"], "physiological range"),
        "resect_and_remnant": ({}, ["--resect", "5", "--remnant-mask", str(prem)], "either"),
    }


BAD = ["segment_map_other_spacing", "segment_label_outside_convention", "plan_names_absent_segment",
       "plan_unknown_segment", "remnant_outside_liver", "remnant_other_grid", "height_in_metres",
       "weight_too_high", "resect_and_remnant"]


@pytest.mark.parametrize("case", BAD)
def test_cli_bad_input_exits_2(tmp_path, capsys, case):
    paths = write_case(tmp_path)
    files, extra, fragment = _bad_cases(tmp_path)[case]
    paths = dict(paths, **files)
    code = cli.main(cli_args(paths, tmp_path / "out", *extra))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("liverburden: error:"), err
    assert fragment in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "measurements.json").exists()


def test_cli_plan_without_segment_map_exits_2(tmp_path, capsys):
    paths = write_case(tmp_path)
    code = cli.main(cli_args(paths, tmp_path / "out", "--resect", "right-hepatectomy", segments=False))
    err = capsys.readouterr().err
    assert code == 2 and "needs a segment map" in err, err


# ============================================================ the sample study


@pytest.fixture(scope="module")
def sample_truth():
    return json.loads((SAMPLE / "truth.json").read_text())


def _sample_cli(out, *extra):
    return cli.main(["measure", "--image", str(SAMPLE / "ct"), "--liver", str(SAMPLE / "liver.nii.gz"),
                     "--lesions", str(SAMPLE / "lesions.nii.gz"), "--segments", str(SAMPLE / "segments.nii.gz"),
                     "--resect", "right-hepatectomy", "--out", str(out), "--quiet", *extra])


@pytest.fixture(scope="module")
def sample_doc(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "out"
    assert _sample_cli(out) == 0
    return read_doc(out)


def test_sample_segment_volumes_match_truth_exactly(sample_doc, sample_truth):
    st = sample_truth["segments"]
    vv = st["voxel_volume_mm3"]
    an = sample_doc["anatomy"]
    for k, t in st["per_segment"].items():
        s = an["segments"][k]
        # exact voxel counts: volume = count x voxel volume
        assert round(s["volume_ml"] * 1000.0 / vv) == t["voxel_count"], k
        assert s["volume_ml"] == pytest.approx(t["volume_ml"], rel=1e-12), k
        assert round(s["tumor_volume_ml"] * 1000.0 / vv) == t["tumor_voxel_count"], k
        assert s["lesion_ids"] == t["lesion_ids"], k
    for lobe, t in st["lobes"].items():
        assert round(an["lobes"][lobe]["volume_ml"] * 1000.0 / vv) == t["voxel_count"], lobe
        assert an["lobes"][lobe]["segments"] == t["segments"]
    assert an["adjacency_mm2"] == pytest.approx(st["adjacency_mm2"], rel=1e-12)
    assert an["lesion_segments"] == st["lesion_majority_segment"]
    assert an["bilobar"] is True
    assert an["reliable"] is False  # the liver touches the first and last slice


def test_sample_right_hepatectomy_flr_matches_truth(sample_doc, sample_truth):
    t = sample_truth["segments"]["flr_right_hepatectomy"]
    f = sample_doc["flr"]
    assert f["plan"] == "right-hepatectomy"
    assert f["resected_segments"] == t["resected_segments"]
    assert f["remnant_segments"] == t["remnant_segments"]
    assert f["flr_ml"] == pytest.approx(t["flr_ml"], rel=1e-12)
    assert f["flr_pct"] == pytest.approx(t["flr_pct"], rel=1e-12)
    assert f["cytoreduction_pct"] == pytest.approx(t["cytoreduction_pct"], rel=1e-12)
    assert f["contiguous"] is True
    assert f["reliable"] is False
    assert any("truncated" in x for x in f["reasons"]), f["reasons"]


def test_sample_height_and_weight_come_from_dicom(sample_doc, sample_truth):
    t = sample_truth["segments"]["flr_right_hepatectomy"]
    f = sample_doc["flr"]
    assert f["height_cm"] == pytest.approx(172.0) and f["height_source"] == "dicom"
    assert f["weight_kg"] == pytest.approx(79.0) and f["weight_source"] == "dicom"
    assert f["bsa_m2"] == pytest.approx(math.sqrt(172 * 79 / 3600), rel=1e-12)
    assert f["bsa_m2"] == pytest.approx(t["bsa_m2"], rel=1e-12)
    assert f["sflr_pct"]["vauthey"] == pytest.approx(t["sflr_pct"]["vauthey"], rel=1e-12)
    assert f["sflr_pct"]["urata"] == pytest.approx(t["sflr_pct"]["urata"], rel=1e-12)
    assert f["adequacy_basis"] == "sflr_vauthey"


def test_sample_cli_height_overrides_dicom(tmp_path):
    out = tmp_path / "out"
    assert _sample_cli(out, "--height-cm", "180") == 0
    f = read_doc(out)["flr"]
    assert f["height_cm"] == 180.0 and f["height_source"] == "cli"
    assert f["weight_kg"] == pytest.approx(79.0) and f["weight_source"] == "dicom"
    assert f["bsa_m2"] == pytest.approx(math.sqrt(180 * 79 / 3600), rel=1e-12)
    out2 = tmp_path / "out2"
    assert _sample_cli(out2, "--height-cm", "180", "--weight-kg", "90") == 0
    f = read_doc(out2)["flr"]
    assert (f["height_source"], f["weight_source"]) == ("cli", "cli")
    assert f["bsa_m2"] == pytest.approx(math.sqrt(180 * 90 / 3600), rel=1e-12)


def test_sample_segment_map_covers_the_liver(sample_doc):
    assert sample_doc["anatomy"]["unassigned"]["volume_ml"] == 0.0
    assert not any("does not cover" in w for w in sample_doc["warnings"])
