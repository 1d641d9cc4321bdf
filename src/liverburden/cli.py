"""Command line: ``liverburden measure ...``.

Exit codes (``conventions.md``): 0 success; 2 bad input or configuration (one
line naming the file and the problem, no traceback); 1 an internal error (a
bug: the traceback is printed with --debug). ``main(argv)`` is what tests call.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from ._exceptions import LiverburdenError
from ._version import __version__
from .pacs import COMMANDS as PACS_COMMANDS
from .pacs import add_cli as add_pacs_cli
from .pacs import run_cli as run_pacs_cli

log = logging.getLogger("liverburden")

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2


def _int_list(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one label value")
    return vals


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="liverburden", description="Tumor burden in the liver from CT/MR.")
    p.add_argument("--version", action="version", version=f"liverburden {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("measure", help="measure one study: lesions, diameters, liver burden")
    m.add_argument("--image", required=True, help="DICOM folder (searched recursively), multi-frame DICOM, or NIfTI/NRRD")
    m.add_argument("--liver", required=True, help="liver mask: NIfTI/NRRD/DICOM SEG, a folder of DICOM mask slices "
                   "(3D-IRCADb MASKS_DICOM/liver) or a TotalSegmentator folder (liver.nii.gz); a 'total' "
                   "multi-label map needs --liver-label 5 --ignore-other-labels")
    m.add_argument("--lesions", required=True, nargs="+", help="lesion mask, binary or instance-labelled (NIfTI/NRRD/"
                   "DICOM SEG, DICOM mask-slice folder, TotalSegmentator folder: liver_tumor.nii.gz); several "
                   "inputs or a quoted glob: one lesion each, ids 1..N in the given order")
    m.add_argument("--segments", help="Couinaud segment map (NIfTI/NRRD/DICOM SEG) or a TotalSegmentator "
                   "liver_segments folder (liver_segment_1..8.nii.gz, combined by name)")
    m.add_argument("--series", help="DICOM series to use: SeriesInstanceUID, SeriesNumber or a description pattern")
    m.add_argument("--config", help="TOML configuration (see configs/default.toml)")
    m.add_argument("--out", required=True, help="output folder (the study bundle)")
    m.add_argument("--liver-label", type=_int_list, help="liver label value(s), e.g. 5 for TotalSegmentator 'total'")
    m.add_argument("--lesion-labels", type=_int_list, help="lesion label value(s)")
    m.add_argument("--lesion-mode", choices=["auto", "binary", "instances"], help="how to read the lesion mask")
    m.add_argument("--connectivity", type=int, choices=[6, 18, 26], help="3-D connectivity of a lesion")
    m.add_argument("--ignore-other-labels", action="store_true", help="ignore mask values that are not configured (multi-label organ maps)")
    m.add_argument("--allow-uneven-slices", action="store_true", help="measure a series with missing/uneven slices, with a warning")
    m.add_argument("--resect", help="FLR plan: segments to resect ('5,6,7,8') or right-hepatectomy, left-hepatectomy, "
                   "extended-right, extended-left, left-lateral (needs --segments)")
    m.add_argument("--remnant-mask", help="FLR plan as a remnant mask (non-anatomical resection; needs --segments)")
    m.add_argument("--height-cm", type=float, help="patient height (cm), for BSA and sFLR; overrides DICOM PatientSize")
    m.add_argument("--weight-kg", type=float, help="patient weight (kg), for BSA and sFLR; overrides DICOM PatientWeight")
    m.add_argument("--liver-condition", choices=["normal", "chemotherapy", "cirrhosis"], help="chooses the FLR adequacy threshold")
    m.add_argument("--threads", type=int, default=1, help="threads for the volume scan (default 1)")
    m.add_argument("--no-input-paths", action="store_true", help="do not write inputs.json (input paths can reveal patient data)")
    m.add_argument("--quiet", action="store_true", help="print nothing on success")
    m.add_argument("-v", "--verbose", action="store_true", help="log progress (never identifiers)")
    m.add_argument("--debug", action="store_true", help="print a traceback on internal errors and the text of library "
                   "warnings (both may quote data values: do not share)")
    m.add_argument("--show-descriptions", action="store_true", help="quote SeriesDescription in series listings "
                   "(free text that may hold patient data; withheld by default)")
    m.add_argument("--report", action="store_true", help="also write OUT/report.html, the visual QC report")
    g = sub.add_parser("margin", help="ablation margin: register post to pre CT, 3-D margin per tumor, A0/A1/A2")
    g.add_argument("--pre", required=True, help="pre-ablation (planning) CT: DICOM folder/file or NIfTI/NRRD")
    g.add_argument("--post", required=True, help="post-ablation (control) CT: DICOM folder/file or NIfTI/NRRD")
    g.add_argument("--tumor", required=True, help="tumor mask on the pre scan (file or mask folder, as --liver)")
    g.add_argument("--zone", required=True, help="ablation-zone mask on the post scan (file or mask folder)")
    g.add_argument("--liver-pre", help="liver mask on the pre scan (initialisation, metric focus, quality)")
    g.add_argument("--liver-post", help="liver mask on the post scan")
    g.add_argument("--registration", choices=["rigid", "affine", "deformable", "none"], help="default: config (affine)")
    g.add_argument("--margin-mm", type=float, help="A0 margin threshold, mm (default 5)")
    g.add_argument("--landmarks", help="CSV x_pre,y_pre,z_pre,x_post,y_post,z_post (LPS mm)")
    g.add_argument("--segments", help="Couinaud map on the pre scan (names the segment of the minimal margin)")
    g.add_argument("--series-pre", help="DICOM series of the pre scan (UID, number or description)")
    g.add_argument("--series-post", help="DICOM series of the post scan")
    g.add_argument("--config", help="TOML configuration")
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--no-pictures", action="store_true", help="do not write the per-tumor PNGs")
    g.add_argument("--no-input-paths", action="store_true", help="do not write inputs.json")
    g.add_argument("--quiet", action="store_true")
    g.add_argument("-v", "--verbose", action="store_true")
    g.add_argument("--debug", action="store_true")
    g.add_argument("--show-descriptions", action="store_true", help="quote SeriesDescription in series listings")
    g.add_argument("--report", action="store_true", help="also write OUT/report.html, the visual QC report")
    c = sub.add_parser("compare", help="follow-up comparison: lesion tracking, RECIST 1.1, remnant burden")
    c.add_argument("bundles", nargs="+", help="baseline bundle, then follow-up bundles, in time order")
    c.add_argument("--labels", help="comma-separated time point labels (default: bundle folder names)")
    c.add_argument("--remnant", help="time point label of the remnant burden (default: the first after baseline)")
    c.add_argument("--config", help="TOML configuration")
    c.add_argument("--out", required=True, help="output folder (response.json, lesions_over_time.csv)")
    c.add_argument("--quiet", action="store_true")
    c.add_argument("-v", "--verbose", action="store_true")
    c.add_argument("--debug", action="store_true")
    c.add_argument("--report", action="store_true", help="also write OUT/report.html, the visual QC report")
    b = sub.add_parser("batch", help="many studies from a manifest, locally or on Dask")
    b.add_argument("manifest", help="CSV manifest (columns: see README)")
    b.add_argument("--out", required=True, help="results folder")
    b.add_argument("--workers", type=int, default=1, help="worker processes (LocalCluster); 1 = in this process")
    b.add_argument("--scheduler", help="an existing Dask scheduler, e.g. tcp://HOST:8786")
    b.add_argument("--resume", action="store_true", help="skip studies already done with the same inputs and config")
    b.add_argument("--survival", help="CSV patient,time_months,event: Kaplan-Meier by remnant burden")
    b.add_argument("--config", help="TOML configuration")
    b.add_argument("--quiet", action="store_true")
    b.add_argument("-v", "--verbose", action="store_true")
    b.add_argument("--debug", action="store_true")
    b.add_argument("--report", action="store_true",
                   help="also write report.html in every study, patient and the cohort folder")
    w = sub.add_parser("warmup", help="compile every numba kernel once (or load it from the cache), print the time")
    w.add_argument("--json", action="store_true", help="print the result as one JSON object")
    from .report._html import add_cli as _add_report_cli

    _add_report_cli(sub)
    add_pacs_cli(sub)
    return p


def _cmd_batch(args: argparse.Namespace) -> int:
    from .batch import EXIT_SOME_FAILED, run_batch

    summary = run_batch(args.manifest, args.out, workers=args.workers, scheduler=args.scheduler, resume=args.resume,
                        config=args.config, survival=args.survival, progress=not args.quiet)
    if not args.quiet:
        print(f"{summary['ok']}/{summary['studies']} studies ok, {summary['failed']} failed "
              f"({summary['skipped_by_resume']} skipped by --resume); {summary['patients_compared']} patients compared; "
              f"tables in {args.out}")
    if args.report:
        from .report._html import write_report

        root = Path(args.out)
        folders = sorted({p.parent for pat in ("studies/**/measurements.json", "studies/**/margin.json",
                                               "patients/**/response.json") for p in root.glob(pat)})
        for folder in folders + [root]:
            try:
                write_report(folder, config=args.config)
            except LiverburdenError as exc:  # one study's report must not fail the batch
                print(f"warning: no report for {folder.relative_to(root) if folder != root else 'the cohort'}: {exc}",
                      file=sys.stderr)
    return EXIT_OK if summary["failed"] == 0 else EXIT_SOME_FAILED


def _cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare_bundles, write_compare

    labels = [x.strip() for x in args.labels.split(",")] if args.labels else None
    doc = compare_bundles(args.bundles, labels=labels, remnant=args.remnant, config=args.config)
    write_compare(args.out, doc)
    if not args.quiet:
        for tp in doc["timepoints"]:
            ch = tp["change_from_baseline_pct"]
            print(
                f"{tp['label']:<16} target SoD {tp['target_sod_mm']:7.1f} mm"
                + ("" if ch is None else f" ({ch:+.1f} % vs baseline)")
                + f"  {tp['response'] or '-':<3} {tp['reason']}"
            )
        r = doc["remnant"]
        print(f"remnant burden at {r['label']}: SoD {r['remnant_sod_mm']:.1f} mm -> {r['remnant_burden']}")
        for w in doc["warnings"]:
            print(f"warning: {w}")
        print(f"wrote {args.out}/response.json")
    if args.report:
        from .report._html import write_report

        write_report(args.out, config=args.config)
    return EXIT_OK


def _cmd_margin(args: argparse.Namespace) -> int:
    from .pipeline import margin_study

    run = margin_study(
        args.pre, args.post, args.tumor, args.zone, args.out,
        liver_pre=args.liver_pre, liver_post=args.liver_post, registration=args.registration,
        margin_mm=args.margin_mm, landmarks=args.landmarks, segments=args.segments,
        series_pre=args.series_pre, series_post=args.series_post, config=args.config,
        input_paths=not args.no_input_paths, pictures=not args.no_pictures,
    )
    if not args.quiet:
        d = run.document
        r = d["registration"]
        q = "" if r["liver_dice"] is None else f", liver Dice {r['liver_dice']:.3f}, MSD {r['liver_msd_mm']:.2f} mm"
        print(f"registration {r['method']}: {'ok' if r['ok'] else 'FAILED: ' + str(r['reason'])}{q}")
        for t in d["tumors"]:
            cls = t["classification"] or "not assessed"
            print(
                f"  tumor {t['id']:>3}: min margin {t['min_margin_mm']:6.2f} mm (+-{t['uncertainty_mm']:.1f}), "
                f"coverage {t['coverage_pct']:6.2f} %, >= {d['threshold_mm']:g} mm on "
                f"{100 * t['surface_fraction']['at_least_threshold']:.1f} % of the surface: {cls}"
                + (" (uncertain)" if t["uncertain"] else "")
            )
        for w in d["warnings"]:
            print(f"warning: {w}")
        print(f"wrote {args.out}/margin.json (total {run.timing_s['total']:.1f} s)")
    if args.report:
        from .report._html import write_report

        write_report(args.out, config=args.config)
    return EXIT_OK


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    o: dict[str, Any] = {}
    labels: dict[str, Any] = {}
    if args.liver_label:
        labels["liver"] = args.liver_label
    if args.lesion_labels:
        labels["lesion"] = args.lesion_labels
    if args.lesion_mode:
        labels["lesion_mode"] = args.lesion_mode
    if args.ignore_other_labels:
        labels["other_liver_values"] = "ignore"
        labels["other_lesion_values"] = "ignore"
    if labels:
        o["labels"] = labels
    if args.connectivity:
        o["lesions"] = {"connectivity": args.connectivity}
    if args.allow_uneven_slices:
        o["geometry"] = {"allow_uneven_slices": True}
    return o


def _summary(doc: dict[str, Any], out: Path, timing: dict[str, float]) -> str:
    liver = doc["liver"]
    sod = doc["sum_diameters"]
    lines = [
        f"{doc['lesion_count']} lesion(s); liver {liver['volume_ml']:.1f} mL, tumor {liver['tumor_volume_ml']:.2f} mL, "
        f"involvement {liver['involvement_pct']:.2f} %; SoD all {sod['all_mm']:.1f} mm, RECIST {sod['recist_mm']:.1f} mm",
    ]
    for les in doc["lesions"]:
        lines.append(
            f"  lesion {les['id']:>3} {les['location']:<12} {les['volume_ml']:9.3f} mL  LD {les['ld_mm']:6.1f} mm  "
            f"SA {les['sa_mm']:6.1f} mm  3D {les['max3d_mm']:6.1f} mm" + (f"  segment {les['segment']}" if les["segment"] else "")
        )
    an = doc.get("anatomy")
    if an:
        lines.append(f"anatomy: ENETS pattern {an['enets_pattern']} ({an['enets_reason']}); bilobar {an['bilobar']}")
    flr = doc.get("flr")
    if flr:
        sflr = flr["sflr_pct"]["vauthey"]
        lines.append(
            f"FLR ({flr['plan']}: remnant {', '.join(flr['remnant_segments'])}): {flr['flr_ml']:.1f} mL, "
            f"{flr['flr_pct']:.1f} %" + (f", sFLR {sflr:.1f} % (Vauthey)" if sflr is not None else "")
            + f"; {'ADEQUATE' if flr['adequate'] else 'NOT ADEQUATE'}: " + "; ".join(flr["reasons"])
        )
    for w in doc["warnings"]:
        lines.append(f"warning: {w}")
    lines.append(
        f"wrote {out}/measurements.json (load {timing['load']:.2f} s, measure {timing['measure']:.3f} s, total {timing['total']:.2f} s)"
    )
    return "\n".join(lines)


def _cmd_measure(args: argparse.Namespace) -> int:
    from .kernels import _prewarm
    from .pipeline import measure_study

    _prewarm.start()  # on an empty kernel cache: compile two kernels in parallel (README "Cold start")

    run = measure_study(
        args.image,
        args.liver,
        args.lesions,
        args.out,
        segments=args.segments,
        series=args.series,
        config=args.config,
        overrides=_overrides(args),
        threads=args.threads,
        input_paths=not args.no_input_paths,
        resect=args.resect,
        remnant_mask=args.remnant_mask,
        height_cm=args.height_cm,
        weight_kg=args.weight_kg,
        liver_condition=args.liver_condition,
    )
    if not args.quiet:
        print(_summary(run.document, Path(args.out), run.timing_s))
    if args.report:
        from .report._html import write_report

        write_report(args.out, config=args.config)
    return EXIT_OK


def _cmd_warmup(args: argparse.Namespace) -> int:
    from .pipeline import warmup

    r = warmup()
    if args.json:
        print(json.dumps(r))
    else:
        print(f"liverburden warmup: {r['compiled']} kernel specialisations compiled, {r['loaded_from_cache']} loaded "
              f"from the cache, in {r['seconds']:.1f} s; cache: {r['cache_dir']} ({r['cache_rule']}); "
              f"ahead-of-time kernels: {r['aot_reason']}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (tests call it directly)."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    level = logging.INFO if getattr(args, "verbose", False) else logging.ERROR
    logging.basicConfig(level=level, format="liverburden %(levelname)s: %(message)s")
    for h in logging.getLogger().handlers:
        h.setLevel(level)  # libraries that set their own logger levels (Dask) stay quiet too
    if not getattr(args, "verbose", False):
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
    from . import _privacy
    from .io import show_descriptions

    _privacy.install(debug=getattr(args, "debug", False))
    with show_descriptions(getattr(args, "show_descriptions", False)):
        return _dispatch(parser, args)


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        if args.command in PACS_COMMANDS:
            return run_pacs_cli(args)
        if args.command == "measure":
            return _cmd_measure(args)
        if args.command == "margin":
            return _cmd_margin(args)
        if args.command == "compare":
            return _cmd_compare(args)
        if args.command == "batch":
            return _cmd_batch(args)
        if args.command == "warmup":
            return _cmd_warmup(args)
        if args.command == "report":
            from .report._html import run_cli as _run_report

            return _run_report(args)
        parser.error(f"unknown command {args.command}")
    except LiverburdenError as exc:
        print(f"liverburden: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MemoryError:
        print("liverburden: error: out of memory reading the inputs (an image larger than this machine can hold; "
              "lower limits.max_voxels to refuse such files up front)", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("liverburden: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: say so, without data
        if getattr(args, "debug", False):
            raise
        print(
            f"liverburden: internal error ({type(exc).__name__}); rerun with --debug for a traceback "
            "and report it",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
