"""The output bundle of one study (``conventions.md`` "Output bundle").

``measurements.json``, ``lesions.csv``, ``lesion_labels.nii.gz`` and
``inputs.json``, each written atomically (temporary file in the same folder,
fsync, rename), so a killed run never leaves half a file.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import jsonschema
import numpy as np
import SimpleITK as sitk

from .._exceptions import ExportError
from ..geometry import Volume
from ..io import volume_to_sitk

LESION_CSV_COLUMNS = [
    "id", "location", "volume_ml", "voxel_count", "voxels_outside_liver", "ld_mm", "sa_mm", "max3d_mm",
    "slice_index", "segment", "recist_measurable", "recist_target", "components",
    "centroid_x_mm", "centroid_y_mm", "centroid_z_mm",
    "ld_p1_x_mm", "ld_p1_y_mm", "ld_p1_z_mm", "ld_p2_x_mm", "ld_p2_y_mm", "ld_p2_z_mm",
    "sa_p1_x_mm", "sa_p1_y_mm", "sa_p1_z_mm", "sa_p2_x_mm", "sa_p2_y_mm", "sa_p2_z_mm",
]


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _atomic_write(path: Path, data: bytes) -> None:
    """Temporary file beside ``path``, fsync, rename. A full disk or an unwritable
    folder is an :class:`ExportError` naming the file (exit 2), never a traceback."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(exc, OSError):
            raise ExportError(f"{path}: cannot write ({_why(exc)})") from None
        raise


#: Files of an earlier run that describe its numbers: removed before a new run writes
#: anything, so a run that fails half way leaves no old numbers beside new files.
STALE_ON_RERUN = ("report.html",)


def begin_outputs(out: Path, complete: str) -> None:
    """Make ``out`` and remove the earlier run's completion marker ``complete`` (the JSON
    written last) and its report. Until the new marker is written the folder is visibly
    incomplete: ``report`` and ``compare`` refuse it instead of mixing two runs."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in (complete, *STALE_ON_RERUN):
            (out / name).unlink(missing_ok=True)
    except OSError as exc:
        raise ExportError(f"{out}: cannot write the output folder ({_why(exc)})") from None


def write_json_atomic(path: Path, obj: Any) -> None:
    try:
        data = json.dumps(obj, indent=2, allow_nan=False, sort_keys=False).encode() + b"\n"
    except ValueError as exc:  # NaN/inf would be a wrong number in disguise
        raise ExportError(f"{path}: refusing to write a non-finite number ({exc})") from None
    _atomic_write(path, data)


def _schema() -> dict[str, Any]:
    return json.loads(resources.files("liverburden").joinpath("schemas/measurements.schema.json").read_text("utf-8"))


@functools.lru_cache(maxsize=1)
def _measurements_validator() -> Any:
    """The schema's validator, built once (the schema itself is checked against its
    meta-schema by the tests, not by every run: that check was 40 ms of a run)."""
    schema = _schema()
    return jsonschema.validators.validator_for(schema)(schema)


def validate_measurements(doc: Mapping[str, Any]) -> None:
    """Validate a ``measurements.json`` document against its JSON Schema."""
    try:
        err = jsonschema.exceptions.best_match(_measurements_validator().iter_errors(dict(doc)))
        if err is not None:
            raise err
    except jsonschema.ValidationError as exc:
        path = "/".join(str(p) for p in exc.absolute_path)
        raise ExportError(f"measurements.json does not match its schema at '{path}': {exc.message}") from None


def lesions_csv(doc: Mapping[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(LESION_CSV_COLUMNS)
    for les in doc["lesions"]:
        c = les["centroid_mm"]
        ld = les["ld_endpoints_mm"]
        sa = les["sa_endpoints_mm"] or [[None] * 3, [None] * 3]
        row = [
            les["id"], les["location"], les["volume_ml"], les["voxel_count"], les["voxels_outside_liver"],
            les["ld_mm"], les["sa_mm"], les["max3d_mm"], les["slice_index"], les["segment"] or "",
            int(les["recist_measurable"]), int(les["recist_target"]), les["components"],
            *c, *ld[0], *ld[1], *sa[0], *sa[1],
        ]
        w.writerow(["" if v is None else (repr(v) if isinstance(v, float) else v) for v in row])
    return buf.getvalue()


def write_bundle(
    out_dir: str | Path,
    doc: Mapping[str, Any],
    labels: np.ndarray,
    grid: Volume,
    inputs: Mapping[str, Any] | None,
) -> dict[str, Path]:
    """Write the bundle; ``doc`` is validated against the schema first."""
    out = Path(out_dir)
    validate_measurements(doc)
    begin_outputs(out, "measurements.json")
    paths = {
        "measurements": out / "measurements.json",
        "lesions_csv": out / "lesions.csv",
        "lesion_labels": out / "lesion_labels.nii.gz",
    }
    img = volume_to_sitk(grid, labels)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".lesion_labels.", suffix=".nii.gz", dir=out)
        os.close(fd)
        sitk.WriteImage(img, tmp, useCompression=True)
        os.replace(tmp, paths["lesion_labels"])
    except (RuntimeError, OSError) as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        why = _why(exc) if isinstance(exc, OSError) else str(exc).strip().splitlines()[-1][:160]
        raise ExportError(f"{paths['lesion_labels']}: cannot write ({why})") from None
    _atomic_write(paths["lesions_csv"], lesions_csv(doc).encode())
    if inputs is not None:
        paths["inputs"] = out / "inputs.json"
        write_json_atomic(paths["inputs"], inputs)
    write_json_atomic(paths["measurements"], doc)  # last: its presence means the bundle is complete
    return paths
