"""Expected latency of the masked supernet (ALGORITHMS.md §2.3, issue 16 item 3).

The latency of a block is no product of effective widths: it is read per configuration from
a latency table (:class:`fbnas.cost.lut.LatencyTable`), which answers keys it does not hold
from its block latency model (:mod:`fbnas.cost.block_model`). The expected latency of block
l is the expectation over the options of the decisions its key depends on,

    E[LAT_l] = Σ_i Σ_j g^{l−1}_i g^l_j · LAT_l(c_i, c_j)

over its input-width options i (the previous block's output) and output-width options j —
and, where the block has them, over its hidden-width options, its kernel options and the
input resolution too (the same sum with more indices). Blocks tied by a residual have one
input-and-output option. The network's is ``scale · Σ_l E[LAT_l] + offset`` (the table's
calibration), so at one-hot weights it is exactly ``table.predict`` of the derived network.

Each block's table ``LAT_l[i, j, ...]`` is filled once per supernet, keyed by the derived
networks' own table keys (so table hits are exact): table entries from its dict, every
other key answered by the block latency model in one batch (``LatencyTable.predict_keys``).
The expectation each step is then a contraction of the per-group probability vectors with
the dense tensor (``tensordot``), cheap at fbnet_v2's largest block (8 x 8 x 14 x 2 x 4 =
7,168 entries, 56 KiB). What costs is the set-up: one table key (an arch def and a trace,
~30 ms on fbnet_v2) and, for a key the table lacks, the model's features (one ``meta``
forward of the block, ~25 ms) per combination, so fbnet_v2's ~20,600 combinations take
minutes, not seconds (docs/dmasking.md). :data:`MAX_COMBINATIONS` bounds what pricing holds
per block: ~4 KB per combination (its key, its memoised feature dict, the model's answer),
so 65,536 combinations are ~250 MiB and the lru cache of ``key_features`` (65,536 entries)
still holds them all; a block beyond it is refused, naming it.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from fbnas.cost.lut import LatencyTable, MissingEntriesError, arch_items
from fbnas.errors import ConfigError

MAX_COMBINATIONS = 65536


class MaskedLatency:
    """The expected latency of a :class:`~fbnas.search.dmasking.supernet.MaskedSupernet`
    from a latency table (and its block latency model)."""

    def __init__(self, table: LatencyTable) -> None:
        self.table = table
        self._blocks: dict[str, list[tuple[list[int], torch.Tensor]]] = {}

    def block_groups(self, net: Any) -> list[list[int]]:
        """Per block (and the head, last): the architecture groups its table key depends on."""
        units = [u for part in net.net.channel_groups.unit_dimensions() for u in part]
        out: list[list[int]] = []
        current: int | None = None  # the dimension entering the block
        for b, block in enumerate(net.blocks):
            dims = [d for d in [current, *units[b]] if d is not None]
            groups = [net.dim_group[d] for d in dict.fromkeys(dims)]
            groups.append(net.kernel_group[b])
            groups.append(net.skip_group[b])
            groups.append(net.res_group)
            out.append([g for g in dict.fromkeys(groups) if g is not None])
            output = block.output_slot
            current = units[b][output] if output is not None else current
        head = [net.dim_group[current] if current is not None else None, net.res_group]
        out.append([g for g in dict.fromkeys(head) if g is not None])
        return out

    def tables(self, net: Any) -> list[tuple[list[int], torch.Tensor]]:
        """Per block: (its groups, ``LAT[i, j, ...]`` in ms over their options), cached.

        Raises:
            ConfigError: a block with more than :data:`MAX_COMBINATIONS` combinations.
            MissingEntriesError: keys neither the table nor its model answers.
        """
        cache = json.dumps([net.space.to_dict(), net.num_classes], sort_keys=True)
        if cache in self._blocks:  # the same space: every supernet of it prices alike
            return self._blocks[cache]
        result = []
        labels = [o.label for o in net.block_options] + ["head"]
        archs: dict[tuple[int, ...], dict[str, Any]] = {}  # shared across blocks
        for position, groups in enumerate(self.block_groups(net)):
            sizes = [len(net.groups[g].options) for g in groups]
            count = math.prod(sizes)
            if count > MAX_COMBINATIONS:
                raise ConfigError(f"{labels[position]}: {count} combinations of its options "
                                  f"({' x '.join(map(str, sizes))}) are too many to price by "
                                  f"latency (at most {MAX_COMBINATIONS}); use fewer options "
                                  f"or --target-macs")
            keys = [self._key(net, archs, groups, combination, position)
                    for combination in itertools.product(*[range(s) for s in sizes])]
            self.table.predict_keys(keys)  # the model's answers in one batch
            missing = self.table.missing(keys)
            if missing:
                raise MissingEntriesError(missing, f"DMasking space {net.space.name}")
            values = torch.tensor([self.table.lookup(k) for k in keys], dtype=torch.float64)
            result.append((groups, values.reshape(sizes)))
        self._blocks[cache] = result
        return result

    def _key(self, net: Any, archs: dict[tuple[int, ...], dict[str, Any]],
             groups: list[int], combination: tuple[int, ...], position: int) -> str:
        """The table key of block ``position`` with ``groups`` at ``combination`` (the
        other groups at their first option).

        The arch def is made once per choice of every group but the resolution (making
        it sets every slim width: ~20 ms on fbnet_v2); a resolution only re-traces it.
        """
        choice = [0] * len(net.groups)
        for g, c in zip(groups, combination, strict=True):
            choice[g] = c
        resolution = net.resolution_of(choice)
        if net.res_group is not None:
            choice[net.res_group] = 0
        arch = archs.get(tuple(choice))
        if arch is None:
            arch = archs[tuple(choice)] = net.arch_def(choice)
        items = arch_items(arch, resolution, net.num_classes, self.table.batch)
        return items.keys[position]

    def expected_ms(self, net: Any, weights: torch.Tensor) -> torch.Tensor:
        """``scale · Σ_l E[LAT_l] + offset`` under ``weights`` (groups, K), differentiable."""
        total = weights.new_zeros(())
        for groups, values in self.tables(net):
            term = values.to(weights.device, weights.dtype)
            for g in groups:  # contract the leading axis with that group's weights
                size = term.shape[0]
                term = torch.tensordot(weights[g, :size], term, dims=1)
            total = total + term
        calibration = self.table.calibration
        offset = calibration.offset_ms if calibration is not None else 0.0
        return total * self.table.scale + offset


def load_masked_latency(lut: str | os.PathLike | None,
                        model: str | os.PathLike | None = None) -> MaskedLatency:
    """A :class:`MaskedLatency` of a table file (with its block latency model: ``model``,
    else the one beside the table)."""
    if lut is None:
        raise ConfigError("a latency target needs a latency table (--lut; fbnas lut build "
                          "measures one, fbnas lut fit-model adds its block latency model)")
    if not Path(lut).is_file():
        raise ConfigError(f"latency table {str(lut)!r} does not exist")
    return MaskedLatency(LatencyTable.load(lut, model=model))


__all__ = ["MAX_COMBINATIONS", "MaskedLatency", "load_masked_latency"]
