"""Post -> pre registration, its quality, and carrying masks between grids.

The transform maps a point of the pre (fixed) scan to the post (moving) scan,
ITK's fixed-to-moving convention; ``matrix_lps`` is that map as a 4x4 in LPS mm
(``conventions.md`` "Margins").

Choice of metric (measured, see ``benchmarks/bench_register.py`` and
``tests/test_register.py``): Mattes mutual information over the whole image
(cropped to the liver box + ``crop_margin_mm`` when both liver masks are given).
On phantom pairs with four known motions (other grids, fields of view, an
oblique post grid, +25 HU parenchyma and ablation cavities in the post scan) it
has the lowest worst-case error over the liver: mean / max 0.14 / 0.24 mm rigid,
0.18 / 0.41 mm affine. Sampled only inside the pre liver mask dilated 15 mm
(``metric_mask = "liver"``) Mattes reaches 0.29 / 0.64 and correlation 0.23 /
0.46 affine (before the ``MIN_SAMPLES`` floor those variants had a few hundred
samples at the coarse levels and missed 1 mm); mean squares (1.3-1.7 mm) and
correlation over the whole image (1.5 mm) fail under affine: the contrast
changes between the scans. Initialisation aligns the liver masks' centres of
mass (or the image moments). Multi-resolution (shrink 4, 2, 1; the rigid stage
that precedes the affine one stops at shrink 2), rigid then affine.

Speed (the 512x512x300 pair of ``benchmarks/bench_register.py``, one thread,
machine shared with other jobs): 116-179 s before, of which ~66 s smoothing
the two whole scans at every level of both stages, ~84 s metric iterations
(the coarse rigid level alone ran its 200 iterations) and 17-23 s quality.
Now, with both liver masks:

* each scan is cut to its liver's bounding box grown by ``crop_margin_mm``
  (40 mm): ~8x fewer voxels to smooth at each level, and a full-resolution
  iteration over the same 200k samples took 190-260 ms instead of 380-430. The
  margin was chosen on the phantom motions (worst max error over the liver):
  20 mm 0.70 mm (too little context), 30 mm 0.58, 40 mm 0.41, whole images 0.60;
* the quality (Dice, surface distances) is computed on the part of the pre grid
  that holds both livers (the same values as on the whole grid, tested): ~1 s;
* the rigid stage before the affine one stops at shrink 2 (``RIGID_LEVELS_BEFORE_AFFINE``);
  ``method = "rigid"`` keeps its full-resolution level;
* each level keeps at least ``MIN_SAMPLES`` metric samples (all voxels of a
  smaller level): 5 % of a cropped coarse level is a few hundred points, which
  made the error erratic (up to 1.2 mm with a 20 mm margin, 1.8 mm on
  point-sampled phantoms with 30 mm).

The pair then registers in 14-26 s (five runs, load average 1.2-2.8; mostly
the metric iterations of the affine stage at full resolution), the same
transform bit for bit each run, error over the liver mean 0.085 / max 0.175 mm
(before 0.11 / 0.17), liver Dice 0.993, MSD 0.14 mm as before. Without both masks the whole images are registered as
before (only the per-level sample floor and the rigid levels before affine changed).
With ``method = "deformable"`` the B-spline grid spans the cropped region only
(the affine map beyond it); on phantom m1 it was closer to the truth over the
liver than on the whole images (0.50 / 1.01 mm against 0.77 / 1.76).

Threads: one (``registration.threads``). ITK's multi-threaded Mattes metric is
not reproducible: two threads gave three different transforms in three runs
(0.04 mm apart) on the cropped large pair, with the pool and the platform
threaders alike; one thread gives the same transform bit for bit on every run
(tested), and the crop makes it fast enough.

A failed step is an explicit value: a registration that runs but fails the
configured quality returns ``ok = False`` with the reason, never a transform
passed off as good.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from .._exceptions import MaskError, RegistrationError
from ..geometry import Volume
from ..io import volume_to_sitk

log = logging.getLogger(__name__)

#: Fixed seed for the metric's random sampling: the same inputs give the same transform.
SAMPLING_SEED = 20261126
#: Largest number of metric samples per resolution level.
MAX_SAMPLES = 200_000
#: Smallest number of metric samples per resolution level (all voxels of a level with fewer).
MIN_SAMPLES = 20_000
#: Resolution levels (shrink factor, smoothing sigma in mm) of the rigid and the affine stage.
RIGID_LEVELS = ((4, 2.0), (2, 1.0), (1, 0.0))
AFFINE_LEVELS = ((4, 2.0), (2, 1.0), (1, 0.0))
#: The rigid stage followed by the affine one stops at shrink 2: the affine stage ends at full
#: resolution anyway, and the rigid full-resolution level cost ~6-7 s of the large pair for no
#: gain (error over the liver 0.085 / 0.175 mm with or without it; phantom motions: worst max
#: 0.41 mm without, 0.45 with).
RIGID_LEVELS_BEFORE_AFFINE = ((4, 2.0), (2, 1.0))


@dataclass(frozen=True)
class RegistrationResult:
    method: str
    ok: bool
    reason: str | None
    transform: sitk.Transform | None = field(repr=False)
    matrix_lps: list[list[float]] | None
    final_metric: float | None
    iterations: int | None
    stop_condition: str | None
    liver_dice: float | None = None
    liver_msd_mm: float | None = None
    liver_hd95_mm: float | None = None
    landmark_error_mm: float | None = None
    metric: str | None = None
    warnings: tuple[str, ...] = ()
    timing_s: dict[str, float] = field(default_factory=dict)

    @property
    def error_mm(self) -> float | None:
        """e_reg of the uncertainty: landmark error, else liver MSD (conventions.md)."""
        if self.landmark_error_mm is not None:
            return self.landmark_error_mm
        return self.liver_msd_mm

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "metric": self.metric,
            "ok": self.ok,
            "reason": self.reason,
            "matrix_lps": self.matrix_lps,
            "final_metric": self.final_metric,
            "iterations": self.iterations,
            "stop_condition": self.stop_condition,
            "liver_dice": self.liver_dice,
            "liver_msd_mm": self.liver_msd_mm,
            "liver_hd95_mm": self.liver_hd95_mm,
            "landmark_error_mm": self.landmark_error_mm,
            "warnings": list(self.warnings),
            "timing_s": dict(self.timing_s),
        }


def _matrix_lps(tx: sitk.Transform) -> list[list[float]] | None:
    """4x4 of a linear transform (pre LPS -> post LPS), or None for a deformable one."""
    try:
        t = tx
        if isinstance(tx, sitk.CompositeTransform):
            if tx.GetNumberOfTransforms() != 1:
                return None
            t = tx.GetNthTransform(0)
        a = sitk.AffineTransform(3)
        a.SetMatrix(t.GetMatrix())
        a.SetTranslation(t.GetTranslation())
        a.SetCenter(t.GetCenter())
    except (AttributeError, RuntimeError, TypeError):
        return None
    A = np.asarray(a.GetMatrix()).reshape(3, 3)
    c = np.asarray(a.GetCenter())
    tr = np.asarray(a.GetTranslation())
    m = np.eye(4)
    m[:3, :3] = A
    m[:3, 3] = c + tr - A @ c
    return m.tolist()


def apply_to_points(tx: sitk.Transform, points: np.ndarray) -> np.ndarray:
    return np.asarray([tx.TransformPoint(tuple(float(v) for v in p)) for p in np.asarray(points, dtype=float)])


def resample_mask_into(
    mask: Volume, grid: Volume, tx: sitk.Transform | None, *, mode: str = "sdf-linear"
) -> np.ndarray:
    """Carry a binary mask from its grid into ``grid`` through ``tx`` (grid -> mask points).

    ``sdf-linear``: resample the mask's signed distance map (mm, negative inside)
    with linear interpolation and keep <= 0, which moves the boundary
    continuously instead of in voxel steps. ``nearest``: nearest-neighbour labels.
    """
    m = np.asarray(mask.array) != 0
    ref = volume_to_sitk(grid, np.zeros(grid.shape, dtype=np.uint8))
    t = tx if tx is not None else sitk.Transform(3, sitk.sitkIdentity)
    if mode == "nearest":
        src = volume_to_sitk(mask, m.astype(np.uint8))
        out = sitk.Resample(src, ref, t, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        return sitk.GetArrayFromImage(out).astype(bool)
    sdf = signed_distance_mm(m, mask.spacing_mm)
    src = volume_to_sitk(mask, sdf)
    out = sitk.Resample(src, ref, t, sitk.sitkLinear, float(SDF_OUTSIDE), sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out) < 0.0


#: Value of the signed distance map far outside the mask (mm).
SDF_OUTSIDE = 1.0e4


def signed_distance_mm(mask: np.ndarray, spacing_mm: Sequence[float], pad: int = 3) -> np.ndarray:
    """Signed distance between voxel centres, mm: outside, the distance to the
    nearest inside voxel (> 0); inside, minus the distance to the nearest outside
    voxel (< 0). Its zero level lies halfway between the two, so a linear
    interpolation neither grows nor shrinks the mask. Computed exactly in the
    mask's bounding box grown by ``pad`` voxels; ``SDF_OUTSIDE`` beyond it.
    """
    from ..kernels._edt import _sq_edt

    out = np.full(mask.shape, SDF_OUTSIDE, dtype=np.float32)
    nz = np.argwhere(mask)
    if nz.size == 0:
        return out
    lo = np.maximum(nz.min(axis=0) - pad, 0)
    hi = np.minimum(nz.max(axis=0) + pad + 1, mask.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    mb = np.ascontiguousarray(mask[box])
    sp = np.asarray(spacing_mm, dtype=np.float64)
    d_to_in = np.sqrt(_sq_edt(mb, sp))
    d_to_out = np.sqrt(_sq_edt(~mb, sp))
    out[box] = np.where(mb, -d_to_out, d_to_in).astype(np.float32)
    return out


def _surface_distances(a: np.ndarray, b: np.ndarray, grid: Volume) -> tuple[float, float]:
    """Symmetric mean and 95th percentile surface distance (mm) between two masks on one grid."""
    ia = volume_to_sitk(grid, a.astype(np.uint8))
    ib = volume_to_sitk(grid, b.astype(np.uint8))
    ca = sitk.GetArrayFromImage(sitk.LabelContour(ia)) > 0
    cb = sitk.GetArrayFromImage(sitk.LabelContour(ib)) > 0
    da = np.abs(sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(ia, squaredDistance=False, useImageSpacing=True)))
    db = np.abs(sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(ib, squaredDistance=False, useImageSpacing=True)))
    d = np.concatenate([db[ca], da[cb]])
    if d.size == 0:
        return float("inf"), float("inf")
    return float(d.mean()), float(np.percentile(d, 95))


def _overlap(fixed: sitk.Image, moving: sitk.Image, tx: sitk.Transform) -> float:
    """Fraction of the fixed grid's sample points that land inside the moving image."""
    size = np.asarray(fixed.GetSize())
    idx = np.stack(np.meshgrid(*[np.linspace(0, s - 1, 9) for s in size], indexing="ij"), -1).reshape(-1, 3)
    inside = 0
    for i in idx:
        p = fixed.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in i))
        q = moving.TransformPhysicalPointToContinuousIndex(tx.TransformPoint(p))
        if all(-0.5 <= q[k] <= moving.GetSize()[k] - 0.5 for k in range(3)):
            inside += 1
    return inside / len(idx)


def _stage(fixed, moving, initial, fixed_mask, *, affine: bool, bspline: bool = False, metric: str = "mattes",
           threads: int = 1, levels=None):
    R = sitk.ImageRegistrationMethod()
    # ITK's multi-threaded metric sums differ between runs in the last bits, which the
    # optimiser amplifies: one thread (the default) gives the same transform every run
    R.SetNumberOfThreads(int(threads))
    if metric == "mattes":
        R.SetMetricAsMattesMutualInformation(numberOfHistogramBins=48)
    elif metric == "meansquares":
        R.SetMetricAsMeanSquares()
    elif metric == "correlation":
        R.SetMetricAsCorrelation()
    else:  # pragma: no cover - the config schema rejects it first
        raise RegistrationError(f"unknown metric {metric}")
    # gradients at the sample points only: a whole-image gradient filter per level costs
    # 3 float images of the full volume (~1 GB for 512x512x300) and most of the time
    R.SetMetricUseFixedImageGradientFilter(False)
    R.SetMetricUseMovingImageGradientFilter(False)
    R.SetMetricSamplingStrategy(R.RANDOM)
    if levels is None:
        levels = ((2, 1.0), (1, 0.0)) if bspline else (AFFINE_LEVELS if affine else RIGID_LEVELS)
    shrinks = [int(k) for k, _ in levels]
    n_vox = float(np.prod(fixed.GetSize()))
    # 5 % of the voxels, at least MIN_SAMPLES (all voxels if fewer) and at most MAX_SAMPLES
    # per level: a 512x512x300 pair gets the same statistical support as a small one
    # without sampling millions of points, and a small or cropped coarse level is not
    # left with a few hundred samples
    pct = []
    for s in shrinks:
        n = max(1.0, n_vox / s**3)
        pct.append(min(1.0, min(MAX_SAMPLES, max(MIN_SAMPLES, 0.05 * n)) / n))
    R.SetMetricSamplingPercentagePerLevel(pct, SAMPLING_SEED)
    if fixed_mask is not None:
        R.SetMetricFixedMask(fixed_mask)
    R.SetInterpolator(sitk.sitkLinear)
    if bspline:
        R.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=60)
        R.SetShrinkFactorsPerLevel([2, 1])
        R.SetSmoothingSigmasPerLevel([1.0, 0.0])
    else:
        R.SetOptimizerAsRegularStepGradientDescent(
            learningRate=2.0 if not affine else 1.0, minStep=1e-3, numberOfIterations=200,
            relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6,
        )
        R.SetOptimizerScalesFromPhysicalShift()
        R.SetShrinkFactorsPerLevel(shrinks)
        R.SetSmoothingSigmasPerLevel([float(g) for _, g in levels])
    R.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    R.SetInitialTransform(initial, inPlace=False)
    out = R.Execute(fixed, moving)
    return out, R


def register_volumes(
    pre: Volume,
    post: Volume,
    *,
    method: str,
    liver_pre: Volume | None = None,
    liver_post: Volume | None = None,
    landmarks: np.ndarray | None = None,
    config: Mapping[str, Any],
) -> RegistrationResult:
    """Register ``post`` to ``pre`` (transform maps pre points to post points).

    Parameters
    ----------
    method : "rigid" | "affine" | "deformable" | "none"
    liver_pre, liver_post : liver masks on their scans' grids: initialise the
        registration, focus the metric, and measure its quality (Dice, surface distances).
    landmarks : (n, 6) array ``x_pre, y_pre, z_pre, x_post, y_post, z_post`` (LPS mm).

    Raises
    ------
    RegistrationError
        The fields of view do not overlap after initialisation, or the optimiser fails.
    """
    rc = config["registration"]
    warnings: list[str] = []
    tick = {"start": time.perf_counter()}
    # ITK's metric takes its threads from the global default, not from the method:
    # pin it for the run (threads = 1 is what makes the transform reproducible)
    old_threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(rc["threads"]))
    try:
        return _register(pre, post, method=method, liver_pre=liver_pre, liver_post=liver_post,
                         landmarks=landmarks, config=config, rc=rc, warnings=warnings, tick=tick)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(old_threads)


def _mask_box(mask: np.ndarray) -> list[tuple[int, int]] | None:
    """Index bounding box [lo, hi) per array axis of the non-zero voxels, or None if empty."""
    m = np.asarray(mask)
    box = []
    for ax in range(3):
        nz = np.flatnonzero(np.any(m, axis=tuple(a for a in range(3) if a != ax)))
        if nz.size == 0:
            return None
        box.append((int(nz[0]), int(nz[-1]) + 1))
    return box


def _grow_box(box, pad_vox, shape) -> list[tuple[int, int]]:
    return [(max(0, a - int(p)), min(int(n), b + int(p))) for (a, b), p, n in zip(box, pad_vox, shape)]


def _crop(vol: Volume, box) -> Volume:
    """The sub-volume ``box`` (index [lo, hi) per axis) with its physical geometry (origin moved)."""
    sl = tuple(slice(a, b) for a, b in box)
    lo = np.array([a for a, _ in box], dtype=float)
    org = np.asarray(vol.origin_mm) + np.asarray(vol.direction) @ (lo * np.asarray(vol.spacing_mm))
    return Volume(np.ascontiguousarray(np.asarray(vol.array)[sl]), vol.spacing_mm, org, vol.direction,
                  source=vol.source)


def _crop_to_liver(vol: Volume, liver: Volume, margin_mm: float) -> tuple[Volume, Volume]:
    """Scan and liver mask cut to the liver's bounding box grown by ``margin_mm`` (clipped to the grid)."""
    box = _mask_box(np.asarray(liver.array) != 0)
    box = _grow_box(box, [math.ceil(margin_mm / s) for s in liver.spacing_mm], liver.shape)
    return _crop(vol, box), _crop(liver, box)


def _quality_box(liver_pre: Volume, liver_post: Volume, tx: sitk.Transform, pad: int = 3):
    """Box of the pre grid (index [lo, hi) per axis) holding the pre liver and every pre voxel
    that the nearest-neighbour resampling of the post liver through ``tx`` can set, grown by
    ``pad`` voxels so that neither mask touches its border; None (whole grid) when ``tx`` has
    no inverse (deformable)."""
    try:
        inv = tx.GetInverse()
    except (RuntimeError, AttributeError):
        return None
    bpre = _mask_box(np.asarray(liver_pre.array) != 0)
    bpost = _mask_box(np.asarray(liver_post.array) != 0)
    # the post voxels of the liver's box, out to their edges (nearest neighbour), as physical corners
    corners = np.array(list(np.ndindex(2, 2, 2)), dtype=float)
    lo = np.array([a for a, _ in bpost], dtype=float) - 0.5
    hi = np.array([b for _, b in bpost], dtype=float) - 0.5
    idx = lo + corners * (hi - lo)
    phys = np.asarray(liver_post.origin_mm) + (idx * np.asarray(liver_post.spacing_mm)) @ np.asarray(liver_post.direction).T
    back = np.array([inv.TransformPoint(tuple(float(v) for v in p)) for p in phys])
    cidx = (back - np.asarray(liver_pre.origin_mm)) @ np.asarray(liver_pre.direction) / np.asarray(liver_pre.spacing_mm)
    box = []
    for ax in range(3):
        a = min(bpre[ax][0], int(math.floor(cidx[:, ax].min())))
        b = max(bpre[ax][1], int(math.ceil(cidx[:, ax].max())) + 1)
        box.append((a, b))
    return _grow_box(box, [pad] * 3, liver_pre.shape)


def _timing(tick: dict[str, float]) -> dict[str, float]:
    """Seconds per step: crop, prepare (initialisation), rigid, affine; optimise = all of
    these (start to the final transform), quality = Dice and surface distances."""
    out = {}
    prev = tick["start"]
    for k in ("crop", "prepare", "rigid", "affine"):
        if k in tick:
            out[k] = round(tick[k] - prev, 3)
            prev = tick[k]
    out["optimise"] = round(tick["optimise"] - tick["start"], 3)
    out["quality"] = round(tick["quality"] - tick["optimise"], 3)
    return out


def _register(pre, post, *, method, liver_pre, liver_post, landmarks, config, rc, warnings, tick):
    for what, m in (("pre liver mask", liver_pre), ("post liver mask", liver_post)):
        if m is not None and not np.any(np.asarray(m.array)):
            raise MaskError(f"{m.source or what}: {what} is empty (is the liver in this scan's field of view?)")
    crop_mm = float(rc["crop_margin_mm"])
    cropped = method != "none" and liver_pre is not None and liver_post is not None and crop_mm > 0
    q_pre, q_lpre, q_post, q_lpost = pre, liver_pre, post, liver_post
    if cropped:
        # the metric only needs the liver and its surroundings: each scan cut to its own
        # liver's box + crop_margin_mm (a 512x512x300 pair: ~10x fewer voxels to smooth,
        # sample and interpolate); the transform is physical, so it holds for the full grids
        q_pre, q_lpre = _crop_to_liver(pre, liver_pre, crop_mm)
        q_post, q_lpost = _crop_to_liver(post, liver_post, crop_mm)
    tick["crop"] = time.perf_counter()
    # float32 once, from the (cropped) arrays: no full-size float64 or second copy
    fixed = volume_to_sitk(q_pre, np.asarray(q_pre.array, dtype=np.float32))
    moving = volume_to_sitk(q_post, np.asarray(q_post.array, dtype=np.float32))
    lp = volume_to_sitk(q_lpre, (np.asarray(q_lpre.array) != 0).astype(np.uint8)) if q_lpre is not None else None
    lq = volume_to_sitk(q_lpost, (np.asarray(q_lpost.array) != 0).astype(np.uint8)) if q_lpost is not None else None
    tx: sitk.Transform
    metric_name = None
    final = iters = stop = None
    if method == "none":
        tx = sitk.Euler3DTransform()
    else:
        if lp is not None and lq is not None:
            init = sitk.CenteredTransformInitializer(lp, lq, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS)
        else:
            # moments of the body (air clipped away) rather than raw CT values
            fb = sitk.Clamp(fixed + 1024.0, sitk.sitkFloat32, 0.0, 3000.0)
            mb = sitk.Clamp(moving + 1024.0, sitk.sitkFloat32, 0.0, 3000.0)
            init = sitk.CenteredTransformInitializer(fb, mb, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS)
        if lp is None and _overlap(fixed, moving, sitk.Euler3DTransform()) == 0.0:
            raise RegistrationError(
                "pre and post scans do not overlap in physical space and no liver masks are given to align them: "
                "cannot register (give --liver-pre/--liver-post)"
            )
        if _overlap(fixed, moving, init) < 0.05:
            raise RegistrationError(
                "pre and post scans do not overlap after initialisation (fields of view disjoint): "
                "cannot register"
            )
        fmask = None
        metric = rc["metric"]
        where = f"whole image cropped to the liver box + {crop_mm:g} mm" if cropped else "whole image"
        if lp is not None and rc["metric_mask"] == "liver":
            d = float(rc["metric_mask_dilation_mm"])
            fmask = sitk.BinaryDilate(lp, [int(math.ceil(d / s)) for s in lp.GetSpacing()]) if d > 0 else lp
            metric_name = f"{metric} (pre liver mask dilated {d:g} mm)"
        else:
            metric_name = f"{metric} ({where})"
        tick["prepare"] = time.perf_counter()
        try:
            rigid, R = _stage(fixed, moving, init, fmask, affine=False, metric=metric, threads=rc["threads"],
                              levels=RIGID_LEVELS if method == "rigid" else RIGID_LEVELS_BEFORE_AFFINE)
            tx = rigid
            final, iters, stop = R.GetMetricValue(), R.GetOptimizerIteration(), R.GetOptimizerStopConditionDescription()
            tick["rigid"] = time.perf_counter()
            if method in ("affine", "deformable"):
                eul = rigid.GetNthTransform(0) if isinstance(rigid, sitk.CompositeTransform) else rigid
                eul = sitk.Euler3DTransform(eul)
                aff = sitk.AffineTransform(3)
                aff.SetMatrix(eul.GetMatrix())
                aff.SetTranslation(eul.GetTranslation())
                aff.SetCenter(eul.GetCenter())
                affine_tx, R = _stage(fixed, moving, aff, fmask, affine=True, metric=metric, threads=rc["threads"])
                tx = affine_tx
                final, iters, stop = R.GetMetricValue(), R.GetOptimizerIteration(), R.GetOptimizerStopConditionDescription()
                tick["affine"] = time.perf_counter()
            if method == "deformable":
                warnings.append("deformable registration can shrink the ablation cavity onto the tumor; check the margin images")
                mesh = [max(1, int(sz * sp / 50.0)) for sz, sp in zip(fixed.GetSize(), fixed.GetSpacing())]
                bs = sitk.BSplineTransformInitializer(fixed, mesh)
                comp = sitk.CompositeTransform(tx)
                comp.AddTransform(bs)
                out, R = _stage(fixed, moving, comp, fmask, affine=True, bspline=True, metric=metric, threads=rc["threads"])
                tx = out
                final, iters, stop = R.GetMetricValue(), R.GetOptimizerIteration(), R.GetOptimizerStopConditionDescription()
        except RuntimeError as exc:
            raise RegistrationError(f"registration failed: {str(exc).strip().splitlines()[-1][:200]}") from None
        if isinstance(tx, sitk.CompositeTransform) and tx.GetNumberOfTransforms() == 1:
            tx = tx.GetNthTransform(0)
        tx = tx.Downcast() if hasattr(tx, "Downcast") else tx

    tick["optimise"] = time.perf_counter()
    dice = msd = hd95 = lmk = None
    if liver_pre is not None and liver_post is not None:
        # on the part of the pre grid that holds both livers (the post one carried over):
        # the same Dice and distances as on the whole grid, without resampling and
        # distance-mapping ~80 M voxels of air and body
        box = _quality_box(liver_pre, liver_post, tx)
        grid = liver_pre if box is None else _crop(liver_pre, box)
        warped = resample_mask_into(liver_post, grid, tx, mode="nearest")
        a = np.asarray(grid.array) != 0
        inter = int(np.count_nonzero(a & warped))
        denom = int(np.count_nonzero(a)) + int(np.count_nonzero(warped))
        dice = 2.0 * inter / denom if denom else 0.0
        msd, hd95 = _surface_distances(a, warped, grid)
    if landmarks is not None and len(landmarks):
        lm = np.asarray(landmarks, dtype=float)
        moved = apply_to_points(tx, lm[:, :3])
        lmk = float(np.mean(np.linalg.norm(moved - lm[:, 3:], axis=1)))
    tick["quality"] = time.perf_counter()
    log.info("registration %s: optimisation %.1f s, quality %.1f s", method, tick["optimise"] - tick["start"],
             tick["quality"] - tick["optimise"])
    ok = True
    reasons = []
    if dice is not None and dice < rc["min_liver_dice"]:
        ok = False
        reasons.append(f"liver Dice {dice:.3f} < {rc['min_liver_dice']}")
    if msd is not None and msd > rc["max_liver_msd_mm"]:
        ok = False
        reasons.append(f"liver mean surface distance {msd:.2f} mm > {rc['max_liver_msd_mm']} mm")
    if lmk is not None and lmk > rc["max_liver_msd_mm"]:
        ok = False
        reasons.append(f"landmark error {lmk:.2f} mm > {rc['max_liver_msd_mm']} mm")
    if dice is None and lmk is None and method != "none":
        warnings.append("registration quality not measured (no liver masks, no landmarks)")
    return RegistrationResult(
        method=method,
        ok=ok,
        reason="; ".join(reasons) if reasons else None,
        transform=tx,
        matrix_lps=_matrix_lps(tx),
        final_metric=None if final is None else float(final),
        iterations=None if iters is None else int(iters),
        stop_condition=stop,
        liver_dice=dice,
        liver_msd_mm=msd,
        liver_hd95_mm=hd95,
        landmark_error_mm=lmk,
        metric=metric_name,
        warnings=tuple(warnings),
        timing_s=_timing(tick),
    )
