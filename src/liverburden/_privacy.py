"""Keep data element values out of stderr and logs (``conventions.md`` "Identifiers").

Third-party libraries warn and log with dataset contents: pydicom quotes the value
of every element that breaks its VR (a legacy GE UID ``1.2.840.113619.2.55.3.0604.01``,
a birth date ``03/02/01``), pynetdicom logs PDUs and UIDs, highdicom logs the SOP
Instance UID of every dataset it copies from. The command-line entry points call
:func:`install` once; library code never configures logging or warnings.

By default the text of such a warning or third-party log record is withheld and
only its origin is named; ``--debug`` shows it (a developer's switch: its output can
quote data values and must not be shared).
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["ScrubThirdParty", "ensure_installed", "install", "withheld"]

#: Loggers whose records may quote data element values.
THIRD_PARTY = ("pydicom", "pynetdicom", "highdicom", "SimpleITK", "nibabel")
_state = {"debug": False, "installed": False}
_said: set[str] = set()  # origins already reported as withheld: once each, not once per slice


def withheld(kind: str, origin: str) -> str:
    return f"a {kind} from {origin} was withheld (its text may quote data values; --debug shows it)"


def _origin(filename: str, lineno: int) -> str:
    mod = str(filename).replace("\\", "/").rsplit("/site-packages/", 1)[-1]
    return f"{mod}:{lineno}"


def _showwarning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
    name = getattr(category, "__name__", "warning")
    ours = "/liverburden/" in str(filename).replace("\\", "/")
    if _state["debug"] or ours:
        text = f"{name}: {message}"
    else:
        origin = _origin(filename, lineno)
        if origin in _said:
            return
        _said.add(origin)
        text = withheld(name, origin)
    logging.getLogger("liverburden.warnings").log(logging.WARNING if ours or _state["debug"] else logging.INFO, text)


class ScrubThirdParty(logging.Filter):
    """On a handler: a record from a third-party logger keeps its level and origin,
    its message is replaced by :func:`withheld` (unless ``--debug``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _state["debug"] or record.name == "liverburden" or record.name.startswith("liverburden."):
            return True
        origin = f"{record.name} ({record.module}:{record.lineno})"
        if origin in _said:
            return False
        _said.add(origin)
        record.msg = withheld(f"{record.levelname.lower()} message", origin)
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        return True


def install(debug: bool = False) -> None:
    """Route Python warnings through logging with their text withheld, and put
    :class:`ScrubThirdParty` on every root handler. Idempotent; ``debug`` shows texts."""
    _state["debug"] = bool(debug)
    warnings.showwarning = _showwarning
    for h in logging.getLogger().handlers:
        if not any(isinstance(f, ScrubThirdParty) for f in h.filters):
            h.addFilter(ScrubThirdParty())
    _state["installed"] = True


def ensure_installed() -> None:
    """:func:`install` in a process that has not (a batch worker), keeping the debug state."""
    if not _state["installed"]:
        install(_state["debug"])
