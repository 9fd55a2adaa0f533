"""A derived network initialised from the masked supernet: the chosen leading channels.

Under full weight sharing a width option *is* the leading slice of the supernet's weights
(ALGORITHMS.md §2.1), and a kernel option the centred window of the widest kernel. So the
derived network of a choice starts from exactly the function the supernet computes with
one-hot weights at that choice (a test holds it); FBNetV2 trains it from scratch, this is
the fine-tuning alternative (``fbnas train --init-from-supernet RUN``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fbnas.search.dmasking.supernet import MaskedSupernet
from fbnas.slim.errors import SlimConfigError
from fbnas.slim.extract import active_state, widths_set


def _fit(tensor: torch.Tensor, shape: torch.Size, where: str) -> torch.Tensor:
    """``tensor`` as ``shape``: equal, or a larger square kernel cropped to its centre."""
    if tensor.shape == shape:
        return tensor
    if (tensor.dim() == 4 and tensor.shape[:2] == shape[:2]
            and tensor.shape[2] >= shape[2] and (tensor.shape[2] - shape[2]) % 2 == 0):
        cut = (tensor.shape[2] - shape[2]) // 2
        return tensor[:, :, cut:tensor.shape[2] - cut, cut:tensor.shape[3] - cut]
    raise SlimConfigError(f"{where}: supernet tensor {tuple(tensor.shape)} does not fit the "
                          f"derived network's {tuple(shape)}")


def subnet_state_dict(supernet: MaskedSupernet, choice: Sequence[int]
                      ) -> dict[str, torch.Tensor]:
    """The weights of ``choice``'s derived network, keyed as ``fbnas.build_model`` of
    :meth:`MaskedSupernet.arch_def` names them (copies, contiguous).

    Example:
        >>> from fbnas import build_model
        >>> net = MaskedSupernet("dmasking_digits", num_classes=10)
        >>> choice = net.derive()
        >>> model = build_model(net.arch_def(choice), num_classes=10)
        >>> model.load_state_dict(subnet_state_dict(net, choice))
        <All keys matched successfully>
    """
    from fbnas.zoo.model import build_model

    arch = supernet.arch_def(choice)
    target = build_model(arch, num_classes=supernet.num_classes).state_dict()
    state: dict[str, torch.Tensor] = {}
    with widths_set(supernet.net, supernet.widths_of(choice)):
        parts = [(f"backbone.stages.xif{o.stage}_{o.index}.", block)
                 for block, o in zip(supernet.blocks, supernet.block_options, strict=True)]
        parts.append(("head.", supernet.net.head))
        for prefix, module in parts:
            for key, tensor in active_state(module).items():
                name = prefix + key
                if name not in target:
                    raise SlimConfigError(f"{name}: not in the derived network")
                state[name] = _fit(tensor, target[name].shape, name).detach().clone(
                    memory_format=torch.contiguous_format)
    missing = sorted(set(target) - set(state))
    if missing:
        raise SlimConfigError(f"the supernet has no weights for {', '.join(missing[:5])}")
    return state


__all__ = ["subnet_state_dict"]
