"""PACS hook: a study arrives, measurements go back as DICOM (issue 6).

Two ways in::

    liverburden listen --config pacs.toml          C-STORE SCP + worker processes
    liverburden orthanc --url http://HOST:8042      follow Orthanc's /changes feed

and the same outputs: a DICOM SR (TID 1500), a SEG of the lesion instances, a
Secondary Capture summary, and ``measurements.json`` kept in the spool's
results folder. See ``configs/pacs.example.toml`` and ``conventions.md``
"PACS"; the private codes are listed in :mod:`liverburden.pacs.codes`.

``add_cli(subparsers)`` adds both subcommands to the ``liverburden`` parser and
``run_cli(args)`` runs them (exit codes: 0 ok, 2 bad input or config, 1
internal error, 3 some studies failed or results are still pending).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .._exceptions import LiverburdenError
from ._config import load_pacs_config

if TYPE_CHECKING:  # imported on first use: ``liverburden --help`` stays fast (no highdicom)
    from ._outputs import OutputSet, UidFactory, build_outputs
    from ._process import StudyOutcome, process_study

_LAZY = {
    "OutputSet": "._outputs", "UidFactory": "._outputs", "build_outputs": "._outputs",
    "StudyOutcome": "._process", "process_study": "._process",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "COMMANDS",
    "OutputSet",
    "StudyOutcome",
    "UidFactory",
    "add_cli",
    "build_outputs",
    "load_pacs_config",
    "main",
    "process_study",
    "run_cli",
]

COMMANDS = ("listen", "orthanc")


def add_cli(subparsers: Any) -> None:
    """Add the ``listen`` and ``orthanc`` subcommands to an argparse subparsers object."""
    lp = subparsers.add_parser("listen", help="DICOM listener: receive studies (C-STORE), measure, send results back")
    lp.add_argument("--config", required=True, help="PACS configuration (see configs/pacs.example.toml)")
    lp.add_argument("--role", choices=["all", "scp", "worker"], default="all",
                    help="run the SCP and its workers (all, default), only the SCP, or only the workers")
    lp.add_argument("-v", "--verbose", action="store_true", help="log progress (never identifiers)")
    lp.add_argument("--debug", action="store_true", help="print a traceback on internal errors")
    op = subparsers.add_parser("orthanc", help="follow an Orthanc server: measure stable studies, upload results")
    op.add_argument("--url", help="Orthanc REST URL, e.g. http://127.0.0.1:8042 (default: [orthanc] url)")
    op.add_argument("--config", help="PACS configuration (selection, roles, outputs, spool)")
    op.add_argument("--once", action="store_true",
                    help="process every stable study not yet processed, then exit (cron, tests)")
    op.add_argument("--state", help="state file (default: [orthanc] state_file in the spool)")
    op.add_argument("--spool", help="spool folder for downloads, results and the outbox (default: listener.spool_dir)")
    op.add_argument("-v", "--verbose", action="store_true", help="log progress (never identifiers)")
    op.add_argument("--debug", action="store_true", help="print a traceback on internal errors")


def _run(args: argparse.Namespace) -> int:
    from ._privacy import quiet_third_party

    quiet_third_party(debug=getattr(args, "debug", False))
    if args.command == "listen":
        from ._listener import run_listener

        cfg = load_pacs_config(args.config)
        return run_listener(cfg, Path(args.config).resolve(), role=args.role, verbose=args.verbose,
                            debug=getattr(args, "debug", False))
    if args.command == "orthanc":
        from ._orthanc import run_orthanc

        overrides: dict[str, Any] = {}
        if args.spool:
            overrides["listener"] = {"spool_dir": str(Path(args.spool).resolve())}
        cfg = load_pacs_config(args.config, overrides)
        url = args.url or cfg["orthanc"]["url"]
        if not url:
            from .._exceptions import ConfigError

            raise ConfigError("orthanc: give --url or set [orthanc] url in the config")
        return run_orthanc(cfg, url, once=args.once, state_path=Path(args.state) if args.state else None)
    raise ValueError(f"not a PACS command: {args.command}")


def run_cli(args: argparse.Namespace) -> int:
    """Run ``listen`` or ``orthanc``; returns the exit code."""
    try:
        return _run(args)
    except LiverburdenError as exc:
        print(f"liverburden: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if getattr(args, "debug", False):
            raise
        print(f"liverburden: internal error ({type(exc).__name__}); rerun with --debug for a traceback",
              file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m liverburden.pacs listen|orthanc ...`` (the same as ``liverburden listen|orthanc``)."""
    p = argparse.ArgumentParser(prog="python -m liverburden.pacs")
    sub = p.add_subparsers(dest="command", required=True)
    add_cli(sub)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="liverburden %(levelname)s: %(message)s")
    return run_cli(args)
