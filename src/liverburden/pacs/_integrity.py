"""Is a received instance complete? Checked before the listener answers Success.

pydicom reads a truncated file without complaint: the last element simply ends
early (a CT cut in half keeps half its PixelData). Answering Success to that tells
the sender it may forget the instance; the study would later be parked as corrupt
and never resent. So the store handler parses the whole dataset and checks the pixel
data: native (uncompressed) PixelData must be as long as Rows x Columns x
SamplesPerPixel x NumberOfFrames x BitsAllocated / 8 (bit-packed when BitsAllocated
= 1, padded to even); encapsulated PixelData must be whole items (the basic offset
table and at least one fragment per frame) ending exactly at the end of the value.
Messages name no UID or patient data.
"""

from __future__ import annotations

import io
import struct
import warnings

_NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}


def _expected_native(ds) -> int:
    rows, cols = int(ds.Rows), int(ds.Columns)
    spp = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    bits = int(ds.BitsAllocated)
    if bits == 1:
        return (rows * cols * spp * frames + 7) // 8
    return rows * cols * spp * frames * (bits // 8)


def _encapsulated_problem(value: bytes, frames: int, little: bool = True) -> str | None:
    fmt = "<HHI" if little else ">HHI"
    pos, items = 0, 0
    while pos < len(value):
        if pos + 8 > len(value):
            return "encapsulated pixel data ends inside an item header"
        group, elem, length = struct.unpack_from(fmt, value, pos)
        if (group, elem) == (0xFFFE, 0xE0DD):
            break
        if (group, elem) != (0xFFFE, 0xE000):
            return "encapsulated pixel data holds a non-item element"
        if pos + 8 + length > len(value):
            return "encapsulated pixel data is truncated (an item runs past the end)"
        pos += 8 + length
        items += 1
    if items < 1 + frames:
        return f"encapsulated pixel data has {max(items - 1, 0)} fragment(s) for {frames} frame(s)"
    return None


def incomplete(data: bytes) -> str | None:
    """Why ``data`` (a Part 10 stream) is not a complete instance, or None."""
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=False)
            for _ in ds.iterall():  # every element (and sequence item) parsed now, not later
                pass
    except Exception as exc:  # noqa: BLE001 - any parse failure means incomplete
        return f"the dataset cannot be parsed ({type(exc).__name__})"
    if "PixelData" not in ds:
        return "no pixel data"
    for kw in ("Rows", "Columns", "BitsAllocated"):
        if kw not in ds:
            return f"no {kw}"
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "1.2.840.10008.1.2")
    value = ds["PixelData"].value
    if value is None:
        return "empty pixel data"
    try:
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return "NumberOfFrames is not a number"
    if ts in _NATIVE:
        want = _expected_native(ds)
        if len(value) < want:
            return f"pixel data is truncated ({len(value)} of {want} bytes)"
        return None
    return _encapsulated_problem(bytes(value), frames)
