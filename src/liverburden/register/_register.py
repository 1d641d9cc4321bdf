"""Post -> pre registration, its quality, and carrying masks between grids.

The transform maps a point of the pre (fixed) scan to the post (moving) scan,
ITK's fixed-to-moving convention; ``matrix_lps`` is that map as a 4x4 in LPS mm
(``conventions.md`` "Margins").

Choice of metric (measured, see ``benchmarks/bench_register.py`` and
``tests/test_register.py``): Mattes mutual information over the whole image.
On phantom pairs with four known motions (other grids, fields of view, an
oblique post grid) it was the only variant under 1 mm mean and max error
over the liver; sampling only inside the dilated liver mask (configurable,
``metric_mask = "liver"``) left too few samples at the coarse levels (max
errors 1.7-2.0 mm), and mean squares / correlation did worse under affine.
Initialisation aligns the liver masks' centres of mass (or the image moments).
Multi-resolution (shrink 4, 2, 1), rigid then affine.

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
           threads: int = 1):
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
    shrinks = [2, 1] if bspline else [4, 2, 1]
    n_vox = float(np.prod(fixed.GetSize()))
    # 5 % of the voxels, at most MAX_SAMPLES per level: a 512x512x300 pair gets the
    # same statistical support as a small one without sampling millions of points
    pct = [min(0.05, MAX_SAMPLES / max(1.0, n_vox / s**3)) for s in shrinks]
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
        R.SetShrinkFactorsPerLevel([4, 2, 1])
        R.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
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


def _register(pre, post, *, method, liver_pre, liver_post, landmarks, config, rc, warnings, tick):
    for what, m in (("pre liver mask", liver_pre), ("post liver mask", liver_post)):
        if m is not None and not np.any(np.asarray(m.array)):
            raise MaskError(f"{m.source or what}: {what} is empty (is the liver in this scan's field of view?)")
    fixed = sitk.Cast(volume_to_sitk(pre), sitk.sitkFloat32)
    moving = sitk.Cast(volume_to_sitk(post), sitk.sitkFloat32)
    lp = volume_to_sitk(liver_pre, (np.asarray(liver_pre.array) != 0).astype(np.uint8)) if liver_pre is not None else None
    lq = volume_to_sitk(liver_post, (np.asarray(liver_post.array) != 0).astype(np.uint8)) if liver_post is not None else None
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
        if lp is not None and rc["metric_mask"] == "liver":
            d = float(rc["metric_mask_dilation_mm"])
            fmask = sitk.BinaryDilate(lp, [int(math.ceil(d / s)) for s in lp.GetSpacing()]) if d > 0 else lp
            metric_name = f"{metric} (pre liver mask dilated {d:g} mm)"
        else:
            metric_name = f"{metric} (whole image)"
        try:
            rigid, R = _stage(fixed, moving, init, fmask, affine=False, metric=metric, threads=rc["threads"])
            tx = rigid
            final, iters, stop = R.GetMetricValue(), R.GetOptimizerIteration(), R.GetOptimizerStopConditionDescription()
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
        warped = resample_mask_into(liver_post, liver_pre, tx, mode="nearest")
        a = np.asarray(liver_pre.array) != 0
        inter = int(np.count_nonzero(a & warped))
        denom = int(np.count_nonzero(a)) + int(np.count_nonzero(warped))
        dice = 2.0 * inter / denom if denom else 0.0
        msd, hd95 = _surface_distances(a, warped, liver_pre)
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
        timing_s={"optimise": round(tick["optimise"] - tick["start"], 3),
                  "quality": round(tick["quality"] - tick["optimise"], 3)},
    )
