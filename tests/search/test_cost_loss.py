"""The cost loss's parts and the target pull's forms: by hand, and on the supernet's
differentiable expected cost (what ``pull_on="expected"`` acts on)."""

from __future__ import annotations

import math

import pytest
import torch
from toy_supernet import CONFIG, DATA, RESOLUTION, ToySupernet

from fbnas.data import open_datasets
from fbnas.errors import ConfigError
from fbnas.search.cost_loss import CostLoss
from fbnas.search.dnas import Supernet, layer_costs
from fbnas.search.engine import PricesDistribution, SearchEngine
from fbnas.tasks import ClassificationTask


def test_terms_by_hand() -> None:
    ce, cost, expected = torch.tensor(2.0), torch.tensor(50.0), torch.tensor(40.0)
    r = math.e * 50 / 10
    terms = CostLoss(10.0, "mul", target=25.0).terms(ce, cost)
    assert float(terms.task) == 2.0
    assert float(terms.cost) == pytest.approx(0.2 * math.log(r) ** 0.6)  # the factor
    assert float(terms.target) == pytest.approx(math.log(2) ** 2)
    assert float(terms.total) == pytest.approx(2 * float(terms.cost) + math.log(2) ** 2)
    add = CostLoss(10.0, "add", target=25.0, target_form="abs", target_weight=3.0,
                   pull_on="expected").terms(ce, cost, expected)
    assert float(add.cost) == pytest.approx(0.2 * (r / math.e) ** 0.6)  # the addend
    assert float(add.target) == pytest.approx(3 * math.log(40 / 25))  # on the expected cost
    assert float(add.total) == pytest.approx(2 + float(add.cost) + float(add.target))
    without = CostLoss(10.0).terms(ce, cost)
    assert float(without.target) == 0.0


def test_the_abs_pull_has_a_constant_force_the_square_one_fades() -> None:
    def pull_gradient(form: str, over: float) -> float:
        cost = torch.tensor(50.0 * (1 + over), requires_grad=True)
        CostLoss(10.0, "add", alpha=0.0, target=50.0, target_form=form)(
            torch.tensor(0.0), cost).backward()
        return float(cost.grad) * float(cost.detach())  # d loss / d log(cost)

    assert pull_gradient("abs", 0.02) == pytest.approx(pull_gradient("abs", 0.5)) == \
        pytest.approx(1.0)
    assert pull_gradient("abs", -0.02) == pytest.approx(-1.0)
    assert pull_gradient("square", 0.02) == pytest.approx(2 * math.log(1.02))
    with pytest.raises(ConfigError, match="unknown target_form 'cube'"):
        CostLoss(10.0, target_form="cube")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown pull_on 'argmax'"):
        CostLoss(10.0, pull_on="argmax")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs the expected cost"):
        CostLoss(10.0, target=5.0, pull_on="expected")(torch.tensor(1.0), torch.tensor(9.0))


def test_the_supernets_expected_cost_is_differentiable_and_exact() -> None:
    space = "fbnet_v1_tiny"
    costs = layer_costs(space, "macs", resolution=16, num_classes=10)
    net = Supernet(space, costs, 10, 16)
    assert isinstance(net, PricesDistribution)
    with torch.no_grad():
        net.theta.copy_(torch.randn_like(net.theta, generator=torch.Generator().manual_seed(0)))
    p = torch.softmax(net.theta.detach().double(), -1)
    by_hand = costs.fixed + sum(float((p[i] * torch.tensor(row, dtype=torch.float64)).sum())
                                for i, row in enumerate(costs.per_layer))
    expected = net.expected_cost_tensor()
    assert float(expected.detach()) == pytest.approx(by_hand, rel=1e-6)
    assert net.expected_cost() == pytest.approx(by_hand, rel=1e-6)
    expected.backward()
    # d E / d θ_li = p_li (c_li - E_l): mass moves from the layer's dear candidates
    row = torch.tensor(costs.per_layer[0], dtype=torch.float64)
    layer_mean = float((p[0] * row).sum())
    grad = net.theta.grad[0].double()
    torch.testing.assert_close(grad, p[0] * (row - layer_mean), rtol=1e-4, atol=1e-2)


def test_a_pull_on_the_expected_cost_needs_a_model_that_prices_its_distribution() -> None:
    data = open_datasets(DATA, RESOLUTION)
    assert not isinstance(ToySupernet(), PricesDistribution)
    with pytest.raises(ConfigError, match="ToySupernet has no expected_cost_tensor"):
        SearchEngine(ToySupernet, ClassificationTask(10), data, CONFIG,
                     CostLoss(1.0, target=2.0, pull_on="expected"))
    SearchEngine(ToySupernet, ClassificationTask(10), data, CONFIG,  # no target: no pull
                 CostLoss(1.0, pull_on="expected"))
