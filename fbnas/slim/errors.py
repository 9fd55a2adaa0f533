"""The one exception type for a bad width setting of a slimmable network."""

from __future__ import annotations

from fbnas.errors import FbnasError


class SlimConfigError(FbnasError, ValueError):
    """A width vector or channel setting a slimmable network cannot run.

    Raised for a ``wm`` of the wrong length or with values outside (0, 1], channel counts
    out of range or breaking a residual/depthwise tie, an input with the wrong number of
    channels, and an arch def whose blocks have no slimmable version. The message names the
    layer or the width dimension, so callers (search loops, the CLI) catch exactly this type
    and never see a stack trace from inside torch.
    """
