"""The zoo equals the reference builds: 15 block-by-block, all 122 by params/MACs/shape."""

from __future__ import annotations

import pytest
import torch
from reference_data import block_examples, describe_block, reference_block, zoo_reference

import fbnas
from fbnas.cost import arch_cost, count_breakdown, count_macs, count_params
from fbnas.zoo import get_arch_def, get_entry, list_archs

EXAMPLES = block_examples()
ZOO = zoo_reference()["archs"]


def test_the_zoo_has_all_122_reference_architectures() -> None:
    assert len(list_archs()) == 122
    assert set(list_archs()) == set(ZOO)
    for name, ref in ZOO.items():
        assert get_arch_def(name)["blocks"] == ref["arch_def"]["blocks"], name


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_block_by_block_structure_matches_the_reference(name: str) -> None:
    example = EXAMPLES[name]
    model = fbnas.build_model(name)
    stages = dict(model.backbone.stages.named_children())
    assert list(stages) == [b["module_name"] for b in example["blocks"]]
    rows, _ = count_breakdown(model, example["resolution"])
    by_name = {r.name: r for r in rows}
    for ref in example["blocks"]:
        block = stages[ref["module_name"]]
        assert describe_block(block) == reference_block(ref), ref["module_name"]
        assert by_name[ref["module_name"]].params == ref["params"], ref["module_name"]
        assert list(by_name[ref["module_name"]].output_shape) == ref["out_shape_native"]
    head = example["check"]["head"]
    assert describe_block(model.head) == reference_block(head)


@pytest.mark.parametrize("name", sorted(n for n, a in ZOO.items() if "check" in a))
def test_published_check_figures(name: str) -> None:
    check = ZOO[name]["check"]
    entry = get_entry(name)
    with torch.device("meta"):
        model = fbnas.build_model(name)
    assert count_params(model) == check["params_total"]
    assert count_macs(model, 224) == check["macs_224"]
    cost = arch_cost(name, 224)
    assert (cost.params, cost.macs) == (check["params_total"], check["macs_224"])
    assert list(cost.output_shape) == check["output_shape_224"]
    assert len(cost.blocks) == check["num_blocks"]
    assert entry.reference == check


@pytest.mark.parametrize("name", list(ZOO))
def test_analytic_cost_equals_counting_the_built_model(name: str) -> None:
    entry = get_entry(name)
    with torch.device("meta"):
        model = fbnas.build_model(name)
    rows, out_shape = count_breakdown(model, entry.resolution)
    cost = arch_cost(name)
    assert cost.params == count_params(model)
    assert cost.macs == sum(r.macs for r in rows)
    assert cost.output_shape == out_shape
    assert [b.params for b in cost.blocks] == [r.params for r in rows[:-1]]
    assert [b.macs for b in cost.blocks] == [r.macs for r in rows[:-1]]
    assert [(1, b.out_channels, *b.out_hw) for b in cost.blocks] == [r.output_shape
                                                                      for r in rows[:-1]]


def _published_convention(model: torch.nn.Module, resolution: int) -> tuple[float, float]:
    """params_m: conv/linear weights without biases; flops_m: MACs + adaptive-pool inputs."""
    weights = sum(m.weight.numel() for m in model.modules()
                  if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    pooled = [0]
    hooks = [m.register_forward_hook(lambda _m, i, _o: pooled.__setitem__(
        0, pooled[0] + i[0].numel())) for m in model.modules()
        if isinstance(m, torch.nn.AdaptiveAvgPool2d)]
    macs = count_macs(model, resolution)
    for h in hooks:
        h.remove()
    return weights / 1e6, (macs + pooled[0]) / 1e6


# mnv3's published figures come from an older definition (REFERENCE_BUILDER.md): excluded.
@pytest.mark.parametrize("name", sorted(n for n, a in ZOO.items()
                                        if "published" in a and not n.startswith("mnv3")))
def test_published_zoo_figures_in_their_own_convention(name: str) -> None:
    published = ZOO[name]["published"]
    with torch.device("meta"):
        model = fbnas.build_model(name)
    params_m, flops_m = _published_convention(model, published.get("resolution", 224))
    assert params_m == pytest.approx(published["params_m"], abs=2e-5)
    assert flops_m == pytest.approx(published["flops_m"], abs=2e-5)


# One real forward per family, at a small resolution to keep the suite fast.
FAMILY_REPRESENTATIVES = ["fbnet_a", "FBNetV2_F1", "FBNetV3_A", "mnv3_small", "eff_0",
                          "eff_v2_b0", "RegNetY_200M", "ResNet18", "MobileOne-S0-Train",
                          "dmasking_f1", "default_i8f"]


@pytest.mark.parametrize("name", FAMILY_REPRESENTATIVES)
def test_real_forward_per_family(name: str) -> None:
    model = fbnas.build_model(name, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_family_of_every_entry_and_aliases() -> None:
    assert get_entry("FBNet_a").name == "fbnet_a"
    assert get_entry("MobileNetV3").name == "mnv3"
    families = {get_entry(n).family for n in list_archs()}
    assert families == {"FBNet", "FBNetV2", "FBNetV3", "MobileNet", "EfficientNet",
                        "EfficientNetV2", "RegNet", "ResNet", "MobileOne"}


def test_width_ratio_scales_a_zoo_model() -> None:
    full = arch_cost("mnv2")
    half = arch_cost("mnv2", width_ratio=0.5)
    with torch.device("meta"):
        model = fbnas.build_model("mnv2", width_ratio=0.5)
    assert half.params == count_params(model) < full.params
    assert half.macs == count_macs(model, 224)


def test_fbnetv3_padding_quirk_changes_the_maps() -> None:
    sizes = [b.out_hw[0] for b in arch_cost("FBNetV3_A", 224).blocks]
    assert 13 in sizes and 6 in sizes and 14 not in sizes
