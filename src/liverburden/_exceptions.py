"""The one exception tree of liverburden.

::

    LiverburdenError            (exit code 2 at the CLI: bad input or config)
    +-- InputError              a file is missing, unreadable, corrupt or not what was asked
    |   +-- SeriesSelectionError   no DICOM series, or several that fit equally
    +-- GeometryError           slices missing/uneven/tilted, image and mask grids differ
    +-- MaskError               empty liver mask, labels outside the configured set
    +-- ConfigError             a config file or flag that does not validate
    +-- RegistrationError       a registration that cannot be run on these inputs
    +-- ExportError             an output that cannot be written

Messages name the file and the conflicting values. They never carry patient
identifiers (names, IDs, dates, accession numbers, institutions, original UIDs).
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ExportError",
    "GeometryError",
    "InputError",
    "LiverburdenError",
    "MaskError",
    "RegistrationError",
    "SeriesSelectionError",
]


class LiverburdenError(Exception):
    """Base of every error liverburden raises on purpose (bad input or config)."""


class InputError(LiverburdenError):
    """A file is missing, unreadable, corrupt, or not of the expected kind."""


class SeriesSelectionError(InputError):
    """No DICOM series found, or the choice among several is ambiguous."""


class GeometryError(LiverburdenError):
    """Slice stack or image/mask geometry that cannot be measured on."""


class MaskError(LiverburdenError):
    """A mask that is empty where it must not be, or holds unexpected labels."""


class ConfigError(LiverburdenError):
    """A configuration value or flag that does not validate."""


class RegistrationError(LiverburdenError):
    """A registration that cannot be run on the given inputs."""


class ExportError(LiverburdenError):
    """An output that cannot be written."""
