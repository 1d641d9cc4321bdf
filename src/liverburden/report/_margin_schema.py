"""Validation of ``margin.json`` against its JSON Schema."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, Mapping

import jsonschema

from .._exceptions import ExportError


def validate_margin(doc: Mapping[str, Any]) -> None:
    schema = json.loads(resources.files("liverburden").joinpath("schemas/margin.schema.json").read_text("utf-8"))
    try:
        jsonschema.validate(dict(doc), schema)
    except jsonschema.ValidationError as exc:
        path = "/".join(str(p) for p in exc.absolute_path)
        raise ExportError(f"margin.json does not match its schema at '{path}': {exc.message}") from None
