from .panoptic import (ClassScore, PanopticAccumulator, PanopticResult, SegmentMask, segments,  # noqa: F401
                       thickened_segments)
