"""Outputs: the study bundle (JSON, CSV, label map, inputs), validated against its schema."""

from ._bundle import LESION_CSV_COLUMNS, validate_measurements, write_bundle, write_json_atomic

__all__ = ["LESION_CSV_COLUMNS", "validate_measurements", "write_bundle", "write_json_atomic"]
