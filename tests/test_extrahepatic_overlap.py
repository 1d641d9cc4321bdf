"""An extrahepatic lesion that overlaps the liver is warned about (issue 12 item 3).

The 50 % rule (conventions "Lesions") makes a lesion 49.8 % inside the liver
extrahepatic: involvement then leaves it out and the "< 25 %" flag is met. That is
a mask question, not a verdict: warn, mark the location and involvement unreliable.
"""

from __future__ import annotations

import numpy as np
import pytest

from liverburden import measure_arrays

SP = (2.0, 1.0, 1.0)  # 2 uL voxels


def _case(extra_outside: int):
    """Liver: a 10x10x10 box (1000 voxels) inside a 40^3 grid. Lesion: the whole
    liver box plus ``extra_outside`` voxels in a slab beside it (outside the liver)."""
    liver = np.zeros((40, 40, 40), np.uint8)
    liver[5:15, 5:15, 5:15] = 1
    les = liver.copy()
    flat = np.zeros(40 * 40 * 40, bool)
    out = np.flatnonzero((liver == 0).ravel() & (np.indices(liver.shape)[0].ravel() >= 15))[:extra_outside]
    flat[out] = True
    les[flat.reshape(liver.shape)] = 1
    # one lesion: the slab must touch the box (it starts at slice 15, right below it)
    return liver, les


def test_lesion_49_8_pct_in_liver_is_warned_and_unreliable():
    liver, les = _case(1008)  # 1000 / 2008 = 49.8 % in the liver
    r = measure_arrays(liver, les, SP)
    d = r.to_dict()
    assert d["lesion_count"] == 1
    lesion = d["lesions"][0]
    assert lesion["location"] == "extrahepatic"
    assert lesion["liver_fraction"] == pytest.approx(1000 / 2008)
    assert lesion["location_reliable"] is False
    assert any("lesion 1 is extrahepatic" in w and "overlaps the liver by 2.000 mL" in w for w in d["warnings"])
    assert d["liver"]["involvement_pct"] == 0.0
    assert d["liver"]["reliable"] is False
    assert "extrahepatic lesion 1 overlaps the liver" in d["liver"]["unreliable_reasons"]
    inv = [f for f in d["flags"] if f["quantity"] == "involvement_pct"]
    assert inv and all(f["met"] and f["reliable"] is False for f in inv)


def test_touching_by_a_few_voxels_is_not_warned():
    liver = np.zeros((40, 40, 40), np.uint8)
    liver[5:15, 5:15, 5:15] = 1
    les = np.zeros_like(liver)
    les[15:20, 5:15, 5:15] = 1  # 500 voxels outside, below the liver
    les[14, 5:15, 5:15] = 1  # 100 voxels (16.7 %, 0.2 mL) in the liver: boundary-sized, below both limits
    d = measure_arrays(liver, les, SP).to_dict()
    lesion = d["lesions"][0]
    assert lesion["location"] == "extrahepatic" and lesion["location_reliable"] is True
    assert not any("overlaps the liver" in w for w in d["warnings"])
    assert d["liver"]["unreliable_reasons"] == [] or all("extrahepatic" not in x for x in d["liver"]["unreliable_reasons"])


@pytest.mark.parametrize("cfg, warned", [
    ({"lesions": {"extrahepatic_overlap_warn_fraction": 0.5, "extrahepatic_overlap_warn_ml": 100.0}}, False),
    ({"lesions": {"extrahepatic_overlap_warn_fraction": 0.49, "extrahepatic_overlap_warn_ml": 100.0}}, True),
    ({"lesions": {"extrahepatic_overlap_warn_fraction": 0.5, "extrahepatic_overlap_warn_ml": 1.99}}, True),
])
def test_limits_come_from_the_config(cfg, warned):
    liver, les = _case(1008)
    d = measure_arrays(liver, les, SP, config=cfg).to_dict()
    assert d["lesions"][0]["location_reliable"] is (not warned)
    assert any("overlaps the liver" in w for w in d["warnings"]) is warned
