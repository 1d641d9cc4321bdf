"""Ablation margins and the A0/A1/A2 classification (``clinical-reference.md`` section 4)."""

from ._margin import Classification, MarginResult, TumorMargin, margins_arrays

__all__ = ["Classification", "MarginResult", "TumorMargin", "margins_arrays"]
