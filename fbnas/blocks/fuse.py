"""Folding BatchNorm into the preceding convolution, for inference (export, latency).

It lives with the blocks because it rewrites their layers (``ConvBNRelu``): the latency
tables time folded blocks and the exporter writes folded networks, both from here.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from fbnas.blocks.layers import ConvBNRelu


def _fold_conv_bn(conv: nn.Conv2d, bn: _BatchNorm) -> nn.Conv2d:
    """A conv equal to conv -> BN (eval): w * gamma / std, (b - mean) * gamma / std + beta."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, bias=True,
                      padding_mode=conv.padding_mode, device=conv.weight.device,
                      dtype=conv.weight.dtype)
    with torch.no_grad():
        mean, var = bn.running_mean, bn.running_var
        gamma = bn.weight if bn.weight is not None else torch.ones_like(mean)
        beta = bn.bias if bn.bias is not None else torch.zeros_like(mean)
        scale = gamma / torch.sqrt(var + bn.eps)
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(mean)
        fused.bias.copy_((bias - mean) * scale + beta)
    return fused


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Folds every ``ConvBNRelu``'s BatchNorm into its conv, in place (eval semantics).

    Returns ``model``. BatchNorm and SyncBatchNorm with running statistics are folded (with
    or without affine parameters); group and instance norms depend on the input and stay.
    """
    for module in model.modules():
        if isinstance(module, ConvBNRelu):
            bn = getattr(module, "bn", None)
            if isinstance(bn, _BatchNorm) and bn.running_mean is not None:
                module.conv = _fold_conv_bn(module.conv, bn)
                module.bn = nn.Identity()
    return model
