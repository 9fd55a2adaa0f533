"""Slim ops compute what a plain layer with the leading slice of their weights computes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fbnas.cost import count_macs
from fbnas.slim import SlimBatchNorm2d, SlimConfigError, SlimConv2d, SlimLinear


def test_dense_conv_runs_on_the_leading_slice() -> None:
    conv = SlimConv2d(8, 16, 3, stride=2, padding=1, bias=True)
    conv.set_in_ch(5)
    conv.set_out_ch(7)
    x = torch.randn(2, 5, 9, 9)
    expected = F.conv2d(x, conv.weight[:7, :5], conv.bias[:7], 2, 1)
    torch.testing.assert_close(conv(x), expected)
    # The standard attributes describe what runs, so counting sees the active widths.
    assert (conv.in_channels, conv.out_channels, conv.max_out_channels) == (5, 7, 16)
    assert count_macs(conv, (1, 5, 9, 9)) == 7 * 5 * 9 * 5 * 5


def test_depthwise_conv_keeps_groups_equal_to_channels() -> None:
    conv = SlimConv2d(8, 8, 3, padding=1, groups=8, bias=False)
    assert conv.depthwise
    conv.set_in_ch(5)
    assert (conv.in_channels, conv.out_channels, conv.groups) == (5, 5, 5)
    x = torch.randn(1, 5, 6, 6)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight[:5], None, 1, 1, 1, 5))
    conv.set_groups(3)
    assert (conv.in_channels, conv.out_channels, conv.groups) == (3, 3, 3)


def test_grouped_convs_other_than_depthwise_are_refused() -> None:
    with pytest.raises(SlimConfigError, match="dense or depthwise"):
        SlimConv2d(8, 16, 3, groups=2)
    with pytest.raises(SlimConfigError, match="a dense conv has 1 group"):
        SlimConv2d(8, 16, 1).set_groups(2)


def test_batchnorm_statistics_are_shared_leading_slices() -> None:
    bn = SlimBatchNorm2d(8)
    bn.set_out_ch(3)
    x = torch.randn(4, 3, 5, 5) * 2 + 1
    bn.train()
    y = bn(x)
    torch.testing.assert_close(y, F.batch_norm(x, None, None, training=True))
    # Only the first 3 channels' running statistics moved.
    assert torch.all(bn.running_mean[3:] == 0) and torch.all(bn.running_mean[:3] != 0)
    assert int(bn.num_batches_tracked) == 1
    bn.eval()
    expected = F.batch_norm(x, bn.running_mean[:3], bn.running_var[:3], bn.weight[:3],
                            bn.bias[:3], False)
    torch.testing.assert_close(bn(x), expected)


def test_batchnorm_at_full_width_is_plain_batchnorm() -> None:
    bn, plain = SlimBatchNorm2d(4, momentum=None), torch.nn.BatchNorm2d(4, momentum=None)
    x = torch.randn(3, 4, 2, 2)
    torch.testing.assert_close(bn(x), plain(x))
    torch.testing.assert_close(bn.running_var, plain.running_var)


def test_linear_runs_on_the_leading_slice() -> None:
    linear = SlimLinear(10, 6)
    linear.set_in_ch(4)
    linear.set_out_ch(2)
    x = torch.randn(3, 4)
    torch.testing.assert_close(linear(x), F.linear(x, linear.weight[:2, :4], linear.bias[:2]))


def test_fixed_outputs_and_ranges_are_checked() -> None:
    head = SlimConv2d(8, 10, 1, slim_out=False)
    with pytest.raises(SlimConfigError, match="output width is fixed at 10"):
        head.set_out_ch(5)
    with pytest.raises(SlimConfigError, match=r"input width must be in \[1, 8\], got 9"):
        head.set_in_ch(9)
    with pytest.raises(SlimConfigError, match="must be an int"):
        SlimLinear(4, 4).set_in_ch(2.0)
    with pytest.raises(SlimConfigError, match="output width is fixed at 3"):
        SlimLinear(4, 3, slim_out=False).set_out_ch(2)


def test_a_wrong_input_width_is_a_clear_error_not_a_torch_trace() -> None:
    conv = SlimConv2d(8, 16, 3)
    conv.slim_path = "stages.0.blocks.0.conv"
    conv.set_in_ch(4)
    with pytest.raises(SlimConfigError, match=r"SlimConv2d 'stages.0.blocks.0.conv': set to 4 "
                                              r"input channels but got a 8-channel input"):
        conv(torch.zeros(1, 8, 5, 5))
    with pytest.raises(SlimConfigError, match="set to 8 input channels but got a 3"):
        SlimBatchNorm2d(8)(torch.zeros(2, 3, 2, 2))
