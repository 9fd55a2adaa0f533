"""The recipe dataclass: YAML, overrides, validation that names the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from fbnas.train import RecipeError, TrainConfig, builtin_recipes, load_recipe


def test_yaml_round_trip_and_builtin_recipes(tmp_path: Path) -> None:
    config = TrainConfig(epochs=3, optimizer="rmsproptf", opt_eps=1e-3, randaugment=None)
    path = tmp_path / "r.yaml"
    path.write_text(config.to_yaml())
    assert load_recipe(path) == config
    assert {"digits", "digits_hard", "imagenet_rmsproptf"} <= set(builtin_recipes())
    for name in builtin_recipes():
        assert isinstance(load_recipe(name), TrainConfig)


def test_overrides_parse_yaml_scalars() -> None:
    config = TrainConfig().with_overrides(["lr=0.5", "optimizer=adamw", "randaugment=null",
                                           "resolution=64", "nesterov=false"])
    assert (config.lr, config.optimizer, config.randaugment) == (0.5, "adamw", None)
    assert (config.resolution, config.nesterov) == (64, False)
    assert TrainConfig().with_overrides(["randaugment=rand-m9-mstd0.5"]).randaugment \
        == "rand-m9-mstd0.5"


@pytest.mark.parametrize("override, message", [
    ("lrr=0.1", "--set: unknown key 'lrr'; did you mean 'lr'"),
    ("lr", "expected KEY=VALUE"),
    ("lr=-1", "lr must be > 0"),
    ("optimizer=adam", "optimizer must be one of 'sgd', 'rmsproptf', 'adamw'"),
    ("epochs=2.5", "epochs must be int"),
    ("nesterov=1", "nesterov must be bool"),
    ("drop_path=1.0", r"drop_path must be in \[0, 1\)"),
    ("warmup_epochs=100", "warmup_epochs .* must be shorter than epochs"),
])
def test_bad_overrides_name_the_key(override: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        TrainConfig().with_overrides([override])


def test_yaml_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: 3\nmomentun: 0.9\n")
    with pytest.raises(RecipeError, match=r"bad.yaml: unknown key 'momentun'.*'momentum'"):
        load_recipe(path)
    with pytest.raises(RecipeError, match="neither a file nor a built-in recipe"):
        load_recipe(tmp_path / "missing.yaml")
    path.write_text("- 1\n- 2\n")
    with pytest.raises(RecipeError, match="must be a mapping"):
        load_recipe(path)


def test_mixup_needs_an_even_batch() -> None:
    with pytest.raises(RecipeError, match="batch_size must be even"):
        TrainConfig(batch_size=31, mixup=0.2)
