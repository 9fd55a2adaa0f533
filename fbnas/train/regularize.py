"""Applying a recipe's regularisers and starting weights to an fbnas model.

The zoo's classifier has no dropout and its residual adds no drop path by default (both
belong to the training recipe, not to the architecture), so the recipe sets them here on
a built model without changing its state-dict keys: checkpoints stay loadable by
``fbnas export`` and by mobile-vision.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fbnas.zoo.checkpoint import CheckpointError, load_mobile_cv_state_dict

logger = logging.getLogger(__name__)

HEAD_KEYS = ("head.conv.weight", "head.conv.bias")


def set_drop_path(model: nn.Module, rate: float) -> list[float]:
    """Sets depth-ascending drop-path rates on the residual adds; returns the rate per block.

    Block j of the B blocks of ``model.backbone.stages`` (counted from 0 in forward order,
    residual or not) gets ``rate·(j+1)/B``: the deepest block drops with ``rate``, the first
    with ``rate/B`` (stochastic depth, Huang et al. 2016; [S001]'s ascending rule). Blocks
    without a residual add have nothing to drop; their entries are still counted so the
    schedule follows depth, not the number of residual blocks.
    """
    stages = getattr(getattr(model, "backbone", None), "stages", None)
    if stages is None:
        raise TypeError("drop path needs an fbnas model with backbone.stages")
    blocks = list(stages.children())
    rates = []
    for j, block in enumerate(blocks):
        p = rate * (j + 1) / len(blocks)
        res_conn = getattr(block, "res_conn", None)
        if res_conn is not None and hasattr(res_conn, "drop_connect_rate"):
            res_conn.drop_connect_rate = p if p > 0 else None
        rates.append(p)
    return rates


class _HeadDropout:
    """A forward pre-hook on the classifier conv: dropout on its pooled input while training.

    A hook rather than a module so that the state dict (and thus checkpoint compatibility
    with the zoo and mobile-vision) is unchanged; it survives ``copy.deepcopy`` (the EMA).
    """

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, module: nn.Module, args: tuple[torch.Tensor, ...]
                 ) -> tuple[torch.Tensor, ...]:
        return (F.dropout(args[0], self.p, module.training), *args[1:])


def set_head_dropout(model: nn.Module, p: float) -> None:
    """Adds dropout with probability ``p`` before the classifier (``model.head.conv``)."""
    conv = getattr(getattr(model, "head", None), "conv", None)
    if conv is None:
        raise TypeError("dropout needs an fbnas classifier with head.conv")
    if p > 0:
        conv.register_forward_pre_hook(_HeadDropout(p))


def load_init_weights(model: nn.Module, state: Mapping[str, Any]) -> str:
    """Loads starting weights (an fbnas or mobile-vision checkpoint), strictly but for the head.

    EMA weights are preferred when the checkpoint has them. When the classifier's class
    count differs (fine-tuning ImageNet weights on CIFAR), the head is left at its fresh
    initialisation and everything else must match exactly.

    Returns:
        A one-line note on what was loaded, for the log.

    Raises:
        CheckpointError: missing/unexpected keys or mismatched shapes (listed).
    """
    from fbnas.zoo.checkpoint import strip_module_prefix, unwrap_state_dict

    tensors = {strip_module_prefix(k): v for k, v in unwrap_state_dict(state).items()}
    own = model.state_dict()
    head_differs = any(k in tensors and k in own and tensors[k].shape != own[k].shape
                       for k in HEAD_KEYS)
    if not head_differs:
        load_mobile_cv_state_dict(model, tensors)
        return "loaded all weights"
    classes = tuple(tensors[HEAD_KEYS[0]].shape)[0]
    for key in HEAD_KEYS:
        tensors[key] = own[key]
    load_mobile_cv_state_dict(model, tensors)
    return (f"loaded all weights but the classifier (the checkpoint has {classes} classes, "
            f"the model {own[HEAD_KEYS[0]].shape[0]}; the head keeps its fresh init)")


def read_init_weights(path: str | os.PathLike) -> Mapping[str, Any]:
    """Reads a weights file for :func:`load_init_weights` (weights-only)."""
    from fbnas.train.checkpoint import read_checkpoint

    state = read_checkpoint(path)
    if not state:
        raise CheckpointError(f"checkpoint {str(path)!r} is empty")
    return state
