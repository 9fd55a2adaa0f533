"""The block and head registries and every built-in op family (importing this registers them)."""

from fbnas.blocks import conv, irf, light, mobileone, pool, resnet  # noqa: F401  (registration)
from fbnas.blocks.heads import (
    HEADS,
    ClsConvHead,
    HeadOp,
    HeadPlan,
    classifier_head,
    head_classes,
    head_spec_for,
    register_head,
)
from fbnas.blocks.layers import Cost
from fbnas.blocks.mobileone import reparameterize_model
from fbnas.blocks.registry import BLOCKS, BlockPlan, OpDef, register_block

__all__ = [
    "BLOCKS",
    "HEADS",
    "BlockPlan",
    "ClsConvHead",
    "Cost",
    "HeadOp",
    "HeadPlan",
    "OpDef",
    "classifier_head",
    "head_classes",
    "head_spec_for",
    "register_block",
    "register_head",
    "reparameterize_model",
]
