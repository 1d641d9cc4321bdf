"""Configuration: one TOML file per run, validated before any work.

Precedence (``conventions.md``): CLI flag > DICOM header > config file >
built-in default (``liverburden/data/default.toml``, copied to
``configs/default.toml``). A user file names only the keys it changes.
"""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

import jsonschema

from ._exceptions import ConfigError

__all__ = ["default_config", "load_config", "merge_config", "validate_config"]


@functools.lru_cache(maxsize=1)
def _default_text() -> str:
    return resources.files("liverburden").joinpath("data/default.toml").read_text(encoding="utf-8")


def _read_default() -> dict[str, Any]:
    return tomllib.loads(_default_text())


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    text = resources.files("liverburden").joinpath("schemas/config.schema.json").read_text(encoding="utf-8")
    schema = json.loads(text)
    # checked against its meta-schema by tests/test_config.py, not on every run (20 ms)
    return jsonschema.validators.validator_for(schema)(schema)


@functools.lru_cache(maxsize=64)
def _validated_key(key: str) -> None:
    """Remember configurations already validated (keyed by canonical JSON)."""
    cfg = json.loads(key)
    err = next(iter(sorted(_validator().iter_errors(cfg), key=lambda e: list(e.absolute_path))), None)
    if err is not None:
        raise _Invalid(err)


class _Invalid(Exception):
    def __init__(self, err: Any) -> None:
        super().__init__(err.message)
        self.err = err


def default_config() -> dict[str, Any]:
    """A fresh copy of the built-in defaults."""
    return _read_default()


def merge_config(base: Mapping[str, Any], override: Mapping[str, Any], *, where: str = "config") -> dict[str, Any]:
    """``base`` updated key by key from ``override`` (nested tables merge).

    Unknown sections or keys are errors (a typo must not be ignored).
    """
    out = copy.deepcopy(dict(base))
    for key, val in override.items():
        if key not in out:
            raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join(sorted(out))})")
        if isinstance(out[key], dict) and key != "extra":
            if not isinstance(val, Mapping):
                raise ConfigError(f"{where}: '{key}' must be a table")
            out[key] = merge_config(out[key], val, where=f"{where} [{key}]")
        else:
            out[key] = copy.deepcopy(val)
    return out


def validate_config(cfg: Mapping[str, Any], *, where: str = "config") -> dict[str, Any]:
    """Validate a resolved configuration against its JSON Schema."""
    try:
        _validated_key(json.dumps(cfg, sort_keys=True))
    except _Invalid as exc:
        path = ".".join(str(p) for p in exc.err.absolute_path) or "(top)"
        raise ConfigError(f"{where}: invalid value at '{path}': {exc.err.message}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: not a valid configuration ({exc})") from None
    th = cfg["thresholds"]
    if th["involvement_favourable_pct"] > th["involvement_milan_pct"]:
        raise ConfigError(f"{where}: thresholds.involvement_favourable_pct must not exceed involvement_milan_pct")
    return dict(cfg)


@functools.lru_cache(maxsize=1)
def _default_resolved() -> dict[str, Any]:
    return validate_config(_read_default(), where="built-in defaults")


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Defaults, then the file at ``path`` (TOML), then ``overrides``; validated.

    Raises
    ------
    ConfigError
        The file is missing or not TOML, names an unknown key, or a value is out
        of its schema.
    """
    cfg = _read_default()
    if path is not None:
        p = Path(path)
        try:
            user = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{p}: config file not found") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p}: not a valid TOML file: {exc}") from None
        cfg = merge_config(cfg, user, where=str(p))
    if overrides:
        cfg = merge_config(cfg, overrides, where="command-line flags")
    return validate_config(cfg, where=str(path) if path else "config")


def resolve_config(config: Mapping[str, Any] | str | Path | None) -> dict[str, Any]:
    """Accept None (defaults), a path, or a (partial) mapping; return it resolved."""
    if config is None:
        return copy.deepcopy(_default_resolved())
    if isinstance(config, (str, Path)):
        return load_config(config)
    return validate_config(merge_config(_read_default(), config), where="config")
