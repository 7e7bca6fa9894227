"""Small building blocks shared by the 2D and 3D stages."""
from __future__ import annotations

import math

from torch import nn


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with at most `groups` groups that divide `channels`: widths come from the spec (and AutoML
    samples any integer), while GroupNorm demands a divisor. Same parameters whatever the grouping."""
    return nn.GroupNorm(math.gcd(groups, channels), channels)
