"""Follow-up comparison: lesion tracking, RECIST 1.1 response, remnant burden.

``clinical-reference.md`` sections 1-2, ``conventions.md`` "Cohorts". Reads
the bundles written by ``measure`` (measurements.json + lesion_labels.nii.gz).

Tracking: every follow-up label map is brought onto the baseline grid (the
same grid losslessly; the same frame of reference by nearest-neighbour
resampling; another frame by registering the follow-up image to the
baseline with the ``margin`` registration code). Baseline and follow-up
lesions are linked when their masks overlap, or without overlap when their
centroids are within ``compare.match_distance_mm``; each connected group of
links is reported as it is (matched, disappeared, new, split, merged,
split+merged), never forced one-to-one.

RECIST 1.1 on the baseline targets (the bundle's ``recist_target_ids``),
followed by identity: a split target counts the sum of its fragments' LD; a
merged lesion's LD counts once, for the largest baseline target of the
group, the others 0 (RECIST 1.1 coalescence rule); a vanished target 0.
Response per follow-up: PD when a new lesion (LD >= ``new_lesion_min_ld_mm``)
appears, or the target SoD rose >= 20 % above the nadir AND >= 5 mm; else CR
when every target is gone; else PR when the SoD fell >= 30 % below baseline;
else SD. The nadir is the smallest target SoD of all earlier time points,
baseline included.
"""

from __future__ import annotations

import csv
import io as _io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from ._exceptions import InputError, LiverburdenError
from ._version import __version__
from .config import load_config
from .geometry import match_to_grid
from .io import load_image, load_mask_on, read_volume_file, volume_to_sitk

log = logging.getLogger(__name__)


@dataclass
class Bundle:
    path: Path
    label: str
    doc: dict[str, Any]
    labels: Any  # Volume of lesion ids

    @property
    def lesions(self) -> dict[int, dict[str, Any]]:
        return {int(l["id"]): l for l in self.doc["lesions"]}


def read_bundle(path: str | Path, label: str | None = None) -> Bundle:
    p = Path(path)
    mj = p / "measurements.json"
    if not mj.is_file():
        raise InputError(f"{p}: not a liverburden bundle (no measurements.json)")
    try:
        doc = json.loads(mj.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{mj}: unreadable ({exc})") from None
    lab = p / "lesion_labels.nii.gz"
    if not lab.is_file():
        raise InputError(f"{p}: bundle has no lesion_labels.nii.gz")
    return Bundle(p, label or p.name, doc, read_volume_file(lab, "lesion label map"))


def _to_baseline_grid(base: Bundle, fu: Bundle, cfg) -> tuple[np.ndarray, Any, list[str]]:
    """Follow-up label ids on the baseline grid, the transform (baseline -> follow-up
    points, or None), and warnings."""
    warnings: list[str] = []
    g = cfg["geometry"]
    fk_b, fk_f = base.doc.get("frame_key"), fu.doc.get("frame_key")
    other_frame = bool(fk_b and fk_f and fk_b != fk_f)
    if not other_frame:  # the same grid in the same (or an unknown) frame: voxels correspond
        try:
            arr = match_to_grid(fu.labels, base.labels, what="follow-up label map",
                                position_tol_voxel=g["position_tol_voxel"], direction_tol=g["direction_tol"])
            if not (fk_b and fk_f):
                warnings.append(f"{fu.label}: no frame of reference is known (volume files): the grids are taken "
                                "to be aligned because they coincide")
            return np.asarray(arr), None, warnings
        except LiverburdenError:
            pass
    ref = volume_to_sitk(base.labels, np.zeros(base.labels.shape, np.uint8))
    src = volume_to_sitk(fu.labels)
    if fk_b and fk_b == fk_f:
        out = sitk.Resample(src, ref, sitk.Transform(3, sitk.sitkIdentity), sitk.sitkNearestNeighbor, 0)
        warnings.append(f"{fu.label}: same frame of reference, other grid: label map resampled (nearest) for matching only")
        return sitk.GetArrayFromImage(out), None, warnings
    # another frame: register the follow-up image to the baseline image
    from .register import register_volumes

    imgs = []
    for b in (base, fu):
        ij = b.path / "inputs.json"
        if not ij.is_file():
            raise InputError(
                f"{b.path}: frames of reference differ and the bundle has no inputs.json (image paths) "
                "to register the time points"
            )
        inp = json.loads(ij.read_text())["inputs"]
        img, hdr, _, _ = load_image(inp["image"][0] if len(inp["image"]) == 1 else Path(inp["image"][0]).parent,
                                    config=cfg, match_mask=inp["liver"][0])
        liver = load_mask_on(inp["liver"][0], img, hdr, config=cfg, role="liver", what="liver mask")
        imgs.append((img, liver))
    (bi, bl), (fi, fl) = imgs
    method = cfg["registration"]["method"] if cfg["registration"]["method"] != "none" else "affine"
    reg = register_volumes(bi, fi, method=method, liver_pre=bl, liver_post=fl, config=cfg)
    if not reg.ok:
        warnings.append(f"{fu.label}: registration to baseline failed its quality check ({reg.reason}); lesion matching is uncertain")
    out = sitk.Resample(src, ref, reg.transform, sitk.sitkNearestNeighbor, 0)
    warnings.append(f"{fu.label}: registered to baseline ({method}, liver Dice {reg.liver_dice:.3f}) for lesion matching")
    return sitk.GetArrayFromImage(out), reg.transform, warnings


def track(base: Bundle, fu: Bundle, cfg) -> tuple[list[dict[str, Any]], list[str]]:
    """Groups of linked lesions between baseline and one follow-up."""
    fu_on_base, tx, warnings = _to_baseline_grid(base, fu, cfg)
    b_arr = np.asarray(base.labels.array).astype(np.int64)
    f_arr = np.asarray(fu_on_base).astype(np.int64)
    both = (b_arr > 0) & (f_arr > 0)
    mult = int(f_arr.max()) + 1
    codes, counts = np.unique(b_arr[both] * mult + f_arr[both], return_counts=True)
    edges: dict[tuple[int, int], int] = {}
    for c, n in zip(codes, counts):
        edges[(int(c) // mult, int(c) % mult)] = int(n)
    bl = base.lesions
    fl = fu.lesions
    inv = tx.GetInverse() if tx is not None else None
    max_d = float(cfg["compare"]["match_distance_mm"])
    fu_c = {}
    for fid, l in fl.items():
        c = np.asarray(l["centroid_mm"], float)
        fu_c[fid] = np.asarray(inv.TransformPoint(tuple(c))) if inv is not None else c
    for bid, b in bl.items():
        bc = np.asarray(b["centroid_mm"], float)
        for fid in fl:
            if (bid, fid) not in edges and np.linalg.norm(bc - fu_c[fid]) <= max_d:
                edges[(bid, fid)] = 0
    # connected groups of the bipartite graph
    parent: dict[tuple[str, int], tuple[str, int]] = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for b in bl:
        find(("b", b))
    for f in fl:
        find(("f", f))
    for (b, f) in edges:
        if b in bl and f in fl:
            rb, rf = find(("b", b)), find(("f", f))
            if rb != rf:
                parent[rf] = rb
    groups: dict[Any, dict[str, list[int]]] = {}
    for node in list(parent):
        r = find(node)
        g = groups.setdefault(r, {"b": [], "f": []})
        g[node[0]].append(node[1])
    new_min = float(cfg["compare"]["new_lesion_min_ld_mm"])
    out = []
    for g in groups.values():
        b, f = sorted(g["b"]), sorted(g["f"])
        if b and not f:
            kind = "disappeared"
        elif f and not b:
            kind = "new" if max(fl[i]["ld_mm"] for i in f) >= new_min else "new_below_threshold"
        elif len(b) == 1 and len(f) == 1:
            kind = "matched"
        elif len(b) == 1:
            kind = "split"
        elif len(f) == 1:
            kind = "merged"
        else:
            kind = "split_merged"
        out.append({
            "kind": kind,
            "baseline_ids": b,
            "followup_ids": f,
            "overlap_voxels": {f"{x}-{y}": n for (x, y), n in edges.items() if x in b and y in f},
        })
    out.sort(key=lambda g: (g["baseline_ids"][0] if g["baseline_ids"] else 1 << 30, g["followup_ids"][:1]))
    return out, warnings


def _target_lds(targets: Sequence[int], groups, base: Bundle, fu: Bundle) -> dict[int, float]:
    bl, fl = base.lesions, fu.lesions
    lds = {t: 0.0 for t in targets}
    for g in groups:
        tg = [t for t in g["baseline_ids"] if t in lds]
        if not tg or not g["followup_ids"]:
            continue
        total = float(sum(fl[i]["ld_mm"] for i in g["followup_ids"]))
        owner = max(tg, key=lambda t: (bl[t]["ld_mm"], -t))  # coalesced: the largest baseline target
        lds[owner] = total
    return lds


def compare_bundles(
    paths: Sequence[str | Path],
    *,
    labels: Sequence[str] | None = None,
    remnant: str | None = None,
    config: str | Path | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Compare a baseline bundle with follow-up bundles (in the given order)."""
    if len(paths) < 2:
        raise InputError("compare needs a baseline and at least one follow-up bundle")
    if labels is not None and len(labels) != len(paths):
        raise InputError(f"--labels gives {len(labels)} labels for {len(paths)} bundles")
    cfg = load_config(config) if not isinstance(config, Mapping) else config
    bundles = [read_bundle(p, None if labels is None else labels[i]) for i, p in enumerate(paths)]
    if len({b.label for b in bundles}) != len(bundles):
        raise InputError("time point labels must be unique (use --labels)")
    base = bundles[0]
    cc = cfg["compare"]
    targets = [int(t) for t in base.doc["recist_target_ids"]]
    base_sod = float(sum(base.lesions[t]["ld_mm"] for t in targets))
    warnings: list[str] = []
    tps: list[dict[str, Any]] = [{
        "label": base.label,
        "target_sod_mm": base_sod,
        "target_ld_mm": {str(t): base.lesions[t]["ld_mm"] for t in targets},
        "change_from_baseline_pct": None,
        "change_from_nadir_pct": None,
        "nadir_mm": None,
        "new_lesions": [],
        "response": None,
        "reason": "baseline",
        "sum_diameters_all_mm": base.doc["sum_diameters"]["all_mm"],
        "tumor_volume_ml": base.doc["liver"]["tumor_volume_ml"],
        "involvement_pct": base.doc["liver"]["involvement_pct"],
        "tumor_volume_change_pct": None,
        "involvement_change_pct_points": None,
        "tracking": [],
    }]
    sods = [base_sod]
    rows: list[dict[str, Any]] = []
    for les in base.doc["lesions"]:
        rows.append({"timepoint": base.label, "lesion_id": les["id"], "baseline_id": les["id"], "kind": "baseline",
                     "ld_mm": les["ld_mm"], "volume_ml": les["volume_ml"], "target": les["id"] in targets})
    for fu in bundles[1:]:
        groups, w = track(base, fu, cfg)
        warnings.extend(w)
        lds = _target_lds(targets, groups, base, fu)
        sod = float(sum(lds.values()))
        nadir = min(sods)
        new = sorted(i for g in groups if g["kind"] == "new" for i in g["followup_ids"])
        ch_base = 100.0 * (sod - base_sod) / base_sod if base_sod > 0 else None
        ch_nadir = 100.0 * (sod - nadir) / nadir if nadir > 0 else None
        if not targets:
            resp = "PD" if new else None
            reason = "new lesion(s) " + ", ".join(map(str, new)) if new else "no measurable target lesion at baseline"
        elif new or (sod - nadir >= cc["pd_increase_min_mm"]
                     and (nadir == 0 or sod >= nadir * (1 + cc["pd_increase_pct"] / 100.0))):
            resp = "PD"
            why = []
            if new:
                why.append(f"new lesion(s) {', '.join(map(str, new))} (LD >= {cc['new_lesion_min_ld_mm']:g} mm)")
            if sod - nadir >= cc["pd_increase_min_mm"] and (nadir == 0 or sod >= nadir * (1 + cc["pd_increase_pct"] / 100.0)):
                why.append(f"target SoD {sod:.1f} mm is >= {cc['pd_increase_pct']:g} % and >= "
                           f"{cc['pd_increase_min_mm']:g} mm above the nadir {nadir:.1f} mm")
            reason = "; ".join(why)
        elif sod == 0.0:
            resp, reason = "CR", "all target lesions disappeared"
        elif sod <= base_sod * (1 - cc["pr_decrease_pct"] / 100.0):
            resp, reason = "PR", f"target SoD {sod:.1f} mm is >= {cc['pr_decrease_pct']:g} % below baseline {base_sod:.1f} mm"
        else:
            resp, reason = "SD", "neither PR nor PD"
        sods.append(sod)
        tv0 = base.doc["liver"]["tumor_volume_ml"]
        tv = fu.doc["liver"]["tumor_volume_ml"]
        tps.append({
            "label": fu.label,
            "target_sod_mm": sod,
            "target_ld_mm": {str(t): v for t, v in lds.items()},
            "change_from_baseline_pct": ch_base,
            "change_from_nadir_pct": ch_nadir,
            "nadir_mm": nadir,
            "new_lesions": new,
            "response": resp,
            "reason": reason,
            "sum_diameters_all_mm": fu.doc["sum_diameters"]["all_mm"],
            "tumor_volume_ml": tv,
            "involvement_pct": fu.doc["liver"]["involvement_pct"],
            "tumor_volume_change_pct": 100.0 * (tv - tv0) / tv0 if tv0 > 0 else None,
            "involvement_change_pct_points": fu.doc["liver"]["involvement_pct"] - base.doc["liver"]["involvement_pct"],
            "tracking": groups,
        })
        fl = fu.lesions
        for g in groups:
            for fid in g["followup_ids"]:
                rows.append({"timepoint": fu.label, "lesion_id": fid,
                             "baseline_id": g["baseline_ids"][0] if len(g["baseline_ids"]) == 1 else None,
                             "kind": g["kind"], "ld_mm": fl[fid]["ld_mm"], "volume_ml": fl[fid]["volume_ml"],
                             "target": any(t in targets for t in g["baseline_ids"])})
            if not g["followup_ids"]:
                for bid in g["baseline_ids"]:
                    rows.append({"timepoint": fu.label, "lesion_id": None, "baseline_id": bid, "kind": "disappeared",
                                 "ld_mm": 0.0, "volume_ml": 0.0, "target": bid in targets})
    rem_label = remnant if remnant is not None else bundles[1].label
    if rem_label not in [b.label for b in bundles]:
        raise InputError(f"--remnant '{rem_label}' is not a time point label ({', '.join(b.label for b in bundles)})")
    if rem_label == base.label:
        warnings.append("--remnant names the baseline: the remnant burden is defined at the first follow-up after treatment")
    rb = next(b for b in bundles if b.label == rem_label)
    rsod = float(rb.doc["sum_diameters"]["all_mm"])
    thr = float(cfg["thresholds"]["remnant_sod_high_mm"])
    return {
        "schema_version": "1.0.0",
        "software": {"name": "liverburden", "version": __version__},
        "recist_target_ids": targets,
        "timepoints": tps,
        "remnant": {
            "label": rem_label,
            "remnant_sod_mm": rsod,
            "remnant_burden": "high" if rsod > thr else "low",
            "threshold_mm": thr,
            "definition": "sum of LD of all lesions (hepatic and extrahepatic) at this time point (Du et al. 2015)",
        },
        "lesions_over_time": rows,
        "warnings": warnings,
        "config": {k: cfg[k] for k in ("compare", "thresholds", "recist")},
    }


def lesions_over_time_csv(doc: Mapping[str, Any]) -> str:
    buf = _io.StringIO()
    cols = ["timepoint", "lesion_id", "baseline_id", "kind", "ld_mm", "volume_ml", "target"]
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in doc["lesions_over_time"]:
        w.writerow({k: ("" if r[k] is None else r[k]) for k in cols})
    return buf.getvalue()


def write_compare(out: str | Path, doc: Mapping[str, Any]) -> dict[str, Path]:
    from .report import write_json_atomic
    from .report._bundle import _atomic_write

    schema = json.loads((Path(__file__).parent / "schemas" / "response.schema.json").read_text())
    import jsonschema

    try:
        jsonschema.validate(dict(doc), schema)
    except jsonschema.ValidationError as exc:
        from ._exceptions import ExportError

        raise ExportError(f"response.json does not match its schema: {exc.message}") from None
    o = Path(out)
    from .report._bundle import begin_outputs

    begin_outputs(o, "response.json")  # written last
    paths = {"response": o / "response.json", "lesions": o / "lesions_over_time.csv"}
    _atomic_write(paths["lesions"], lesions_over_time_csv(doc).encode())
    write_json_atomic(paths["response"], doc)
    return paths
