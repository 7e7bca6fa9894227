from .panoptic import ClassScore, PanopticAccumulator, PanopticResult, SegmentMask, segments, thickened_segments  # noqa: F401
