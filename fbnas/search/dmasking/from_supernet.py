"""A derived network initialised from the masked supernet: the chosen leading channels.

Under full weight sharing a width option *is* the leading slice of the supernet's weights
(ALGORITHMS.md §2.1), and a kernel option the centred window of the widest kernel. So the
derived network of a choice starts from exactly the function the supernet computes with
one-hot weights at that choice (a test holds it); FBNetV2 trains it from scratch, this is
the fine-tuning alternative (``fbnas train --init-from-supernet RUN``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fbnas.search.dmasking.supernet import MaskedSupernet
from fbnas.search.run_folder import CONFIG_FILE
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
                 for block, o, skipped in zip(supernet.blocks, supernet.block_options,
                                              supernet.skipped_of(choice), strict=True)
                 if not skipped]  # an identity has no weights
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



def is_masked_run(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a ``fbnas search dmasking`` run (its search_config.json says)."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("search") == "dmasking"
    except (OSError, ValueError):
        return False


def load_masked_run(folder: str | os.PathLike) -> tuple[MaskedSupernet, int]:
    """(the supernet of a DMasking run folder with its trained weights, epochs done).

    Raises:
        FileNotFoundError: no ``search_config.json`` or ``last.pt``.
        CheckpointError: ``last.pt`` does not fit the run's space.
    """
    from fbnas.search.dmasking.search import read_run_config
    from fbnas.train.checkpoint import read_checkpoint
    from fbnas.zoo.checkpoint import CheckpointError

    folder = Path(folder)
    ckpt = folder / "last.pt"
    if not (folder / CONFIG_FILE).is_file() or not ckpt.is_file():
        raise FileNotFoundError(f"{str(folder)!r} is not a DMasking run with a checkpoint "
                                f"({CONFIG_FILE} and last.pt)")
    space, run, config = read_run_config(folder)
    net = MaskedSupernet(space, int(run["num_classes"]), "params" if config.cost == "latency"
                         else config.cost)
    state = read_checkpoint(ckpt)
    try:
        net.load_state_dict(state["supernet"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{str(ckpt)!r} does not fit the supernet of space "
                              f"{space.name!r}: {exc}") from None
    return net, int(state.get("epoch", -1)) + 1


def match_choice(folder: str | os.PathLike, net: MaskedSupernet, arch_def: dict[str, Any]
                 ) -> list[int]:
    """The choice of an arch def written by the run (``arch.json``, ``samples/*.json``).

    Raises:
        ArchDefError: no arch file of the run has this arch def.
    """
    from fbnas.arch.errors import ArchDefError
    from fbnas.arch.unify import unify_arch_def

    wanted = unify_arch_def(arch_def)
    folder = Path(folder)
    for path in [folder / "arch.json", *sorted((folder / "samples").glob("*.json"))]:
        if path.is_file():
            record = json.loads(path.read_text())
            if "choice" in record and unify_arch_def(record["arch_def"]) == wanted:
                return net.check_choice(record["choice"])
    raise ArchDefError(f"the arch def is none of {folder}'s derived or sampled architectures "
                       f"(arch.json, samples/): --init-from-supernet takes those")


def init_from_masked_supernet(model: nn.Module, folder: str | os.PathLike
                              ) -> tuple[list[str], int]:
    """Copies the chosen leading channels of a DMasking run's supernet into ``model`` (built
    from one of the run's arch files); returns (the choice's names, the epochs searched)."""
    from fbnas.train.regularize import load_init_weights

    net, epochs = load_masked_run(folder)
    choice = match_choice(folder, net, model.arch_spec.to_arch_def())
    load_init_weights(model, subnet_state_dict(net, choice))
    return net.choice_names(choice), epochs


__all__ = ["init_from_masked_supernet", "is_masked_run", "load_masked_run", "match_choice",
           "subnet_state_dict"]
