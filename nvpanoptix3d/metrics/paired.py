"""Is B better than A? A paired bootstrap over whole scenes of per-frame PRQ counts.

The synthetic splits hold consecutive views of each room, which share its layout and its depth's scale error:
resampling views one by one would count them as independent and narrow the interval.
"""
from __future__ import annotations

import numpy as np

from .panoptic import quality_of_counts


def paired_interval(a: np.ndarray, b: np.ndarray, samples: int, seed: int = 0,
                    views_per_scene: int = 1) -> tuple[float, float, float]:
    """a, b: frames x classes x 4, each scene's views consecutive. (PRQ(b) - PRQ(a), and the 2.5% and 97.5%
    quantiles of that difference over bootstrap resamples of the scenes, the same scenes for both.)"""
    if len(a) % views_per_scene:
        raise SystemExit(f"error: {len(a)} frames are not whole scenes of --views-per-scene {views_per_scene}; "
                         "pass the split's frames per scene, or 1 to resample frames one by one")
    a, b = (x.reshape(-1, views_per_scene, *x.shape[1:]).sum(1) for x in (a, b))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(a), size=(samples, len(a)))
    diff = quality_of_counts(b[picks].sum(1)) - quality_of_counts(a[picks].sum(1))
    low, high = np.quantile(diff, [0.025, 0.975])
    return float(quality_of_counts(b.sum(0)) - quality_of_counts(a.sum(0))), float(low), float(high)
