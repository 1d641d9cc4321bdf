"""Measurements on label arrays: lesions, diameters, liver burden, RECIST selection."""

from ._measure import Lesion, LiverBurden, MeasureResult, measure_arrays, measure_volumes

__all__ = ["Lesion", "LiverBurden", "MeasureResult", "measure_arrays", "measure_volumes"]
