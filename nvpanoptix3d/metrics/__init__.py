from .panoptic import (ClassScore, PanopticAccumulator, PanopticResult, confusion_iou,  # noqa: F401
                       occupancy_iou, segments)
