"""The seed's toy SlimModel: a stem, three stages of three inverted residuals, a head.

[S003] counts 13 search dimensions for it: 1 for the stem, and per stage 1 residual width
shared by its three blocks plus 3 hidden widths. Written here exactly as docs/slim.md tells
a user to write a model of their own.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fbnas.cost import count_macs, count_params
from fbnas.slim import (
    DynModel,
    SlimConfigError,
    SlimConv2d,
    SlimInvertedResidual,
    SlimStage,
    extract_subnet,
    slim_block,
    subnet_cost,
)

WIDTHS = (16, 24, 32, 64)  # stem, then each stage's output


class ToySlimModel(DynModel):
    """stem SlimConv2d -> 3 x SlimStage(3 x SlimInvertedResidual) -> head SlimConv2d."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(width_divisor=8)
        self.stem = SlimConv2d(3, WIDTHS[0], 3, stride=2, padding=1, bias=False)
        self.stages = nn.ModuleList(
            SlimStage([slim_block("ir_k3", WIDTHS[s] if b == 0 else WIDTHS[s + 1],
                                  WIDTHS[s + 1], 2 if b == 0 else 1, {"expansion": 6})
                       for b in range(3)])
            for s in range(3))
        # The head's output (the classes) is not searchable.
        self.head = SlimConv2d(WIDTHS[-1], num_classes, 1, slim_out=False)

    def chain(self) -> list[nn.Module]:
        return [self.stem, *self.stages, self.head]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(F.adaptive_avg_pool2d(x, 1)).flatten(1)


@pytest.fixture(scope="module")
def toy() -> ToySlimModel:
    torch.manual_seed(0)
    return ToySlimModel()


def test_the_toy_model_has_13_search_dimensions(toy: ToySlimModel) -> None:
    assert toy.search_dim == 13
    assert [stage.search_dim for stage in toy.stages] == [4, 4, 4]
    assert all(isinstance(b, SlimInvertedResidual) and b.search_dim == 2
               for stage in toy.stages for b in stage.blocks)


def test_channel_space_is_hierarchical_residual_width_first(toy: ToySlimModel) -> None:
    # stage 1: blocks 16->24 (hidden 96), 24->24 (144), 24->24 (144)
    assert toy.channel_space == [16, [24, 96, 144, 144], [32, 144, 192, 192],
                                 [64, 192, 384, 384]]


def test_decode_ch_expands_the_shared_residual_width_as_the_seed(toy: ToySlimModel) -> None:
    # [c1, [c2..c5], [c6..c9], [c10..c13]] -> [c1, [c3, c2, c4, c2, c5, c2], ...]
    ch = [1, [2, 3, 4, 5], [6, 7, 8, 9], [10, 11, 12, 13]]
    assert toy.decode_ch(ch) == [1, [3, 2, 4, 2, 5, 2], [7, 6, 8, 6, 9, 6],
                                 [11, 10, 12, 10, 13, 10]]


def test_decode_wm_rounds_with_the_reference_rule(toy: ToySlimModel) -> None:
    assert toy.decode_wm([1.0] * 13) == toy.channel_space
    # 0.5 * 24 = 12 -> 16 (divisor 8, halves away from zero); 0.3 * 16 = 4.8 -> 8
    ch = toy.decode_wm([0.3] + [0.5] * 12)
    assert ch[0] == 8 and ch[1] == [16, 48, 72, 72]
    assert toy.decode_wm([0.01] * 13)[1] == [8, 8, 8, 8]


def test_set_real_ch_runs_the_network_at_the_widths(toy: ToySlimModel) -> None:
    real_ch = toy.decode_ch(toy.decode_wm([0.5] * 13))
    toy.set_real_ch(real_ch)
    try:
        assert toy.real_ch == real_ch
        assert toy.stem.out_channels == 8
        first = toy.stages[0].blocks[0]
        assert (first.pw.conv.in_channels, first.pw.conv.out_channels) == (8, 48)
        assert first.dw.conv.groups == 48 and first.pwl.conv.out_channels == 16
        assert toy.head.in_channels == 32 and toy.head.out_channels == 10
        toy.eval()
        assert toy(torch.randn(2, 3, 32, 32)).shape == (2, 10)
        # Analytic cost equals what counting the running network gives.
        assert subnet_cost(toy, input_size=32).macs == count_macs(toy, 32)
    finally:
        toy.set_real_ch(toy.decode_ch(toy.channel_space))
    assert subnet_cost(toy, input_size=32).params == count_params(toy)


def test_the_toy_model_cannot_be_extracted_without_an_arch_def(toy: ToySlimModel) -> None:
    with pytest.raises(SlimConfigError, match="needs a network built from an arch def"):
        extract_subnet(toy)
