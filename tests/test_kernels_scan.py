"""The word-tested scan gives exactly the outputs of the plain voxel scan."""

import numpy as np
import pytest

from liverburden import kernels as K
from liverburden.measure._measure import _value_lut


@pytest.mark.parametrize("nx", [7, 8, 13, 16, 64, 72, 130])
@pytest.mark.parametrize("dt_l, dt_e", [(np.uint8, np.uint8), (np.uint8, np.uint16), (np.uint16, np.uint8)])
@pytest.mark.parametrize("seed", [0, 1])
def test_word_scan_equals_voxel_scan(nx, dt_l, dt_e, seed):
    rng = np.random.default_rng(seed)
    shape = (5, 9, nx)
    liver = (rng.random(shape) < 0.3).astype(dt_l) * rng.integers(1, 4, shape).astype(dt_l)
    les = (rng.random(shape) < 0.1).astype(dt_e) * rng.integers(1, 3, shape).astype(dt_e)
    les[2] = 0  # an empty slice
    liver[:, 4] = 0  # empty rows
    n_l = 256 if dt_l == np.uint8 else 65536
    n_e = 256 if dt_e == np.uint8 else 65536
    llut = _value_lut([1, 2], n_l, ids=False)
    elut = _value_lut("nonzero", n_e, ids=True)
    for z0, z1 in ((0, shape[0]), (1, 4)):  # and a slice range
        ref = K._scan_runs(liver, les, llut, elut, z0, z1)
        got = K.scan_runs(liver, les, llut, elut, z0, z1)
        _same_scan(ref, got, liver_values={1, 2})
    assert ref[0].shape[0] > 0


def _same_scan(ref, got, liver_values):
    """Equal outputs; of the liver values seen, only the non-liver ones must match
    (the word scan does not mark liver values in rows of liver values only)."""
    for k in (0, 1, 3, 4):  # runs, liver count, lesion values seen, liver box
        assert np.array_equal(np.asarray(ref[k]), np.asarray(got[k])), k
    assert set(np.flatnonzero(ref[2])) - liver_values == set(np.flatnonzero(got[2])) - liver_values


@pytest.mark.parametrize("nx", [8, 16, 72, 136])
@pytest.mark.parametrize("dt_l", [np.uint8, np.uint16])
def test_nonzero_liver_fast_count_equals_voxel_scan(nx, dt_l):
    rng = np.random.default_rng(nx)
    shape = (6, 11, nx)
    liver = (rng.random(shape) < 0.4).astype(dt_l) * rng.integers(1, 5, shape).astype(dt_l)
    liver[:, :, : nx // 3] = 0  # rows whose liver starts mid-row
    les = (rng.random(shape) < 0.05).astype(np.uint8)
    n_l = 256 if dt_l == np.uint8 else 65536
    llut = _value_lut("nonzero", n_l, ids=False)
    elut = _value_lut("nonzero", 256, ids=True)
    ref = K._scan_runs(liver, les, llut, elut, 0, shape[0])
    got = K.scan_runs(liver, les, llut, elut, 0, shape[0])
    assert np.array_equal(ref[0], got[0])  # runs
    assert ref[1] == got[1]  # liver count
    assert np.array_equal(ref[4], got[4])  # liver bounding box


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dt_l", [np.uint8, np.uint16])
def test_liver_bbox_columns_grow_inside_and_across_words(seed, dt_l):
    """The word scan tracks the liver's column range from edge words only; rows
    whose liver starts a few voxels earlier (same word) or words earlier, in any
    order, must give the voxel scan's bounding box and count."""
    rng = np.random.default_rng(100 + seed)
    shape = (4, 40, 48)
    liver = np.zeros(shape, dtype=dt_l)
    for z in range(shape[0]):
        for y in range(shape[1]):
            if rng.random() < 0.3:
                continue
            a = int(rng.integers(0, shape[2]))
            b = int(rng.integers(a, shape[2]))
            liver[z, y, a : b + 1] = rng.integers(1, 3)
    les = np.zeros(shape, dtype=np.uint8)
    les[1, 3, 5:9] = 1
    n_l = 256 if dt_l == np.uint8 else 65536
    llut = _value_lut("nonzero", n_l, ids=False)
    elut = _value_lut("nonzero", 256, ids=True)
    nzl = np.argwhere(liver)
    for z0, z1 in ((0, shape[0]), (1, 3)):
        ref = K._scan_runs(liver, les, llut, elut, z0, z1)
        got = K.scan_runs(liver, les, llut, elut, z0, z1)
        assert ref[1] == got[1] == int(np.count_nonzero(liver[z0:z1]))
        assert np.array_equal(ref[4], got[4])
        sel = nzl[(nzl[:, 0] >= z0) & (nzl[:, 0] < z1)]
        assert list(got[4]) == list(sel.min(axis=0)) + list(sel.max(axis=0))


@pytest.mark.parametrize("dt_l", [np.uint8, np.uint16, np.uint32])
@pytest.mark.parametrize("liver_values", [[5], [1, 2], [3, 7, 200, 9]])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_liver_value_set_word_count_equals_voxel_scan(dt_l, liver_values, seed):
    """A multi-label organ map (TotalSegmentator: liver = 5) or a LiTS map
    (liver = 1, 2): the liver counted a word at a time as lanes equal to one of
    a few values gives the voxel scan's count, box and runs, and still reports
    every non-liver value that occurs."""
    rng = np.random.default_rng(seed)
    shape = (5, 23, 64 // np.dtype(dt_l).itemsize * 3)
    organ = rng.choice([0, 0, 0, 1, 2, 3, 5, 7, 9, 200], size=shape).astype(dt_l)
    organ[:, :3] = 0
    organ[2, 5, :] = liver_values[0]  # a full row of liver
    les = ((rng.random(shape) < 0.07) * rng.integers(1, 3, shape)).astype(np.uint8)
    n_l = {1: 256, 2: 65536, 4: 1 << 17}[np.dtype(dt_l).itemsize]
    organ[organ >= n_l] = 0
    llut = _value_lut(liver_values, n_l, ids=False)
    elut = _value_lut("nonzero", 256, ids=True)
    for z0, z1 in ((0, shape[0]), (2, 4)):
        ref = K._scan_runs(organ, les, llut, elut, z0, z1)
        got = K.scan_runs(organ, les, llut, elut, z0, z1)
        _same_scan(ref, got, set(liver_values))
        assert ref[1] == int(np.isin(organ[z0:z1], liver_values).sum())
        # without the non-liver values asked for: the same numbers
        quiet = K.scan_runs(organ, les, llut, elut, z0, z1, need_liver_seen=False)
        for k in (0, 1, 3, 4):
            assert np.array_equal(np.asarray(ref[k]), np.asarray(quiet[k]))


@pytest.mark.parametrize("dt", [np.uint8, np.uint16])
@pytest.mark.parametrize("lesion_values", [[2], [2, 3], [7, 8, 9, 250]])
@pytest.mark.parametrize("seed", [0, 1])
def test_lesion_value_set_equals_voxel_scan_on_a_label_map(dt, lesion_values, seed):
    """One label map as both masks (LiTS: 1 liver, 2 lesion): lesion runs, liver
    count and box as the voxel scan, with and without asking which non-lesion
    values occur."""
    rng = np.random.default_rng(seed)
    shape = (6, 19, 48)
    vol = rng.choice([0, 1, 1, 1] + lesion_values, size=shape).astype(dt)
    vol[:, :4] = 0
    vol[3, 7, 10:40] = 1  # a liver-only row
    n = 256 if dt == np.uint8 else 65536
    llut = _value_lut([1] + lesion_values, n, ids=False)
    elut = _value_lut(lesion_values, n, ids=True)
    for z0, z1 in ((0, shape[0]), (1, 5)):
        ref = K._scan_runs(vol, vol, llut, elut, z0, z1)
        for need in (True, False):
            got = K.scan_runs(vol, vol, llut, elut, z0, z1, need, need)
            for k in (0, 1, 4):  # runs, liver count, liver box
                assert np.array_equal(np.asarray(ref[k]), np.asarray(got[k])), (k, need)
            if need:  # the non-lesion values that occur are reported
                assert set(np.flatnonzero(ref[3])) - set(lesion_values) == \
                    set(np.flatnonzero(got[3])) - set(lesion_values)
        assert ref[0].shape[0] > 0


def test_value_tables_too_short_are_refused_not_overrun():
    """The scan indexes its value tables by voxel value without bounds checks; a
    short table is an error before any kernel runs (it once overwrote the heap when
    a test passed a 256-entry liver table with a uint16 lesion and no liver)."""
    from liverburden.kernels import scan_runs

    les = np.zeros((3, 4, 16), np.uint16)
    les[1, 1, 2:6] = 300
    full_e = np.arange(65536, dtype=np.int64)
    with pytest.raises(ValueError, match="65536"):
        scan_runs(les, les, np.zeros(256, np.uint8), full_e, 0, 3)
    with pytest.raises(ValueError, match="lesion value table"):
        scan_runs(None, les, np.zeros(65536, np.uint8), full_e[:256], 0, 3)
    i32 = les.astype(np.int32)
    with pytest.raises(ValueError, match="outside the value table"):
        scan_runs(None, i32, np.zeros(256, np.uint8), full_e[:256], 0, 3)
    # without a liver the lesion stands in for it: its liver table is sized by the lesion's
    runs, count, _, seen, _ = scan_runs(None, les, np.zeros(256, np.uint8), full_e, 0, 3)
    assert count == 0 and runs.shape[0] == 1 and seen[300] == 1
