"""Slimmable (dynamic-width) networks: slim ops, blocks, ``DynModel``, extraction and cost.

The hierarchy is the seed's, ``SlimModel -> SlimStage -> SlimBlock -> SlimOps``; see
``docs/slim.md`` for the width interface and how to write a slim model of your own::

    from fbnas.slim import build_slim_model, extract_subnet, subnet_cost

    model = build_slim_model("slim_mbv2", num_classes=10)   # full width = the zoo's mnv2
    real_ch = model.decode_ch(model.decode_wm([0.5] * model.search_dim))
    model.set_real_ch(real_ch)                               # runs at those widths
    subnet_cost(model, real_ch, 224)                         # Cost(params=..., macs=...)
    static = extract_subnet(model, real_ch)                  # a plain fbnas FBNet
"""

from fbnas.slim.blocks import (
    SlimBasicBlock,
    SlimBlock,
    SlimBottleNeck,
    SlimConvBlock,
    SlimDWSConv,
    SlimInvertedResidual,
    SlimIRPool,
    SlimPassThrough,
    slim_block,
)
from fbnas.slim.channels import ChannelGroups, Dimension, PartLayout, UnitLayout, WidthSlot
from fbnas.slim.cost import ModuleCost, module_costs, output_positions, subnet_cost
from fbnas.slim.dyn_model import DynModel, SlimStage
from fbnas.slim.errors import SlimConfigError
from fbnas.slim.extract import active_state, extract_arch_spec, extract_subnet, widths_set
from fbnas.slim.models import SLIM_MODELS, SlimClsHead, SlimFBNet, build_slim_model
from fbnas.slim.ops import SlimBatchNorm2d, SlimConv2d, SlimConvBNRelu, SlimLinear, SlimSE

__all__ = [
    "SLIM_MODELS",
    "ChannelGroups",
    "Dimension",
    "DynModel",
    "ModuleCost",
    "PartLayout",
    "SlimBasicBlock",
    "SlimBatchNorm2d",
    "SlimBlock",
    "SlimBottleNeck",
    "SlimClsHead",
    "SlimConfigError",
    "SlimConv2d",
    "SlimConvBNRelu",
    "SlimConvBlock",
    "SlimDWSConv",
    "SlimFBNet",
    "SlimIRPool",
    "SlimInvertedResidual",
    "SlimLinear",
    "SlimPassThrough",
    "SlimSE",
    "SlimStage",
    "UnitLayout",
    "WidthSlot",
    "active_state",
    "build_slim_model",
    "extract_arch_spec",
    "extract_subnet",
    "module_costs",
    "output_positions",
    "slim_block",
    "subnet_cost",
    "widths_set",
]
