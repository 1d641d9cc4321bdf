"""Registration of the post-ablation scan to the pre-ablation scan (SimpleITK)."""

from ._register import RegistrationResult, apply_to_points, register_volumes, resample_mask_into

__all__ = ["RegistrationResult", "apply_to_points", "register_volumes", "resample_mask_into"]
