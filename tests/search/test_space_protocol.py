"""The Space protocol holds for every space: draws, checks, keys, the encoding, freezing."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

import fbnas
from fbnas.cost import count_macs
from fbnas.errors import FbnasError
from fbnas.search import get_space
from fbnas.search.protocols import Constraint, Frozen, Space
from fbnas.search.space import SearchSpace
from fbnas.slim import build_slim_model, subnet_cost
from fbnas.slim.search import MacsConstraint
from fbnas.slim.space import WidthSpace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "slim"))
from slim_width_helpers import TINY_SLIM_ARCH  # noqa: E402

RESOLUTION = 16


@pytest.fixture(scope="module", params=["search_space", "width_space"])
def space(request: pytest.FixtureRequest) -> Space:
    if request.param == "search_space":
        return get_space("fbnet_v1_tiny")
    return WidthSpace(build_slim_model(TINY_SLIM_ARCH, num_classes=10), min_wm=0.3)


def test_both_spaces_satisfy_the_protocol(space: Space) -> None:
    assert isinstance(space, Space)
    assert space.dims == len(space.bounds) > 0
    assert all(low < high for low, high in space.bounds)
    assert not isinstance(object(), Space)


def test_draws_are_valid_seeded_hashable_and_json_round_trip(space: Space) -> None:
    samples = [space.sample(random.Random(seed)) for seed in range(20)]
    assert samples == [space.sample(random.Random(seed)) for seed in range(20)]
    assert len(set(samples)) == 20  # hashable; distinct seeds give distinct draws here
    rng = random.Random(0)
    for sample in samples:
        space.check(sample)
        assert tuple(json.loads(json.dumps(sample))) == sample
        for child in (space.mutate(sample, rng, 0.5),
                      space.crossover(sample, samples[0], rng)):
            space.check(child)
            assert len(child) == space.dims
            hash(child)
        assert space.mutate(sample, rng, 0.0) == sample
        cross = space.crossover(sample, samples[0], rng)
        assert all(c in (x, y) for c, x, y in zip(cross, sample, samples[0], strict=True))
    mutated = [space.mutate(samples[0], rng, 1.0) for _ in range(20)]  # every dim redrawn
    for d in range(space.dims):
        assert len({m[d] for m in mutated}) > 1


def test_encoding_round_trips_and_every_box_vector_decodes_to_a_valid_sample(
        space: Space) -> None:
    rng = random.Random(1)
    for _ in range(50):
        sample = space.sample(rng)
        vector = space.encode(sample)
        assert len(vector) == space.dims
        assert all(low <= v <= high for v, (low, high) in zip(vector, space.bounds,
                                                              strict=True))
        assert space.decode(vector) == sample  # exact
    corners = [[low for low, _ in space.bounds], [high for _, high in space.bounds]]
    uniform = [[rng.uniform(low, high) for low, high in space.bounds] for _ in range(200)]
    outside = [[low - 5.0 if i % 2 else high + 5.0 for i, (low, high)
                in enumerate(space.bounds)]]
    for vector in corners + uniform + outside:
        sample = space.decode(vector)
        space.check(sample)
        assert space.decode(space.encode(sample)) == sample


def test_bad_vectors_and_samples_raise_errors_naming_the_part(space: Space) -> None:
    with pytest.raises(FbnasError, match=f"has {space.dims} coordinates, got 1"):
        space.decode([0.5])
    vector = [low for low, _ in space.bounds]
    vector[2] = float("nan")
    with pytest.raises(FbnasError, match="coordinate 2 must be a finite number"):
        space.decode(vector)
    bad = list(space.decode([low for low, _ in space.bounds]))
    bad[3] = 99
    with pytest.raises(FbnasError, match=r"layer 3: choice 99|wm\[3\] = 99 is outside"):
        space.check(tuple(bad))
    with pytest.raises(FbnasError):
        space.check(tuple(bad[:-1]))


def test_freeze_gives_an_arch_def_fbnas_builds(space: Space) -> None:
    sample = space.sample(random.Random(2))
    frozen = space.freeze(sample)
    assert isinstance(frozen, Frozen) and frozen.recipe is None
    model = fbnas.build_model(frozen.arch_def, num_classes=10)
    assert count_macs(model, RESOLUTION) > 0
    json.dumps(frozen.arch_def)  # plain data


def test_search_space_encoding_is_the_cell_centre_and_uniform_points_cover_every_choice(
        ) -> None:
    space = get_space("fbnet_v1_tiny")
    assert space.encode((0,) * space.dims)[0] == pytest.approx(0.5 / 9)
    assert space.decode([1.0] * space.dims) == (8,) * space.dims  # u = 1: the last one
    rng = random.Random(3)
    first_layer = {space.decode([rng.random() for _ in range(space.dims)])[0]
                   for _ in range(300)}
    assert first_layer == set(range(9))
    for k in range(9):  # every candidate round-trips, the edges included
        assert space.decode(space.encode((k,) * space.dims)) == (k,) * space.dims
    assert space.freeze((3,) * space.dims).arch_def == space.arch_def([3] * space.dims)
    assert space.key([1] * space.dims) == (1,) * space.dims


def test_width_space_keys_by_channels_and_freezes_to_the_subnet() -> None:
    model = build_slim_model(TINY_SLIM_ARCH, num_classes=10)
    space = WidthSpace(model, min_wm=0.3)
    assert space.smallest == (0.3,) * model.search_dim
    nearby = tuple(w + 1e-4 for w in space.smallest)
    assert nearby != space.smallest and space.key(nearby) == space.key(space.smallest)
    assert space.key((1.0,) * space.dims) != space.key(space.smallest)
    wm = space.sample(random.Random(4))
    real_ch = model.decode_ch(model.decode_wm(wm))
    static = fbnas.build_model(space.freeze(wm).arch_def, num_classes=10)
    assert count_macs(static, RESOLUTION) == subnet_cost(model, real_ch, RESOLUTION).macs
    with pytest.raises(FbnasError, match=r"wm\[1\] = 0.2 is outside \[0.3, 1\]"):
        space.check((0.5, 0.2) + (0.5,) * (space.dims - 2))
    with pytest.raises(FbnasError, match="min_wm must be in"):
        WidthSpace(model, min_wm=0.0)
    assert isinstance(MacsConstraint(model, RESOLUTION, 1e6), Constraint)  # the cost side


def test_a_hand_built_space_is_a_space_too() -> None:
    """Any SearchSpace (not only the registered ones) is a Space: the protocol is
    structural, so JointNAS's space needs no base class either."""
    tiny = get_space("fbnet_v1_tiny")
    custom = SearchSpace("two", 32, tiny.prefix, tiny.layers[:2], tiny.suffix)
    assert isinstance(custom, Space) and custom.dims == 2
