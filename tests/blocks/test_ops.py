"""Every registered op: shapes, params (counted == analytic), hand-computed cases."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fbnas.arch import ArchDefError
from fbnas.blocks import BLOCKS, register_block, reparameterize_model
from fbnas.blocks.layers import HSigmoid, HSwish, Swish
from fbnas.cost import count_module

# op -> (in_channels, out_channels, stride, kwargs) small enough to run on 2 cores
OP_CASES = {
    "conv": (4, 8, 2, {"kernel_size": 3, "padding": 1}),
    "skip": (8, 16, 2, {}),
    "maxpool": (8, 8, 2, {"kernel_size": 3, "padding": 1}),
    "avgpool": (8, 8, 2, {}),
    "adaptive_avg_pool": (8, 8, 1, {"output_size": 2}),
    "ir_pool": (8, 32, 1, {"expansion": 4}),
    "ir_pool_hs": (8, 32, 1, {"pw_se_args": {"name": "se_hsig", "relu_args": "relu"}}),
    "res_k3": (8, 16, 2, {}),
    "res_block_k3": (8, 32, 2, {}),
    "mobileone": (8, 16, 2, {"over_param_branches": 2}),
    "irf": (8, 16, 2, {"kernel_size": 5, "expansion": 3}),
}


def case_for(op: str) -> tuple[int, int, int, dict]:
    if op in OP_CASES:
        return OP_CASES[op]
    if op.startswith("conv"):
        return (4, 8, 2, {})
    if op.startswith(("sep_", "gh_")):
        return (8, 16, 2, {})
    if op.endswith("_ese"):  # the eSE's depthwise pooling covers the 6x6 output map
        return (8, 16, 2, {"expansion": 4, "se_args": {"name": "ese", "fm_size": 6}})
    return (8, 16, 2, {"expansion": 4})


@pytest.mark.parametrize("op", BLOCKS.names())
def test_every_op_builds_runs_and_costs_as_counted(op: str) -> None:
    in_ch, out_ch, stride, kwargs = case_for(op)
    plan = BLOCKS.get(op).plan(in_ch, out_ch, stride, kwargs, {"width_divisor": 8})
    module = plan.build().eval()
    x = torch.randn(2, in_ch, 12, 12)
    with torch.no_grad():
        y = module(x)
    (cost, out_hw) = plan.cost((12, 12))
    assert y.shape == (2, plan.out_channels, *out_hw)
    params, macs, _ = count_module(module, (1, in_ch, 12, 12))
    assert (cost.params, cost.macs) == (params, macs)
    assert params == sum(p.numel() for p in module.parameters())


def test_conv_k3_params_by_hand() -> None:
    module = BLOCKS.get("conv_k3").plan(3, 8, 2, {}, {}).build()
    # 3x3 conv 3->8 with bias (the reference default) + BN(8)
    assert sum(p.numel() for p in module.parameters()) == 3 * 8 * 9 + 8 + 2 * 8
    assert module.conv.padding == (1, 1) and isinstance(module.relu, nn.ReLU)


def test_inverted_residual_parts_and_widths_by_hand() -> None:
    plan = BLOCKS.get("ir_k5_sehsig_hs").plan(24, 40, 2, {"expansion": 5,
                                                          "less_se_channels": True},
                                              {"width_divisor": 8})
    block = plan.build()
    assert block.pw.conv.out_channels == 120  # 24 * 5
    assert block.dw.conv.groups == 120 and block.dw.conv.kernel_size == (5, 5)
    assert block.se.se[0].conv.out_channels == 8  # int(120 * 0.25 / 5) = 6 -> 8
    assert isinstance(block.se.se[2], HSigmoid) and isinstance(block.pw.relu, HSwish)
    assert block.res_conn is None
    params = 24 * 120 + 240 + 120 * 25 + 240 + (120 * 8 + 8 + 8 * 120 + 120) + 120 * 40 + 80
    assert sum(p.numel() for p in block.parameters()) == params


def test_residual_and_zero_gamma_only_when_shapes_match() -> None:
    same = BLOCKS.get("ir_k3").plan(16, 16, 1, {"zero_last_bn_gamma": True}, {}).build()
    assert same.res_conn is not None and torch.all(same.pwl.bn.weight == 0)
    strided = BLOCKS.get("ir_k3").plan(16, 16, 2, {"zero_last_bn_gamma": True}, {}).build()
    assert strided.res_conn is None and torch.all(strided.pwl.bn.weight == 1)


def test_expansion_one_drops_pw_but_g2_keeps_the_shuffle() -> None:
    block = BLOCKS.get("ir_k3_g2").plan(16, 16, 1, {"expansion": 1, "pwl_groups": 2},
                                        {}).build()
    assert not hasattr(block, "pw") and block.shuffle.groups == 2
    assert block.pwl.conv.groups == 2


def test_channel_shuffle_interleaves_groups() -> None:
    from fbnas.blocks.layers import ChannelShuffle

    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert ChannelShuffle(2)(x).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_basic_args_activation_overrides_the_op_default_but_not_fixed_kernel() -> None:
    plan = BLOCKS.get("conv_k3_hs").plan(3, 8, 1, {}, {"relu_args": "swish"})
    assert isinstance(plan.build().relu, Swish)
    with pytest.raises(ArchDefError, match="fixes kernel_size"):
        BLOCKS.get("ir_k5").plan(8, 8, 1, {"kernel_size": 3}, {})


def test_fused_mbconv_uses_pw_args_and_keeps_its_residual() -> None:
    plan = BLOCKS.get("ir_k3").plan(24, 24, 1, {
        "expansion": 1, "mid_expand_out": True, "skip_dw": True, "skip_pwl": True,
        "always_pw": True, "pw_args": {"kernel_size": 3, "padding": 1, "stride": 1}}, {})
    block = plan.build()
    assert block.pw.conv.kernel_size == (3, 3) and not hasattr(block, "dw")
    assert block.res_conn is not None and not hasattr(block, "pwl")


def test_negative_stride_upsamples() -> None:
    block = BLOCKS.get("ir_k3").plan(8, 8, -2, {}, {}).build()
    assert block(torch.randn(1, 8, 5, 5)).shape == (1, 8, 10, 10)
    conv = BLOCKS.get("conv_k3").plan(8, 4, -2, {}, {}).build()
    assert conv(torch.randn(1, 8, 5, 5)).shape == (1, 4, 10, 10)


@pytest.mark.parametrize(("in_ch", "out_ch", "stride"), [(8, 8, 1), (8, 16, 1), (8, 16, 2),
                                                         (3, 24, 2)])
def test_mobileone_reparameterization_keeps_outputs(in_ch: int, out_ch: int,
                                                    stride: int) -> None:
    block = BLOCKS.get("mobileone").plan(in_ch, out_ch, stride, {"over_param_branches": 3},
                                         {}).build()
    # make BN statistics non-trivial so that folding is really exercised
    block.train()
    for _ in range(3):
        block(torch.randn(8, in_ch, 9, 9) * 2 + 1)
    block.eval()
    x = torch.randn(2, in_ch, 9, 9)
    deploy = block.reparameterize().eval()
    assert set(n for n, _ in deploy.named_children()) == {"dw_3x3", "pw_1x1"}
    torch.testing.assert_close(deploy(x), block(x), atol=1e-5, rtol=1e-4)


def test_reparameterized_zoo_model_loads_into_the_deploy_definition() -> None:
    from fbnas import build_model

    arch = {"blocks": [[("mobileone", 16, 2, 1, {"over_param_branches": 2})],
                       [("mobileone", 16, 1, 2, {"over_param_branches": 2})]]}
    deploy_arch = {"blocks": [[("mobileone", 16, 2, 1, {"deploy": True, "bias": True})],
                              [("mobileone", 16, 1, 2, {"deploy": True, "bias": True})]]}
    train = build_model(arch, num_classes=5)
    train.train()
    train(torch.randn(4, 3, 16, 16))
    train.eval()
    x = torch.randn(1, 3, 16, 16)
    expected = train(x)
    reparameterize_model(train)
    deploy = build_model(deploy_arch, num_classes=5).eval()
    deploy.load_state_dict(train.state_dict())
    torch.testing.assert_close(deploy(x), expected, atol=1e-5, rtol=1e-4)


def test_user_registered_op_works_in_arch_defs_and_cost() -> None:
    from fbnas import build_model
    from fbnas.cost import arch_cost, count_macs, count_params

    @register_block("test_dw_k7")
    def dw_k7(in_channels: int, out_channels: int, stride: int, *, bias: bool = False):
        """Depthwise 7x7 conv (test op)."""
        conv = nn.Conv2d(in_channels, out_channels, 7, stride, 3, groups=in_channels,
                         bias=bias)
        conv.out_channels = out_channels
        return conv

    try:
        arch = {"blocks": [[("conv_k3", 8, 2, 1)], [("test_dw_k7", 16, 2, 1, {"bias": True})]]}
        model = build_model(arch, num_classes=10)
        assert model.backbone.stages.xif1_0.bias is not None
        cost = arch_cost(arch, 32, num_classes=10)
        assert cost.params == count_params(model)
        assert cost.macs == count_macs(model, 32)
        with pytest.raises(ArchDefError, match="unknown option 'bais'"):
            build_model({"blocks": [[("test_dw_k7", 8, 1, 1, {"bais": True})]]})
        with pytest.raises(ArchDefError, match="must be bool"):
            build_model({"blocks": [[("test_dw_k7", 8, 1, 1, {"bias": "yes"})]]})
        with pytest.raises(ValueError, match="already registered"):
            register_block("test_dw_k7")(dw_k7)
    finally:
        BLOCKS.remove("test_dw_k7")
