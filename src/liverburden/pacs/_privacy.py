"""Keep identifiers out of the logs of the PACS processes (``conventions.md``
"Identifiers"; house style 13).

Third-party libraries log and warn with dataset contents: pynetdicom logs PDUs
and UIDs at INFO/DEBUG, highdicom logs the SOP Instance UID of every dataset it
copies from at INFO, pydicom warns with element values (a malformed name or UID
is quoted). The entry points of ``listen``, its workers and ``orthanc`` call
:func:`quiet_third_party` once; library code never configures logging.
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["quiet_third_party"]

_THIRD_PARTY = ("pynetdicom", "highdicom", "pydicom")


def _showwarning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
    # the text may quote a data element value: name only where it came from
    mod = filename.replace("\\", "/").rsplit("/site-packages/", 1)[-1]
    logging.getLogger("liverburden.pacs").debug("a %s from %s:%d was suppressed (its text may quote data)",
                                                getattr(category, "__name__", "warning"), mod, lineno)


def quiet_third_party() -> None:
    """Third-party loggers at WARNING; Python warnings logged without their text."""
    for name in _THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.showwarning = _showwarning
