"""Synthetic indoor scenes in the 3D-FRONT / NVPanoptix3D layout with exact 2D and 3D panoptic ground truth."""
from .generate import SynthFrame, generate_frame, write_dataset  # noqa: F401
