"""The block registry and every built-in op family (importing this registers them)."""

from fbnas.blocks import conv, irf, mobileone, pool, resnet  # noqa: F401  (registration)
from fbnas.blocks.layers import Cost
from fbnas.blocks.mobileone import reparameterize_model
from fbnas.blocks.registry import BLOCKS, BlockPlan, OpDef, register_block

__all__ = ["BLOCKS", "BlockPlan", "Cost", "OpDef", "register_block", "reparameterize_model"]
