"""The visual QC report: ``OUT_DIR/report.html``, every number beside the image it came from.

:func:`write_report` reads whatever output files a folder holds and writes one
self-contained HTML file (PNG images embedded as base64, no script, no external
resource: a Content-Security-Policy forbids any), readable offline and printable
to PDF (print stylesheet), plus the PNGs it is made of in ``report_images/``.

=====================================  ===========================================
files in OUT_DIR                       sections
=====================================  ===========================================
``measurements.json`` (+ label map)    summary, flags, lesions with calipers,
                                       overview, anatomy, FLR plan, provenance
``margin.json`` + ``zone_in_pre``      registration check, per-tumor margins
``response.json`` (``compare``)        target SoD over time, responses, remnant
``studies.csv`` / ``response.csv`` /   cohort: waterfall, spider plot, Kaplan-Meier,
``survival.json`` (``batch``)          study table
=====================================  ===========================================

The CT is not in a bundle: it is reloaded from the paths of ``inputs.json`` (a
local file) and used only when its content hash equals the one recorded at
measurement time and its grid is the bundle's; otherwise the masks are drawn on
a blank background and the report says why. Input paths are never written into
the report.

Every number shown sits in an element with ``data-src`` (the file), ``data-key``
(its path in that file: dotted keys, list indices as integers; for CSV files
``<row>.<column>``), ``data-value`` (the exact value, JSON) and ``data-decimals``
(the precision shown), so a test can compare the page with the files.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import html
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .._exceptions import ExportError, InputError, LiverburdenError
from .._version import __version__
from ..config import resolve_config
from ..geometry import Volume, match_to_grid
from ..io import StudyHeader, hash_files, load_image, load_mask_on, read_volume_file
from ._bundle import _atomic_write
from ._views import LIVER_WINDOW


class _Figures:
    """``_figures`` (matplotlib) imported on first use, not when the CLI builds its
    parser: commands that draw nothing start ~0.5 s faster."""

    def __getattr__(self, name: str) -> Any:
        from . import _figures

        return getattr(_figures, name)


F = _Figures()

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
IMAGE_DIR = "report_images"

__all__ = ["REPORT_FILE", "IMAGE_DIR", "add_cli", "config_hash", "run_cli", "write_report"]


# --------------------------------------------------------------------------- small helpers


def config_hash(config: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a resolved configuration (sorted keys, no spaces, UTF-8)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _e(text: Any) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _n(value: Any, src: str, key: str, nd: int = 1, unit: str = "") -> str:
    """A number with its source: ``<span data-src data-key data-value data-decimals>``."""
    v = _num(value)
    if v is None:
        return f'<span class="num" data-src="{_e(src)}" data-key="{_e(key)}" data-value="null">&ndash;</span>'
    if isinstance(value, int) and not isinstance(value, bool):
        text, jv, nd = f"{value:d}", json.dumps(value), 0
    else:
        text, jv = f"{v:.{nd}f}", json.dumps(v)
    u = f"&nbsp;{_e(unit)}" if unit else ""
    return (f'<span class="num" data-src="{_e(src)}" data-key="{_e(key)}" data-value="{_e(jv)}" '
            f'data-decimals="{nd}">{text}</span>{u}')


def _b(value: Any, src: str, key: str, yes: str = "yes", no: str = "no") -> str:
    if value is None:
        return f'<span class="bool" data-src="{_e(src)}" data-key="{_e(key)}" data-value="null">&ndash;</span>'
    return (f'<span class="bool" data-src="{_e(src)}" data-key="{_e(key)}" data-value="{json.dumps(bool(value))}">'
            f"{_e(yes if value else no)}</span>")


def _t(value: Any, src: str, key: str) -> str:
    """A text value with its source (segment names, labels, classifications)."""
    return (f'<span class="txt" data-src="{_e(src)}" data-key="{_e(key)}" data-value="{_e(json.dumps(value))}">'
            f"{_e('–' if value is None else value)}</span>")


def _row(*cells: str, head: bool = False) -> str:
    tag = "th" if head else "td"
    return "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"


def _table(rows: Sequence[str], cls: str = "") -> str:
    return f'<table class="{cls}">' + "".join(rows) + "</table>"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a JSON object")
    return doc


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable CSV file ({exc})") from None


def _grid_of(geometry: Mapping[str, Any], what: str) -> Volume:
    """An empty Volume with the geometry of a JSON ``image`` block (no pixels)."""
    try:
        size = tuple(int(s) for s in geometry["size"])
        return Volume(np.broadcast_to(np.zeros((), np.uint8), size), tuple(geometry["spacing_mm"]),
                      tuple(geometry["origin_mm"]), np.asarray(geometry["direction"], dtype=float), source=what)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{what}: the image geometry is incomplete ({exc})") from None


@dataclass
class _Context:
    """What one report run has learnt: notes for the reader, pictures, resolved settings."""

    out: Path
    window: tuple[float, float]
    notes: list[str] = field(default_factory=list)
    pictures: list[F.Picture] = field(default_factory=list)

    def redact(self, text: str, paths: Sequence[str | Path]) -> str:
        """Remove input paths from a message (they may reveal patient data)."""
        out = str(text)
        cands = set()
        for p in paths:
            cands.add(str(p))
            cands.add(str(Path(p).parent))
            try:
                cands.add(str(Path(p).resolve()))
            except OSError:
                pass
        for c in sorted(cands, key=len, reverse=True):
            if len(c) > 1:
                out = out.replace(c, "[input]")
        return out


# --------------------------------------------------------------------------- loading


def _load_ct(
    ctx: _Context,
    ref: Volume,
    *,
    image: Volume | str | Path | None,
    paths: Sequence[str] | None,
    expected_sha256: str | None,
    series_number: int | None,
    match_mask: Path | None,
    cfg: Mapping[str, Any],
    role: str = "CT image",
) -> np.ndarray | None:
    """The CT on the bundle's grid, or None with a note saying why not."""
    if isinstance(image, Volume):
        return np.asarray(match_to_grid(image, ref, what="image"))
    if image is not None:  # an explicit path: a mismatch is the caller's error
        vol, _, _, used = load_image(image, config=cfg, match_mask=match_mask)
        arr = np.asarray(match_to_grid(vol, ref, what="image"))
        if expected_sha256 and hash_files(used) != expected_sha256:
            ctx.notes.append(f"The {role} given is not the one measured (its content hash differs); "
                             "the images may not match the numbers.")
        return arr
    if not paths:
        ctx.notes.append(f"The {role} is not available (no inputs.json, written only without --no-input-paths): "
                         "masks are drawn on a blank background.")
        return None
    ps = [Path(p) for p in paths]
    if not all(p.exists() for p in ps):
        ctx.notes.append(f"The {role} listed in inputs.json was not found (moved, deleted, or a relative path "
                         "from another working folder): masks are drawn on a blank background.")
        return None
    target = ps[0] if len(ps) == 1 else Path(os.path.commonpath([str(p) for p in ps]))
    try:
        series = str(series_number) if (len(ps) > 1 and series_number is not None) else None
        vol, _, _, used = load_image(target, series=series, config=cfg, match_mask=match_mask)
        if expected_sha256 and hash_files(used) != expected_sha256:
            ctx.notes.append(f"The {role} listed in inputs.json has changed since the measurement (content hash "
                             "differs): it is not used, masks are drawn on a blank background.")
            return None
        return np.asarray(match_to_grid(vol, ref, what="image"))
    except LiverburdenError as exc:
        ctx.notes.append(f"The {role} could not be reloaded ({type(exc).__name__}: "
                         f"{ctx.redact(str(exc), paths)[:300]}): masks are drawn on a blank background.")
        return None


def _load_mask(
    ctx: _Context,
    ref: Volume,
    paths: Sequence[str] | None,
    expected_sha256: str | None,
    *,
    role: str,
    what: str,
    cfg: Mapping[str, Any],
) -> np.ndarray | None:
    """A mask named in inputs.json, on the bundle's grid, or None with a note."""
    if not paths:
        return None
    from ..io._mask_inputs import mask_files

    ps = [Path(p) for p in paths]  # a file, a folder, or several lesion inputs (ids in this order)
    if not all(p.exists() for p in ps):
        ctx.notes.append(f"The {what} listed in inputs.json was not found: it is not drawn.")
        return None
    try:
        if expected_sha256 and hash_files(mask_files(ps, role, what)) != expected_sha256:
            ctx.notes.append(f"The {what} listed in inputs.json has changed since the measurement (content hash "
                             "differs): it is not drawn.")
            return None
        vol = load_mask_on(ps if len(ps) > 1 else ps[0], ref, StudyHeader(), config=cfg, role=role, what=what)
        return np.asarray(vol.array)
    except LiverburdenError as exc:
        ctx.notes.append(f"The {what} could not be read ({type(exc).__name__}: "
                         f"{ctx.redact(str(exc), paths)[:300]}): it is not drawn.")
        return None


def _bundle_config(doc: Mapping[str, Any], ctx: _Context, what: str) -> dict[str, Any]:
    try:
        return resolve_config(doc.get("config") or None)
    except LiverburdenError as exc:
        ctx.notes.append(f"The configuration recorded in {what} does not validate with this version "
                         f"({exc}); defaults are used to read the masks.")
        return resolve_config(None)


def _sha(doc: Mapping[str, Any], role: str, inputs: Mapping[str, Any] | None = None) -> str | None:
    h = (doc.get("inputs") or {}).get(role)
    if isinstance(h, Mapping) and h.get("sha256"):
        return str(h["sha256"])
    if inputs and isinstance(inputs.get("sha256"), Mapping):
        return inputs["sha256"].get(role)
    return None


# --------------------------------------------------------------------------- study section


def _study_sections(ctx: _Context, doc: dict[str, Any], inputs: dict[str, Any] | None,
                    image: Volume | str | Path | None) -> list[tuple[str, str, str]]:
    src = "measurements.json"
    cfg = _bundle_config(doc, ctx, src)
    ref = _grid_of(doc.get("image") or {}, src)
    labels_path = ctx.out / "lesion_labels.nii.gz"
    labels = None
    if labels_path.exists():
        try:
            labels = np.asarray(match_to_grid(read_volume_file(labels_path, "lesion label map"), ref,
                                              what="lesion label map"))
        except LiverburdenError as exc:
            ctx.notes.append(f"lesion_labels.nii.gz does not fit measurements.json ({exc}); lesion pictures are "
                             "omitted.")
    else:
        ctx.notes.append("lesion_labels.nii.gz is missing from the bundle: lesion pictures are omitted.")
    ins = (inputs or {}).get("inputs") or {}
    source = doc.get("source") or {}
    ct = _load_ct(ctx, ref, image=image, paths=ins.get("image"), expected_sha256=_sha(doc, "image", inputs),
                  series_number=source.get("series_number"), match_mask=labels_path if labels is not None else None,
                  cfg=cfg)
    liver_raw = _load_mask(ctx, ref, ins.get("liver"), _sha(doc, "liver", inputs), role="liver", what="liver mask",
                           cfg=cfg)
    liver = None if liver_raw is None else F.label_mask(liver_raw, cfg["labels"]["liver"])
    segments = _load_mask(ctx, ref, ins.get("segments"), _sha(doc, "segments", inputs), role="segment",
                          what="segment map", cfg=cfg)
    remnant = _load_mask(ctx, ref, ins.get("remnant"), _sha(doc, "remnant", inputs), role="remnant",
                         what="remnant mask", cfg=cfg)
    if source.get("modality") not in (None, "CT") and ct is not None:
        lo, hi = np.percentile(ct[liver] if liver is not None and liver.any() else ct, [1, 99])
        win = (float(hi - lo) or 1.0, float((hi + lo) / 2))
        ctx.notes.append(f"{source.get('modality')} image: shown with a window from its 1st to 99th percentile "
                         "instead of the CT liver window.")
    else:
        win = ctx.window

    sections: list[tuple[str, str, str]] = []
    lesions = list(doc.get("lesions") or [])
    liv = doc.get("liver") or {}
    sod = doc.get("sum_diameters") or {}
    th = cfg["thresholds"]

    # summary ------------------------------------------------------------------------
    rows = [
        _row("lesions", _n(doc.get("lesion_count"), src, "lesion_count")),
        _row("total tumor volume (hepatic)", _n(liv.get("tumor_volume_ml"), src, "liver.tumor_volume_ml", 2, "mL")),
        _row("total liver volume (liver mask &cup; hepatic lesions)", _n(liv.get("volume_ml"), src,
                                                                             "liver.volume_ml", 1, "mL")),
        _row("hepatic involvement", _n(liv.get("involvement_pct"), src, "liver.involvement_pct", 2, "%")),
        _row("sum of diameters, all lesions", _n(sod.get("all_mm"), src, "sum_diameters.all_mm", 1, "mm")),
        _row("sum of diameters, RECIST 1.1 targets", _n(sod.get("recist_mm"), src, "sum_diameters.recist_mm", 1,
                                                        "mm")
             + " (targets: " + ", ".join(_n(v, src, f"recist_target_ids.{i}")
                                         for i, v in enumerate(doc.get("recist_target_ids") or [])) + ")"),
        _row("sum of diameters, hepatic / extrahepatic",
             _n(sod.get("hepatic_mm"), src, "sum_diameters.hepatic_mm", 1, "mm") + " / "
             + _n(sod.get("extrahepatic_mm"), src, "sum_diameters.extrahepatic_mm", 1, "mm")),
        _row("liver truncated by the field of view", _b(liv.get("truncated"), src, "liver.truncated")
             + ("" if not liv.get("truncated_edges") else " (" + _e(", ".join(liv["truncated_edges"])) + ")")),
        _row("volumes reliable", _b(liv.get("reliable"), src, "liver.reliable")),
    ]
    body = _table(rows, "kv")
    if _num(liv.get("involvement_pct")) is not None:
        pic = F.involvement_picture(float(liv["involvement_pct"]), float(th["involvement_favourable_pct"]),
                                    float(th["involvement_milan_pct"]))
        ctx.pictures.append(pic)
        body += _figure_html(ctx, pic)
    flags = doc.get("flags") or []
    if flags:
        fr = [_row("quantity", "rule", "value", "met", "reliable", "meaning", head=True)]
        for i, fl in enumerate(flags):
            fr.append(_row(_e(fl.get("quantity")),
                           _e(fl.get("operator")) + " " + _n(fl.get("threshold"), src, f"flags.{i}.threshold", 1),
                           _n(fl.get("value"), src, f"flags.{i}.value", 2),
                           _b(fl.get("met"), src, f"flags.{i}.met", "MET", "not met"),
                           _b(fl.get("reliable"), src, f"flags.{i}.reliable"), _e(fl.get("meaning"))))
        body += "<h3>Flags</h3>" + _table(fr)
    warnings = doc.get("warnings") or []
    body += "<h3>Warnings</h3>" + ("<ul class='warnings'>" + "".join(
        f"<li>{_t(w, src, f'warnings.{i}')}</li>" for i, w in enumerate(warnings)) + "</ul>"
        if warnings else "<p>none</p>")
    sections.append(("summary", "Study summary", body))

    # lesions -------------------------------------------------------------------------
    if lesions:
        parts = []
        for i, les in enumerate(lesions):
            k = f"lesions.{i}."
            seg = les.get("segment")
            tbl = _table([
                _row("id", _n(les.get("id"), src, k + "id")),
                _row("location", _t(les.get("location"), src, k + "location")),
                _row("segment", _t(seg, src, k + "segment") + (f" ({_e(F.roman(seg))})" if seg else "")),
                _row("volume", _n(les.get("volume_ml"), src, k + "volume_ml", 3, "mL")),
                _row("LD", _n(les.get("ld_mm"), src, k + "ld_mm", 1, "mm")),
                _row("SA", _n(les.get("sa_mm"), src, k + "sa_mm", 1, "mm")),
                _row("max 3D", _n(les.get("max3d_mm"), src, k + "max3d_mm", 1, "mm")),
                _row("LD slice", _n(les.get("slice_index"), src, k + "slice_index")),
                _row("RECIST measurable / target", _b(les.get("recist_measurable"), src, k + "recist_measurable")
                     + " / " + _b(les.get("recist_target"), src, k + "recist_target")),
                _row("components", _n(les.get("components"), src, k + "components")),
            ], "kv")
            fig_html = ""
            if labels is not None:
                pic = F.lesion_picture(ref, ct, labels, liver, les, window=win)
                ctx.pictures.append(pic)
                for note in pic.drawn.get("notes", []):
                    ctx.notes.append(f"lesion {les.get('id')}: {note}")
                fig_html = _figure_html(ctx, pic)
            parts.append(f'<div class="lesion" id="lesion-{_e(les.get("id"))}"><h3>Lesion {_e(les.get("id"))}</h3>'
                         f'<div class="pair">{fig_html}{tbl}</div></div>')
        sections.append(("lesions", "Lesions", "".join(parts)))
    else:
        sections.append(("lesions", "Lesions", "<p>No lesion (an empty lesion mask: 0 lesions, involvement 0, "
                                               "SoD 0).</p>"))

    # overview ------------------------------------------------------------------------
    if labels is not None and lesions:
        pic = F.overview_picture(ref, ct, labels, liver, lesions, window=win)
        ctx.pictures.append(pic)
        sections.append(("overview", "Overview", _figure_html(ctx, pic)))

    # anatomy -------------------------------------------------------------------------
    an = doc.get("anatomy")
    if an:
        rows = [_row("segment", "volume", "tumor volume", "involvement", "lesions", head=True)]
        for key, s in (an.get("segments") or {}).items():
            if not s.get("present", True):
                continue
            k = f"anatomy.segments.{key}."
            rows.append(_row(f"{_e(F.roman(key))}", _n(s.get("volume_ml"), src, k + "volume_ml", 1, "mL"),
                             _n(s.get("tumor_volume_ml"), src, k + "tumor_volume_ml", 2, "mL"),
                             _n(s.get("involvement_pct"), src, k + "involvement_pct", 2, "%"),
                             _e(", ".join(str(x) for x in s.get("lesion_ids") or []))))
        lobes = [_row("lobe", "segments", "volume", "tumor volume", "involvement", head=True)]
        for key, lo in (an.get("lobes") or {}).items():
            k = f"anatomy.lobes.{key}."
            lobes.append(_row(_e(key), _e(", ".join(F.roman(s) for s in lo.get("segments") or [])),
                              _n(lo.get("volume_ml"), src, k + "volume_ml", 1, "mL"),
                              _n(lo.get("tumor_volume_ml"), src, k + "tumor_volume_ml", 2, "mL"),
                              _n(lo.get("involvement_pct"), src, k + "involvement_pct", 2, "%")))
        body = (f"<p>ENETS distribution pattern {_t(an.get('enets_pattern'), src, 'anatomy.enets_pattern')}: "
                f"{_e(an.get('enets_reason'))}. Bilobar: {_b(an.get('bilobar'), src, 'anatomy.bilobar')}. "
                f"Unassigned liver: {_n((an.get('unassigned') or {}).get('volume_ml'), src, 'anatomy.unassigned.volume_ml', 1, 'mL')}."
                "</p>" + _table(rows) + _table(lobes))
        sections.append(("anatomy", "Anatomy", body))

    # FLR ----------------------------------------------------------------------------
    flr = doc.get("flr")
    if flr:
        k = "flr."
        sflr = flr.get("sflr_pct") or {}
        slv = flr.get("slv_ml") or {}
        adequate = flr.get("adequate")
        rows = [
            _row("plan", _t(flr.get("plan"), src, k + "plan") + f" (from {_e(flr.get('source'))})"),
            _row("remnant segments", _e(", ".join(F.roman(s) for s in flr.get("remnant_segments") or []))),
            _row("resected segments", _e(", ".join(F.roman(s) for s in flr.get("resected_segments") or []))),
            _row("FLR", _n(flr.get("flr_ml"), src, k + "flr_ml", 1, "mL")),
            _row("%FLR (of functional liver)", _n(flr.get("flr_pct"), src, k + "flr_pct", 1, "%")),
            _row("sFLR Vauthey / Urata", _n(sflr.get("vauthey"), src, k + "sflr_pct.vauthey", 1, "%") + " / "
                 + _n(sflr.get("urata"), src, k + "sflr_pct.urata", 1, "%")),
            _row("SLV Vauthey / Urata", _n(slv.get("vauthey"), src, k + "slv_ml.vauthey", 0, "mL") + " / "
                 + _n(slv.get("urata"), src, k + "slv_ml.urata", 0, "mL")),
            _row("BSA (Mosteller)", _n(flr.get("bsa_m2"), src, k + "bsa_m2", 2, "m²")
                 + f" (height {_n(flr.get('height_cm'), src, k + 'height_cm', 0, 'cm')} from "
                 f"{_e(flr.get('height_source') or '–')}, weight {_n(flr.get('weight_kg'), src, k + 'weight_kg', 0, 'kg')}"
                 f" from {_e(flr.get('weight_source') or '–')})"),
            _row("adequacy", f"<strong class='{'ok' if adequate else 'bad'}'>"
                 + _b(adequate, src, k + "adequate", "ADEQUATE", "NOT ADEQUATE") + "</strong>"
                 + f" (basis {_e(flr.get('adequacy_basis'))}, threshold "
                 + _n(flr.get("threshold_pct"), src, k + "threshold_pct", 0, "%")
                 + f", {_e(flr.get('liver_condition'))} liver)"),
            _row("contiguous remnant", _b(flr.get("contiguous"), src, k + "contiguous")),
            _row("cytoreduction", _n(flr.get("cytoreduction_pct"), src, k + "cytoreduction_pct", 1, "%")),
        ]
        body = _table(rows, "kv") + "<h3>Reasons</h3><ul>" + "".join(
            f"<li>{_t(r, src, f'flr.reasons.{i}')}</li>"
            for i, r in enumerate(flr.get("reasons") or [])) + "</ul>"
        if segments is not None:
            from ..measure._anatomy import segment_names

            names = {v: n for v, n in segment_names(cfg).items() if np.any(segments == v)}
            pic = F.flr_picture(ref, ct, segments, names, liver, flr.get("remnant_segments") or [],
                                flr.get("resected_segments") or [],
                                remnant_mask=remnant if flr.get("source") == "mask" else None, window=win)
            ctx.pictures.append(pic)
            body = _figure_html(ctx, pic) + body
        else:
            body = "<p class='note'>The segment map is not available: the plan is not drawn.</p>" + body
        sections.append(("flr", "Future liver remnant (FLR) plan", body))
    return sections


# --------------------------------------------------------------------------- margin section

_VERDICT = {
    "A0": "A0: complete ablation with a margin of at least {thr:g} mm all around the tumor",
    "A1": "A1: the tumor is completely covered, but the margin is below {thr:g} mm somewhere "
          "(minimal margin {m:.1f} mm)",
    "A2": "A2: incomplete ablation: part of the tumor lies outside the ablation zone (coverage {cov:.1f} %)",
}


def verdict_words(t: Mapping[str, Any], threshold_mm: float) -> str:
    """A0/A1/A2 (or "not assessed") and "uncertain" in words."""
    cls = t.get("classification")
    m = float(t.get("min_margin_mm") or 0.0)
    if cls is None:
        text = "not assessed: the registration failed its quality check, so no A0/A1/A2 verdict is issued"
    else:
        text = _VERDICT.get(str(cls), str(cls)).format(thr=threshold_mm, m=m, cov=float(t.get("coverage_pct") or 0))
    if t.get("uncertain"):
        u = float(t.get("uncertainty_mm") or 0.0)
        near = 0.0 if abs(m) <= abs(m - threshold_mm) else threshold_mm
        text += (f". Uncertain: the minimal margin ({m:.1f} mm) lies within the uncertainty (±{u:.1f} mm) of "
                 f"{near:g} mm, so the class could change")
    return text + "."


def _transform(ctx: _Context, mdoc: Mapping[str, Any]):
    import SimpleITK as sitk

    tfm = ctx.out / "transform_pre_to_post.tfm"
    if tfm.exists():
        try:
            return sitk.ReadTransform(str(tfm))
        except RuntimeError:
            ctx.notes.append("transform_pre_to_post.tfm cannot be read; the matrix of margin.json is used.")
    mat = (mdoc.get("registration") or {}).get("matrix_lps")
    if mat is not None:
        m = np.asarray(mat, dtype=float)
        tx = sitk.AffineTransform(3)
        tx.SetMatrix(tuple(float(v) for v in m[:3, :3].ravel()))
        tx.SetTranslation(tuple(float(v) for v in m[:3, 3]))
        return tx
    if (mdoc.get("registration") or {}).get("method") == "none":
        return sitk.Transform(3, sitk.sitkIdentity)
    return None


def _margin_sections(ctx: _Context, mdoc: dict[str, Any], inputs: dict[str, Any] | None,
                     image: Volume | str | Path | None) -> list[tuple[str, str, str]]:
    import SimpleITK as sitk

    from ..io import volume_to_sitk
    from ..margin import margins_arrays
    from ..register import resample_mask_into

    src = "margin.json"
    cfg = _bundle_config(mdoc, ctx, src)
    ref = _grid_of(mdoc.get("pre_image") or {}, src + " pre_image")
    ins = (inputs or {}).get("inputs") or {}
    thr = float(mdoc.get("threshold_mm", cfg["margin"]["threshold_mm"]))
    zone = None
    zp = ctx.out / "zone_in_pre.nii.gz"
    if zp.exists():
        try:
            zone = np.asarray(match_to_grid(read_volume_file(zp, "ablation zone in the pre scan"), ref,
                                            what="zone_in_pre.nii.gz")) != 0
        except LiverburdenError as exc:
            ctx.notes.append(f"zone_in_pre.nii.gz does not fit margin.json ({exc}).")
    else:
        ctx.notes.append("zone_in_pre.nii.gz is missing from the margin output: the zone is not drawn.")
    pre = _load_ct(ctx, ref, image=image, paths=ins.get("pre"), expected_sha256=_sha(mdoc, "pre"),
                   series_number=None, match_mask=Path(ins["tumor"][0]) if ins.get("tumor") else None, cfg=cfg,
                   role="pre-ablation CT")
    tumor_raw = _load_mask(ctx, ref, ins.get("tumor"), _sha(mdoc, "tumor"), role="lesion", what="tumor mask",
                           cfg=cfg)
    tumor = None if tumor_raw is None else F.label_mask(tumor_raw, cfg["labels"]["lesion"])
    lpre_raw = _load_mask(ctx, ref, ins.get("liver_pre"), _sha(mdoc, "liver_pre"), role="liver",
                          what="pre liver mask", cfg=cfg)
    lpre = None if lpre_raw is None else F.label_mask(lpre_raw, cfg["labels"]["liver"])
    reg = mdoc.get("registration") or {}
    rc = cfg["registration"]
    tumors = list(mdoc.get("tumors") or [])

    # surface margins for the histograms: recomputed from the bundle's zone and the tumor mask
    surface: dict[int, np.ndarray] = {}
    if tumor_raw is not None and zone is not None and zone.any() and np.any(tumor):
        try:
            res = margins_arrays(np.where(tumor, tumor_raw, 0), zone, ref.spacing_mm, ref.direction, ref.origin_mm,
                                 config=cfg, classify=False, vic=False)
            for t in res.tumors:
                surface[int(t.id)] = np.asarray(t.surface_margins_mm)
            for t in tumors:
                s = surface.get(int(t["id"]))
                if s is not None and t.get("subcapsular") is None and abs(float(s.min()) - float(t["min_margin_mm"])) > 1e-6:
                    ctx.notes.append(f"tumor {t['id']}: the margins recomputed from the bundle (minimal "
                                     f"{float(s.min()):.3f} mm) differ from margin.json ({float(t['min_margin_mm']):.3f}"
                                     " mm).")
        except LiverburdenError as exc:
            ctx.notes.append(f"the surface margins could not be recomputed ({exc}); histograms omitted.")

    sections: list[tuple[str, str, str]] = []
    # registration ----------------------------------------------------------------------
    ok = reg.get("ok")
    rows = [
        _row("method / metric", _t(reg.get("method"), src, "registration.method") + " / " + _e(reg.get("metric"))),
        _row("quality check", f"<strong class='{'ok' if ok else 'bad'}'>"
             + _b(ok, src, "registration.ok", "passed", "FAILED") + "</strong>"
             + ("" if ok else f": {_e(reg.get('reason'))}")),
        _row("liver Dice", _n(reg.get("liver_dice"), src, "registration.liver_dice", 3)
             + f" (needs &ge; {rc['min_liver_dice']:g})"),
        _row("liver mean surface distance", _n(reg.get("liver_msd_mm"), src, "registration.liver_msd_mm", 2, "mm")
             + f" (needs &le; {rc['max_liver_msd_mm']:g} mm)"),
        _row("liver HD95", _n(reg.get("liver_hd95_mm"), src, "registration.liver_hd95_mm", 2, "mm")),
        _row("landmark error", _n(reg.get("landmark_error_mm"), src, "registration.landmark_error_mm", 2, "mm")),
        _row("final metric / iterations", _n(reg.get("final_metric"), src, "registration.final_metric", 4) + " / "
             + _n(reg.get("iterations"), src, "registration.iterations")),
        _row("zone carried by", _e((mdoc.get("conventions") or {}).get("zone_resampling"))),
    ]
    body = _table(rows, "kv")
    if pre is not None and ins.get("post"):
        tx = _transform(ctx, mdoc)
        post_ref = _grid_of(mdoc.get("post_image") or {}, src + " post_image")
        post = _load_ct(ctx, post_ref, image=None, paths=ins.get("post"), expected_sha256=_sha(mdoc, "post"),
                        series_number=None, match_mask=None, cfg=cfg, role="post-ablation CT")
        if post is not None and tx is not None:
            post_img = volume_to_sitk(post_ref, post.astype(np.float32))
            ref_img = volume_to_sitk(ref, np.zeros(ref.shape, np.float32))
            post_in_pre = sitk.GetArrayFromImage(sitk.Resample(post_img, ref_img, tx, sitk.sitkLinear, -1024.0,
                                                               sitk.sitkFloat32))
            lpost = _load_mask(ctx, post_ref, ins.get("liver_post"), _sha(mdoc, "liver_post"), role="liver",
                               what="post liver mask", cfg=cfg)
            lpost_in_pre = None
            if lpost is not None:
                lpost_in_pre = resample_mask_into(post_ref.with_array(F.label_mask(lpost, cfg["labels"]["liver"])),
                                                  ref, tx, mode="nearest")
            point = tumors[0]["min_margin_point_mm"] if tumors else ref.index_to_lps((np.asarray(ref.shape) - 1) / 2)
            pic = F.registration_picture(ref, pre, post_in_pre, point, liver_pre=lpre, liver_post_in_pre=lpost_in_pre,
                                         window=ctx.window)
            ctx.pictures.append(pic)
            body += _figure_html(ctx, pic)
    else:
        body += "<p class='note'>The pre and post images are not both available: no checkerboard.</p>"
    sections.append(("registration", "Registration (post onto pre)", body))

    # tumors ------------------------------------------------------------------------------
    parts = []
    for i, t in enumerate(tumors):
        k = f"tumors.{i}."
        sf = t.get("surface_fraction") or {}
        q = t.get("margin_quartiles_mm") or [None, None, None]
        verdict = verdict_words(t, thr)
        cls = t.get("classification")
        tbl = _table([
            _row("verdict", f"<strong class='verdict {'ok' if cls == 'A0' and not t.get('uncertain') else 'bad'}'>"
                 + _t(cls or "not assessed", src, k + "classification") + "</strong>"
                 + (" " + _b(True, src, k + "uncertain", "(uncertain)") if t.get("uncertain")
                    else " " + _b(False, src, k + "uncertain", "", ""))),
            _row("in words", f"<span class='words'>{_e(verdict)}</span>"),
            _row("minimal margin", _n(t.get("min_margin_mm"), src, k + "min_margin_mm", 1, "mm") + " ± "
                 + _n(t.get("uncertainty_mm"), src, k + "uncertainty_mm", 1, "mm")),
            _row("margin quartiles", " / ".join(_n(v, src, f"{k}margin_quartiles_mm.{j}", 1) for j, v in enumerate(q))
                 + " mm"),
            _row(f"surface &lt; 0 / 0&ndash;{thr:g} / &ge; {thr:g} mm",
                 " / ".join(_n(sf.get(key), src, f"{k}surface_fraction.{key}", 3)
                            for key in ("below_0", "from_0_to_threshold", "at_least_threshold"))),
            _row("coverage", _n(t.get("coverage_pct"), src, k + "coverage_pct", 1, "%")),
            _row("tumor volume", _n(t.get("volume_ml"), src, k + "volume_ml", 2, "mL")),
            _row("minimal-margin point (LPS)", ", ".join(_n(v, src, f"{k}min_margin_point_mm.{j}", 1)
                                                         for j, v in enumerate(t.get("min_margin_point_mm") or []))
                 + " mm" + (f", segment {_e(F.roman(t.get('min_margin_segment')))}"
                            if t.get("min_margin_segment") else "")),
        ], "kv")
        fig_html = ""
        if zone is not None and (tumor is not None):
            pic = F.margin_picture(ref, pre, tumor, zone, t, surface.get(int(t["id"])), thr, window=ctx.window)
            ctx.pictures.append(pic)
            fig_html = _figure_html(ctx, pic)
        elif tumor is None:
            fig_html = "<p class='note'>The tumor mask is not available (inputs.json): no pictures.</p>"
        parts.append(f"<div class='tumor' id='tumor-{_e(t.get('id'))}'><h3>Tumor {_e(t.get('id'))}</h3>"
                     f"{fig_html}{tbl}</div>")
    sections.append(("margin", "Ablation margins", "".join(parts) or "<p>No tumor.</p>"))
    return sections


# --------------------------------------------------------------------------- follow-up and cohort

_RESPONSE_WORDS = {"CR": "complete response", "PR": "partial response", "SD": "stable disease",
                   "PD": "progressive disease", None: "baseline"}


def _response_sections(ctx: _Context, rdoc: dict[str, Any]) -> list[tuple[str, str, str]]:
    src = "response.json"
    tps = list(rdoc.get("timepoints") or [])
    cc = (rdoc.get("config") or {}).get("compare") or {}
    pr = _num(cc.get("pr_decrease_pct")) or 30.0
    pdp = _num(cc.get("pd_increase_pct")) or 20.0
    pdm = _num(cc.get("pd_increase_min_mm")) or 5.0
    rows = [_row("time point", "target SoD", "from baseline", "nadir before", "from nadir", "new lesions", "response",
                 "reason", "SoD all lesions", "tumor volume", head=True)]
    for i, t in enumerate(tps):
        k = f"timepoints.{i}."
        r = t.get("response")
        rows.append(_row(_t(t.get("label"), src, k + "label"),
                         _n(t.get("target_sod_mm"), src, k + "target_sod_mm", 1, "mm"),
                         _n(t.get("change_from_baseline_pct"), src, k + "change_from_baseline_pct", 1, "%"),
                         _n(t.get("nadir_mm"), src, k + "nadir_mm", 1, "mm") if "nadir_mm" in t else "&ndash;",
                         _n(t.get("change_from_nadir_pct"), src, k + "change_from_nadir_pct", 1, "%"),
                         _e(", ".join(str(x) for x in t.get("new_lesions") or []) or "none"),
                         _t(r, src, k + "response") + f" <span class='words'>({_e(_RESPONSE_WORDS.get(r, r))})</span>",
                         _e(t.get("reason")),
                         _n(t.get("sum_diameters_all_mm"), src, k + "sum_diameters_all_mm", 1, "mm")
                         if "sum_diameters_all_mm" in t else "&ndash;",
                         _n(t.get("tumor_volume_ml"), src, k + "tumor_volume_ml", 2, "mL")
                         if "tumor_volume_ml" in t else "&ndash;"))
    body = ""
    if tps:
        pic = F.sod_picture(tps, pr_decrease_pct=pr, pd_increase_pct=pdp, pd_increase_min_mm=pdm)
        ctx.pictures.append(pic)
        body += _figure_html(ctx, pic)
    body += _table(rows)
    rem = rdoc.get("remnant")
    if rem:
        thr = _num(rem.get("threshold_mm")) or _num(((rdoc.get("config") or {}).get("thresholds") or {})
                                                    .get("remnant_sod_high_mm")) or 50.0
        body += ("<h3>Remnant tumor burden (Du et al.)</h3><p>At "
                 f"{_t(rem.get('label'), src, 'remnant.label')}: SoD of all lesions "
                 f"{_n(rem.get('remnant_sod_mm'), src, 'remnant.remnant_sod_mm', 1, 'mm')}: "
                 f"<strong>{_t(rem.get('remnant_burden'), src, 'remnant.remnant_burden')}</strong> remnant burden "
                 f"(high when &gt; {thr:g} mm).</p>")
    warnings = rdoc.get("warnings") or []
    if warnings:
        body += "<h3>Warnings</h3><ul class='warnings'>" + "".join(
            f"<li>{_t(w, src, f'warnings.{i}')}</li>" for i, w in enumerate(warnings)) + "</ul>"
    return [("followup", "Follow-up (RECIST 1.1)", body)]


def best_responses(rows: Sequence[Mapping[str, str]]) -> list[tuple[str, float, str | None]]:
    """Per patient, the smallest change of target SoD from baseline after baseline, with its response.

    Rows are those of ``response.csv``; a baseline row (no response) does not count.
    Patients in first-seen order.
    """
    best: dict[str, tuple[float, str | None]] = {}
    for r in rows:
        if not (r.get("response") or "").strip():
            continue
        v = _num(r.get("change_from_baseline_pct"))
        if v is None:
            continue
        p = str(r.get("patient"))
        if p not in best or v < best[p][0]:
            best[p] = (v, r.get("response") or None)
    return [(p, v, resp) for p, (v, resp) in best.items()]


def _cohort_sections(ctx: _Context, out: Path) -> list[tuple[str, str, str]]:
    body = ""
    rp = out / "response.csv"
    if rp.exists():
        rows = _read_csv(rp)
        best = best_responses(rows)
        if best:
            pic = F.waterfall_picture(best)
            ctx.pictures.append(pic)
            body += _figure_html(ctx, pic)
            series: dict[str, list[tuple[str, float]]] = {}
            for r in rows:
                v = _num(r.get("change_from_baseline_pct"))
                pat = str(r.get("patient"))
                if v is None and pat not in series and not (r.get("response") or "").strip():
                    v = 0.0  # the baseline row: 0 % by definition
                if v is not None:
                    series.setdefault(pat, []).append((str(r.get("label")), v))
            pic = F.spider_picture(series)
            ctx.pictures.append(pic)
            body += _figure_html(ctx, pic)
        tr = [_row("patient", "best change from baseline", "response there", head=True)]
        for p, v, resp in best:
            tr.append(_row(_e(p), f"<span class='num' data-derived='best_change_pct' data-patient='{_e(p)}' "
                                  f"data-value='{json.dumps(v)}' data-decimals='1'>{v:.1f}</span>&nbsp;%",
                           _e(resp or "–")))
        body += "<h3>Best response per patient</h3>" + _table(tr)
        full = [_row("patient", "time point", "target SoD", "from baseline", "response", head=True)]
        for i, r in enumerate(rows):
            full.append(_row(_e(r.get("patient")), _e(r.get("label")),
                             _n(_num(r.get("target_sod_mm")), "response.csv", f"{i}.target_sod_mm", 1, "mm"),
                             _n(_num(r.get("change_from_baseline_pct")), "response.csv",
                                f"{i}.change_from_baseline_pct", 1, "%"),
                             _e(r.get("response") or "–")))
        body += "<h3>All time points</h3>" + _table(full)
    sp = out / "survival.json"
    if sp.exists():
        sdoc = _read_json(sp)
        pic = F.km_picture(sdoc)
        ctx.pictures.append(pic)
        sj = "survival.json"
        ci = sdoc.get("hazard_ratio_ci95") or []
        rows = [_row("log-rank p", _n(sdoc.get("logrank_p"), sj, "logrank_p", 4)),
                _row("hazard ratio (high vs low)", _n(sdoc.get("hazard_ratio"), sj, "hazard_ratio", 2)
                     + ("" if len(ci) != 2 else " (95 % CI " + _n(ci[0], sj, "hazard_ratio_ci95.0", 2) + " to "
                        + _n(ci[1], sj, "hazard_ratio_ci95.1", 2) + ")"))]
        for g, d in (sdoc.get("groups") or {}).items():
            if isinstance(d, Mapping) and "n" in d:
                rows.append(_row(f"{_e(g)} remnant burden", _n(d.get("n"), sj, f"groups.{g}.n") + " patients, "
                                 + _n(d.get("events"), sj, f"groups.{g}.events") + " events, median "
                                 + _n(d.get("median_months"), sj, f"groups.{g}.median_months", 1, "months")))
        body += "<h3>Survival</h3>" + _figure_html(ctx, pic) + _table(rows, "kv")
    smp = out / "summary.json"
    if smp.exists() and body:
        sm = _read_json(smp)
        body = ("<p>" + _n(sm.get("ok"), "summary.json", "ok") + " of " + _n(sm.get("studies"), "summary.json", "studies")
                + " studies succeeded, " + _n(sm.get("failed"), "summary.json", "failed") + " failed; "
                + _n(sm.get("patients_compared"), "summary.json", "patients_compared")
                + " patients compared.</p>" + body)
    ep = out / "errors.csv"
    if ep.exists():
        errs = _read_csv(ep)
        if errs:
            tr = [_row("row", "patient", "time point", "error", head=True)]
            for r in errs:
                tr.append(_row(_e(r.get("row")), _e(r.get("patient")), _e(r.get("timepoint")), _e(r.get("error_class"))))
            # the messages name input files (paths may reveal patient data): they stay in errors.csv
            body += (f"<h3>Failed studies ({len(errs)})</h3>" + _table(tr, "small")
                     + "<p>The error messages are in errors.csv (they name input files).</p>")
    stp = out / "studies.csv"
    if stp.exists():
        rows = _read_csv(stp)
        cols = list(rows[0].keys()) if rows else []
        tr = [_row(*[_e(c) for c in cols], head=True)]
        for i, r in enumerate(rows):
            cells = []
            for c in cols:
                v = _num(r.get(c))
                cells.append(_n(v, "studies.csv", f"{i}.{c}", 2) if v is not None and c not in ("patient",)
                             else _e(r.get(c)))
            tr.append(_row(*cells))
        body += f"<h3>Studies ({len(rows)})</h3><div class='wide'>" + _table(tr, "small") + "</div>"
    return [("cohort", "Cohort", body)] if body else []


# --------------------------------------------------------------------------- provenance


def _provenance(docs: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    parts = []
    for name, doc in docs:
        sw = doc.get("software") or {}
        rows = [_row("file", _e(name))]
        if sw.get("version") is not None:
            rows.append(_row("liverburden version", _t(sw.get("version"), name, "software.version")))
        if doc.get("schema_version") is not None:
            rows.append(_row("schema version", _e(doc.get("schema_version"))))
        if doc.get("config") is not None:
            h = config_hash(doc["config"])
            rows.append(_row("config hash (sha256 of canonical JSON)",
                             f"<code class='hash' data-config-hash='{h}' data-src='{_e(name)}'>{h}</code>"))
        for key in ("study_key", "frame_key", "study_key_pre", "study_key_post"):
            if doc.get(key):
                rows.append(_row(_e(key), f"<code>{_e(doc[key])}</code>"))
        src = doc.get("source") or {}
        if src:
            rows.append(_row("image source", _e(f"{src.get('kind')}, {src.get('modality') or '–'}, series number "
                                                f"{src.get('series_number') if src.get('series_number') is not None else '–'}")))
        for role, h in (doc.get("inputs") or {}).items():
            if isinstance(h, Mapping) and h.get("sha256"):
                rows.append(_row(f"input {_e(role)} (content sha256, {_e(h.get('files'))} file(s))",
                                 f"<code>{_e(str(h['sha256']))}</code>"))
        pk = sw.get("packages") or {}
        if pk:
            rows.append(_row("packages", _e(", ".join(f"{k} {v}" for k, v in pk.items()))))
        parts.append(_table(rows, "kv"))
    return "".join(parts)


# --------------------------------------------------------------------------- HTML

_CSS = """
:root { --ink: #1b1b1b; --muted: #5a5a5a; --line: #d0d0d0; --ok: #1a7f37; --bad: #b42318; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--ink);
       margin: 0 auto; padding: 0 1.2rem 3rem; max-width: 1280px; background: #fff; }
header { border-bottom: 2px solid var(--ink); padding: .8rem 0 .4rem; margin-bottom: .8rem; }
header h1 { margin: 0; font-size: 1.5rem; }
header p { margin: .2rem 0; color: var(--muted); }
nav { font-size: .9rem; margin: .4rem 0 1rem; }
nav a { margin-right: .9rem; }
h2 { border-bottom: 1px solid var(--line); padding-bottom: .2rem; margin-top: 2rem; }
h3 { margin: 1.1rem 0 .4rem; font-size: 1.05rem; }
table { border-collapse: collapse; margin: .4rem 0 .8rem; }
th, td { border: 1px solid var(--line); padding: .18rem .5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
table.kv td:first-child { color: var(--muted); white-space: nowrap; }
table.small { font-size: .8rem; }
.wide { overflow-x: auto; }
.num { font-variant-numeric: tabular-nums; }
figure { margin: .4rem 0 .8rem; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); display: block; }
figcaption { color: var(--muted); font-size: .85rem; margin-top: .2rem; max-width: 1000px; }
.pair { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
.pair figure { flex: 1 1 640px; max-width: 1000px; }
.ok { color: var(--ok); }
.bad { color: var(--bad); }
.notes { background: #fff8e1; border: 1px solid #f0c36d; padding: .5rem 1rem; }
.note { color: #8a5300; }
ul.warnings li { color: var(--bad); }
code { font-size: .85em; word-break: break-all; }
footer { margin-top: 2rem; color: var(--muted); font-size: .8rem; border-top: 1px solid var(--line); }
@page { size: A4; margin: 12mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 9.5pt; }
  nav, .screen-only { display: none !important; }
  h2 { break-after: avoid; page-break-after: avoid; }
  h3 { break-after: avoid; page-break-after: avoid; }
  figure, table, .lesion, .tumor, .notes { break-inside: avoid; page-break-inside: avoid; }
  .pair { display: block; }
  figure img { max-width: 100%; border: none; }
  .wide { overflow: visible; }
  a { color: inherit; text-decoration: none; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""


def _figure_html(ctx: _Context, pic: F.Picture) -> str:
    import io as _io

    from PIL import Image  # matplotlib's own dependency

    w, h = Image.open(_io.BytesIO(pic.png)).size
    b64 = base64.b64encode(pic.png).decode("ascii")
    return (f"<figure id='fig-{_e(pic.name)}'><img src='data:image/png;base64,{b64}' alt='{_e(pic.title)}' "
            f"width='{w}' height='{h}' data-file='{IMAGE_DIR}/{_e(pic.name)}.png'>"
            f"<figcaption>{_e(pic.caption)}</figcaption></figure>")


def _page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]], notes: Sequence[str]) -> str:
    nav = "".join(f"<a href='#{_e(sid)}'>{_e(t)}</a>" for sid, t, _ in sections)
    notes_html = ""
    if notes:
        notes_html = ("<div class='notes' id='notes'><strong>Notes on this report</strong><ul>"
                      + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul></div>")
    body = "".join(f"<section id='{_e(sid)}'><h2>{_e(t)}</h2>{b}</section>" for sid, t, b in sections)
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{csp}\">"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<meta name='generator' content='liverburden {_e(__version__)}'>"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1><p>{_e(subtitle)}</p>"
        "<p>Not for clinical use without review: every number is shown on the image it was measured on.</p></header>"
        f"<nav class='screen-only'>{nav}</nav>{notes_html}{body}"
        f"<footer>liverburden {_e(__version__)} &middot; report of the output folder's files; input paths are not "
        "shown (see inputs.json, a local file).</footer></body></html>\n"
    )


# --------------------------------------------------------------------------- public API


def _resolve_window(config: Mapping[str, Any] | str | Path | None,
                    window: Sequence[float] | None) -> tuple[float, float]:
    if window is not None:
        w = (float(window[0]), float(window[1]))
    else:
        w = LIVER_WINDOW
        if config is not None:
            cfg = resolve_config(config)
            rep = cfg.get("report") or {}
            if "window_width_hu" in rep or "window_level_hu" in rep:
                w = (float(rep.get("window_width_hu", w[0])), float(rep.get("window_level_hu", w[1])))
    if not (math.isfinite(w[0]) and math.isfinite(w[1]) and w[0] > 0):
        raise InputError(f"report window W,L must be finite with W > 0, got {w[0]:g},{w[1]:g}")
    return w


def write_report(
    out_dir: str | Path,
    *,
    image: Volume | str | Path | None = None,
    config: Mapping[str, Any] | str | Path | None = None,
    window: Sequence[float] | None = None,
) -> Path:
    """Write ``out_dir/report.html`` and its PNGs (``out_dir/report_images/``) from the files in ``out_dir``.

    Parameters
    ----------
    out_dir : folder written by ``measure``, ``margin``, ``compare`` or ``batch``
        Reads ``measurements.json`` (+ ``lesion_labels.nii.gz``, ``inputs.json``),
        ``margin.json`` (+ ``zone_in_pre.nii.gz``, ``transform_pre_to_post.tfm``),
        ``response.json``, ``studies.csv``, ``response.csv``, ``survival.json``:
        each section is written when its file exists.
    image : Volume or path, optional
        The CT (the pre scan for a margin folder) to draw on, instead of reloading
        it from ``inputs.json``. It must be on the bundle's grid (else
        :class:`GeometryError`).
    config : mapping or TOML path, optional
        Report settings (``[report] window_width_hu / window_level_hu`` when the
        configuration has them). Masks are always read with the configuration
        recorded in the bundle, the one the numbers were measured with.
    window : (width, level) in HU, optional
        CT window of the images; default W 150 / L 80 (liver).

    Returns
    -------
    Path of ``report.html``.

    Raises
    ------
    InputError
        ``out_dir`` holds none of the files above, or one is unreadable.
    GeometryError
        ``image`` is not on the bundle's grid.
    ExportError
        The report cannot be written.
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise InputError(f"{out}: output folder not found")
    ctx = _Context(out, _resolve_window(config, window))
    inputs = _read_json(out / "inputs.json") if (out / "inputs.json").exists() else None
    sections: list[tuple[str, str, str]] = []
    docs: list[tuple[str, Mapping[str, Any]]] = []
    kinds = []
    if (out / "measurements.json").exists():
        doc = _read_json(out / "measurements.json")
        sections += _study_sections(ctx, doc, inputs, image)
        docs.append(("measurements.json", doc))
        kinds.append("study")
    if (out / "margin.json").exists():
        mdoc = _read_json(out / "margin.json")
        sections += _margin_sections(ctx, mdoc, inputs, image if not docs else None)
        docs.append(("margin.json", mdoc))
        kinds.append("ablation margin")
    if (out / "response.json").exists():
        rdoc = _read_json(out / "response.json")
        sections += _response_sections(ctx, rdoc)
        docs.append(("response.json", rdoc))
        kinds.append("follow-up")
    cohort = _cohort_sections(ctx, out)
    if cohort:
        sections += cohort
        kinds.append("cohort")
    if not sections:
        raise InputError(f"{out}: nothing to report: no measurements.json, margin.json, response.json, "
                         "response.csv, studies.csv or survival.json")
    if docs:
        sections.append(("provenance", "Provenance", _provenance(docs)))

    img_dir = out / IMAGE_DIR
    names = set()
    try:
        img_dir.mkdir(parents=True, exist_ok=True)
        for pic in ctx.pictures:
            if pic.name in names:
                raise ExportError(f"two report pictures are named {pic.name}")
            names.add(pic.name)
            _atomic_write(img_dir / f"{pic.name}.png", pic.png)
        for old in img_dir.glob("*.png"):  # pictures of an earlier run that this one did not draw
            if old.stem not in names:
                old.unlink()
    except OSError as exc:
        raise ExportError(f"{img_dir}: cannot write the report images ({exc.strerror})") from None
    title = "liverburden QC report"
    subtitle = (" + ".join(kinds) + f" · {len(ctx.pictures)} image(s) · window W {ctx.window[0]:g} / "
                f"L {ctx.window[1]:g} HU")
    page = _page(title, subtitle, sections, ctx.notes)
    path = out / REPORT_FILE
    try:
        _atomic_write(path, page.encode("utf-8"))
    except OSError as exc:
        raise ExportError(f"{path}: cannot write ({exc.strerror})") from None
    for n in ctx.notes:
        log.info("report: %s", n)
    return path


# --------------------------------------------------------------------------- CLI


def _window_arg(text: str) -> tuple[float, float]:
    try:
        w, lv = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected W,L in HU (e.g. 150,80), got '{text}'") from None
    if not (math.isfinite(w) and math.isfinite(lv) and w > 0):
        raise argparse.ArgumentTypeError(f"window width must be > 0 and both values finite, got '{text}'")
    return w, lv


def add_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``liverburden report OUT_DIR`` to the CLI's subparsers."""
    r = subparsers.add_parser(
        "report", help="visual QC report: OUT_DIR/report.html with every number on its image",
        description="Write OUT_DIR/report.html (self-contained, printable) and OUT_DIR/report_images/*.png from the "
                    "files of a measure, margin, compare or batch output folder.")
    r.add_argument("out_dir", help="output folder of measure, margin, compare or batch")
    r.add_argument("--image", help="CT to draw on (DICOM folder/file or NIfTI/NRRD) when inputs.json is missing or "
                                   "its paths moved; must be on the bundle's grid")
    r.add_argument("--config", help="TOML configuration ([report] window)")
    r.add_argument("--window", type=_window_arg, metavar="W,L", help="CT window in HU (default 150,80: liver)")
    r.add_argument("--quiet", action="store_true", help="print nothing on success")
    r.add_argument("-v", "--verbose", action="store_true", help="log progress (never identifiers)")
    r.add_argument("--debug", action="store_true", help="print a traceback on internal errors")
    return r


def run_cli(args: argparse.Namespace) -> int:
    """Run ``liverburden report``; LiverburdenError propagates to ``cli.main`` (exit 2)."""
    path = write_report(args.out_dir, image=args.image, config=args.config, window=args.window)
    if not getattr(args, "quiet", False):
        print(f"wrote {path}")
    return 0
