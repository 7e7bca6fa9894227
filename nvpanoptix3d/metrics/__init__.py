from .panoptic import (ClassScore, PanopticAccumulator, PanopticResult, SegmentMask, class_counts,  # noqa: F401
                       quality_of_counts, segments, thickened_segments)
