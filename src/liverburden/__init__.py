"""liverburden: tumor burden in the liver from CT/MR, measured to the voxel.

Public API (everything else is private and may change)::

    measure_arrays(liver, lesions, spacing_mm, direction=None, origin_mm=None,
                   segments=None, config=None) -> MeasureResult
    margins_arrays(tumor, zone, spacing_mm, direction=None, origin_mm=None,
                   liver=None, config=None) -> MarginResult
"""

from ._exceptions import (
    ConfigError,
    ExportError,
    GeometryError,
    InputError,
    LiverburdenError,
    MaskError,
    RegistrationError,
    SeriesSelectionError,
)
from ._version import __version__
from .config import default_config, load_config
from .geometry import Volume
from .margin import Classification, MarginResult, TumorMargin, margins_arrays
from .measure import Lesion, LiverBurden, MeasureResult, measure_arrays, measure_volumes

__all__ = [
    "Classification",
    "ConfigError",
    "ExportError",
    "GeometryError",
    "InputError",
    "Lesion",
    "LiverBurden",
    "LiverburdenError",
    "MarginResult",
    "MaskError",
    "MeasureResult",
    "RegistrationError",
    "SeriesSelectionError",
    "TumorMargin",
    "Volume",
    "__version__",
    "default_config",
    "load_config",
    "margins_arrays",
    "measure_arrays",
    "measure_volumes",
]
