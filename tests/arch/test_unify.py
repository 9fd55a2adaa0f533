"""unify_arch_def: repeats, strides, kwarg merging, indices, files, round trips."""

from __future__ import annotations

import json

import pytest
import yaml

from fbnas.arch import ArchDefError, ArchSpec, BlockSpec, count_strides, unify_arch_def


def test_repeats_expand_and_only_the_first_copy_keeps_the_stride() -> None:
    spec = unify_arch_def({"blocks": [[("conv_k3", 8, 2, 1)],
                                      [("ir_k3", 16, 2, 3, {"expansion": 4})]]})
    assert [(b.name, b.stride, b.out_channels) for b in spec.blocks] == [
        ("xif0_0", 2, 8), ("xif1_0", 2, 16), ("xif1_1", 1, 16), ("xif1_2", 1, 16)]


def test_zero_repeats_drop_the_block_and_block_indices_count_after_expansion() -> None:
    spec = unify_arch_def({"blocks": [[("conv_k3", 8, 2, 1)],
                                      [("ir_k3", 16, 2, 0), ("ir_k5", 16, 1, 2),
                                       ("ir_k3", 24, 2, 1)]]})
    assert [(b.name, b.op, b.stride) for b in spec.blocks] == [
        ("xif0_0", "conv_k3", 2), ("xif1_0", "ir_k5", 1), ("xif1_1", "ir_k5", 1),
        ("xif1_2", "ir_k3", 2)]


def test_empty_stage_keeps_the_numbering_of_later_stages() -> None:
    spec = unify_arch_def({"blocks": [[("conv_k3", 8, 2, 1)], [("ir_k3", 8, 1, 0)],
                                      [("ir_k3", 8, 1, 1)]]})
    assert [b.name for b in spec.blocks] == ["xif0_0", "xif2_0"]


def test_kwarg_dicts_merge_left_to_right_recursively() -> None:
    spec = unify_arch_def({"blocks": [[(
        "ir_k3", 16, 1, 1,
        {"expansion": 4, "se_args": {"name": "se", "relu_args": "relu"}},
        {"expansion": 6, "se_args": {"name": "se_hsig"}}, {"bias": True},
    )]]})
    kwargs = spec.blocks[0].kwargs.to_dict()
    assert kwargs == {"expansion": 6, "se_args": {"name": "se_hsig", "relu_args": "relu"},
                      "bias": True}


def test_short_entries_default_stride_and_repeats_to_one() -> None:
    spec = unify_arch_def({"blocks": [[("conv_k3", 8)]]})
    assert spec.blocks[0].stride == 1 and len(spec.blocks) == 1


def test_specs_are_frozen_and_replace_makes_a_changed_copy() -> None:
    spec = unify_arch_def({"blocks": [[("ir_k3", 16, 2, 1, {"expansion": 4})]]})
    block = spec.blocks[0]
    with pytest.raises(AttributeError):
        block.out_channels = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        block.kwargs["expansion"] = 1  # type: ignore[index]
    wider = block.replace(out_channels=32)
    assert (wider.out_channels, block.out_channels) == (32, 16)
    assert hash(block) != hash(wider)


def test_round_trip_through_to_arch_def(tiny_arch: dict) -> None:
    spec = unify_arch_def(tiny_arch)
    again = unify_arch_def(json.loads(json.dumps(spec.to_arch_def())))
    assert again == spec


def test_json_and_yaml_files_are_read(tmp_path, tiny_arch: dict) -> None:
    as_json = tmp_path / "arch.json"
    as_json.write_text(json.dumps(tiny_arch))
    as_yaml = tmp_path / "arch.yaml"
    as_yaml.write_text(yaml.safe_dump(json.loads(json.dumps(tiny_arch))))
    assert unify_arch_def(as_json) == unify_arch_def(tiny_arch)
    assert unify_arch_def(str(as_yaml)) == unify_arch_def(tiny_arch)


def test_yaml_never_executes_code(tmp_path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("blocks: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ArchDefError, match="not valid"):
        unify_arch_def(evil)


def test_missing_and_broken_files_name_the_file(tmp_path) -> None:
    with pytest.raises(ArchDefError, match="does not exist"):
        unify_arch_def(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{\"blocks\": [")
    with pytest.raises(ArchDefError, match="broken.json"):
        unify_arch_def(broken)


def test_spec_passes_through_and_counts_strides() -> None:
    spec = unify_arch_def({"blocks": [[("conv_k3", 8, 2, 1)], [("ir_k3", 8, -2, 1)],
                                      [("ir_k3", 8, 2, 2)]]})
    assert unify_arch_def(spec) is spec
    assert isinstance(spec, ArchSpec) and isinstance(spec.blocks[0], BlockSpec)
    assert count_strides(spec) == 2.0


def test_input_size_and_basic_args_are_kept() -> None:
    spec = unify_arch_def({"input_size": 96, "basic_args": {"width_divisor": 8},
                           "blocks": [[("conv_k3", 8, 2, 1)]]})
    assert spec.input_size == 96 and dict(spec.basic_args) == {"width_divisor": 8}
