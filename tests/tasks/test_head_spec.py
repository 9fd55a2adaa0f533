"""The head as data: a HeadSpec builds today's classifier, key for key, and costs what it
counts, in every place a head is costed (analytic cost, DNAS layer costs, latency keys)."""

from __future__ import annotations

import pytest
import torch

import fbnas
from fbnas.arch import ArchDefError, HeadSpec
from fbnas.blocks import HEADS, ClsConvHead, classifier_head
from fbnas.builder import FBNetBuilder
from fbnas.cost import arch_cost, count_macs, count_params
from fbnas.cost.latency import DeviceInfo
from fbnas.cost.lut import LatencyEntry, LatencyTable, arch_items
from fbnas.errors import ConfigError
from fbnas.search.dnas.supernet import Supernet, layer_costs

ZOO_MODELS = ["fbnet_a", "mnv3_small", "FBNetV3_A", "ResNet18", "eff_0", "RegNetX_400M"]


@pytest.mark.parametrize("name", ZOO_MODELS)
@pytest.mark.parametrize("classes", [10, 1000])
def test_the_head_spec_builds_todays_classifier(name: str, classes: int) -> None:
    with torch.device("meta"):
        shorthand = fbnas.build_model(name, num_classes=classes)
        described = fbnas.build_model(name, head=classifier_head(classes))
    assert type(described.head) is ClsConvHead
    assert described.head_spec == shorthand.head_spec == HeadSpec("cls_head",
                                                                  {"num_classes": classes})
    assert described.num_classes == classes
    shapes = {k: tuple(v.shape) for k, v in described.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in shorthand.state_dict().items()}
    channels = described.backbone.out_channels
    assert [(k, shapes[k]) for k in shapes if k.startswith("head.")] == [
        ("head.conv.weight", (classes, channels, 1, 1)), ("head.conv.bias", (classes,))]


@pytest.mark.parametrize("name", ZOO_MODELS)
@pytest.mark.parametrize("classes", [7, 1000])
def test_the_head_is_costed_from_its_spec_as_counted(name: str, classes: int) -> None:
    resolution = 96
    with torch.device("meta"):
        model = fbnas.build_model(name, head=classifier_head(classes))
    cost = arch_cost(name, resolution, head=classifier_head(classes))
    assert cost == arch_cost(name, resolution, num_classes=classes)
    assert (cost.params, cost.macs) == (count_params(model), count_macs(model, resolution))
    channels = model.backbone.out_channels
    assert (cost.head_params, cost.head_macs) == (channels * classes + classes,
                                                  channels * classes)
    assert cost.output_shape == (1, classes)


def test_the_classifier_keeps_its_latency_table_key() -> None:
    arch = {"input_size": 32, "blocks": [[("conv_k3", 8, 2, 1)], [("conv_k1", 32, 2, 1)]]}
    key = "cls_head|32x8x8|10"
    assert arch_items(arch, num_classes=10).keys[-1] == key
    assert arch_items(arch, num_classes=None, head=classifier_head(10)).keys[-1] == key
    # A table written before heads were data still predicts the network (its keys as text).
    table = LatencyTable(DeviceInfo.current())
    table.entries = {"conv_k3|3x32x32|8|s2|": LatencyEntry([0.5]),
                     "conv_k1|8x16x16|32|s2|": LatencyEntry([0.25]), key: LatencyEntry([0.125])}
    prediction = table.predict(arch, num_classes=10)
    assert prediction.sum_ms == 0.875
    assert prediction.block_ms[-1] == ("head", 0.125)


def test_the_dnas_layer_costs_take_the_head_from_its_spec() -> None:
    space = "fbnet_v1_tiny"
    by_classes = layer_costs(space, "params", resolution=16, num_classes=10)
    by_spec = layer_costs(space, "params", resolution=16, head=classifier_head(10))
    without = layer_costs(space, "params", resolution=16, num_classes=1)
    assert by_classes == by_spec
    channels = 256  # fbnet_v1_tiny's last conv_k1
    assert by_classes.fixed - without.fixed == (channels * 10 + 10) - (channels + 1)
    macs = layer_costs(space, "macs", resolution=16, num_classes=10)
    assert macs.fixed - layer_costs(space, "macs", resolution=16, num_classes=1).fixed == \
        channels * 9
    net = Supernet(space, by_spec, head=classifier_head(10), resolution=16)
    assert net.num_classes == 10 and type(net.head) is ClsConvHead
    assert {k for k in net.state_dict() if k.startswith("head.")} == {"head.conv.weight",
                                                                      "head.conv.bias"}


def test_head_spec_round_trips_and_refuses_bad_data() -> None:
    head = classifier_head(10)
    assert HeadSpec.from_dict(head.to_dict()) == head
    assert head.to_dict() == {"op": "cls_head", "options": {"num_classes": 10}}
    assert hash(head) == hash(classifier_head(10))
    with pytest.raises(ArchDefError, match="head: unknown key 'classes'"):
        HeadSpec.from_dict({"op": "cls_head", "classes": 10})
    with pytest.raises(ArchDefError, match="must be a dict with a string 'op'"):
        HeadSpec.from_dict({"options": {}})


def test_unknown_heads_and_options_name_the_head() -> None:
    builder = FBNetBuilder()
    with pytest.raises(ArchDefError, match="unknown head op 'cls_haed'; did you mean "
                                           "'cls_head'"):
        builder.trace_head(HeadSpec("cls_haed", {"num_classes": 3}), 8)
    with pytest.raises(ArchDefError, match="head 'cls_head': unknown option 'classes'"):
        builder.trace_head(HeadSpec("cls_head", {"classes": 3}), 8)
    with pytest.raises(ArchDefError, match="head 'cls_head': missing required option "
                                           "'num_classes'"):
        fbnas.build_model("fbnet_a", head=HeadSpec("cls_head"))
    with pytest.raises(ArchDefError, match="num_classes must be >= 1"):
        builder.trace_head(classifier_head(0), 8)
    with pytest.raises(ConfigError, match="num_classes=10 and head 'cls_head'"):
        fbnas.build_model("fbnet_a", num_classes=10, head=classifier_head(5))
    with pytest.raises(ValueError, match="head op 'cls_head' is already registered"):
        HEADS.add(HEADS.get("cls_head"))
