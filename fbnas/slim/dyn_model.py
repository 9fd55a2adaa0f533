"""``DynModel`` and ``SlimStage``: the top of the hierarchy SlimModel -> SlimStage -> SlimBlock
-> SlimOps ([S003]; ALGORITHMS.md section 4.1).

Each level maps only its own widths: a block its hidden and output widths onto its ops, a
stage its blocks' widths in turn, the model its parts (stem, stages, head) in turn. The
model-level interface is the seed's, for optimisers that know nothing of the network:

* ``search_dim``: the number of independent widths (widths tied by a residual add or a
  depthwise conv are one dimension);
* ``channel_space``: the full width of each dimension, hierarchical;
* ``decode_wm(wm)``: flat multipliers in (0, 1] -> hierarchical channel counts;
* ``decode_ch(ch)``: -> one count per layer width (``real_ch``);
* ``set_real_ch(real_ch)``: sets every part (``set_in_ch`` then ``set_out_ch``).

:class:`DynModel` implements all five from the network's structure: a subclass only
lists its parts in :meth:`DynModel.chain`. Example: random search over widths::

    wm = np.random.rand(model.search_dim) * 0.8 + 0.2
    model.set_real_ch(model.decode_ch(model.decode_wm(wm)))
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from fbnas.slim.blocks import SlimBlock
from fbnas.slim.channels import ChannelGroups, PartLayout, UnitLayout, WidthSlot
from fbnas.slim.errors import SlimConfigError
from fbnas.slim.ops import SlimConv2d, SlimLinear
from fbnas.slim.soft import SoftWidth


class SlimStage(nn.Module):
    """A sequence of slimmable blocks (hierarchy level 2).

    ``set_in_ch(c)`` then ``set_out_ch(widths)``, where ``widths`` lists each block's widths
    in turn (``[c_mid1, c_res, c_mid2, c_res, ...]`` for inverted residuals); each block's
    input is the previous block's output.
    """

    def __init__(self, blocks: Sequence[SlimBlock], name: str | None = None) -> None:
        super().__init__()
        for block in blocks:
            if not isinstance(block, SlimBlock):
                raise SlimConfigError(f"a SlimStage holds SlimBlocks, got "
                                      f"{type(block).__name__}")
        self.blocks = nn.ModuleList(blocks)
        self.name = name
        self.slim_path = ""
        self.in_ch = blocks[0].max_in_channels if blocks else None

    @property
    def label(self) -> str:
        return self.name or self.slim_path or "(unnamed stage)"

    def part_layout(self) -> PartLayout:
        """Its blocks' widths, for :class:`~fbnas.slim.channels.ChannelGroups`."""
        return PartLayout(self.label, tuple(b.layout() for b in self.blocks))

    @property
    def search_dim(self) -> int:
        """The dimensions this stage owns: its widths after fusing ties, less those tied to
        its input (they belong to an earlier part)."""
        return ChannelGroups([self.part_layout()], None).search_dim

    @property
    def out_ch(self) -> int | None:
        return self.blocks[-1].out_ch if len(self.blocks) else self.in_ch

    def set_in_ch(self, channels: int) -> None:
        """Sets the stage's input width (applied to the blocks by :meth:`set_out_ch`)."""
        self.in_ch = channels

    def set_out_ch(self, widths: Sequence[int]) -> None:
        """Sets every block's widths, in order (see the class docstring)."""
        widths = list(widths)
        total = sum(b.search_dim for b in self.blocks)
        if len(widths) != total:
            raise SlimConfigError(f"{self.label}: expected {total} widths, got {len(widths)}")
        current = self.in_ch
        start = 0
        for block in self.blocks:
            block.set_in_ch(current)
            block.set_out_ch(widths[start:start + block.search_dim])
            start += block.search_dim
            current = block.out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def _op_part(op: SlimConv2d | SlimLinear, label: str) -> PartLayout:
    """A single layer as a part: its output is a dimension unless fixed (``slim_out``)."""
    if isinstance(op, SlimConv2d) and op.depthwise:
        raise SlimConfigError(f"{label}: a depthwise conv cannot be a part of its own (its "
                              f"width is its input's); put it in a block")
    full = op.max_out_channels if isinstance(op, SlimConv2d) else op.max_out_features
    if op.slim_out:
        unit = UnitLayout(label, (WidthSlot("out", full),), 0)
    else:
        unit = UnitLayout(label, (), None, fixed_output=full)
    return PartLayout(label, (unit,), scalar=True)


class DynModel(nn.Module):
    """Base of slimmable networks: the seed's width interface, derived from the structure.

    A subclass builds its parts (slim ops, :class:`SlimBlock`\\ s, :class:`SlimStage`\\ s, or
    modules with a ``part_layout()`` and ``set_in_ch``/``set_out_ch``), lists them in
    forward order in :meth:`chain` and writes ``forward``. Everything else follows:
    which widths are tied, the dimensions, decoding and validation. A part that is a single
    layer is an int in ``channel_space``/``ch``/``real_ch``; a stage is a list; a layer
    with a fixed output (``slim_out=False``: the classifier) has no entry.

    Args:
        width_divisor: :meth:`decode_wm` rounds counts to multiples of it with the reference
            rule (``fbnas.arch.round_channels``); use the arch def's ``width_divisor``.
        in_channels: the width of the network's input (3 for RGB images).
    """

    def __init__(self, width_divisor: int = 1, in_channels: int = 3) -> None:
        super().__init__()
        self.width_divisor = width_divisor
        self.in_channels = in_channels
        self._groups: ChannelGroups | None = None
        self._real_ch: list[Any] | None = None
        # Names every layer before the first forward pass, so that even a network whose
        # widths were never set reports a wrong input by layer path.
        self.register_forward_pre_hook(_build_layout)

    def chain(self) -> Sequence[nn.Module]:
        """The slimmable parts in forward order (``[stem, *stages, head]``)."""
        raise NotImplementedError(f"{type(self).__name__} must list its parts in chain()")

    # ------------------------------------------------------------------ structure

    @property
    def channel_groups(self) -> ChannelGroups:
        """The dimensions and the wm/ch/real_ch maps (built once, on first use)."""
        if self._groups is None:
            for path, module in self.named_modules():
                if hasattr(module, "slim_path"):
                    module.slim_path = path
            layouts = []
            for part in self.chain():
                if isinstance(part, (SlimConv2d, SlimLinear)):
                    layouts.append(_op_part(part, part.slim_path))
                elif isinstance(part, SlimBlock):
                    layouts.append(PartLayout(part.label, (part.layout(),)))
                elif hasattr(part, "part_layout"):
                    layouts.append(part.part_layout())
                else:
                    raise SlimConfigError(f"{type(self).__name__}.chain(): "
                                          f"{type(part).__name__} is not a slimmable part")
            self._groups = ChannelGroups(layouts, self.in_channels, self.width_divisor)
        return self._groups

    @property
    def search_dim(self) -> int:
        """The number of independent widths (the length of ``wm``)."""
        return self.channel_groups.search_dim

    @property
    def channel_space(self) -> list[Any]:
        """The full width of every dimension, hierarchical (the shape of ``ch``)."""
        return self.channel_groups.channel_space

    def describe_dims(self) -> list[str]:
        """One line per dimension: which layer widths it sets and its full width."""
        return [self.channel_groups.describe(d) for d in range(self.search_dim)]

    # ------------------------------------------------------------------ the seed's maps

    def decode_wm(self, wm: Sequence[float]) -> list[Any]:
        """Hierarchical channel counts ``ch`` of flat width multipliers in (0, 1].

        ``c = round_channels(w * C_max, width_divisor)`` per dimension (capped at
        ``C_max``; ``w = 1`` is exactly ``C_max``).

        Raises:
            SlimConfigError: a wrong length, or a value outside (0, 1] (naming the
                dimension and the layers it sets).
        """
        return self.channel_groups.decode_wm(wm)

    def decode_ch(self, ch: Sequence[Any]) -> list[Any]:
        """One count per layer width (``real_ch``) of per-dimension counts ``ch``."""
        return self.channel_groups.decode_ch(ch)

    def set_real_ch(self, real_ch: Sequence[Any]) -> None:
        """Sets every part to ``real_ch``: ``set_in_ch`` (the previous part's output), then
        ``set_out_ch`` (its entry). Checked first, so a bad setting changes nothing.

        Raises:
            SlimConfigError: a wrong structure, a width out of range, or a width breaking a
                residual or depthwise tie, naming the entry and the layer.
        """
        settings = self.channel_groups.check(real_ch)
        first_unit: dict[int, int] = {}
        widths: dict[int, list[int]] = {}
        for setting in settings:
            first_unit.setdefault(setting.part, setting.in_channels)
            widths.setdefault(setting.part, []).extend(setting.widths)
        for p, part in enumerate(self.chain()):
            if p not in first_unit:
                continue  # a stage without blocks
            layout = self.channel_groups.parts[p]
            part.set_in_ch(first_unit[p])
            if layout.scalar and layout.num_slots:
                part.set_out_ch(widths[p][0])
            elif not layout.scalar:
                part.set_out_ch(widths[p])
        parts = self.channel_groups.parts
        self._real_ch = [widths[p][0] if part.scalar else list(widths.get(p, []))
                         for p, part in enumerate(parts) if part.has_entry]

    def set_soft_widths(self, widths: Sequence[SoftWidth | None]) -> None:
        """Soft mode (:mod:`fbnas.slim.soft`): one soft width per dimension (None: the set
        width), applied to every part; widths tied by a residual share their dimension's.

        Run it at full width (``set_real_ch`` of the full ``real_ch``): the outputs are then
        masked by ``M = Σ g_i m_i`` and :func:`fbnas.slim.cost.soft_cost` prices the
        effective widths. All None leaves the plain network.

        Raises:
            SlimConfigError: a wrong number of widths, an option above its dimension's full
                width (naming the dimension), or a part without a soft mode.
        """
        widths = list(widths)
        groups = self.channel_groups
        if len(widths) != groups.search_dim:
            raise SlimConfigError(f"expected {groups.search_dim} soft widths (one per "
                                  f"dimension), got {len(widths)}")
        for d, soft in enumerate(widths):
            if soft is not None and max(soft.options) > groups.dims[d].max_channels:
                raise SlimConfigError(f"soft width options {list(soft.options)} exceed "
                                      f"{groups.describe(d)}")
        current: SoftWidth | None = None
        for part, layout, dims in zip(self.chain(), groups.parts, groups.unit_dimensions(),
                                      strict=True):
            units = part.blocks if isinstance(part, SlimStage) else [part]
            for unit, unit_layout, slot_dims in zip(units, layout.units, dims, strict=True):
                softs = [None if d is None else widths[d] for d in slot_dims]
                if not hasattr(unit, "set_soft"):
                    raise SlimConfigError(f"{unit_layout.label}: no soft-mask mode")
                unit.set_soft(current, softs)
                if unit_layout.output is not None:
                    current = softs[unit_layout.output]
                elif unit_layout.fixed_output is not None:
                    current = None

    @property
    def real_ch(self) -> list[Any]:
        """The current setting (a copy); the full width until :meth:`set_real_ch`."""
        if self._real_ch is None:
            return self.decode_ch(self.channel_space)
        return copy.deepcopy(self._real_ch)

    def set_wm(self, wm: Sequence[float]) -> list[Any]:
        """``set_real_ch(decode_ch(decode_wm(wm)))``; returns that ``real_ch``."""
        real_ch = self.decode_ch(self.decode_wm(wm))
        self.set_real_ch(real_ch)
        return real_ch

    def full_wm(self) -> list[float]:
        """The full-width multipliers (all ones)."""
        return [1.0] * self.search_dim


def _build_layout(model: DynModel, _inputs: Any) -> None:
    model.channel_groups  # noqa: B018 - built and cached on first access


__all__ = ["DynModel", "SlimStage"]
