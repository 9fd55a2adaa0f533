"""Cost models: counted and analytic params/MACs (latency tables come later)."""

from fbnas.blocks.counting import count_breakdown, count_macs, count_module, count_params
from fbnas.cost.analytic import ArchCost, BlockCostRow, arch_cost, spec_cost

__all__ = [
    "ArchCost",
    "BlockCostRow",
    "arch_cost",
    "count_breakdown",
    "count_macs",
    "count_module",
    "count_params",
    "spec_cost",
]
