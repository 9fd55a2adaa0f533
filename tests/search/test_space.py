"""Search spaces as data: the FBNetV1 tables, sampling, arch defs every command accepts."""

from __future__ import annotations

import json
import random

import pytest
import torch

from fbnas import build_model
from fbnas.arch import ArchDefError, unify_arch_def
from fbnas.cost import arch_cost
from fbnas.search import get_space


def test_fbnet_v1_has_the_paper_macro_architecture() -> None:
    space = get_space("fbnet_v1")
    assert space.num_layers == 22 and space.size == 9**22
    assert [c.name for c in space.layers[0].candidates] == [
        "ir_k3_e1", "ir_k3_s2", "ir_k3_e3", "ir_k3_e6", "ir_k5_e1", "ir_k5_s2", "ir_k5_e3",
        "ir_k5_e6", "skip"]
    widths = [(layer.out_channels, layer.stride) for layer in space.layers]
    assert widths == ([(16, 1)] + [(24, 2)] + [(24, 1)] * 3 + [(32, 2)] + [(32, 1)] * 3
                      + [(64, 2)] + [(64, 1)] * 3 + [(112, 1)] * 4 + [(184, 2)]
                      + [(184, 1)] * 3 + [(352, 1)])


@pytest.mark.parametrize("name", ["fbnet_v1", "fbnet_v1_cifar", "fbnet_v1_tiny"])
def test_fbnet_v1_candidates_are_the_papers_blocks(name) -> None:
    """FBNet Table 2: every inverted residual has its 1x1 expansion conv (C_in -> e*C_in,
    groups g), a shuffle when g = 2, the depthwise conv, and the grouped 1x1 projection —
    also at expansion 1, where the reference builder would drop the expansion conv."""
    from fbnas.search.space import candidate_traces

    space = get_space(name)
    layers, _, _, _ = candidate_traces(space, space.input_size)
    for index in (0, 1, len(layers) - 1):  # 16 -> 16 at stride 1, 16 -> 24 at stride 2, last
        for candidate, trace in zip(space.layers[index].candidates, layers[index],
                                    strict=True):
            if candidate.name == "skip":
                continue
            plan, c_in = trace.plan, trace.in_channels
            expansion, groups = int(candidate.name[-1]) if candidate.name[-2] == "e" else 1, (
                2 if candidate.name.endswith("_s2") else 1)
            assert plan.pw is not None, (index, candidate.name)
            pw = plan.pw.conv
            assert (pw.in_channels, pw.out_channels, pw.kernel_size, pw.groups) == (
                c_in, c_in * expansion, (1, 1), groups), (index, candidate.name)
            assert plan.shuffle_groups == groups
            assert plan.dw.conv.kernel_size == (int(candidate.name[4]),) * 2
            assert plan.dw.conv.groups == c_in * expansion
            assert plan.pwl.conv.groups == groups
            assert plan.pwl.conv.out_channels == space.layers[index].out_channels


def test_zoo_fbnet_blocks_keep_the_reference_rule() -> None:
    """The zoo's FBNet models are built as the reference builds them: an expansion-1 block
    has no expansion conv there (the search spaces add it, the zoo does not)."""
    from fbnas.builder import FBNetBuilder
    from fbnas.zoo import get_arch_def

    spec = unify_arch_def(get_arch_def("fbnet_a"))
    traces = FBNetBuilder().trace(spec, resolution=224)
    e1 = [t for t in traces if t.spec.op.startswith("ir_k")
          and t.spec.kwargs.get("expansion") == 1 and not t.spec.kwargs.get("always_pw")]
    assert e1 and all(t.plan.pw is None for t in e1)


def test_sampled_arch_is_an_ordinary_arch_def() -> None:
    space = get_space("fbnet_v1")
    choices = space.sample(random.Random(3))
    spec = unify_arch_def(space.arch_def(choices))
    assert len(spec.blocks) == 24 and spec.blocks[0].op == "conv_k3"
    assert spec.blocks[-1].op == "conv_k1" and spec.blocks[-1].out_channels == 1984
    names = space.choice_names(choices)
    ops = {"ir_k3": "ir_k3", "ir_k5": "ir_k5"}
    for block, name in zip(spec.blocks[1:-1], names, strict=True):
        if name == "skip":
            assert block.op == "skip"
        elif name.endswith("_s2"):
            assert block.op == name[:5] + "_g2" and block.kwargs["pwl_groups"] == 2
            assert block.kwargs["always_pw"] is True
        else:
            assert block.op == ops[name[:5]] and block.kwargs["expansion"] == int(name[-1])
            assert block.kwargs.get("always_pw", False) is (name.endswith("_e1"))
    assert space.sample(random.Random(3)) == choices


def test_cifar_variant_ends_on_a_4x4_map() -> None:
    space = get_space("fbnet_v1_cifar")
    cost = arch_cost(space.arch_def(space.sample(random.Random(0))))
    assert cost.resolution == 32 and cost.blocks[-1].out_hw == (4, 4)
    imagenet = arch_cost(get_space("fbnet_v1").arch_def([0] * 22))
    assert imagenet.blocks[-1].out_hw == (7, 7)


def test_candidate_archs_cover_every_layer_candidate_pair_once() -> None:
    space = get_space("fbnet_v1")
    archs = space.all_candidate_archs()
    seen = set()
    for arch in archs:
        spec = unify_arch_def(arch)
        for layer_idx, block in enumerate(spec.blocks[1:-1]):
            seen.add((layer_idx, block.op, block.kwargs.get("expansion")))
    assert len(seen) == 22 * 9
    build_model(archs[0], num_classes=10)  # a mixed, buildable network


def test_bad_choices_and_unknown_spaces_are_clear_errors() -> None:
    space = get_space("fbnet_v1")
    with pytest.raises(ArchDefError, match="22 searchable layers, got 3"):
        space.arch_def([0, 1, 2])
    with pytest.raises(ArchDefError, match=r"layer 1: choice 9 is not in \[0, 9\)"):
        space.arch_def([0, 9] + [0] * 20)
    with pytest.raises(ArchDefError, match="did you mean 'fbnet_v1'"):
        get_space("fbnet_v2x")


def test_space_sample_cli_writes_files_info_accepts(tmp_path, run_cli) -> None:
    out = tmp_path / "samples"
    proc = run_cli("space", "sample", "fbnet_v1_cifar", "-n", "3", "--seed", "7", "--out", out)
    assert proc.returncode == 0, proc.stderr
    files = sorted(out.glob("*.json"))
    assert len(files) == 3
    record = json.loads(files[0].read_text())
    assert record["space"] == "fbnet_v1_cifar" and len(record["choices"]) == 22
    info = run_cli("info", files[0], "--json")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)[0]["resolution"] == 32


# --------------------------------------------------------------------------- spaces as files

TINY_SPACE_YAML = """
name: my_space
input_size: 16
prefix:
- [[conv_k3, 8, 2, 1]]
candidates:
- {name: k3_e2, op: ir_k3, kwargs: {expansion: 2}}
- {name: k5_e1, op: ir_k5, kwargs: {expansion: 1}}
- {name: skip, op: skip}
layers:
- {stage: 1, out_channels: 8, stride: 1}
- {stage: 2, out_channels: 16, stride: 2, repeats: 2}
suffix:
- [[conv_k1, 32, 1, 1]]
"""


@pytest.mark.parametrize("name", ["fbnet_v1", "fbnet_v1_cifar", "fbnet_v1_tiny"])
def test_registered_spaces_round_trip_through_their_data(name) -> None:
    from fbnas.search.space import SearchSpace

    space = get_space(name)
    assert SearchSpace.from_dict(json.loads(json.dumps(space.to_dict()))) == space


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_space_show_writes_a_file_that_every_space_option_reads_back(tmp_path, run_cli,
                                                                     fmt) -> None:
    shown = run_cli("space", "show", "fbnet_v1_tiny", f"--{fmt}")
    assert shown.returncode == 0
    path = tmp_path / f"tiny.{fmt}"
    path.write_text(shown.stdout)
    assert get_space(str(path)) == get_space("fbnet_v1_tiny")
    again = run_cli("space", "show", path)
    assert again.returncode == 0 and "7 searchable layers" in again.stdout


def test_a_space_file_with_repeats_and_shared_candidates(tmp_path) -> None:
    path = tmp_path / "my.yaml"
    path.write_text(TINY_SPACE_YAML)
    space = get_space(str(path))
    assert space.name == "my_space" and space.size == 27
    assert [(layer.stage_idx, layer.out_channels, layer.stride) for layer in space.layers] == [
        (1, 8, 1), (2, 16, 2), (2, 16, 1)]
    assert [c.name for c in space.layers[2].candidates] == ["k3_e2", "k5_e1", "skip"]
    arch = space.arch_def([0, 1, 2])
    assert arch["blocks"][1] == [["ir_k3", 8, 1, 1, {"expansion": 2}]]
    assert build_model(arch, num_classes=10)(torch.zeros(1, 3, 16, 16)).shape == (1, 10)


@pytest.mark.parametrize(("edit", "message"), [
    (("input_size: 16", "input_sise: 16"),
     "the space has an unknown key 'input_sise'; did you mean 'input_size'?"),
    (("name: my_space\n", ""), "the space lacks 'name'"),
    (("stride: 2, repeats: 2", "stride: 0, repeats: 2"),
     "layers[1].stride must be an integer >= 1, got 0"),
    (("{stage: 2, out_channels: 16", "{stage: 0, out_channels: 16"),
     "layers[1].stage stages must not decrease (0 after 1)"),
    (("name: k5_e1", "name: k3_e2"), "candidates repeats the candidate name(s) ['k3_e2']"),
    (("op: ir_k5,", "op: ir_k9,"),
     "layer 0, candidate 'k5_e1': op 'ir_k9': unknown op 'ir_k9'"),
    (("{expansion: 1}", "{expansio: 1}"),
     "candidate 'k5_e1' (op 'ir_k5'): unknown option 'expansio'"),
    (("layers:", "layers: []\nunused:"), "unknown key 'unused'"),
])
def test_bad_space_files_name_the_file_and_the_part(tmp_path, edit, message) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(TINY_SPACE_YAML.replace(*edit, 1))
    with pytest.raises(ArchDefError) as info:
        get_space(str(path))
    assert str(info.value).startswith(f"search space file {str(path)!r}") or \
        str(info.value).startswith(str(path)), str(info.value)
    assert message in str(info.value)


def test_missing_space_files_and_unknown_names_say_what_is_accepted(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="search space file .*nope.yaml' does not exist"):
        get_space(str(tmp_path / "nope.yaml"))
    with pytest.raises(ArchDefError, match="or a .json/.yaml space file"):
        get_space("fbnet_v9")
