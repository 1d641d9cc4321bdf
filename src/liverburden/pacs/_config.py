"""The PACS configuration (``pacs.toml``): defaults, schema, validation, resolution.

One file per deployment, validated before anything listens or runs (house style
11). Paths are relative to the file. Keys and meaning: ``configs/pacs.example.toml``
and ``conventions.md`` "PACS". The measurement itself keeps its own config file
(``[measure] config``), validated by :func:`liverburden.load_config`.
"""

from __future__ import annotations

import copy
import ipaddress
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

import jsonschema

from .._exceptions import ConfigError

__all__ = ["DEFAULTS", "Peer", "load_pacs_config", "resolve_pacs_config"]

#: Built-in defaults; a user file names only what it changes.
DEFAULTS: dict[str, Any] = {
    "listener": {
        "ae_title": "LIVERBURDEN",
        "host": "127.0.0.1",
        "port": 11112,
        "spool_dir": "spool",
        "quiet_seconds": 5.0,
        "max_associations": 32,
        "require_called_ae_title": True,
        "acse_timeout_seconds": 30.0,
        "dimse_timeout_seconds": 60.0,
        "network_timeout_seconds": 60.0,
        "request_timeout_s": 10.0,
        "max_connections_per_address": 16,
        "allowed": [],
        "tls": {
            "enabled": False,
            "certificate": "",
            "private_key": "",
            "ca_certificates": "",
            "require_client_certificate": False,
        },
    },
    "destination": {
        "enabled": True,
        "ae_title": "",
        "host": "",
        "port": 104,
        "calling_ae_title": "",
        "timeout_seconds": 30.0,
        "retry_initial_seconds": 5.0,
        "retry_max_seconds": 600.0,
        "tls": {
            "enabled": False,
            "ca_certificates": "",
            "certificate": "",
            "private_key": "",
            "server_hostname": "",
        },
    },
    "worker": {
        "processes": 1,
        "poll_seconds": 0.5,
        "max_attempts": 3,
        "retain_days": 7.0,
        "threads": 1,
        "error_backoff_max_seconds": 60.0,
    },
    "selection": {
        "modalities": ["CT", "MR"],
        "description": "*",
        "rule": "most-slices",
    },
    "roles": {
        "order": ["zone", "segment", "remnant", "liver", "lesion"],
        "liver": r"^\s*liver\s*$",
        "lesion": r"lesion|tumou?r|metasta|neoplasm",
        "segment": r"^\s*(liver\s+)?segment\s+(?P<n>[1-8]|4a|4b)\s*$",
        "zone": r"ablation",
        "remnant": r"remnant|\bflr\b",
        "liver_codes": ["SCT:10200004"],
        "lesion_codes": ["SCT:52988006", "SCT:108369006", "SCT:4147007", "SCT:128462008"],
        "zone_codes": [],
        "remnant_codes": [],
        "segment_codes": {},
    },
    "measure": {
        "config": "",
        "resect": "",
        "liver_condition": "",
        "margins": True,
    },
    "output": {
        "sr": True,
        "seg": True,
        "secondary_capture": True,
        "series_number_base": 9900,
        "max_lesion_panels": 12,
    },
    "orthanc": {
        "url": "",
        "username": "",
        "password_env": "LIVERBURDEN_ORTHANC_PASSWORD",
        "poll_seconds": 2.0,
        "timeout_seconds": 60.0,
        "state_file": "orthanc-state.json",
    },
}

_NUM = {"type": "number"}
_POS = {"type": "number", "exclusiveMinimum": 0}
_NONNEG = {"type": "number", "minimum": 0}
_STR = {"type": "string"}
_BOOL = {"type": "boolean"}
_AET = {"type": "string", "maxLength": 16, "pattern": r"^[^\\\x00-\x1f]*$"}
_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
_PATTERN = {"type": "string"}
_CODES = {"type": "array", "items": {"type": "string", "pattern": r"^[^:]+:[^:]+$"}}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props, "additionalProperties": False, "required": required or []}


_SCHEMA = _obj({
    "listener": _obj({
        "ae_title": {**_AET, "minLength": 1},
        "host": _STR,
        "port": {"type": "integer", "minimum": 0, "maximum": 65535},
        "spool_dir": {**_STR, "minLength": 1},
        "quiet_seconds": _POS,
        "max_associations": {"type": "integer", "minimum": 1, "maximum": 1000},
        "maximum_associations": {"type": "integer", "minimum": 1, "maximum": 1000},
        "require_called_ae_title": _BOOL,
        "acse_timeout_seconds": _POS,
        "dimse_timeout_seconds": _POS,
        "network_timeout_seconds": _POS,
        "request_timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
        "max_connections_per_address": {"type": "integer", "minimum": 1, "maximum": 1000},
        "allowed": {"type": "array", "items": _obj({"ae_title": {**_AET, "minLength": 1}, "host": {**_STR, "minLength": 1}},
                                                   ["ae_title", "host"])},
        "tls": _obj({"enabled": _BOOL, "certificate": _STR, "private_key": _STR, "ca_certificates": _STR,
                     "require_client_certificate": _BOOL}),
    }),
    "destination": _obj({
        "enabled": _BOOL, "ae_title": _AET, "host": _STR, "port": _PORT, "calling_ae_title": _AET,
        "timeout_seconds": _POS, "retry_initial_seconds": _POS, "retry_max_seconds": _POS,
        "tls": _obj({"enabled": _BOOL, "ca_certificates": _STR, "certificate": _STR, "private_key": _STR,
                     "server_hostname": _STR}),
    }),
    "worker": _obj({
        "processes": {"type": "integer", "minimum": 1, "maximum": 64},
        "poll_seconds": _POS,
        "max_attempts": {"type": "integer", "minimum": 1},
        "retain_days": _NONNEG,
        "threads": {"type": "integer", "minimum": 1},
        "error_backoff_max_seconds": _POS,
    }),
    "selection": _obj({
        "modalities": {"type": "array", "items": _STR, "minItems": 1},
        "description": _STR,
        "rule": {"enum": ["most-slices"]},
    }),
    "roles": _obj({
        "order": {"type": "array", "items": {"enum": ["zone", "segment", "remnant", "liver", "lesion"]},
                  "uniqueItems": True},
        "liver": _PATTERN, "lesion": _PATTERN, "segment": _PATTERN, "zone": _PATTERN, "remnant": _PATTERN,
        "liver_codes": _CODES, "lesion_codes": _CODES, "zone_codes": _CODES, "remnant_codes": _CODES,
        "segment_codes": {"type": "object", "additionalProperties": {"enum": ["1", "2", "3", "4", "4a", "4b", "5",
                                                                              "6", "7", "8"]}},
    }),
    "measure": _obj({
        "config": _STR,
        "resect": _STR,
        "liver_condition": {"enum": ["", "normal", "chemotherapy", "cirrhosis"]},
        "margins": _BOOL,
    }),
    "output": _obj({
        "sr": _BOOL, "seg": _BOOL, "secondary_capture": _BOOL,
        "series_number_base": {"type": "integer", "minimum": 0, "maximum": 2**31 - 10},
        "max_lesion_panels": {"type": "integer", "minimum": 0, "maximum": 64},
    }),
    "orthanc": _obj({
        "url": _STR, "username": _STR, "password_env": _STR, "poll_seconds": _POS, "timeout_seconds": _POS,
        "state_file": {**_STR, "minLength": 1},
    }),
})


@dataclass(frozen=True)
class Peer:
    """An allowed sender: its AE title and the network(s) its address must lie in."""

    ae_title: str
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    host: str

    def allows(self, ae_title: str, address: str) -> bool:
        if ae_title.strip() != self.ae_title.strip():
            return False
        return self.allows_address(address)

    def allows_address(self, address: str) -> bool:
        """The address alone (what is known when a TCP connection arrives)."""
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in n for n in self.networks)


def _networks(host: str, where: str) -> tuple[Any, ...]:
    """A host given as an address, a network (CIDR) or a name (resolved now)."""
    try:
        return (ipaddress.ip_network(host, strict=False),)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror as exc:
        raise ConfigError(f"{where}: allowed peer host '{host}' does not resolve ({exc.strerror})") from None
    return tuple(sorted({ipaddress.ip_network(i[4][0]) for i in infos}, key=str))


def _merge(base: dict[str, Any], override: Mapping[str, Any], where: str) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, val in override.items():
        if key not in out:
            if where.endswith("[listener]") and key == "maximum_associations":
                out[key] = val
                continue
            raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join(sorted(out))})")
        if isinstance(out[key], dict) and key != "segment_codes":
            if not isinstance(val, Mapping):
                raise ConfigError(f"{where}: '{key}' must be a table")
            out[key] = _merge(out[key], val, f"{where} [{key}]")
        else:
            out[key] = copy.deepcopy(val)
    return out


def resolve_pacs_config(user: Mapping[str, Any], *, base_dir: Path, where: str = "pacs config") -> dict[str, Any]:
    """Defaults, then ``user``; validated; paths made absolute against ``base_dir``.

    Raises
    ------
    ConfigError
        An unknown key, a value outside its schema, a regular expression that does
        not compile, a peer host that does not resolve, or conflicting keys.
    """
    cfg = _merge(DEFAULTS, user, where)
    try:
        jsonschema.validate(cfg, _SCHEMA)
    except jsonschema.ValidationError as exc:
        path = ".".join(str(p) for p in exc.absolute_path) or "(top)"
        raise ConfigError(f"{where}: invalid value at '{path}': {exc.message}") from None
    lis = cfg["listener"]
    if "maximum_associations" in lis:
        alias = lis.pop("maximum_associations")
        if "max_associations" in (user.get("listener") or {}) and alias != lis["max_associations"]:
            raise ConfigError(f"{where}: listener.max_associations = {lis['max_associations']} and "
                              f"listener.maximum_associations = {alias} disagree (they are one key)")
        lis["max_associations"] = alias
    roles = cfg["roles"]
    for name in ("liver", "lesion", "segment", "zone", "remnant"):
        try:
            re.compile(roles[name], re.I)
        except re.error as exc:
            raise ConfigError(f"{where}: roles.{name} is not a valid regular expression ({exc})") from None
    if "n" not in re.compile(roles["segment"]).groupindex:
        raise ConfigError(f"{where}: roles.segment must capture the segment number in a group named 'n'")
    if any(k.count(":") != 1 for k in roles["segment_codes"]):
        raise ConfigError(f"{where}: roles.segment_codes keys must be 'SCHEME:VALUE'")
    base = Path(base_dir)

    def path(p: str) -> str:
        return "" if not p else str((base / p).resolve())

    lis["spool_dir"] = path(lis["spool_dir"])
    for k in ("certificate", "private_key", "ca_certificates"):
        lis["tls"][k] = path(lis["tls"][k])
        cfg["destination"]["tls"][k] = path(cfg["destination"]["tls"][k])
    if lis["tls"]["enabled"] and not (lis["tls"]["certificate"] and lis["tls"]["private_key"]):
        raise ConfigError(f"{where}: listener.tls needs certificate and private_key")
    if lis["tls"]["require_client_certificate"] and not lis["tls"]["ca_certificates"]:
        raise ConfigError(f"{where}: listener.tls.require_client_certificate needs ca_certificates")
    cfg["measure"]["config"] = path(cfg["measure"]["config"])
    cfg["orthanc"]["state_file"] = str((Path(lis["spool_dir"]) / cfg["orthanc"]["state_file"]).resolve())
    dest = cfg["destination"]
    if not dest["calling_ae_title"]:
        dest["calling_ae_title"] = lis["ae_title"]
    if dest["enabled"] and not (dest["ae_title"] and dest["host"]):
        dest["enabled"] = False  # no destination configured: results stay in the spool
    seen = set()
    for i, peer in enumerate(lis["allowed"]):
        _networks(peer["host"], f"{where}: listener.allowed[{i}]")
        key = (peer["ae_title"].strip(), peer["host"])
        if key in seen:
            raise ConfigError(f"{where}: listener.allowed[{i}] repeats peer {peer['ae_title']}@{peer['host']}")
        seen.add(key)
    cfg["_source"] = where
    return cfg


def load_pacs_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read ``pacs.toml`` (or the defaults when ``path`` is None) and validate it.

    Relative paths in the file are relative to the file's folder (without a file:
    to the current folder). ``overrides`` is merged last (CLI flags).
    """
    user: dict[str, Any] = {}
    base = Path.cwd()
    where = "pacs config (defaults)"
    if path is not None:
        p = Path(path)
        try:
            user = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{p}: config file not found") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p}: not a valid TOML file: {exc}") from None
        base = p.resolve().parent
        where = str(p)
    if overrides:
        user = _merge_plain(user, overrides)
    return resolve_pacs_config(user, base_dir=base, where=where)


def _merge_plain(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(a))
    for k, v in b.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge_plain(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def peers(cfg: Mapping[str, Any]) -> list[Peer]:
    """The allow-list as :class:`Peer` objects (host names resolved now)."""
    out = []
    for i, p in enumerate(cfg["listener"]["allowed"]):
        out.append(Peer(p["ae_title"], _networks(p["host"], f"listener.allowed[{i}]"), p["host"]))
    return out
