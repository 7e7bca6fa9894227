from .panoptic import ClassScore, PanopticAccumulator, PanopticResult, segments  # noqa: F401
