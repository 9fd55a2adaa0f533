"""Population costs equal arch_cost candidate by candidate; constraints; infeasibility."""

from __future__ import annotations

import hashlib
import random
import re

import numpy as np
import pytest

from fbnas.cost import arch_cost
from fbnas.cost.latency import DeviceInfo
from fbnas.cost.lut import LatencyTable
from fbnas.search.evolution import InfeasibleConstraintError
from fbnas.search.jointnas.cost import (
    Constraints,
    PopulationCost,
    SampleConstraint,
    check_feasible,
)
from fbnas.search.jointnas.space import load_joint_space


@pytest.mark.parametrize("name", ["jointnas_digits", "fbnet_v3"])
def test_population_macs_and_params_equal_arch_cost(name: str) -> None:
    space = load_joint_space(name)
    cost = PopulationCost(space)
    samples = space.sample_batch(256, np.random.default_rng(0))
    costs = cost(samples)
    for i in range(0, 256, 16):
        expected = arch_cost(space.freeze(tuple(samples[i])).arch_def,
                             num_classes=space.num_classes)
        assert (costs.macs[i], costs.params[i]) == (expected.macs, expected.params)
    again = cost(samples[::-1])  # from the filled tables
    assert (again.macs == costs.macs[::-1]).all()


def test_fixed_arch_costs_and_constraints() -> None:
    space = load_joint_space("jointnas_digits")
    arch = space.freeze(space.sample(random.Random(0))).arch_def
    fixed = space.with_fixed_arch(arch)
    costs = PopulationCost(fixed)(fixed.sample_batch(8, np.random.default_rng(0)))
    assert (costs.macs == arch_cost(arch, num_classes=10).macs).all()

    full = PopulationCost(space)
    samples = space.sample_batch(512, np.random.default_rng(1))
    costs = full(samples)
    budget = float(np.median(costs.macs))
    limits = Constraints(max_macs=budget, max_params=float(np.median(costs.params)))
    mask = limits.feasible(costs)
    assert (mask == ((costs.macs <= budget) & (costs.params <= limits.max_params))).all()
    assert 0 < mask.sum() < 512
    one = SampleConstraint(full, limits)
    for i in range(10):
        assert (one.cost(tuple(samples[i])) <= one.target) == mask[i]


def test_infeasible_constraints_give_the_pool_range() -> None:
    space = load_joint_space("jointnas_digits")
    costs = PopulationCost(space)(space.sample_batch(64, np.random.default_rng(0)))
    low = costs.macs.min()
    with pytest.raises(InfeasibleConstraintError,
                       match=re.escape(f"--max-macs 1000: the pool's MACs range from "
                                                 f"{low:.4g}")):
        check_feasible(Constraints(max_macs=1000), costs, "the Sobol pool")
    with pytest.raises(Exception, match="--max-ms must be > 0"):
        Constraints(max_ms=0)


class _KeyedTable(LatencyTable):
    """A table answering every key with a value made from the key (no device needed),
    counting lookups."""

    def __init__(self) -> None:
        super().__init__(DeviceInfo.current())
        self.lookups = 0

    def __contains__(self, key: object) -> bool:
        return True

    def lookup(self, key: str) -> float:
        self.lookups += 1
        return (int(hashlib.sha256(key.encode()).hexdigest()[:6], 16) % 997) / 100.0


def test_population_latency_equals_the_table_prediction_with_one_lookup_per_block() -> None:
    space = load_joint_space("jointnas_digits")
    table = _KeyedTable()
    cost = PopulationCost(space, table)
    samples = space.sample_batch(200, np.random.default_rng(3))
    costs = cost(samples)
    lookups = table.lookups
    for i in range(0, 200, 25):
        arch = space.freeze(tuple(samples[i])).arch_def
        expected = table.predict(arch, num_classes=10).predicted_ms
        assert costs.latency_ms[i] == pytest.approx(expected, rel=1e-9)
    table.lookups = 0
    cost(samples)
    assert table.lookups == 0 < lookups  # cached per unique block
    limits = Constraints(max_ms=float(np.median(costs.latency_ms)))
    assert 0 < limits.feasible(costs).sum() < 200
