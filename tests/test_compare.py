"""``liverburden compare``: lesion tracking, RECIST 1.1 response, remnant burden.

Phantom series from ``cohortgen`` (1 mm axial grid unless stated): a box lesion of
a x b voxels in-plane has LD = hypot(a-1, b-1) mm, so Pythagorean boxes give exact
diameters: 31x41 -> 50, 22x29 -> 35, 19x25 -> 30, 13x36 -> 37, 16x21 -> 25,
13x17 -> 20, 7x9 -> 10, 6x13 -> 13, 25x33 -> 40, 25x46 -> 51, 4x5 -> 5.
Every expected response below is worked out by hand in the comments
(``clinical-reference.md`` section 1-2, ``conventions.md`` "Cohorts",
config ``[compare]``: PR <= -30 % from baseline, PD >= +20 % AND >= +5 mm from
the nadir or a new lesion with LD >= 5 mm, CR when every target is gone).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import SimpleITK as sitk

import cohortgen as cg
from liverburden._exceptions import InputError
from liverburden.cli import main
from liverburden.compare import _to_baseline_grid, compare_bundles, read_bundle
from liverburden.config import load_config
from liverburden.pipeline import measure_study

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "src" / "liverburden" / "schemas" / "response.schema.json").read_text())

Z = 10  # lesions occupy slices 10..12 (3 slices thick), inside the liver (slices 2..27)
DZ = 3


def B(y0, x0, dy, dx, z0=Z, dz=DZ):
    """A box lesion (z0, y0, x0, dz, dy, dx)."""
    return (z0, y0, x0, dz, dy, dx)


# ---------------------------------------------------------------------------
# bundles, measured once per module and cached by name
# ---------------------------------------------------------------------------
class _Bundles:
    def __init__(self, root: Path):
        self.root = root
        self.cache: dict[str, Path] = {}

    def __call__(self, name: str, boxes, **kw) -> Path:
        if name not in self.cache:
            inp = cg.write_study(self.root / "inputs" / name, boxes, **kw)
            out = self.root / "bundles" / name
            measure_study(inp["image"], inp["liver"], inp["lesions"], out)
            self.cache[name] = out
        return self.cache[name]


@pytest.fixture(scope="module")
def mk(tmp_path_factory):
    return _Bundles(tmp_path_factory.mktemp("compare"))


def _doc(paths, **kw):
    doc = compare_bundles(paths, **kw)
    jsonschema.validate(doc, SCHEMA)
    return doc


def _kinds(tp):
    return sorted((g["kind"], tuple(g["baseline_ids"]), tuple(g["followup_ids"])) for g in tp["tracking"])


def _with_frame_key(src: Path, dst: Path, key) -> Path:
    """A copy of a bundle whose measurements.json claims frame of reference ``key``
    (what a DICOM-derived bundle carries; NIfTI bundles have ``frame_key: null``)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    mj = dst / "measurements.json"
    d = json.loads(mj.read_text())
    d["frame_key"] = key
    mj.write_text(json.dumps(d))
    return dst


# the baseline used by most series: one liver target of LD 50 mm
BASE50 = [B(10, 10, 31, 41)]


def test_phantom_diameters_are_exact(mk):
    base = json.loads((mk("base50", BASE50) / "measurements.json").read_text())
    assert base["lesions"][0]["ld_mm"] == pytest.approx(50.0, abs=1e-9)
    assert base["recist_target_ids"] == [1]
    assert base["frame_key"] is None  # NIfTI input: no FrameOfReferenceUID


# ---------------------------------------------------------------------------
# shrink: PR at the -30 % boundary
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "box, ld, pct, resp",
    [
        # 22x29 -> LD 35: (35 - 50) / 50 = -30.0 % exactly: PR (">= 30 % decrease")
        ((22, 29), 35.0, -30.0, "PR"),
        # 21x30 -> hypot(20, 29) = 35.228: -29.54 %, just short of -30 %: SD
        ((21, 30), float(np.hypot(20, 29)), -29.544340, "SD"),
        # 17x31 -> hypot(16, 30) = 34: -32 %: PR
        ((17, 31), 34.0, -32.0, "PR"),
    ],
)
def test_shrink_pr_boundary(mk, box, ld, pct, resp):
    b0 = mk("base50", BASE50)
    b1 = mk(f"shrink{box[0]}x{box[1]}", [B(10, 10, *box)])
    doc = _doc([b0, b1])
    base, fu = doc["timepoints"]
    assert base["response"] is None and base["target_sod_mm"] == pytest.approx(50.0)
    assert fu["target_sod_mm"] == pytest.approx(ld)
    assert fu["change_from_baseline_pct"] == pytest.approx(pct, abs=1e-5)
    assert fu["nadir_mm"] == pytest.approx(50.0)  # nadir before fu1 = baseline
    assert fu["response"] == resp
    if resp == "PR":
        assert "below baseline" in fu["reason"]
    else:
        assert fu["reason"] == "neither PR nor PD"
    assert _kinds(fu) == [("matched", (1,), (1,))]
    # volumetric response: 31x41x3 = 3813 voxels = 3.813 mL at baseline; TLV = the
    # liver box 26 x 70 x 70 = 127400 voxels (the lesions lie inside it)
    v0, v1 = 31 * 41 * 3, box[0] * box[1] * 3
    assert base["tumor_volume_ml"] == pytest.approx(v0 / 1000)
    assert fu["tumor_volume_ml"] == pytest.approx(v1 / 1000)
    assert fu["tumor_volume_change_pct"] == pytest.approx(100 * (v1 - v0) / v0)
    assert fu["involvement_change_pct_points"] == pytest.approx(100 * (v1 - v0) / 127400)


# ---------------------------------------------------------------------------
# the nadir rule and the 5 mm absolute rule
# ---------------------------------------------------------------------------
def test_nadir_rule_pd_below_baseline(mk):
    # baseline 50 (31x41); fu1 30 (19x25): -40 % -> PR, nadir becomes 30;
    # fu2 37 (13x36): from nadir (37-30)/30 = +23.3 % and +7 mm -> PD, although
    # 26 % BELOW baseline ((37-50)/50 = -26 %, which alone would be SD).
    b0 = mk("base50", BASE50)
    b1 = mk("ld30", [B(10, 10, 19, 25)])
    b2 = mk("ld37", [B(10, 10, 13, 36)])
    doc = _doc([b0, b1, b2], labels=["base", "fu1", "fu2"])
    t0, t1, t2 = doc["timepoints"]
    assert [t["label"] for t in doc["timepoints"]] == ["base", "fu1", "fu2"]
    assert t1["response"] == "PR" and t1["change_from_baseline_pct"] == pytest.approx(-40.0)
    assert t2["target_sod_mm"] == pytest.approx(37.0)
    assert t2["nadir_mm"] == pytest.approx(30.0)
    assert t2["change_from_nadir_pct"] == pytest.approx(100 * 7 / 30)
    assert t2["change_from_baseline_pct"] == pytest.approx(-26.0)
    assert t2["response"] == "PD"
    assert "nadir" in t2["reason"] and t2["new_lesions"] == []


def test_pd_boundary_exactly_20pct_and_5mm(mk):
    # baseline 50; fu1 25 (16x21): -50 % -> PR, nadir 25;
    # fu2 30 (19x25): (30-25)/25 = +20 % exactly and +5 mm exactly -> PD (both ">=").
    b0 = mk("base50", BASE50)
    b1 = mk("ld25", [B(10, 10, 16, 21)])
    b2 = mk("ld30", [B(10, 10, 19, 25)])
    t = _doc([b0, b1, b2])["timepoints"]
    assert [x["response"] for x in t] == [None, "PR", "PD"]
    assert t[2]["change_from_nadir_pct"] == pytest.approx(20.0)


@pytest.mark.parametrize(
    "spacing, base_box, fu_box, base_ld, fu_ld",
    [
        # 0.5 mm in-plane: 13x17 -> 0.5 x hypot(12, 16) = 10 mm; 8x25 -> 0.5 x hypot(7, 24) = 12.5 mm:
        # +25 % from nadir (= baseline 10) but only +2.5 mm -> not PD; not PR -> SD
        (0.5, (13, 17), (8, 25), 10.0, 12.5),
        # 1 mm: 7x9 -> 10 mm; 6x13 -> 13 mm: +30 % but only +3 mm -> SD
        (1.0, (7, 9), (6, 13), 10.0, 13.0),
    ],
)
def test_5mm_absolute_rule(mk, spacing, base_box, fu_box, base_ld, fu_ld):
    sp = (1.0, spacing, spacing)
    b0 = mk(f"abs_base_{spacing}", [B(10, 10, *base_box)], spacing=sp)
    b1 = mk(f"abs_fu_{spacing}", [B(10, 10, *fu_box)], spacing=sp)
    d0 = json.loads((b0 / "measurements.json").read_text())
    assert d0["lesions"][0]["ld_mm"] == pytest.approx(base_ld)
    assert d0["recist_target_ids"] == [1]  # 10 mm >= max(10, 2 x 1 mm): measurable
    fu = _doc([b0, b1])["timepoints"][1]
    assert fu["target_sod_mm"] == pytest.approx(fu_ld)
    assert fu["change_from_nadir_pct"] == pytest.approx(100 * (fu_ld - base_ld) / base_ld)
    assert fu["change_from_nadir_pct"] >= 20.0  # the relative rule alone would say PD
    assert fu["response"] == "SD", fu["reason"]


# ---------------------------------------------------------------------------
# vanish: CR; a non-target vanishing does not matter
# ---------------------------------------------------------------------------
# T1 31x41 (50), T2 16x21 (25): the two liver targets; N 13x17 (20): a 3rd liver lesion = non-target
T1, T2, N = B(10, 10, 31, 41), B(50, 10, 16, 21), B(50, 45, 13, 17)


def test_nontarget_vanishing_does_not_matter(mk):
    b0 = mk("three", [T1, T2, N])
    d0 = json.loads((b0 / "measurements.json").read_text())
    # ids in raster order of the first voxel: T1 (10,10,10) = 1, T2 (10,50,10) = 2, N (10,50,45) = 3
    assert sorted(d0["recist_target_ids"]) == [1, 2]
    b1 = mk("three_minus_n", [T1, T2])
    fu = _doc([b0, b1])["timepoints"][1]
    # target SoD 50 + 25 = 75 at both time points: 0 % -> SD; N is just "disappeared"
    assert fu["target_sod_mm"] == pytest.approx(75.0)
    assert fu["change_from_baseline_pct"] == pytest.approx(0.0)
    assert fu["response"] == "SD"
    assert ("disappeared", (3,), ()) in _kinds(fu)


def test_all_gone_is_cr(mk, tmp_path):
    b0 = mk("three", [T1, T2, N])
    b1 = mk("empty", [])  # an empty lesion mask is valid (conventions: how a CR looks)
    doc = _doc([b0, b1])
    fu = doc["timepoints"][1]
    assert fu["target_sod_mm"] == 0.0
    assert fu["target_ld_mm"] == {"1": 0.0, "2": 0.0}
    assert fu["change_from_baseline_pct"] == pytest.approx(-100.0)
    assert fu["response"] == "CR" and "disappeared" in fu["reason"]
    assert _kinds(fu) == [("disappeared", (1,), ()), ("disappeared", (2,), ()), ("disappeared", (3,), ())]
    # remnant: all-lesion SoD 0 -> low
    assert doc["remnant"]["remnant_sod_mm"] == 0.0 and doc["remnant"]["remnant_burden"] == "low"


# ---------------------------------------------------------------------------
# appear: new lesions (far from every baseline lesion: > match_distance_mm 10)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "new_box, ld, kind, resp",
    [
        ((4, 5), 5.0, "new", "PD"),  # hypot(3, 4) = 5.0 >= new_lesion_min_ld_mm 5: PD
        ((3, 4), float(np.hypot(2, 3)), "new_below_threshold", "SD"),  # 3.61 mm < 5: listed, no PD
    ],
)
def test_new_lesion(mk, new_box, ld, kind, resp):
    b0 = mk("base50", BASE50)
    b1 = mk(f"new{new_box[0]}x{new_box[1]}", BASE50 + [B(60, 60, *new_box)])
    doc = _doc([b0, b1])
    fu = doc["timepoints"][1]
    # target SoD unchanged (50): only the new lesion decides
    assert fu["target_sod_mm"] == pytest.approx(50.0)
    assert ("matched", (1,), (1,)) in _kinds(fu)
    assert (kind, (), (2,)) in _kinds(fu)
    assert fu["response"] == resp
    if resp == "PD":
        assert fu["new_lesions"] == [2] and "new lesion" in fu["reason"]
    else:
        assert fu["new_lesions"] == []
    # the remnant counts every lesion: 50 + the new one
    assert doc["remnant"]["remnant_sod_mm"] == pytest.approx(50.0 + ld)
    assert doc["remnant"]["remnant_burden"] == "high"  # > 50


def test_new_lesion_overrides_cr(mk):
    # targets gone but a new 5 mm lesion: PD, not CR
    b0 = mk("base50", BASE50)
    b1 = mk("only_new", [B(60, 60, 4, 5)])
    fu = _doc([b0, b1])["timepoints"][1]
    assert fu["target_sod_mm"] == 0.0
    assert fu["response"] == "PD"


# ---------------------------------------------------------------------------
# split and merge
# ---------------------------------------------------------------------------
def test_split_counts_the_sum_of_fragments(mk):
    # baseline target 31x41 at (y10, x10): LD 50. Follow-up: two fragments inside
    # its footprint, 2 voxels apart (not 26-connected): A 16x21 at (10, 10) -> 25,
    # B 13x17 at (28, 32) -> 20. Target LD = 25 + 20 = 45: -10 % -> SD
    # (counting only the largest fragment would give 25 = -50 % -> PR).
    b0 = mk("base50", BASE50)
    b1 = mk("split", [B(10, 10, 16, 21), B(28, 32, 13, 17)])
    fu = _doc([b0, b1])["timepoints"][1]
    assert _kinds(fu) == [("split", (1,), (1, 2))]
    assert fu["target_ld_mm"] == {"1": pytest.approx(45.0)}
    assert fu["target_sod_mm"] == pytest.approx(45.0)
    assert fu["change_from_baseline_pct"] == pytest.approx(-10.0)
    assert fu["response"] == "SD"
    assert fu["new_lesions"] == []


def test_merge_counts_once_for_the_larger_target(mk):
    # baseline targets: 1 = 16x21 at (10, 10) -> 25; 2 = 13x17 at (10, 34) -> 20
    # (x 31..33 free between them). SoD 45.
    # Follow-up: one 25x33 box at (10, 10) -> hypot(24, 32) = 40, overlapping both.
    # RECIST coalescence: 40 counts once, for the larger target (1); target 2 = 0.
    # SoD 40: -11.1 % -> SD (counting it twice, 80, would be PD).
    b0 = mk("two_apart", [B(10, 10, 16, 21), B(10, 34, 13, 17)])
    assert sorted(json.loads((b0 / "measurements.json").read_text())["recist_target_ids"]) == [1, 2]
    b1 = mk("merged", [B(10, 10, 25, 33)])
    fu = _doc([b0, b1])["timepoints"][1]
    assert _kinds(fu) == [("merged", (1, 2), (1,))]
    assert fu["target_ld_mm"] == {"1": pytest.approx(40.0), "2": 0.0}
    assert fu["target_sod_mm"] == pytest.approx(40.0)
    assert fu["change_from_baseline_pct"] == pytest.approx(100 * (40 - 45) / 45)
    assert fu["response"] == "SD"


# ---------------------------------------------------------------------------
# RECIST target selection at baseline; remnant counts everything
# ---------------------------------------------------------------------------
# liver: L1 16x21 (25), L2 13x17 (20), L3 11x11 (hypot(10,10) = 14.14);
# E: 13x17 (20) on slices 28-29, outside the liver (slices 2..27): extrahepatic.
L1, L2, L3 = B(10, 10, 16, 21), B(10, 40, 13, 17), B(40, 10, 11, 11)
E = B(40, 40, 13, 17, z0=28, dz=2)


def test_target_selection_and_remnant_includes_nontargets(mk):
    b0 = mk("sel_base", [L1, L2, L3, E])
    d0 = json.loads((b0 / "measurements.json").read_text())
    loc = {l["id"]: l["location"] for l in d0["lesions"]}
    # ids by first voxel: L1 (10,10,10)=1, L2 (10,10,40)=2, L3 (10,40,10)=3, E (28,40,40)=4
    assert loc == {1: "liver", 2: "liver", 3: "liver", 4: "extrahepatic"}
    # max 2 per organ: liver 25 and 20 are targets, the 3rd liver lesion (14.1) is not;
    # the extrahepatic lesion (20) is a target of its own organ
    assert sorted(d0["recist_target_ids"]) == [1, 2, 4]
    # follow-up: the non-target L3 grows to 16x21 (25 mm), the rest unchanged
    b1 = mk("sel_fu", [L1, L2, B(40, 10, 16, 21), E])
    doc = _doc([b0, b1])
    assert sorted(doc["recist_target_ids"]) == [1, 2, 4]
    t0, t1 = doc["timepoints"]
    # target SoD: 25 + 20 + 20 = 65 at both: the non-target's growth does not count -> SD
    assert t0["target_sod_mm"] == pytest.approx(65.0)
    assert t1["target_sod_mm"] == pytest.approx(65.0)
    assert t1["response"] == "SD"
    # all-lesion SoD: baseline 65 + 14.14; follow-up 25 + 20 + 25 + 20 = 90
    assert t0["sum_diameters_all_mm"] == pytest.approx(65.0 + np.hypot(10, 10))
    assert t1["sum_diameters_all_mm"] == pytest.approx(90.0)
    # remnant = the follow-up's sum_diameters.all_mm (non-targets and extrahepatic included)
    assert doc["remnant"]["label"] == "sel_fu"
    assert doc["remnant"]["remnant_sod_mm"] == pytest.approx(90.0)
    assert doc["remnant"]["remnant_burden"] == "high"


# ---------------------------------------------------------------------------
# remnant: default first follow-up, --remnant, boundary 50 -> low, --labels
# ---------------------------------------------------------------------------
def test_remnant_default_boundary_and_named(mk, tmp_path):
    b0 = mk("base50", BASE50)
    b1 = mk("base50_again", BASE50)  # all-lesion SoD exactly 50 -> low (> 50 is high)
    b2 = mk("ld51", [B(10, 10, 25, 46)])  # hypot(24, 45) = 51 -> high
    doc = _doc([b0, b1, b2])
    assert doc["remnant"]["label"] == "base50_again"  # default: the first follow-up
    assert doc["remnant"]["remnant_sod_mm"] == pytest.approx(50.0)
    assert doc["remnant"]["remnant_burden"] == "low"
    assert doc["remnant"]["threshold_mm"] == 50.0
    doc = _doc([b0, b1, b2], remnant="ld51")
    assert doc["remnant"] == {**doc["remnant"], "label": "ld51", "remnant_burden": "high"}
    assert doc["remnant"]["remnant_sod_mm"] == pytest.approx(51.0)
    # the CLI with --labels and --remnant naming a label
    out = tmp_path / "cmp"
    rc = main(["compare", str(b0), str(b1), str(b2), "--labels", "pre, post1,post2", "--remnant", "post2",
               "--out", str(out), "--quiet"])
    assert rc == 0
    r = json.loads((out / "response.json").read_text())
    assert [t["label"] for t in r["timepoints"]] == ["pre", "post1", "post2"]
    assert r["remnant"]["label"] == "post2" and r["remnant"]["remnant_burden"] == "high"
    # 50 -> 50 -> 51: +2 % from the nadir 50 -> SD, SD
    assert [t["response"] for t in r["timepoints"]] == [None, "SD", "SD"]


# ---------------------------------------------------------------------------
# grids and frames of reference
# ---------------------------------------------------------------------------
# two small lesions, each 11 mm wide in x: 11x11 (LD 14.14) and 17x11 (hypot(16, 10)
# = 18.87); 12 mm of misalignment in x puts each outside its own footprint (no
# overlap) and its centroid 12 mm > match_distance_mm 10 away: without alignment
# they would not match.
SMALL = [B(20, 20, 11, 11), B(45, 45, 17, 11)]


@pytest.fixture
def itk_threads():
    """Set SimpleITK's global thread count for one test, then restore it.

    The registration route runs ITK's Mattes mutual information with several
    threads, and that is not reproducible (see the xfail test
    ``test_registration_route_is_deterministic``): on these box phantoms the same
    pair registers well (liver Dice 1.000) or wanders off (Dice 0.90, a 5 % scale)
    from run to run. The tests of compare's own logic pin one thread, which is
    deterministic and registers these phantoms correctly."""
    old = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()

    def set_(n):
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)

    yield set_
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(old)


def test_same_frame_other_grid_resampled(mk, tmp_path, itk_threads):
    itk_threads(1)
    b0 = mk("small", SMALL)
    # follow-up: bigger array, origin moved by (-5, -3, -2) mm (x, y, z) and the
    # patient moved by (+2, +3, +5) voxels (z, y, x) inside it: same physical positions
    o = cg.ORIGIN
    b1 = mk("small_regrid", SMALL, size=(34, 90, 86), origin=(o[0] - 5, o[1] - 3, o[2] - 2), frame_shift=(2, 3, 5))
    d0 = json.loads((b0 / "measurements.json").read_text())
    d1 = json.loads((b1 / "measurements.json").read_text())
    for a, b in zip(d0["lesions"], d1["lesions"]):
        assert a["centroid_mm"] == pytest.approx(b["centroid_mm"])  # same physical place
    # DICOM-like bundles with the same frame_key: nearest-neighbour resampling, a warning
    s0 = _with_frame_key(b0, tmp_path / "s0", "frame-A")
    s1 = _with_frame_key(b1, tmp_path / "s1", "frame-A")
    doc = _doc([s0, s1])
    fu = doc["timepoints"][1]
    assert _kinds(fu) == [("matched", (1,), (1,)), ("matched", (2,), (2,))]
    assert fu["response"] == "SD" and fu["change_from_baseline_pct"] == pytest.approx(0.0)
    assert any("same frame of reference" in w and "resampled" in w for w in doc["warnings"])
    assert not any("registered" in w for w in doc["warnings"])
    # NIfTI bundles (frame_key null): the frames cannot be known equal -> registration path
    doc = _doc([b0, b1])
    assert _kinds(doc["timepoints"][1]) == [("matched", (1,), (1,)), ("matched", (2,), (2,))]
    assert any("registered to baseline" in w for w in doc["warnings"])


def test_other_frame_shifted_12mm_matches_by_registration(mk, tmp_path, itk_threads):
    itk_threads(1)
    b0 = mk("small", SMALL)
    # follow-up: the same array, origin 12 mm further in x: the patient lies 12 mm
    # elsewhere in the scanner (another frame of reference)
    o = cg.ORIGIN
    b1 = mk("small_shift12", SMALL, origin=(o[0] + 12, o[1], o[2]))
    d0 = json.loads((b0 / "measurements.json").read_text())
    d1 = json.loads((b1 / "measurements.json").read_text())
    assert np.subtract(d1["lesions"][0]["centroid_mm"], d0["lesions"][0]["centroid_mm"]) == pytest.approx([12, 0, 0])
    doc = _doc([b0, b1])
    fu = doc["timepoints"][1]
    assert _kinds(fu) == [("matched", (1,), (1,)), ("matched", (2,), (2,))]
    assert fu["response"] == "SD" and fu["new_lesions"] == []
    assert any("registered to baseline" in w for w in doc["warnings"])
    # control: claim (wrongly) one frame of reference -> no registration, the 12 mm
    # shift breaks the matching (2 disappeared + 2 new -> PD). Registration did the work.
    s0 = _with_frame_key(b0, tmp_path / "s0", "frame-A")
    s1 = _with_frame_key(b1, tmp_path / "s1", "frame-A")
    fu = _doc([s0, s1])["timepoints"][1]
    assert [k for k, _, _ in _kinds(fu)] == ["disappeared", "disappeared", "new", "new"]
    assert fu["response"] == "PD"


def test_other_frame_without_inputs_json_is_bad_input(mk, tmp_path):
    b0 = mk("small", SMALL)
    o = cg.ORIGIN
    b1 = mk("small_shift12", SMALL, origin=(o[0] + 12, o[1], o[2]))
    c1 = tmp_path / "noinputs"
    shutil.copytree(b1, c1)
    (c1 / "inputs.json").unlink()
    with pytest.raises(InputError, match="inputs.json"):
        compare_bundles([b0, c1])


def test_different_frame_same_grid_is_registered(mk, tmp_path, itk_threads):
    itk_threads(1)
    # both scans on one grid geometry (size 30x80x96, same origin), the patient moved
    # 12 voxels (12 mm) in x inside the follow-up array: a different frame of reference
    size = (30, 80, 96)
    b0 = mk("wide", SMALL, size=size)
    b1 = mk("wide_moved12", SMALL, size=size, frame_shift=(0, 0, 12))
    s0 = _with_frame_key(b0, tmp_path / "s0", "frame-A")
    s1 = _with_frame_key(b1, tmp_path / "s1", "frame-B")
    fu = _doc([s0, s1])["timepoints"][1]
    assert _kinds(fu) == [("matched", (1,), (1,)), ("matched", (2,), (2,))]
    assert fu["response"] == "SD"


def test_registration_recovers_moved_patient_when_grids_differ(mk, tmp_path, itk_threads):
    itk_threads(1)
    # the control for the xfail above: the same moved patient on a grid one column
    # wider takes the registration path and matches, so registration could do it
    b0 = mk("wide", SMALL, size=(30, 80, 96))
    b1 = mk("wider_moved12", SMALL, size=(30, 80, 97), frame_shift=(0, 0, 12))
    s0 = _with_frame_key(b0, tmp_path / "s0", "frame-A")
    s1 = _with_frame_key(b1, tmp_path / "s1", "frame-B")
    doc = _doc([s0, s1])
    assert _kinds(doc["timepoints"][1]) == [("matched", (1,), (1,)), ("matched", (2,), (2,))]
    assert any("registered to baseline" in w for w in doc["warnings"])


def test_registration_route_is_deterministic(mk, itk_threads):
    itk_threads(2)
    o = cg.ORIGIN
    b0 = read_bundle(mk("small", SMALL))
    b1 = read_bundle(mk("small_shift12", SMALL, origin=(o[0] + 12, o[1], o[2])))
    cfg = load_config(None)
    params = set()
    for _ in range(3):
        _, tx, _ = _to_baseline_grid(b0, b1, cfg)
        params.add(tuple(tx.GetParameters()))
    assert len(params) == 1


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------
def test_cli_compare_outputs(mk, tmp_path, capsys):
    b0 = mk("three", [T1, T2, N])
    b1 = mk("three_minus_n", [T1, T2])
    b2 = mk("empty", [])
    out = tmp_path / "out"
    rc = main(["compare", str(b0), str(b1), str(b2), "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "remnant burden at three_minus_n" in printed
    doc = json.loads((out / "response.json").read_text())
    cls = jsonschema.validators.validator_for(SCHEMA)
    cls.check_schema(SCHEMA)
    cls(SCHEMA).validate(doc)
    assert [t["label"] for t in doc["timepoints"]] == ["three", "three_minus_n", "empty"]
    assert [t["response"] for t in doc["timepoints"]] == [None, "SD", "CR"]
    # remnant at the first follow-up: 50 + 25 = 75 > 50 -> high
    assert doc["remnant"]["remnant_sod_mm"] == pytest.approx(75.0)
    assert doc["remnant"]["remnant_burden"] == "high"
    with open(out / "lesions_over_time.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["timepoint", "lesion_id", "baseline_id", "kind", "ld_mm", "volume_ml", "target"]
    got = [(r["timepoint"], r["lesion_id"], r["baseline_id"], r["kind"], round(float(r["ld_mm"]), 6), r["target"])
           for r in rows]
    assert sorted(got) == sorted([
        # baseline: every lesion, targets flagged
        ("three", "1", "1", "baseline", 50.0, "True"),
        ("three", "2", "2", "baseline", 25.0, "True"),
        ("three", "3", "3", "baseline", 20.0, "False"),
        # fu1: targets matched, the non-target disappeared (no follow-up id)
        ("three_minus_n", "1", "1", "matched", 50.0, "True"),
        ("three_minus_n", "2", "2", "matched", 25.0, "True"),
        ("three_minus_n", "", "3", "disappeared", 0.0, "False"),
        # fu2: all gone
        ("empty", "", "1", "disappeared", 0.0, "True"),
        ("empty", "", "2", "disappeared", 0.0, "True"),
        ("empty", "", "3", "disappeared", 0.0, "False"),
    ])


def test_cli_bad_input_exit_2(mk, tmp_path, capsys):
    b0 = mk("base50", BASE50)
    b1 = mk("ld30", [B(10, 10, 19, 25)])
    notabundle = tmp_path / "notabundle"
    notabundle.mkdir()
    (notabundle / "readme.txt").write_text("hello")
    same_a = tmp_path / "a" / "fu"
    same_b = tmp_path / "b" / "fu"
    shutil.copytree(b0, same_a)
    shutil.copytree(b1, same_b)
    cases = {
        "one bundle": [str(b0)],
        "not a bundle": [str(b0), str(notabundle)],
        "remnant not found": [str(b0), str(b1), "--remnant", "nope"],
        "duplicate --labels": [str(b0), str(b1), "--labels", "x,x"],
        "duplicate folder names": [str(same_a), str(same_b)],
        "label count": [str(b0), str(b1), "--labels", "a,b,c"],
        "missing folder": [str(b0), str(tmp_path / "does-not-exist")],
    }
    for what, args in cases.items():
        out = tmp_path / ("out_" + what.replace(" ", "_"))
        capsys.readouterr()
        rc = main(["compare", *args, "--out", str(out)])
        err = capsys.readouterr().err
        assert rc == 2, what
        assert "error" in err, what
        assert not (out / "response.json").exists(), what
