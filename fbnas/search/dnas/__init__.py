"""FBNetV1 DNAS: a Gumbel-softmax supernet over a search space, latency-aware."""

from fbnas.search.cost_loss import CostLoss
from fbnas.search.dnas.supernet import (
    LayerCosts,
    MixedOp,
    Supernet,
    layer_costs,
    subnet_state_dict,
)

__all__ = ["CostLoss", "LayerCosts", "MixedOp", "Supernet", "layer_costs", "subnet_state_dict"]
