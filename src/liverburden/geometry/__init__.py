"""Geometry: the :class:`Volume`, grid comparison and lossless reorientation."""

from ._volume import (
    DIRECTION_TOL,
    POSITION_TOL_VOXEL,
    SPACING_REL_TOL,
    Volume,
    describe_geometry,
    embed_in_grid,
    ld_axis,
    match_to_grid,
)

__all__ = [
    "DIRECTION_TOL",
    "POSITION_TOL_VOXEL",
    "SPACING_REL_TOL",
    "Volume",
    "describe_geometry",
    "embed_in_grid",
    "ld_axis",
    "match_to_grid",
]
