"""ArchDefError, by example: every kind of malformed arch def, and what its message says.

Every check raises exactly :class:`fbnas.ArchDefError`; its message starts with where the
problem is (``stage S, block B, op 'OP', key 'KEY': ...``). ``block`` counts blocks after
repeats were expanded when an op's options are checked (as the module names ``xifS_B`` do).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from torch import nn

import fbnas
from fbnas import ArchDefError, build_model, unify_arch_def
from fbnas.cost import arch_cost

STEM = ("conv_k3", 8, 2, 1)


def net(*blocks: Any, **top: Any) -> dict[str, Any]:
    """A stem (stage 0: 3 -> 8 channels, 32 -> 16 pixels) then ``blocks`` as stage 1."""
    return {"blocks": [[STEM], list(blocks)], **top}


def assert_error(
    arch: Any,
    where: str,
    *fragments: str,
    stage: int | None = None,
    block: int | None = None,
    op: str | None = None,
    key: str | None = None,
    build: bool = True,
) -> ArchDefError:
    """``build_model`` (unless ``build=False``) and ``arch_cost`` at 32 px both raise an
    ArchDefError that starts with ``where``, contains every fragment and carries the given
    location attributes."""
    calls = [lambda: arch_cost(arch, 32)]
    if build:
        calls.insert(0, lambda: build_model(arch, num_classes=10))
    error = None
    for call in calls:
        with pytest.raises(ArchDefError) as info:
            call()
        error = info.value
        message = str(error)
        assert message.startswith(where), message
        for fragment in fragments:
            assert fragment in message, message
        assert (error.stage, error.block, error.op, error.key) == (stage, block, op, key)
    assert isinstance(error, ValueError)
    return error


def builds(arch: Any) -> nn.Module:
    """The arch def builds and costs without error; returns the model."""
    model = build_model(arch, num_classes=10)
    arch_cost(arch, 32)
    return model


# --------------------------------------------------------------------------- the exception


def test_message_format_names_stage_block_op_and_key() -> None:
    error = ArchDefError("bad", stage=1, block=0, op="ir_k3", key="expnsion")
    assert str(error) == "stage 1, block 0, op 'ir_k3', key 'expnsion': bad"
    assert str(ArchDefError("bad")) == "bad"
    located = ArchDefError("bad", key="k").located(stage=2, block=3, op="skip")
    assert str(located) == "stage 2, block 3, op 'skip', key 'k': bad"


# --------------------------------------------------------------------------- structure


@pytest.mark.parametrize("source, fragment", [
    ([[("conv_k3", 8, 2, 1)]], "got list"),
    (3, "got int"),
    (None, "got NoneType"),
])
def test_an_arch_def_that_is_no_dict_nor_path(source: Any, fragment: str) -> None:
    assert_error(source, "an arch def must be a dict with 'blocks' or a path", fragment)


def test_unknown_top_level_keys_list_the_known_ones() -> None:
    assert_error(net(("skip", 8), inputsize=224), "key 'inputsize': unknown top-level key",
                 "['basic_args', 'blocks', 'input_size', 'preprocessing']", key="inputsize")


def test_non_string_top_level_keys_do_not_break_the_message() -> None:
    arch = {**net(("skip", 8)), 1: 2, "zz": 3}
    assert_error(arch, "key 'zz': unknown top-level key(s) ['zz', 1]", key="zz")


@pytest.mark.parametrize("blocks", [None, 3, "conv_k3", {"stage": []}])
def test_blocks_must_be_a_list_of_stages(blocks: Any) -> None:
    assert_error({"blocks": blocks}, "key 'blocks': 'blocks' must be a list", key="blocks")


def test_missing_blocks_and_no_blocks_at_all() -> None:
    assert_error({"input_size": 32}, "key 'blocks': an arch def needs 'blocks'", key="blocks")
    assert_error({"blocks": [[], [("ir_k3", 8, 1, 0)]]},
                 "key 'blocks': the arch def has no blocks", key="blocks")


@pytest.mark.parametrize("stage", [3, "ir_k3", {"op": "ir_k3"}, None])
def test_a_stage_must_be_a_list(stage: Any) -> None:
    assert_error({"blocks": [[STEM], stage]}, "stage 1: a stage must be a list of blocks",
                 stage=1)


@pytest.mark.parametrize("entry", ["ir_k3", 3, None, {"op": "ir_k3"}])
def test_a_block_must_be_a_list(entry: Any) -> None:
    assert_error(net(("skip", 8), entry), "stage 1, block 1: a block must be a list",
                 stage=1, block=1)


@pytest.mark.parametrize("entry", [(), ("ir_k3",)])
def test_a_block_needs_op_and_out_channels(entry: tuple) -> None:
    assert_error(net(entry), "stage 1, block 0: a block needs at least (op, out_channels)",
                 stage=1, block=0)


@pytest.mark.parametrize("op", [3, None, "", True, ["ir_k3"]])
def test_the_op_must_be_a_non_empty_string(op: Any) -> None:
    assert_error(net((op, 8, 1, 1)), "stage 1, block 0: the op name must be a non-empty string",
                 stage=1, block=0)


@pytest.mark.parametrize("channels", [0, -8, True, 8.0, "8", None, [8]])
def test_out_channels_must_be_a_positive_int(channels: Any) -> None:
    assert_error(net(("ir_k3", channels, 1, 1)),
                 "stage 1, block 0, op 'ir_k3', key 'out_channels': out_channels must be a "
                 "positive int", stage=1, block=0, op="ir_k3", key="out_channels")


@pytest.mark.parametrize("stride", [0, True, 2.0, "2", None])
def test_stride_must_be_a_non_zero_int(stride: Any) -> None:
    assert_error(net(("ir_k3", 8, stride, 1)),
                 "stage 1, block 0, op 'ir_k3', key 'stride': stride must be a non-zero int",
                 stage=1, block=0, op="ir_k3", key="stride")


@pytest.mark.parametrize("repeats", [-1, False, 1.0, "1", None])
def test_repeats_must_be_an_int_of_at_least_zero(repeats: Any) -> None:
    assert_error(net(("ir_k3", 8, 1, repeats)),
                 "stage 1, block 0, op 'ir_k3', key 'repeats': repeats must be an int >= 0",
                 stage=1, block=0, op="ir_k3", key="repeats")


@pytest.mark.parametrize("options", [4, "expansion", ["expansion", 4], None, True])
def test_kwargs_must_be_dicts(options: Any) -> None:
    assert_error(net(("ir_k3", 8, 1, 1, {"expansion": 4}, options)),
                 "stage 1, block 0, op 'ir_k3': element 5 of the block must be a dict of "
                 "options", stage=1, block=0, op="ir_k3")


def test_kwarg_keys_must_be_strings() -> None:
    assert_error(net(("ir_k3", 8, 1, 1, {1: 4})),
                 "stage 1, block 0, op 'ir_k3': element 4 of the block has a non-string key 1",
                 stage=1, block=0, op="ir_k3")


@pytest.mark.parametrize("size", [0, -224, True, 224.0, "224"])
def test_input_size_must_be_a_positive_int(size: Any) -> None:
    assert_error(net(("skip", 8), input_size=size),
                 "key 'input_size': input_size must be a positive int", key="input_size")


def test_structural_errors_are_raised_by_unify_itself() -> None:
    with pytest.raises(ArchDefError, match=re.escape("stage 1, block 0, op 'ir_k3', key "
                                                     "'stride'")):
        unify_arch_def(net(("ir_k3", 8, 0, 1)))


def test_missing_and_unreadable_files(tmp_path) -> None:
    assert_error(str(tmp_path / "nope.json"), "arch def file", "does not exist")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    assert_error(broken, "arch def file", "is not valid")
    listed = tmp_path / "listed.json"
    listed.write_text(json.dumps([1, 2]), encoding="utf-8")
    assert_error(listed, "arch def file", "must hold a mapping")


# --------------------------------------------------------------------------- ops and names


def test_unknown_op_suggests_close_names() -> None:
    assert_error(net(("ir_k33", 8, 1, 1)),
                 "stage 1, block 0, op 'ir_k33': unknown op 'ir_k33'; did you mean 'ir_k3'",
                 stage=1, block=0, op="ir_k33")
    assert_error(net(("maxpol", 8, 2, 1)), "stage 1, block 0, op 'maxpol': unknown op",
                 "did you mean 'maxpool'", stage=1, block=0, op="maxpol")


def test_unknown_op_without_close_names_gives_no_hint() -> None:
    error = assert_error(net(("transformer_xl", 8, 1, 1)),
                         "stage 1, block 0, op 'transformer_xl': unknown op 'transformer_xl'",
                         stage=1, block=0, op="transformer_xl")
    assert "did you mean" not in str(error)


@pytest.mark.parametrize("name, close", [
    ("FBNetV3_Z", "'FBNetV3_G'"),
    ("fbnet_x", "'fbnet_a'"),
    ("mobilenetv2", "'MobileNetV2'"),
])
def test_unknown_zoo_name_suggests_close_names(name: str, close: str) -> None:
    assert_error(name, f"unknown architecture {name!r}; did you mean", close)


def test_block_index_counts_repeats_when_options_are_checked() -> None:
    # Two copies of the first entry are blocks 0 and 1; the bad entry is block 2 (xif1_2).
    assert_error(net(("ir_k3", 8, 1, 2), ("ir_k3", 8, 1, 1, {"expnsion": 4})),
                 "stage 1, block 2, op 'ir_k3', key 'expnsion'",
                 stage=1, block=2, op="ir_k3", key="expnsion")


# --------------------------------------------------------------------------- options


def test_unknown_kwarg_lists_the_accepted_ones() -> None:
    assert_error(net(("ir_k3", 8, 1, 1, {"expnsion": 4})),
                 "stage 1, block 0, op 'ir_k3', key 'expnsion': unknown option 'expnsion' "
                 "(accepted: always_pw, bias, bn_args,", "expansion,",
                 stage=1, block=0, op="ir_k3", key="expnsion")
    assert_error(net(("maxpool", 8, 2, 1, {"stride": 2})),
                 "stage 1, block 0, op 'maxpool', key 'stride': unknown option 'stride' "
                 "(accepted: kernel_size, padding)",
                 stage=1, block=0, op="maxpool", key="stride")


@pytest.mark.parametrize("op, options, key, fragment", [
    ("ir_k3", {"expansion": "4"}, "expansion", "must be finite float, got '4'"),
    ("ir_k3", {"expansion": True}, "expansion", "must be finite float, got True"),
    ("ir_k3", {"expansion": float("nan")}, "expansion", "must be finite float, got nan"),
    ("ir_k3", {"expansion": float("inf")}, "expansion", "must be finite float, got inf"),
    ("ir_k3", {"bias": 1}, "bias", "must be bool, got 1"),
    ("ir_k3", {"dw_group_ratio": 2.0}, "dw_group_ratio", "must be int | null, got 2.0"),
    ("ir_k3", {"relu_args": 3}, "relu_args", "must be str | dict | null, got 3"),
    ("ir_k3", {"pw_args": "x"}, "pw_args", "must be dict | null, got 'x'"),
    ("conv", {"padding": [1]}, "padding", "must be int | [int, int], got [1]"),
    ("conv", {"padding": [1, 1, 1]}, "padding", "must be int | [int, int], got [1, 1, 1]"),
    ("conv", {"padding": "same"}, "padding", "must be int | [int, int], got 'same'"),
    ("maxpool", {"padding": True}, "padding", "must be int, got True"),
    ("mobileone", {"deploy": "yes"}, "deploy", "must be bool, got 'yes'"),
    ("ir_pool_hs", {"kernel_size": 7.0}, "kernel_size", "must be int, got 7.0"),
])
def test_mistyped_kwarg_values(op: str, options: dict, key: str, fragment: str) -> None:
    channels = 16 if op == "mobileone" else 8
    assert_error(net((op, channels, 1, 1, options)),
                 f"stage 1, block 0, op {op!r}, key {key!r}: option {key!r} {fragment}",
                 stage=1, block=0, op=op, key=key)


@pytest.mark.parametrize("options, key, fragment", [
    ({"pw_args": {"kernel_size": "x"}}, "pw_args.kernel_size",
     "option 'pw_args.kernel_size' must be int | null, got 'x'"),
    ({"dw_args": {"padding": [1]}}, "dw_args.padding",
     "option 'dw_args.padding' must be int | [int, int] | null, got [1]"),
    ({"pwl_args": {"groups": 2}}, "pwl_args.groups",
     "unknown option 'pwl_args.groups' (accepted: bias, dilation, kernel_size, padding, "
     "stride)"),
    ({"dw_args": {"kernel_size": 5}}, "dw_args.kernel_size",
     "dw_args.kernel_size is set by the op and the block stride"),
    ({"pw_args": {"dilation": 0}}, "pw_args.dilation", "pw_args.dilation must be >= 1"),
    ({"se_args": {"name": "bogus"}}, "se_args",
     "unknown SE type 'bogus' (known: se, se_hsig, ese)"),
    ({"se_args": {"relu_args": "relu"}}, "se_args", "option 'se_args' needs a string 'name'"),
    ({"se_args": {"name": "se", "ratio": 0.5}}, "se_args.ratio", "SE has no option 'ratio'"),
    ({"se_args": {"name": "se", "relu_args": 3}}, "se_args.relu_args",
     "option 'se_args.relu_args' must be a name or a dict with 'name', got 3"),
    ({"relu_args": "swishh"}, "relu_args", "unknown activation 'swishh' in 'relu_args'"),
    ({"relu_args": {"name": "relu", "inplace": True}}, "relu_args.inplace",
     "activation 'relu' has no option 'inplace'"),
    ({"relu_args": {"name": "leakyrelu", "negative_slope": "x"}}, "relu_args.negative_slope",
     "option 'negative_slope' must be finite float, got 'x'"),
    ({"relu_args": {"name": "prelu", "num_parameters": "x"}}, "relu_args.num_parameters",
     "option 'num_parameters' must be int, got 'x'"),
    ({"relu_args": {"name": "prelu", "num_parameters": 0}}, "relu_args.num_parameters",
     "option 'num_parameters' must be >= 1, got 0"),
    ({"bn_args": "batchnorm"}, "bn_args", "unknown norm 'batchnorm' in 'bn_args'"),
    ({"bn_args": {"name": "bn", "momentum": "x"}}, "bn_args.momentum",
     "norm 'bn' option 'momentum' must be finite float | null, got 'x'"),
    ({"bn_args": {"name": "bn", "eps": 0.0}}, "bn_args.eps", "option 'eps' must be > 0"),
    ({"bn_args": {"name": "gn", "num_groups": 5}}, "bn_args.num_groups",
     "group norm needs num_groups dividing"),
    ({"res_conn_args": "sum"}, "res_conn_args",
     "res_conn_args must be 'default', 'projection' or null, got 'sum'"),
    ({"res_conn_args": {"name": "default", "scale": 2}}, "res_conn_args.scale",
     "res_conn_args has no option 'scale'"),
    ({"drop_connect_rate": 1.0}, "drop_connect_rate", "drop_connect_rate must be in [0, 1)"),
    ({"expansion": 0}, "expansion", "expansion must be > 0, got 0"),
    ({"width_divisor": 0}, "width_divisor", "width_divisor must be >= 1, got 0"),
    ({"width_divisor": "x"}, "width_divisor", "option 'width_divisor' must be int, got 'x'"),
])
def test_nested_and_value_errors_in_inverted_residual_options(options: dict, key: str,
                                                              fragment: str) -> None:
    assert_error(net(("ir_k3", 8, 1, 1, options)), f"stage 1, block 0, op 'ir_k3', key {key!r}",
                 fragment, stage=1, block=0, op="ir_k3", key=key)


@pytest.mark.parametrize("options, key", [
    ({"expansion": 1, "pw_args": {"kernel_size": "x"}}, "pw_args.kernel_size"),
    ({"expansion": 1, "pw_args": {"dilation": 0}}, "pw_args.dilation"),
    ({"expansion": 1, "pw_groups": 0}, "pw_groups"),
    ({"skip_dw": True, "dw_args": {"bogus": 1}}, "dw_args.bogus"),
    ({"skip_dw": True, "dw_args": {"stride": 2}}, "dw_args.stride"),
    ({"expansion": 1, "skip_pwl": True, "pwl_args": {"kernel_size": "x"}},
     "pwl_args.kernel_size"),
    ({"expansion": 1, "skip_pwl": True, "pwl_groups": -1}, "pwl_groups"),
    ({"expansion": 1, "skip_dw": True, "skip_pwl": True, "bn_args": "bogus"}, "bn_args"),
])
def test_options_of_a_part_the_block_leaves_out_are_still_checked(options: dict,
                                                                  key: str) -> None:
    # expansion 1: no pw (mid == in); skip_dw / skip_pwl: no dw / pwl.
    assert_error(net(("ir_k3", 8, 1, 1, options)), f"stage 1, block 0, op 'ir_k3', key {key!r}",
                 stage=1, block=0, op="ir_k3", key=key)


@pytest.mark.parametrize("op, options, key, fragment", [
    ("ir_pool_hs", {"expansion": -1}, "expansion", "expansion must be > 0"),
    ("ir_pool_hs", {"width_divisor": 0}, "width_divisor", "width_divisor must be >= 1"),
    ("ir_pool_hs", {"kernel_size": 0}, "kernel_size", "must be -1 (global pool) or >= 1"),
    ("ir_pool_hs", {"pw_se_args": "sex"}, "pw_se_args", "unknown SE type 'sex'"),
    ("mobileone", {"over_param_branches": 0}, "over_param_branches", "must be >= 1"),
    ("mobileone", {"bn_args": "gn"}, "bn_args", "need batch norm"),
    ("maxpool", {"kernel_size": 3, "padding": 2}, "padding", "padding in [0, k // 2]"),
    ("adaptive_avg_pool", {"output_size": 0}, "output_size", "output_size must be >= 1"),
    ("conv", {"kernel_size": 0}, "kernel_size", "conv kernel/stride/dilation must be >= 1"),
    ("conv", {"padding": -1}, "padding", "conv padding must be >= 0"),
    ("conv", {"relu_args": {"name": "prelu", "num_parameters": "x"}},
     "relu_args.num_parameters", "must be int"),
])
def test_value_errors_in_other_families(op: str, options: dict, key: str, fragment: str) -> None:
    assert_error(net((op, 8, 1, 1, options)), f"stage 1, block 0, op {op!r}, key {key!r}",
                 fragment, stage=1, block=0, op=op, key=key)


def test_a_fixed_preset_cannot_be_overridden() -> None:
    assert_error(net(("ir_k5", 8, 1, 1, {"kernel_size": 3})),
                 "stage 1, block 0, op 'ir_k5', key 'kernel_size': op 'ir_k5' fixes "
                 "kernel_size=5 (got 3); use the generic op of its family",
                 stage=1, block=0, op="ir_k5", key="kernel_size")
    assert_error(net(("ir_k3_g2", 8, 1, 1, {"pw_groups": 4})),
                 "stage 1, block 0, op 'ir_k3_g2', key 'pw_groups': op 'ir_k3_g2' fixes "
                 "pw_groups=2", stage=1, block=0, op="ir_k3_g2", key="pw_groups")


@pytest.mark.parametrize("value", [5.0, True])
def test_a_fixed_preset_given_with_another_type_is_an_error(value: Any) -> None:
    # 5.0 == 5 and True == 1, but they are not the int the op fixes.
    op = "ir_k5" if value == 5 else "conv_k1"
    key = "kernel_size"
    assert_error(net((op, 8, 1, 1, {key: value})), f"stage 1, block 0, op {op!r}, key {key!r}",
                 "fixes", stage=1, block=0, op=op, key=key)


def test_a_fixed_preset_repeated_with_its_own_value_is_fine() -> None:
    builds(net(("ir_k5", 8, 1, 1, {"kernel_size": 5}), ("conv_k1", 8, 1, 1, {"padding": 0})))


def test_documented_ignored_kwargs_are_accepted() -> None:
    ignored = {"bias": True, "expansion": 4, "less_se_channels": True,
               "zero_last_bn_gamma": True}
    plain = builds(net(("skip", 16, 2, 1), ("ir_pool_hs", 32, 1, 1)))
    with_ignored = builds(net(
        ("skip", 16, 2, 1, ignored),
        ("ir_pool_hs", 32, 1, 1, {"less_se_channels": True, "zero_last_bn_gamma": True}),
    ))
    assert str(plain) == str(with_ignored)


def test_ignored_kwargs_are_only_ignored_where_documented() -> None:
    assert_error(net(("ir_pool_hs", 32, 1, 1, {"bias": True})),
                 "stage 1, block 0, op 'ir_pool_hs', key 'bias': unknown option 'bias'",
                 stage=1, block=0, op="ir_pool_hs", key="bias")
    assert_error(net(("skip", 8, 1, 1, {"round_se_channels": True})),
                 "stage 1, block 0, op 'skip', key 'round_se_channels': unknown option",
                 stage=1, block=0, op="skip", key="round_se_channels")


# --------------------------------------------------------------------------- channels, strides


def test_a_pool_must_keep_its_input_channels() -> None:
    assert_error(net(("maxpool", 16, 2, 1)),
                 "stage 1, block 0, op 'maxpool', key 'out_channels': a pool passes its 8 "
                 "input channels through; out_channels must equal them, got 16",
                 stage=1, block=0, op="maxpool", key="out_channels")
    assert_error(net(("adaptive_avg_pool", 4, 1, 1)),
                 "stage 1, block 0, op 'adaptive_avg_pool', key 'out_channels'",
                 stage=1, block=0, op="adaptive_avg_pool", key="out_channels")


def test_skip_pwl_needs_the_hidden_width_to_equal_out_channels() -> None:
    assert_error(net(("ir_k3", 16, 1, 1, {"skip_pwl": True})),
                 "stage 1, block 0, op 'ir_k3', key 'skip_pwl': skip_pwl leaves the block at "
                 "its 48 hidden channels, not out_channels=16",
                 stage=1, block=0, op="ir_k3", key="skip_pwl")
    builds(net(("ir_k3", 16, 1, 1, {"skip_pwl": True, "expansion": 1,
                                     "mid_expand_out": True, "always_pw": True})))


@pytest.mark.parametrize("options, key", [
    ({"pw_args": {"stride": 2}}, "pw_args"),
    ({"dw_args": {"padding": 0}}, "dw_args"),
    ({"dw_args": {"dilation": 2}}, "dw_args"),
    ({"pwl_args": {"kernel_size": 3}}, "pwl_args"),
])
def test_a_residual_block_must_keep_the_spatial_size(options: dict, key: str) -> None:
    # 8 -> 8 at stride 1 adds the input back: a part that resizes would fail at forward.
    assert_error(net(("ir_k3", 8, 1, 1, options)),
                 f"stage 1, block 0, op 'ir_k3', key {key!r}: the residual add needs the",
                 "to keep the spatial size", stage=1, block=0, op="ir_k3", key=key)
    builds(net(("ir_k3", 8, 1, 1, {**options, "res_conn_args": None})))
    builds(net(("ir_k3", 16, 1, 1, options)))  # no residual: 8 -> 16 channels


def test_same_size_parts_keep_their_residual() -> None:
    model = builds(net(("ir_k3", 8, 1, 1, {"dw_args": {"dilation": 2, "padding": 2},
                                            "pwl_args": {"kernel_size": 3, "padding": [1, 1]}})))
    assert model.backbone.stages.xif1_0.res_conn is not None


@pytest.mark.parametrize("block, key", [
    (("conv", 12, 1, 1, {"groups": 3}), "groups"),  # 8 -> 12: 3 does not divide 8
    (("conv", 8, 1, 1, {"groups": 0}), "groups"),
    (("ir_k3", 8, 1, 1, {"dw_group_ratio": 100}), "dw_group_ratio"),  # > the 48 hidden
    (("ir_k3", 8, 1, 1, {"dw_group_ratio": 5}), "dw_group_ratio"),  # 9 groups, 48 channels
    (("ir_k3", 8, 1, 1, {"pwl_groups": 3}), "groups"),
])
def test_groups_must_divide_the_channels(block: tuple, key: str) -> None:
    assert_error(net(block), f"stage 1, block 0, op {block[0]!r}, key {key!r}",
                 stage=1, block=0, op=block[0], key=key)


def test_grouped_op_on_an_odd_input_width() -> None:
    # ir_k3_g2 right after the 3-channel input: the 2-group pw cannot split 3 channels.
    assert_error({"blocks": [[("ir_k3_g2", 8, 2, 1)]]},
                 "stage 0, block 0, op 'ir_k3_g2', key 'groups'",
                 stage=0, block=0, op="ir_k3_g2", key="groups")


@pytest.mark.parametrize("op", ["skip", "maxpool", "res_k3", "res_block_k3", "mobileone"])
def test_ops_that_cannot_upsample_refuse_a_negative_stride(op: str) -> None:
    assert_error(net((op, 8, -2, 1)), f"stage 1, block 0, op {op!r}, key 'stride'",
                 stage=1, block=0, op=op, key="stride")


def test_a_bottleneck_needs_at_least_four_out_channels() -> None:
    assert_error(net(("res_block_k3", 3, 1, 1)),
                 "stage 1, block 0, op 'res_block_k3', key 'out_channels'",
                 "a bottleneck needs out_channels >= 4",
                 stage=1, block=0, op="res_block_k3", key="out_channels")


def test_an_input_too_small_for_the_network_at_a_resolution() -> None:
    # 32 -> 16 (stem) -> 7 -> 3 -> 1, then a fourth 3x3 pool without padding has no room.
    arch = net(*[("maxpool", 8, 2, 1)] * 4)
    assert_error(arch, "stage 1, block 3, op 'maxpool', key 'resolution': input 1x1 is too "
                 "small for a pool of kernel 3", stage=1, block=3, op="maxpool",
                 key="resolution", build=False)
    build_model(arch, num_classes=10)  # building needs no resolution
    arch_cost(arch, 64)  # and a larger input fits
    assert_error(net(("conv", 8, 1, 1, {"kernel_size": 20})), "stage 1, block 0, op 'conv', "
                 "key 'resolution': input 16x16 is too small", stage=1, block=0, op="conv",
                 key="resolution", build=False)


# --------------------------------------------------------------------------- basic_args


def test_a_basic_args_key_no_op_knows_is_an_error() -> None:
    assert_error(net(("ir_k3", 8, 1, 1), basic_args={"expnsion": 4}),
                 "key 'basic_args.expnsion': basic_args key 'expnsion' is not an option of "
                 "any registered op", key="basic_args.expnsion")


@pytest.mark.parametrize("basic_args", [[], 0, "", False, 3, ["width_divisor", 8]])
def test_basic_args_must_be_a_dict(basic_args: Any) -> None:
    assert_error(net(("ir_k3", 8, 1, 1), basic_args=basic_args),
                 "key 'basic_args': 'basic_args' must be a dict of options", key="basic_args")


def test_basic_args_keys_must_be_strings() -> None:
    assert_error(net(("ir_k3", 8, 1, 1), basic_args={8: "width_divisor"}),
                 "key 'basic_args': 'basic_args' has a non-string key 8", key="basic_args")


@pytest.mark.parametrize("divisor", [0, -8, "8", 8.0, True, None])
def test_basic_args_width_divisor_must_be_a_positive_int(divisor: Any) -> None:
    # Checked by the builder even when no op of the network rounds widths.
    for blocks in ([("ir_k3", 8, 1, 1)], [("conv_k3", 8, 1, 1)]):
        assert_error(net(*blocks, basic_args={"width_divisor": divisor}),
                     "key 'basic_args.width_divisor': basic_args width_divisor must be an int "
                     ">= 1", key="basic_args.width_divisor")


def test_a_mistyped_basic_args_value_is_reported_at_the_first_op_taking_it() -> None:
    assert_error(net(("skip", 8), ("ir_k3", 8, 1, 1), basic_args={"expansion": "4"}),
                 "stage 1, block 1, op 'ir_k3', key 'expansion': option 'expansion' must be",
                 stage=1, block=1, op="ir_k3", key="expansion")


def test_basic_args_keys_an_op_does_not_know_are_not_taken_by_it() -> None:
    arch = {"blocks": [[("conv_k3", 8, 2, 1)], [("ir_k3", 16, 1, 1)]],
            "basic_args": {"dw_skip_bnrelu": True}}
    model = builds(arch)
    stem, irf = model.backbone.stages.xif0_0, model.backbone.stages.xif1_0
    assert isinstance(stem.bn, nn.BatchNorm2d) and isinstance(stem.relu, nn.ReLU)
    assert not hasattr(irf.dw, "bn") and not hasattr(irf.dw, "relu")
    assert isinstance(irf.pw.bn, nn.BatchNorm2d) and isinstance(irf.pwl.bn, nn.BatchNorm2d)


# --------------------------------------------------------------------------- one exception


def test_archdeferror_is_the_one_public_exception() -> None:
    assert fbnas.ArchDefError is ArchDefError
    assert issubclass(ArchDefError, ValueError)
