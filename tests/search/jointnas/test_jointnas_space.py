"""The joint space: the Space protocol, freezing to what `fbnas train` runs, bad files."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import yaml

import fbnas
from fbnas.search.jointnas.space import (
    JointSpace,
    JointSpaceError,
    load_joint_space,
    shipped_spaces,
)
from fbnas.search.protocols import Space
from fbnas.train.config import TrainConfig


@pytest.fixture(scope="module")
def digits_space() -> JointSpace:
    return load_joint_space("jointnas_digits")


def test_shipped_spaces_load_and_fbnet_v3_has_the_table_ranges() -> None:
    assert {"fbnet_v3", "jointnas_digits"} <= set(shipped_spaces())
    space = load_joint_space("fbnet_v3")
    values = {p.name: p.values for p in space.props}
    assert values["resolution"] == (224, 232, 240, 248, 256, 264, 272)
    assert values["stage2.channels"] == (20, 24, 28, 32)
    assert values["stage6.expansion"] == (2, 3, 4, 5, 6)
    assert values["stage5.depth"] == (6, 7, 8, 9, 10)
    assert values["recipe.optimizer"] == ("rmsproptf", "sgd")
    assert values["stage7.depth"] == (1,) and "stage7.depth" not in space.dim_names


def test_joint_space_follows_the_protocol(digits_space: JointSpace) -> None:
    space = digits_space
    assert isinstance(space, Space)
    samples = [space.sample(random.Random(seed)) for seed in range(20)]
    rng = random.Random(0)
    for sample in samples:
        space.check(sample)
        assert tuple(json.loads(json.dumps(sample))) == sample
        assert space.decode(space.encode(sample)) == sample
        child = space.mutate(sample, rng, 1.0)
        assert all(a != b for a, b in zip(child, sample, strict=True))  # redrawn = changed
        assert space.mutate(sample, rng, 0.0) == sample
        cross = space.crossover(sample, samples[0], rng)
        assert all(c in (x, y) for c, x, y in zip(cross, sample, samples[0], strict=True))
    corners = np.array([[0.0] * space.dims, [1.0] * space.dims, [0.999999] * space.dims])
    decoded = space.decode_batch(corners)
    assert (decoded[0] == 0).all() and (decoded[1] == space.sizes - 1).all()
    assert (decoded[2] == space.sizes - 1).all()
    with pytest.raises(JointSpaceError, match="stage3.kernel: index 7"):
        bad = list(samples[0])
        bad[space.dim_names.index("stage3.kernel")] = 7
        space.check(bad)


def test_features_one_hot_the_optimizer_and_normalise_numbers(digits_space) -> None:
    space = digits_space
    x = space.sample_batch(64, np.random.default_rng(0))
    features = space.features(x)
    assert features.shape == (64, space.feature_width("arch") + space.feature_width("recipe"))
    assert features.min() >= 0 and features.max() <= 1
    recipe = space.features(x, "recipe")
    opt = space.dim_names.index("recipe.optimizer")
    # the optimizer's two one-hot columns come first among the recipe columns
    assert (recipe[:, :2].sum(axis=1) == 1).all()
    assert (recipe[:, 1] == x[:, opt]).all()


def test_freeze_gives_an_arch_def_and_recipe_that_train_takes(digits_space) -> None:
    space = digits_space
    sample = space.sample(random.Random(3))
    frozen = space.freeze(sample)
    values = space.values(sample)
    assert isinstance(frozen.recipe, TrainConfig)
    assert frozen.recipe.resolution == values["resolution"] == frozen.arch_def["input_size"]
    assert frozen.recipe.optimizer == values["recipe.optimizer"]
    assert frozen.recipe.ema_decay == (0.99 if values["recipe.ema"] else 0.0)
    assert frozen.recipe.epochs == 12  # the fixed part
    stage3 = frozen.arch_def["blocks"][3]
    assert stage3[0][1] == values["stage3.channels"]
    assert stage3[0][4] == {"expansion": values["stage3.expansion"]}
    assert sum(row[3] for row in stage3) == values["stage3.depth"]
    model = fbnas.build_model(frozen.arch_def, num_classes=10)
    import torch
    out = model(torch.zeros(2, 3, values["resolution"], values["resolution"]))
    assert out.shape == (2, 10)
    assert TrainConfig.from_dict(yaml.safe_load(frozen.recipe.to_yaml())) == frozen.recipe


def _digits_data() -> dict:
    return yaml.safe_load(open(load_joint_space("jointnas_digits").source))


def test_unknown_keys_and_bad_ranges_name_the_path(tmp_path) -> None:
    data = _digits_data()
    data["stages"][1]["kernal"] = [3, 5]
    with pytest.raises(JointSpaceError, match=r"stages\[1\]: unknown key 'kernal'.*kernel"):
        JointSpace(data, "s.yaml")
    data = _digits_data()
    data["stages"][2]["kernel"] = [3, 4]
    with pytest.raises(JointSpaceError, match="stage3.kernel: value 4 is not accepted"):
        JointSpace(data, "s.yaml")
    data = _digits_data()
    data["recipe"]["dropout"] = [0.1, 1.5]
    with pytest.raises(JointSpaceError, match="recipe.dropout: value 1.5.*dropout must be"):
        JointSpace(data, "s.yaml")
    data = _digits_data()
    data["recipe"]["optimiser"] = ["sgd"]
    with pytest.raises(JointSpaceError, match="recipe: unknown key 'optimiser'.*optimizer"):
        JointSpace(data, "s.yaml")
    data = _digits_data()
    data["resolution"] = {"range": [32, 16, 8]}
    with pytest.raises(JointSpaceError, match="resolution: range .* high < low"):
        JointSpace(data, "s.yaml")
    path = tmp_path / "bad.yaml"
    path.write_text("stages: [\n")
    with pytest.raises(JointSpaceError, match="invalid YAML"):
        load_joint_space(path)
    with pytest.raises(JointSpaceError, match="neither a file nor"):
        load_joint_space("no_such_space")


def test_fixed_arch_space_searches_the_recipe_only(digits_space) -> None:
    arch = digits_space.freeze(digits_space.sample(random.Random(1))).arch_def
    space = digits_space.with_fixed_arch(arch)
    assert all(name.startswith("recipe.") for name in space.dim_names)
    for seed in range(5):
        frozen = space.freeze(space.sample(random.Random(seed)))
        assert frozen.arch_def == arch
        assert frozen.recipe.resolution == arch["input_size"]


def test_sample_of_reads_a_stored_candidate_back(digits_space) -> None:
    space = digits_space
    for seed in range(10):
        sample = space.sample(random.Random(seed))
        frozen = space.freeze(sample)
        stored = json.loads(json.dumps(frozen.arch_def))  # as a store holds it
        assert space.sample_of(stored, frozen.recipe.to_dict()) == sample
    recipe = frozen.recipe.to_dict()
    with pytest.raises(JointSpaceError, match=r"recipe.lr 0.5 is not one of"):
        space.sample_of(frozen.arch_def, {**recipe, "lr": 0.5})
