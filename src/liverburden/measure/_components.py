"""Lesion / tumor instances from the run table (``conventions.md`` "Lesions").

A mask with several lesion values is read as instance labels ("auto" mode):
each value is one lesion with that id, even with several components. A binary
mask is split into components, numbered 1..N in raster (C) order of each
component's first voxel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import kernels as K


@dataclass(frozen=True)
class Groups:
    """Runs grouped into lesions. ``group[r]`` is run r's lesion index 0..n-1."""

    mode: str  # "binary" | "instances"
    group: np.ndarray
    n: int
    ids: np.ndarray  # lesion id of each group
    components: np.ndarray  # connected components per group
    order: np.ndarray  # run indices sorted by group (raster order inside)
    starts: np.ndarray  # offsets into order


def group_runs(runs: np.ndarray, shape_zy: tuple[int, int], mode: str, connectivity: int,
               perm: tuple[int, int, int] = (0, 1, 2), input_shape: tuple[int, int, int] | None = None) -> Groups:
    """Group runs into lesions; ``perm`` maps scanned axes to input axes (ids follow input raster order)."""
    values = np.unique(runs[:, K.RUN_VALUE]) if runs.shape[0] else np.zeros(0, dtype=np.int64)
    if mode == "auto":
        mode = "instances" if values.size > 1 else "binary"
    if runs.shape[0]:
        comp, n_comp = K._connect_runs(runs, np.array(shape_zy, dtype=np.int64), int(connectivity), mode == "instances")
    else:
        comp, n_comp = np.zeros(0, dtype=np.int64), 0
    if mode == "instances":
        group = np.searchsorted(values, runs[:, K.RUN_VALUE]).astype(np.int64) if runs.shape[0] else np.zeros(0, np.int64)
        ncomp = np.zeros(values.size, dtype=np.int64)
        if runs.shape[0]:
            comp_value = np.zeros(n_comp, dtype=np.int64)
            comp_value[comp] = group
            ncomp = np.bincount(comp_value, minlength=values.size)
        n = int(values.size)
        ids = values.astype(np.int64)
    else:
        group = comp.astype(np.int64)
        n = int(n_comp)
        ncomp = np.ones(n, dtype=np.int64)
        if n and tuple(perm) != (0, 1, 2):
            # ids follow raster order of the INPUT array's first voxel
            assert input_shape is not None
            first = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
            for col in (K.RUN_X0, K.RUN_X1):
                idx_scan = np.stack([runs[:, K.RUN_Z], runs[:, K.RUN_Y], runs[:, col]], axis=1)
                idx_in = np.empty_like(idx_scan)
                idx_in[:, list(perm)] = idx_scan
                np.minimum.at(first, group, np.ravel_multi_index(idx_in.T, input_shape))
            rank = np.argsort(np.argsort(first, kind="stable"), kind="stable")
            group = rank[group]
        ids = np.arange(1, n + 1, dtype=np.int64)
    order = np.argsort(group, kind="stable").astype(np.int64)
    starts = np.searchsorted(group[order], np.arange(n + 1)).astype(np.int64)
    return Groups(mode, group, n, ids, ncomp, order, starts)
