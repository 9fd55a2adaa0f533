"""The fused supernet: same results as the unfused candidates, subnets load its weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fbnas import build_model
from fbnas.arch import ArchDefError
from fbnas.arch.spec import FrozenKwargs
from fbnas.search.dnas import Supernet, layer_costs, subnet_state_dict
from fbnas.search.dnas.fused import FusedIRFCandidate, irf_parts
from fbnas.search.dnas.supernet import candidate_traces
from fbnas.search.space import Candidate, LayerChoice, SearchSpace, get_space

SPACE = "fbnet_v1_cifar"
RES = 16
FBNET_CANDIDATES = get_space(SPACE).layers[0].candidates
# The nine FBNetV1 candidates on narrow layers: identity skip and residual adds (8 -> 8),
# a strided projection skip (8 -> 16, stride 2), a projection skip at stride 1 (16 -> 24).
TINY = SearchSpace(
    "tiny_fbnet", RES, prefix=((("conv_k3", 8, 2, 1),),),
    layers=(LayerChoice(1, 8, 1, FBNET_CANDIDATES), LayerChoice(1, 16, 2, FBNET_CANDIDATES),
            LayerChoice(2, 16, 1, FBNET_CANDIDATES), LayerChoice(2, 24, 1, FBNET_CANDIDATES)),
    suffix=((("conv_k1", 32, 1, 1),),))


def _net(space, dtype=torch.float64, **kwargs: bool) -> Supernet:
    costs = layer_costs(space, "macs", resolution=RES, num_classes=10)
    torch.manual_seed(0)
    return Supernet(space, costs, 10, RES, **kwargs).to(dtype)


def _pair(space, fuse_kwargs: dict[str, bool]) -> tuple[Supernet, Supernet]:
    """(unfused NCHW, fused or as ``fuse_kwargs`` say) float64 supernets, equal weights."""
    return _net(space, fuse=False, channels_last=False), _net(space, **fuse_kwargs)


@pytest.fixture(scope="module")
def fbnet() -> Supernet:
    """The full fused fbnet_v1_cifar supernet (float32), shared: building it takes seconds."""
    return _net(SPACE, torch.float32)


def _named(net: Supernet, what: str) -> dict[str, torch.Tensor]:
    return dict(net.named_parameters() if what == "params" else net.named_buffers())


def _assert_same_step(plain: Supernet, fused: Supernet, train: bool) -> None:
    """One soft forward/backward with shared mixture weights gives equal logits, cost,
    gradients of every parameter and θ, and running statistics."""
    x = torch.randn(4, 3, RES, RES, dtype=torch.float64)
    y = torch.arange(4) % 10
    weights = plain.sample_weights(1.0, "soft")[0].detach()
    results = []
    for net in (plain, fused):
        net.train(train)
        w = weights.clone().requires_grad_()
        logits, cost = net(x, weights=w)
        (F.cross_entropy(logits, y) + cost / 1e7).backward()
        results.append((logits, cost, w.grad))
    (la, ca, wa), (lb, cb, wb) = results
    torch.testing.assert_close(lb, la, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(cb, ca)
    torch.testing.assert_close(wb, wa, rtol=1e-8, atol=1e-10)
    pa, pb = _named(plain, "params"), _named(fused, "params")
    assert pa.keys() == pb.keys()
    for name, p in pa.items():
        if name == "theta":
            continue
        assert (p.grad is None) == (pb[name].grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(pb[name].grad, p.grad, rtol=1e-7, atol=1e-10,
                                       msg=name)
    ba, bb = _named(plain, "buffers"), _named(fused, "buffers")
    for name, b in ba.items():
        torch.testing.assert_close(bb[name], b, rtol=1e-9, atol=1e-12, msg=name)


def test_every_inverted_residual_of_the_fbnet_space_fuses(fbnet: Supernet) -> None:
    fused = fbnet
    names = [c.name for c in get_space(SPACE).layers[0].candidates]
    for layer in fused.layers:
        wrapped = [isinstance(c, FusedIRFCandidate) for c in layer.candidates]
        assert wrapped == [name != "skip" for name in names]
        # one expansion conv for e3/e6 of both kernels, one depthwise conv per kernel size
        plan = layer.fusion
        assert [[names[i] for i in g] for g in plan.pw_groups] == [
            ["ir_k3_e3", "ir_k3_e6", "ir_k5_e3", "ir_k5_e6"]]
        assert [[names[i] for i in g] for g in plan.dw_groups] == [
            ["ir_k3_e1", "ir_k3_s2", "ir_k3_e3", "ir_k3_e6"],
            ["ir_k5_e1", "ir_k5_s2", "ir_k5_e3", "ir_k5_e6"]]
    assert fused.layers[3].candidates[2].pw.conv.weight.is_contiguous(
        memory_format=torch.channels_last)


@pytest.mark.parametrize("train", [True, False])
def test_fused_soft_step_equals_the_candidate_loop(train: bool) -> None:
    plain, fused = _pair(TINY, {})
    _assert_same_step(plain, fused, train)


def test_fusion_alone_and_channels_last_alone_are_exact_too() -> None:
    for kwargs in ({"channels_last": False}, {"fuse": False}):
        plain, other = _pair(TINY, kwargs)
        _assert_same_step(plain, other, train=True)


def test_mixed_activations_se_and_momentum_free_bn_group_or_run_alone() -> None:
    """Candidates fuse only with candidates of the same norm and activation; SE blocks run
    unfused; the result is the same whatever groups form."""
    candidates = (
        Candidate("k3_e3", "ir_k3", {"expansion": 3}),
        Candidate("k5_e3_hs", "ir_k5", {"expansion": 3, "relu_args": "hswish"}),
        Candidate("k3_e6", "ir_k3", {"expansion": 6}),
        Candidate("k3_e1_hs", "ir_k3", {"expansion": 1, "relu_args": "hswish"}),
        Candidate("k3_se", "ir_k3_se", {"expansion": 3}),
        Candidate("k3_g2", "ir_k3_g2", {"expansion": 1, "pwl_groups": 2}),
        Candidate("skip", "skip"),
    )
    space = SearchSpace(
        "mixed", RES, prefix=((("conv_k3", 8, 2, 1),),),
        layers=(LayerChoice(1, 8, 1, candidates), LayerChoice(1, 16, 2, candidates)),
        suffix=())
    plain, fused = _pair(space, {})
    layer = fused.layers[0]
    assert not isinstance(layer.candidates[4], FusedIRFCandidate)  # SE
    assert layer.fusion.pw_groups == ((0, 2), (1,))
    assert layer.fusion.dw_groups == ((0, 2, 5), (1,), (3,))
    _assert_same_step(plain, fused, train=True)

    costs = layer_costs(space, "macs", resolution=RES)
    stale = SearchSpace("stale", RES, space.prefix, space.layers, (),
                        basic_args=FrozenKwargs({"bn_args": {"name": "bn", "momentum": None}}))
    layers, _, _, _ = candidate_traces(stale, RES)
    assert all(irf_parts(t.plan) is None for t in layers[0])
    assert Supernet(stale, costs, 10, RES).layers[0].fusion is None


def test_single_path_runs_one_block_and_leaves_the_others_without_gradients(
        fbnet: Supernet) -> None:
    net = fbnet
    net.zero_grad(set_to_none=True)
    x, y = torch.randn(2, 3, RES, RES), torch.tensor([0, 1])
    weights, indices = net.sample_weights(1.0, "single-path")
    logits, _ = net(x, weights=weights, indices=indices)
    F.cross_entropy(logits, y).backward(inputs=net.weight_parameters())
    for layer, chosen in zip(net.layers, indices, strict=True):
        for i, candidate in enumerate(layer.candidates):
            grads = [p.grad for p in candidate.parameters()]
            if i != chosen:
                assert all(g is None for g in grads)  # SGD leaves unsampled blocks alone
            elif grads:
                assert all(g is not None for g in grads)


@pytest.mark.parametrize("train", [False, True])
def test_derived_subnet_loads_the_supernet_weights_and_computes_the_same(
        fbnet: Supernet, train: bool) -> None:
    net = fbnet
    space = get_space(SPACE)
    x = torch.randn(2, 3, RES, RES)
    for choices in ([0, 1, 2, 3, 4, 5, 6, 7, 8] * 3)[:22], list(range(8, -1, -1)) * 2 + [8] * 4:
        model = build_model(net.arch_def(choices), num_classes=10)
        model.load_state_dict(subnet_state_dict(net, choices))  # strict: every key matches
        weights = torch.zeros_like(net.theta)
        weights[torch.arange(22), torch.tensor(choices)] = 1.0
        model.train(train)
        net.train(train)
        with torch.no_grad():
            expected, _ = net(x, weights=weights, indices=choices)
            torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
        assert len(space.choice_names(choices)) == 22
    with pytest.raises(ArchDefError, match="22 searchable layers"):
        subnet_state_dict(net, [0, 1])


def test_subnet_state_dict_copies_so_fine_tuning_leaves_the_supernet_alone(
        fbnet: Supernet) -> None:
    net = fbnet
    choices = [3] * 22
    state = subnet_state_dict(net, choices)
    key = "backbone.stages.xif1_0.pw.conv.weight"
    original = net.layers[0].candidates[3].pw.conv.weight
    torch.testing.assert_close(state[key], original.detach())
    state[key].zero_()
    assert original.abs().sum() > 0
    assert state[key].is_contiguous()
