"""fbnas: hardware-aware neural architecture search of efficient ConvNets (the FBNet family).

The public entry points::

    import fbnas
    model = fbnas.build_model("FBNetV3_A", num_classes=1000)
    fbnas.cost.arch_cost("FBNetV3_A").macs
"""

from fbnas import blocks as blocks  # registers the built-in ops
from fbnas.arch import ArchDefError, ArchSpec, BlockSpec, HeadSpec, unify_arch_def
from fbnas.blocks import register_block, register_head
from fbnas.builder import FBNetBuilder
from fbnas.version import __version__ as __version__
from fbnas.zoo import build_model

__all__ = [
    "ArchDefError",
    "ArchSpec",
    "BlockSpec",
    "FBNetBuilder",
    "HeadSpec",
    "build_model",
    "register_block",
    "register_head",
    "unify_arch_def",
]
