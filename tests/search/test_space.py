"""Search spaces as data: the FBNetV1 tables, sampling, arch defs every command accepts."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

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
        else:
            assert block.op == ops[name[:5]] and block.kwargs["expansion"] == int(name[-1])
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


def test_space_sample_cli_writes_files_info_accepts(tmp_path) -> None:
    out = tmp_path / "samples"
    proc = subprocess.run([sys.executable, "-m", "fbnas", "space", "sample", "fbnet_v1_cifar",
                           "-n", "3", "--seed", "7", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    files = sorted(out.glob("*.json"))
    assert len(files) == 3
    record = json.loads(files[0].read_text())
    assert record["space"] == "fbnet_v1_cifar" and len(record["choices"]) == 22
    info = subprocess.run([sys.executable, "-m", "fbnas", "info", str(files[0]), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)[0]["resolution"] == 32
