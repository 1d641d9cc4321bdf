"""Keep identifiers out of the logs of the PACS processes (``conventions.md``
"Identifiers"; house style 13).

Third-party libraries log and warn with dataset contents: pynetdicom logs PDUs
and UIDs at INFO/DEBUG, highdicom logs the SOP Instance UID of every dataset it
copies from at INFO, pydicom warns with element values (a malformed name or UID
is quoted). The entry points of ``listen``, its workers and ``orthanc`` call
:func:`quiet_third_party` once; library code never configures logging.

It is the command line's :func:`liverburden._privacy.install` (warnings and
third-party records keep their origin, their text is withheld unless
``--debug``) plus the third-party loggers held at WARNING, so pynetdicom's
per-PDU INFO chatter is not even produced in a long-running service.
"""

from __future__ import annotations

import logging

from .. import _privacy

__all__ = ["quiet_third_party"]

_THIRD_PARTY = ("pynetdicom", "highdicom", "pydicom")


def quiet_third_party(debug: bool = False) -> None:
    """Third-party loggers at WARNING; their records and Python warnings scrubbed."""
    for name in _THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.WARNING)
    _privacy.install(debug=debug)
