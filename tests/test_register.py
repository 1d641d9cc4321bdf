"""Registration of the post (control) scan to the pre (planning) scan: known rigid motions.

The phantom pairs of ``regphantom`` (textured liver with vessels, body, spine,
kidney; a hypodense tumor in the pre scan; ablation cavities with a rim and a
+25 HU parenchyma shift in the post scan) are sampled on other grids, fields of
view and spacings for the post scan (one of them oblique). The truth is the
map T(p) = R p + t from a pre point to the post point of the same anatomy, which
is what ``matrix_lps`` must be (ITK's fixed-to-moving convention). The error of a
recovered transform is |M p - T p| over the pre liver's voxel centres.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

import regphantom as rp
from liverburden import RegistrationError, Volume, load_config
from liverburden.register import apply_to_points, register_volumes, resample_mask_into
from liverburden.register._register import _surface_distances, signed_distance_mm

#: Tumors in the pre scan and ablation zones in the post scan, in the anatomy's (pre) frame.
TUMORS = [((-90.0, -20.0, 10.0), 9.0), ((-40.0, 5.0, -15.0), 7.0), ((-20.0, -30.0, -10.0), 8.0)]
ZONES = [((-89.0, -20.0, 10.0), 18.0), ((-38.5, 5.0, -15.0), 11.0), ((-14.0, -30.0, -10.0), 12.0)]

MOTIONS = {m["name"]: m for m in rp.MOTIONS}


#: Partial volume: each voxel averages 2x2x2 samples of the phantom, as a CT voxel integrates
#: over its extent. Point-sampled phantoms alias the 1.5-4 mm vessels on the 2-3.5 mm grids,
#: which costs every metric a few tenths of a mm (benchmarks/bench_register.py measures both).
SUPERSAMPLE = 2


@pytest.fixture(scope="module")
def pairs():
    out = {}
    pre = None
    for i, (name, m) in enumerate(MOTIONS.items()):
        p = rp.make_pair(m, tumors=TUMORS, zones=ZONES, liver_shift_hu=25.0, seed=i, supersample=SUPERSAMPLE,
                         pre_volumes=pre)
        pre = (p["pre"], p["liver_pre"])
        out[name] = p
    return out


@pytest.fixture(scope="module")
def cfg():
    return load_config(None, {})


def run(pair, method, config, **kw):
    args = dict(liver_pre=pair["liver_pre"], liver_post=pair["liver_post"])
    args.update(kw)
    return register_volumes(pair["pre"], pair["post"], method=method, config=config, **args)


def test_motions_are_what_the_brief_asks():
    assert len(MOTIONS) >= 3
    for m in MOTIONS.values():
        R, t = rp.motion_transform(m)
        ang = np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1)))
        assert 2.0 <= ang <= 8.0, (m["name"], ang)
        assert 5.0 <= np.linalg.norm(t) <= 25.0 and np.max(np.abs(t)) >= 5.0
        assert tuple(m["size"]) != rp.PRE_GRID["size"] and tuple(m["spacing"]) != rp.PRE_GRID["spacing"]


# Measured with the default configuration (Mattes MI over the whole image, scans cropped to
# their liver's box + 40 mm), mean / max error over the liver, mm: rigid 0.11/0.17, 0.12/0.19,
# 0.14/0.24, 0.09/0.19; affine 0.18/0.36, 0.15/0.35, 0.17/0.41, 0.12/0.26 (m1..m4).
# The whole images (crop_margin_mm = 0): worst 0.25 mean / 0.60 max (affine).


def _cases():
    return [pytest.param(name, method, id=f"{name}-{method}") for name in MOTIONS for method in ("rigid", "affine")]


@pytest.mark.parametrize("name, method", _cases())
def test_recovers_known_motion_default_config(pairs, cfg, name, method):
    p = pairs[name]
    r = run(p, method, cfg)
    err = rp.transform_error(r.matrix_lps, p["R"], p["t"], p["liver_points"])
    print(f"default {name} {method}: mean {err.mean():.3f} max {err.max():.3f} mm")
    assert r.ok, r.reason
    assert "cropped to the liver box" in r.metric
    assert err.mean() < 1.0 and err.max() < 1.0, (err.mean(), err.max())


@pytest.mark.parametrize("name, method", _cases())
def test_recovers_known_motion_whole_image(pairs, name, method):
    """Mattes mutual information over the whole (uncropped) images: < 1 mm everywhere over the liver."""
    c = load_config(None, {"registration": {"metric": "mattes", "metric_mask": "none", "crop_margin_mm": 0.0}})
    p = pairs[name]
    r = run(p, method, c)
    err = rp.transform_error(r.matrix_lps, p["R"], p["t"], p["liver_points"])
    print(f"whole image {name} {method}: mean {err.mean():.3f} max {err.max():.3f} mm")
    assert r.ok, r.reason
    assert r.metric == "mattes (whole image)"
    assert err.mean() < 0.6 and err.max() < 1.0, (err.mean(), err.max())


def test_result_fields_and_matrix_convention(pairs, cfg):
    p = pairs["m1"]
    r = run(p, "rigid", cfg)
    M = np.asarray(r.matrix_lps)
    assert M.shape == (4, 4)
    np.testing.assert_allclose(M[3], [0, 0, 0, 1], atol=0)
    A = M[:3, :3]
    np.testing.assert_allclose(A @ A.T, np.eye(3), atol=1e-9)  # rigid: a rotation
    assert np.linalg.det(A) == pytest.approx(1.0, abs=1e-9)
    # matrix_lps maps a pre point to the post point of the same anatomy (ITK fixed -> moving)
    pts = p["liver_points"][::997]
    via_tx = apply_to_points(r.transform, pts)
    np.testing.assert_allclose(via_tx, pts @ A.T + M[:3, 3], atol=1e-6)
    truth = pts @ p["R"].T + p["t"]
    assert np.max(np.linalg.norm(via_tx - truth, axis=1)) < 1.0
    # and its inverse direction is wrong by the whole motion (guards against a swapped convention)
    inv = (pts - p["t"]) @ p["R"]
    assert np.min(np.linalg.norm(via_tx - inv, axis=1)) > 5.0
    # fields of the result
    assert r.method == "rigid" and r.ok and r.reason is None
    assert isinstance(r.final_metric, float) and np.isfinite(r.final_metric)
    assert isinstance(r.iterations, int) and r.iterations > 0
    assert isinstance(r.stop_condition, str) and r.stop_condition
    assert r.liver_dice > 0.97 and r.liver_msd_mm < 0.6 and 0 < r.liver_hd95_mm < 2.5
    assert r.landmark_error_mm is None
    assert r.error_mm == r.liver_msd_mm
    d = r.to_dict()
    assert d["matrix_lps"] == r.matrix_lps and d["ok"] is True


def test_same_transform_on_rerun(pairs, cfg):
    """The default configuration (one thread, fixed sampling seed) gives the same transform bit for bit."""
    p = pairs["m4"]
    a = run(p, "affine", cfg)
    b = run(p, "affine", cfg)
    assert a.matrix_lps == b.matrix_lps
    assert a.transform.GetParameters() == b.transform.GetParameters()
    assert a.final_metric == b.final_metric and a.iterations == b.iterations


def _whole_grid_quality(p, tx, liver_post=None):
    """Dice, MSD, HD95 of the post liver carried into the whole pre grid (no cropping)."""
    lpost = p["liver_post"] if liver_post is None else liver_post
    warped = resample_mask_into(lpost, p["liver_pre"], tx, mode="nearest")
    a = np.asarray(p["liver_pre"].array) != 0
    dice = 2.0 * np.count_nonzero(a & warped) / (np.count_nonzero(a) + np.count_nonzero(warped))
    msd, hd95 = _surface_distances(a, warped, p["liver_pre"])
    return dice, msd, hd95


def test_quality_on_cropped_grid_is_that_of_the_whole_grid(pairs, cfg):
    """Dice and surface distances are computed on the part of the pre grid holding both livers:
    exactly the values of the whole grid, for a good registration (oblique post grid), for
    none on a moved pair (the livers 15-20 mm apart) and for a post liver shifted 15 mm."""
    p = pairs["m4"]
    r = run(p, "affine", cfg)
    assert (r.liver_dice, r.liver_msd_mm, r.liver_hd95_mm) == _whole_grid_quality(p, r.transform)
    r0 = run(p, "none", cfg)
    assert (r0.liver_dice, r0.liver_msd_mm, r0.liver_hd95_mm) == _whole_grid_quality(p, r0.transform)
    assert r0.liver_msd_mm > 3.0
    m = MOTIONS["m1"]
    R, t = rp.motion_transform(m)
    bad = rp.make_volume(m["size"], m["spacing"], m["origin"], rp.oblique_direction(m["iop_deg"]),
                         transform=(R, t + np.array([15.0, 0.0, 0.0])), kind="liver")
    q = pairs["m1"]
    rb = run(q, "rigid", cfg, liver_post=bad)
    assert (rb.liver_dice, rb.liver_msd_mm, rb.liver_hd95_mm) == _whole_grid_quality(q, rb.transform, bad)


def test_crop_is_reported_and_timed(pairs, cfg):
    p = pairs["m1"]
    r = run(p, "affine", cfg)
    assert r.metric == f"mattes (whole image cropped to the liver box + {cfg['registration']['crop_margin_mm']:g} mm)"
    assert {"crop", "rigid", "affine", "optimise", "quality"} <= set(r.timing_s)
    # without both liver masks there is nothing to crop to: the whole images
    lm = np.hstack([p["liver_points"][::5000], p["liver_points"][::5000] @ p["R"].T + p["t"]])
    r1 = register_volumes(p["pre"], p["post"], method="rigid", liver_pre=p["liver_pre"], landmarks=lm, config=cfg)
    assert r1.metric == "mattes (whole image)"
    assert r1.landmark_error_mm < 1.0


def test_affine_matrix_round_trips_through_transform_file(pairs, cfg, tmp_path):
    p = pairs["m3"]
    r = run(p, "affine", cfg)
    f = tmp_path / "t.tfm"
    sitk.WriteTransform(r.transform, str(f))
    back = sitk.ReadTransform(str(f))
    pts = p["liver_points"][::1501]
    np.testing.assert_allclose(apply_to_points(back, pts), apply_to_points(r.transform, pts), atol=1e-6)
    M = np.asarray(r.matrix_lps)
    np.testing.assert_allclose(apply_to_points(back, pts), pts @ M[:3, :3].T + M[:3, 3], atol=1e-6)


def test_wrong_post_liver_fails_quality(pairs, cfg):
    """A post liver mask shifted 15 mm: Dice/MSD fall below the configured quality -> ok False."""
    m = MOTIONS["m1"]
    p = pairs["m1"]
    R, t = rp.motion_transform(m)
    bad = rp.make_volume(m["size"], m["spacing"], m["origin"], rp.oblique_direction(m["iop_deg"]),
                         transform=(R, t + np.array([15.0, 0.0, 0.0])), kind="liver")
    r = run(p, "affine", cfg, liver_post=bad)
    assert r.ok is False
    assert r.reason and ("Dice" in r.reason or "surface distance" in r.reason), r.reason
    assert r.liver_msd_mm > cfg["registration"]["max_liver_msd_mm"] or r.liver_dice < cfg["registration"]["min_liver_dice"]


def test_landmark_error(pairs, cfg):
    p = pairs["m2"]
    rng = np.random.default_rng(3)
    pre_pts = p["liver_points"][rng.choice(len(p["liver_points"]), 12, replace=False)]
    post_pts = pre_pts @ p["R"].T + p["t"]
    lm = np.hstack([pre_pts, post_pts])
    r = run(p, "rigid", cfg, landmarks=lm)
    M = np.asarray(r.matrix_lps)
    want = float(np.mean(np.linalg.norm(pre_pts @ M[:3, :3].T + M[:3, 3] - post_pts, axis=1)))
    assert r.landmark_error_mm == pytest.approx(want, abs=1e-6)
    assert r.landmark_error_mm < 1.5
    assert r.error_mm == r.landmark_error_mm  # e_reg prefers landmarks
    # landmarks placed 6 mm off: the registration is reported as failed, with the reason
    bad = np.hstack([pre_pts, post_pts + np.array([0.0, 6.0, 0.0])])
    rb = run(p, "rigid", cfg, landmarks=bad)
    assert rb.landmark_error_mm > 4.0
    assert rb.ok is False and "landmark" in rb.reason


def test_landmarks_without_liver_masks(pairs, cfg):
    p = pairs["m3"]
    pre_pts = p["liver_points"][::4000][:10]
    lm = np.hstack([pre_pts, pre_pts @ p["R"].T + p["t"]])
    r = register_volumes(p["pre"], p["post"], method="rigid", landmarks=lm, config=cfg)
    assert r.liver_dice is None and r.liver_msd_mm is None
    assert r.landmark_error_mm is not None and r.landmark_error_mm < 1.5
    assert r.ok


def test_none_is_identity(pairs, cfg):
    p = pairs["m1"]
    r = register_volumes(p["pre"], p["pre"], method="none", liver_pre=p["liver_pre"], liver_post=p["liver_pre"],
                         config=cfg)
    np.testing.assert_allclose(np.asarray(r.matrix_lps), np.eye(4), atol=0)
    assert r.iterations is None and r.final_metric is None
    assert r.liver_dice == 1.0 and r.liver_msd_mm == 0.0 and r.ok
    # none on a moved pair: identity, and the quality check tells that it is wrong
    r2 = run(p, "none", cfg)
    np.testing.assert_allclose(np.asarray(r2.matrix_lps), np.eye(4), atol=0)
    assert r2.ok is False and r2.liver_msd_mm > 3.0


def test_all_air_post_is_registration_error(pairs, cfg):
    p = pairs["m1"]
    m = MOTIONS["m1"]
    air = Volume(np.full(m["size"], -1000.0, np.float32), m["spacing"], m["origin"], np.eye(3)[:, ::-1])
    with pytest.raises(RegistrationError):
        register_volumes(p["pre"], air, method="rigid", config=cfg)


def _far_post(m, dz=320.0):
    """The post scan's field of view moved 320 mm up: no anatomy in common with the pre scan."""
    R, t = rp.motion_transform(m)
    org = np.asarray(m["origin"]) + np.array([0.0, 0.0, dz])
    ct = rp.make_volume(m["size"], m["spacing"], org, transform=(R, t), seed=9)
    liver = rp.make_volume(m["size"], m["spacing"], org, transform=(R, t), kind="liver")
    return ct, liver


def test_disjoint_fields_of_view_without_liver_masks(pairs, cfg):
    far, _ = _far_post(MOTIONS["m1"])
    assert not np.any(rp.liver_inside(rp.grid_points(far.shape, far.spacing_mm, far.origin_mm, far.direction)))
    with pytest.raises(RegistrationError, match="overlap"):
        register_volumes(pairs["m1"]["pre"], far, method="rigid", config=cfg)


def test_disjoint_fields_of_view_with_liver_masks(pairs, cfg):
    from liverburden import LiverburdenError

    far, lfar = _far_post(MOTIONS["m1"])
    assert not lfar.array.any()
    with pytest.raises(LiverburdenError):
        register_volumes(pairs["m1"]["pre"], far, method="rigid", liver_pre=pairs["m1"]["liver_pre"],
                         liver_post=lfar, config=cfg)


# --------------------------------------------------------------------------- carrying masks
def _true_tx(R, t):
    a = sitk.AffineTransform(3)
    a.SetMatrix([float(v) for v in np.asarray(R).ravel()])
    a.SetTranslation([float(v) for v in t])
    return a


@pytest.mark.parametrize("mode", ["sdf-linear", "nearest"])
def test_resample_zone_into_pre_with_true_transform(pairs, mode):
    """The post zone carried into the pre grid by the true map matches the zone drawn on the pre grid."""
    name = "m4"  # oblique post grid
    m = MOTIONS[name]
    p = pairs[name]
    R, t = rp.motion_transform(m)
    d_post = rp.oblique_direction(m["iop_deg"])
    c, r = ZONES[0]
    zpost = rp.ellipsoid_mask(m["size"], m["spacing"], m["origin"], d_post, c, r, transform=(R, t))
    zone_v = Volume(zpost, m["spacing"], m["origin"], d_post)
    got = resample_mask_into(zone_v, p["pre"], _true_tx(R, t), mode=mode)
    g = rp.PRE_GRID
    want = rp.ellipsoid_mask(g["size"], g["spacing"], g["origin"], np.eye(3)[:, ::-1], c, r).astype(bool)
    dice = 2 * np.count_nonzero(got & want) / (np.count_nonzero(got) + np.count_nonzero(want))
    assert dice > 0.93, dice
    # volumes agree within a few percent (the sdf route neither grows nor shrinks the mask)
    assert abs(got.sum() / want.sum() - 1.0) < 0.08


def test_signed_distance_convention():
    m = np.zeros((9, 11, 13), bool)
    m[3:6, 4:7, 5:8] = True
    sp = (2.0, 1.0, 0.5)
    d = signed_distance_mm(m, sp)
    assert d[4, 5, 6] == pytest.approx(-1.0)  # centre: nearest outside voxel 2 cols away = 1.0 mm
    assert d[4, 5, 4] == pytest.approx(0.5)  # one col outside: 0.5 mm to the mask
    assert d[1, 5, 6] == pytest.approx(4.0)  # two slices below: 2 x 2 mm
    assert np.all(d[m] < 0) and np.all(d[~m] > 0)
