"""Dataset spec strings: parsing, proxies, and errors that name the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from fbnas.data import DatasetError, DataSpec, open_datasets, parse_data_spec


def test_parses_kinds_paths_and_proxy_options() -> None:
    spec = parse_data_spec("cifar100:/data/c100?classes=20&per_class=50&seed=3")
    assert spec == DataSpec("cifar100", Path("/data/c100"), classes=20, per_class=50, seed=3)
    assert spec.is_proxy
    assert parse_data_spec(str(spec)) == spec  # the string form round-trips
    assert parse_data_spec("digits") == DataSpec("digits")
    assert not parse_data_spec("digits").is_proxy


@pytest.mark.parametrize("text, message", [
    ("digit", "did you mean 'digits'"),
    ("cifar10", "needs a path"),
    ("cifar10:", "empty path"),
    ("digits:/x", "takes no path"),
    ("digits?clases=3", "unknown option 'clases'.*did you mean 'classes'"),
    ("digits?classes=two", "classes must be an integer"),
    ("digits?per_class=0", "per_class must be >= 1"),
    ("", "empty dataset spec"),
])
def test_bad_specs_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        parse_data_spec(text)


def test_digits_has_a_fixed_stratified_split_at_the_chosen_size() -> None:
    data = open_datasets("digits", resolution=16)
    assert (len(data.train), len(data.val)) == (1437, 360)
    image, label = data.train[0]
    assert image.shape == (3, 16, 16) and 0 <= label < 10
    counts = data.val.labels.bincount(minlength=10)  # type: ignore[attr-defined]
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 of each digit
    again = open_datasets("digits", resolution=16)
    assert bool((again.val.images == data.val.images).all())  # type: ignore[attr-defined]


def test_proxy_takes_classes_and_per_class_reproducibly() -> None:
    data = open_datasets("digits?classes=4&per_class=7&seed=5", resolution=8)
    assert data.num_classes == 4 and len(data.class_names) == 4
    labels = data.train.labels  # type: ignore[attr-defined]
    assert labels.bincount().tolist() == [7, 7, 7, 7]
    assert set(data.val.labels.tolist()) == {0, 1, 2, 3}  # type: ignore[attr-defined]
    same = open_datasets("digits?classes=4&per_class=7&seed=5", resolution=8)
    assert same.class_names == data.class_names
    assert bool((same.train.images == data.train.images).all())  # type: ignore[attr-defined]
    other = open_datasets("digits?classes=4&per_class=7&seed=6", resolution=8)
    assert other.class_names != data.class_names


def test_proxy_asking_for_too_many_classes_is_an_error() -> None:
    with pytest.raises(DatasetError, match="classes=11 but the dataset has only 10"):
        open_datasets("digits?classes=11")
