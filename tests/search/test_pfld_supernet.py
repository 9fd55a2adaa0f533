"""The PFLD supernet (issue 18 item 5): the engine's protocol, costs, weight inheritance."""

import torch

from fbnas.search.dnas.pfld import (
    PFLDSupernet,
    build_pfld_table,
    pfld_layer_costs,
    pfld_subnet_state_dict,
)
from fbnas.search.engine import DerivesWithinBand, check_searchable
from fbnas.search.sampling import ArchSampler
from fbnas.tasks.landmarks.models import LandmarkOutputs, build_landmark_model


def test_costs_add_up_to_the_built_subnet():
    costs = pfld_layer_costs("macs")
    net = PFLDSupernet(costs, mode="single-path")
    choice = [8, 7, 0, 4, 2]
    assert net.analytic_cost(choice).macs == costs.network_cost(choice)
    params = pfld_layer_costs("params").network_cost(choice)
    sub = build_landmark_model(net.arch_def(choice))
    deployed = sum(p.numel() for p in sub.parameters()) - sum(
        p.numel() for p in sub.aux.parameters())
    assert params == deployed  # the auxiliary net is no part of the cost
    from fbnas.blocks.counting import count_module

    _, macs, _ = count_module(sub.eval(), (1, 3, 112, 112))  # eval: no auxiliary net
    assert macs == costs.network_cost(choice)


def test_supernet_follows_the_engine_protocol_and_subnet_inherits():
    torch.manual_seed(0)
    net = PFLDSupernet(pfld_layer_costs("macs"), mode="single-path")
    check_searchable(net)
    assert isinstance(net, DerivesWithinBand)
    x = torch.rand(2, 3, 112, 112)
    out, cost = net.train()(x, ArchSampler(0).sample(net, 5.0))
    assert isinstance(out, LandmarkOutputs) and cost.requires_grad
    (out.points.square().mean() * cost).backward(inputs=net.arch_parameters())
    assert net.theta.grad is not None and net.aux.fc2.weight.grad is None  # θ step: no aux
    choice = [3, 1, 2, 6, 8]
    sub = build_landmark_model(net.arch_def(choice)).eval()
    sub.load_state_dict(pfld_subnet_state_dict(net, choice))
    with torch.no_grad():
        a, _ = net.eval()(x, net.fixed_sample(choice))
        assert torch.allclose(a, sub(x), atol=1e-5)
    assert net.arch_def(choice)["layers"][2] == "mb_k3_e2_res_se"


def test_latency_table_prices_every_candidate(tmp_path):
    table = build_pfld_table(tmp_path / "pfld_lut.json", budget_s=0.01, rounds=1)
    costs = pfld_layer_costs("latency", table)
    assert costs.unit == "ms" and costs.fixed > 0 and min(map(min, costs.per_layer)) > 0
    from fbnas.cost.lut import LatencyTable

    again = pfld_layer_costs("latency", LatencyTable.load(tmp_path / "pfld_lut.json"))
    assert again == costs
