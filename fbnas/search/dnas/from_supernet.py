"""Starting a derived subnet from the weights its supernet learnt during the search.

FBNet retrains the derived architectures from scratch (ALGORITHMS.md §1.6). The NNI
FBNet-for-PFLD flow (seed 004) instead samples the subnet from the pre-trained supernet and
fine-tunes it: every chosen candidate block starts with the weights it had in the supernet,
and so do the fixed stem, tail and classifier. This module does that for a DNAS run folder:

1. :func:`load_supernet_run` reads ``RUN/search_config.json`` and ``RUN/last.pt``
   (weights-only) and rebuilds the supernet with the searched weights;
2. :func:`match_choices` finds which candidate of every searchable layer an arch def uses,
   and refuses an arch def that is not a path of that supernet, naming the first layer that
   differs;
3. :func:`init_from_supernet` copies those candidates' weights into the model built from
   the arch def.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from fbnas.arch.errors import ArchDefError
from fbnas.arch.spec import ArchSpec, BlockSpec
from fbnas.arch.unify import unify_arch_def
from fbnas.search.dnas.search import (
    SEARCH_CONFIG,
    DNASConfig,
    read_search_config,
    searched_space,
)
from fbnas.search.dnas.supernet import LayerCosts, Supernet, subnet_state_dict
from fbnas.search.space import SearchSpace
from fbnas.train.checkpoint import read_checkpoint
from fbnas.train.regularize import load_init_weights
from fbnas.zoo.checkpoint import CheckpointError

logger = logging.getLogger(__name__)

SUPERNET_CHECKPOINT = "last.pt"


@dataclass(frozen=True)
class SupernetRun:
    """A finished (or interrupted) DNAS search: its space, settings and trained supernet."""

    folder: Path
    space: SearchSpace
    config: DNASConfig
    data: str
    epochs_done: int
    supernet: Supernet


def load_supernet_run(folder: str | os.PathLike, space: SearchSpace | None = None
                      ) -> SupernetRun:
    """Rebuilds the supernet of a ``fbnas search dnas`` run folder with its trained weights.

    Args:
        folder: the run folder (``--out`` of the search).
        space: the searched space, for runs that do not hold its definition (written
            before ``search_config.json`` kept ``space_def``) and did not search a
            registered space.

    Raises:
        FileNotFoundError: no such folder, or it lacks ``search_config.json`` or ``last.pt``.
        CheckpointError: ``last.pt`` is unreadable or does not fit the space.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"supernet run folder {str(folder)!r} does not exist")
    config_path, ckpt_path = folder / SEARCH_CONFIG, folder / SUPERNET_CHECKPOINT
    if not config_path.is_file():
        raise FileNotFoundError(f"{str(folder)!r} is not a DNAS search run: it has no "
                                f"{SEARCH_CONFIG}")
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"supernet run {str(folder)!r} has no {SUPERNET_CHECKPOINT} "
                                f"(the search writes it after its first epoch)")
    try:
        saved, config = read_search_config(config_path)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{str(config_path)!r}: {exc}") from None
    if space is not None and space.name != saved["space"]:
        raise ArchDefError(f"supernet run {str(folder)!r} searched space {saved['space']!r}, "
                           f"not {space.name!r}")
    space = space or searched_space(saved, str(config_path))
    state = read_checkpoint(ckpt_path)
    if "supernet" not in state:
        raise CheckpointError(f"{str(ckpt_path)!r} is not a DNAS search checkpoint (no "
                              f"'supernet' weights)")
    weights = state["supernet"]
    num_classes = saved.get("num_classes")
    if num_classes is None:  # runs saved before the key was written
        num_classes = int(weights["head.conv.weight"].shape[0])
    # The costs only weigh the expected cost of a forward pass; the copy needs none.
    costs = LayerCosts(tuple((0.0,) * len(layer.candidates) for layer in space.layers), 0.0,
                       config.cost)
    supernet = Supernet(space, costs, num_classes=int(num_classes),
                        resolution=config.resolution or space.input_size)
    try:
        supernet.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"{str(ckpt_path)!r} does not fit the supernet of space "
                              f"{space.name!r} (was the space changed after the search?): "
                              f"{exc}") from None
    return SupernetRun(folder, space, config, str(saved.get("data", "")),
                       int(state.get("epoch", -1)) + 1, supernet)


def _same_block(a: BlockSpec, b: BlockSpec) -> bool:
    """Same op, width, stride and options (the place in the network is compared apart)."""
    return (a.op, a.out_channels, a.stride, a.kwargs) == (b.op, b.out_channels, b.stride,
                                                          b.kwargs)


def _describe(block: BlockSpec) -> str:
    options = f" {block.kwargs.to_dict()}" if block.kwargs else ""
    return f"{block.op} (out {block.out_channels}, stride {block.stride}){options}"


def match_choices(space: SearchSpace, arch: ArchSpec | dict[str, Any]) -> list[int]:
    """The candidate index of every searchable layer that ``arch`` uses.

    Args:
        space: the searched space.
        arch: an arch def (or its unified spec) meant to be a path of the space's supernet:
            the space's fixed blocks, one candidate per searchable layer, the same
            network-wide ``basic_args``.

    Raises:
        ArchDefError: naming the first layer (or fixed block) where ``arch`` is not a path.
    """
    spec = arch if isinstance(arch, ArchSpec) else unify_arch_def(arch)
    # Architecture j of the Latin square holds candidate (j + l) mod K_l at layer l, so
    # these few networks show every candidate at its place.
    squares = [unify_arch_def(a) for a in space.all_candidate_archs()]
    reference = squares[0]
    n_prefix = sum(int(b[3]) if len(b) > 3 else 1 for stage in space.prefix for b in stage)
    where = f"is not a path of the supernet of space {space.name!r}"
    if len(spec.blocks) != len(reference.blocks):
        raise ArchDefError(f"the arch def has {len(spec.blocks)} blocks, the space "
                           f"{space.name!r} {len(reference.blocks)} ({n_prefix} fixed, "
                           f"{len(space.layers)} searchable, the rest fixed); it {where}")
    if spec.basic_args != reference.basic_args:
        raise ArchDefError(f"the arch def's basic_args {spec.basic_args.to_dict()} differ from "
                           f"the space's {reference.basic_args.to_dict()}; it {where}")
    choices = []
    for position, block in enumerate(spec.blocks):
        layer = position - n_prefix
        if not 0 <= layer < len(space.layers):
            if not _same_block(block, reference.blocks[position]):
                raise ArchDefError(f"fixed block {block.name}: {_describe(block)} differs "
                                   f"from the space's {_describe(reference.blocks[position])}"
                                   f"; the arch def {where}")
            continue
        candidates = space.layers[layer].candidates
        found = [c for c in range(len(candidates)) if _same_block(
            block, squares[(c - layer) % len(candidates)].blocks[position])]
        if not found:
            names = ", ".join(c.name for c in candidates)
            raise ArchDefError(f"layer {layer} (block {block.name}): {_describe(block)} is "
                               f"not one of its candidates ({names}); the arch def {where}")
        choices.append(found[0])
    return choices


def init_from_supernet(model: nn.Module, run: SupernetRun) -> list[int]:
    """Copies the supernet's weights of ``model``'s path into ``model``; returns the path.

    ``model`` is an fbnas classifier built at width ratio 1 from an arch def of the run's
    space (``RUN/arch.json``, ``RUN/samples/arch_XX.json``). Chosen candidates, stem, tail
    and classifier all get the supernet's weights, batch-norm statistics included. A model
    with another class count keeps its fresh classifier (as ``--init-from`` does).

    Raises:
        ArchDefError: ``model`` is not a path of the run's supernet (the layer is named).
        CheckpointError: the weights do not fit (listed).
    """
    spec = getattr(model, "arch_spec", None)
    if spec is None:
        raise TypeError("init_from_supernet needs an fbnas model (with .arch_spec)")
    if float(getattr(model, "width_ratio", 1.0)) != 1.0:
        raise ArchDefError(f"the supernet was searched at width ratio 1; the model has "
                           f"{model.width_ratio}")
    choices = match_choices(run.space, spec)
    note = load_init_weights(model, subnet_state_dict(run.supernet, choices))
    logger.info("initialised %s from supernet %s: %s", run.space.name, run.folder, note)
    return choices
