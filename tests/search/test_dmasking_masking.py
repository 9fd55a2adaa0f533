"""DMaskingNAS: soft masks, the masked supernet's exactness, effective-shape cost, bad input."""

from __future__ import annotations

import pytest
import torch

from fbnas import build_model
from fbnas.arch.unify import unify_arch_def
from fbnas.cost import count_macs, count_params
from fbnas.errors import ConfigError
from fbnas.search.dmasking.from_supernet import subnet_state_dict
from fbnas.search.dmasking.space import DMaskingSpace, load_dmasking_space
from fbnas.search.dmasking.supernet import MaskedSupernet
from fbnas.slim.cost import output_sizes, soft_cost
from fbnas.slim.models import SlimFBNet
from fbnas.slim.soft import SoftWidth

TINY = {
    "name": "tiny", "resolutions": [8, 12, 16], "width_divisor": 4,
    "stages": [
        {"kind": "conv", "blocks": 1, "stride": 2, "widths": [4, 8], "act": "hswish"},
        {"kind": "ir", "blocks": 2, "stride": 2, "widths": {"min": 8, "max": 16, "step": 4},
         "expansions": [1, 2, 4], "kernels": [3, 5], "se": True, "act": "hswish"},
        {"kind": "ir_pool", "blocks": 1, "stride": 1, "widths": [32], "expansions": [2]},
    ],
}


@pytest.fixture(scope="module")
def tiny() -> MaskedSupernet:
    torch.manual_seed(0)
    return MaskedSupernet(DMaskingSpace.from_dict(TINY), num_classes=5)


def test_effective_width_is_the_weighted_option_count() -> None:
    # ALGORITHMS.md 2.3: weights 0.8 on 16 and 0.2 on 12 give 15.2 channels.
    soft = SoftWidth((12, 16), torch.tensor([0.2, 0.8]))
    assert float(soft.effective) == pytest.approx(15.2)
    mask = soft.mask(16)
    assert mask[:12].tolist() == [1.0] * 12 and mask[12:].tolist() == pytest.approx([0.8] * 4)
    # A conv whose output is that soft width costs k^2 * h * w * C_in * 15.2 MACs.
    arch = {"input_size": 8, "basic_args": {"width_divisor": 4},
            "blocks": [[["conv_k3", 16, 1, 1]]]}
    net = SlimFBNet(unify_arch_def(arch), num_classes=None, resolution=8)
    sizes = output_sizes(net, 8)
    net.set_soft_widths([soft])
    params, macs = soft_cost(net, sizes)
    assert float(macs) == pytest.approx(9 * 8 * 8 * 3 * 15.2)
    assert float(params) == pytest.approx(9 * 3 * 15.2 + 15.2 + 2 * 15.2)  # conv, bias, BN


def test_every_layer_reports_its_effective_shape(tiny) -> None:
    weights = tiny.probabilities().detach()  # uniform: the mean of each option list
    shapes = tiny.effective_shapes(weights)
    stem = shapes["stages.0.blocks.0.conv"]
    assert (stem["in"], stem["out"]) == (3.0, 6.0)  # (4 + 8) / 2
    assert stem["h"] == pytest.approx((4 + 6 + 8) / 3)  # resolutions 8, 12, 16 at stride 2
    dw = shapes["stages.1.blocks.0.dw.conv"]
    assert dw["in"] == dw["out"] and dw["kernel_area"] == pytest.approx((9 + 25) / 2)


def test_one_hot_width_option_is_the_plain_network_of_that_width(tiny) -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, 16, 16)
    tiny.train()
    for choice in tiny.sample_architectures(4, generator):
        arch = tiny.arch_def(choice)
        plain = build_model(arch, num_classes=5)
        plain.load_state_dict(subnet_state_dict(tiny, choice))
        plain.train()
        res = arch["input_size"]
        small = tiny._subsample(x, res)
        with torch.no_grad():
            ours, _ = tiny(x, tiny.fixed_sample(choice))
            theirs = plain(small)
        assert torch.allclose(ours, theirs, atol=1e-5), tiny.choice_names(choice)


def test_one_hot_effective_cost_equals_the_derived_networks_counts(tiny) -> None:
    generator = torch.Generator().manual_seed(2)
    choices = tiny.sample_architectures(5, generator) + [tiny.derive()]
    for choice in choices:
        arch = tiny.arch_def(choice)
        model = build_model(arch, num_classes=5)
        macs = count_macs(model, arch["input_size"])
        assert tiny.choice_cost(choice) == macs  # exactly
        with torch.no_grad():
            params, _ = soft_cost(tiny.net, tiny.effective_sizes(
                tiny.apply(tiny.one_hot(choice))))
        assert float(params) == count_params(model)


def test_soft_cost_is_differentiable_in_every_group(tiny) -> None:
    generator = torch.Generator().manual_seed(3)
    tiny.theta.grad = None
    _, cost = tiny(torch.randn(2, 3, 16, 16), tiny.sample(generator, 1.0))
    cost.backward()
    grad = tiny.theta.grad.masked_fill(tiny.theta_mask, 0.0)
    assert (grad.abs().sum(-1) > 0).all()
    low, high = tiny.cost_range()
    assert low < float(cost.detach()) < high


def test_memory_and_compute_are_the_widest_networks(tiny) -> None:
    # One set of weights at the widest options, whatever the number of options.
    widest = [len(g.options) - 1 for g in tiny.groups]
    model = build_model(tiny.arch_def(widest), num_classes=5)
    assert sum(p.numel() for p in tiny.weight_parameters()) == count_params(model)


@pytest.mark.parametrize(("change", "message"), [
    ({"widths": [8, 20], "channels": 16}, "options [20] are above the layer's maximum 16"),
    ({"widths": [8, 14]}, "options [14] are not multiples of the width divisor 4"),
    ({"widths": []}, "the option list is empty"),
    ({"expansions": []}, "expansions: the option list is empty"),
    ({"kernels": [3, 7]}, "kernels"),
    ({"widhts": [8]}, "unknown key 'widhts'"),
])
def test_bad_stage_options_name_the_stage(change, message) -> None:
    data = {**TINY, "stages": [TINY["stages"][0], {**TINY["stages"][1], **change},
                               TINY["stages"][2]]}
    with pytest.raises(ConfigError, match="stage 1") as info:
        DMaskingSpace.from_dict(data, "tiny.yaml")
    assert message in str(info.value) and "tiny.yaml" in str(info.value)


def test_resolutions_the_strides_cannot_take_are_refused_with_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        DMaskingSpace.from_dict({**TINY, "resolutions": [10, 16]}, "tiny.yaml")
    text = str(info.value)
    assert "[10]" in text and "divisible by 4" in text and "8, 12, 16" in text


def test_tied_widths_with_different_options_are_refused_naming_both_layers() -> None:
    # Stage 2 starts at stride 1 with the width of stage 1: its residual ties the widths.
    stages = [TINY["stages"][0], {**TINY["stages"][1], "widths": [8, 16]},
              {"kind": "ir", "blocks": 1, "stride": 1, "widths": [12, 16], "expansions": [2]},
              TINY["stages"][2]]
    with pytest.raises(ConfigError, match=r"stage 2, block 0.*tied.*stage 1, block 0"):
        MaskedSupernet(DMaskingSpace.from_dict({**TINY, "stages": stages}))
    # Without its identity add (residual: false) the block's width is its own.
    stages[2] = {**stages[2], "residual": False}
    net = MaskedSupernet(DMaskingSpace.from_dict({**TINY, "stages": stages}))
    assert ("stage 2, block 0 (out)", (12, 16)) in [(g.label, g.options) for g in net.groups]
    arch = net.arch_def(net.derive())
    assert arch["blocks"][2][0][4]["res_conn_args"] is None


def test_builtin_spaces_load_with_every_range() -> None:
    v2 = load_dmasking_space("fbnet_v2")
    assert [s.channels for s in v2.stages] == [16, 16, 28, 40, 96, 128, 216, 1984]
    assert [s.blocks for s in v2.stages] == [1, 1, 3, 3, 3, 4, 4, 1]
    assert [len(s.widths) for s in v2.stages[1:7]] == [2, 4, 4, 7, 8, 14]
    assert max(v2.stages[3].expansions) == 6 and v2.stages[3].kernels == (3, 5)
    assert v2.resolutions == (128, 160, 192, 224)
    paper = load_dmasking_space("fbnet_v2_paper")
    assert paper.stages[0].widths == (16, 20, 24, 28)
    with pytest.raises(ConfigError, match="fbnet_v2"):
        load_dmasking_space("fbnet_v3")


def test_resolution_search_of_the_first_blocks_scatters_back_zero_interspersed() -> None:
    # N = 2 (the stem and the first inverted residual, strides 2 x 2): resolutions must be
    # multiples of 4; the rest of the network runs on the zero-interspersed full-size map.
    space = DMaskingSpace.from_dict({**TINY, "resolution_blocks": 2})
    net = MaskedSupernet(space, num_classes=5)
    y = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    scattered = net._scatter(y, 4)
    assert scattered[:, :, ::2, ::2].equal(y) and scattered[:, :, 1::2].abs().sum() == 0
    logits, cost = net(torch.randn(2, 3, 16, 16), net.sample(torch.Generator(), 1.0))
    assert logits.shape == (2, 5) and float(cost.detach()) > 0
    with pytest.raises(ConfigError, match="divisible by 4, the product of the strides of "
                                          "the first 2 blocks"):
        DMaskingSpace.from_dict({**TINY, "resolutions": [6, 16], "resolution_blocks": 2})


def test_a_space_mixes_fbnetv1_block_choices_with_the_masks() -> None:
    # stage 1's second block: an FBNetV1-style choice between itself and an identity.
    stages = [TINY["stages"][0], {**TINY["stages"][1], "skip": True}, TINY["stages"][2]]
    net = MaskedSupernet(DMaskingSpace.from_dict({**TINY, "stages": stages}), num_classes=5)
    (skip,) = [g for g in net.groups if g.kind == "skip"]
    assert skip.label == "stage 1, block 1 (skip)"
    g = net.groups.index(skip)
    x = torch.randn(3, 3, 16, 16)
    generator = torch.Generator().manual_seed(4)
    for choice in net.sample_architectures(4, generator):
        for skipped in (0, 1):
            choice[g] = skipped
            arch = net.arch_def(choice)
            assert (arch["blocks"][1][1][0] == "skip") == bool(skipped)
            plain = build_model(arch, num_classes=5)
            assert net.choice_cost(choice) == count_macs(plain, arch["input_size"])
            plain.load_state_dict(subnet_state_dict(net, choice))
            net.train(), plain.train()
            with torch.no_grad():
                ours, _ = net(x, net.fixed_sample(choice))
                theirs = plain(net._subsample(x, arch["input_size"]))
            assert torch.allclose(ours, theirs, atol=1e-5)
    with pytest.raises(ConfigError, match="stage 2.skip"):
        DMaskingSpace.from_dict({**TINY, "stages": [*stages[:2], {**stages[2], "skip": True}]})


def test_derived_expansion_is_the_chosen_hidden_width_over_the_actual_input(tiny) -> None:
    # The rule (docs/dmasking.md, "Derived expansion ratios"): hidden-width options are
    # round(e · C_in,max); the arch def writes hidden / (the block's chosen input width),
    # the zoo format's ratio, so the builder makes exactly the hidden width searched — a
    # ratio above max(expansions) where the chosen input is narrower than the widest.
    from fbnas.arch.rounding import round_channels
    from fbnas.builder import FBNetBuilder
    from fbnas.zoo.model import resolve_arch

    hidden_options = [{round_channels(e * c, 4) for e in (1, 2, 4)} for c in (8, 16)]
    above_max = 0
    for choice in tiny.sample_architectures(12, torch.Generator().manual_seed(3)):
        spec, _, _ = resolve_arch(tiny.arch_def(choice))
        builder = FBNetBuilder()
        builder.add_basic_args(spec.basic_args)
        traces = [t for t in builder.trace(spec, resolution=8) if t.spec.op.startswith("ir_k")]
        for trace, options in zip(traces, hidden_options, strict=True):
            kwargs = trace.spec.kwargs.to_dict()
            hidden = kwargs.get("mid_channels") or round_channels(
                kwargs.get("expansion", 1) * trace.in_channels, 4)
            assert hidden in options, (trace.name, kwargs, trace.in_channels)
            above_max += kwargs.get("expansion", 1) > 4
    assert above_max > 0  # the case the rule is about occurs in this sample
