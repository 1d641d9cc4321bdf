"""Input: DICOM series and multi-frame images, NIfTI/NRRD volumes, DICOM SEG masks."""

from ._dicom import SeriesGeometry, SeriesInfo, read_series_pixels, scan_dicom, series_geometry, show_descriptions
from ._masks import read_seg, read_volume_file
from ._sitk import volume_from_sitk, volume_to_sitk
from ._study import Study, StudyHeader, hash_files, load_image, load_mask_on, load_study, pseudonym

__all__ = [
    "SeriesGeometry",
    "SeriesInfo",
    "Study",
    "StudyHeader",
    "hash_files",
    "load_image",
    "load_mask_on",
    "load_study",
    "pseudonym",
    "read_series_pixels",
    "read_seg",
    "read_volume_file",
    "scan_dicom",
    "series_geometry",
    "show_descriptions",
    "volume_from_sitk",
    "volume_to_sitk",
]
