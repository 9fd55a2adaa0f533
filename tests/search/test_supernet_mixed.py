"""The supernet's mixed op: its soft step equals the plain candidate loop, subnets load its
weights, single-path leaves unsampled candidates alone."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fbnas import build_model
from fbnas.arch import ArchDefError
from fbnas.arch.spec import FrozenKwargs
from fbnas.blocks.layers import ChannelShuffle
from fbnas.search.dnas import Supernet, layer_costs, subnet_state_dict
from fbnas.search.dnas.supernet import WeightedIRFBlock, scaled_batch_norm
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


@pytest.fixture(scope="module")
def fbnet() -> Supernet:
    """The full fbnet_v1_cifar supernet (float32), shared: building it takes seconds."""
    return _net(SPACE, torch.float32)


def _loop_forward(net: Supernet, x: torch.Tensor,
                  weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's supernet written out: Σ_i w_i b_i(x) per layer, each block called whole."""
    x = net.stem(x)
    cost = x.new_tensor(net.costs.fixed)
    for i, layer in enumerate(net.layers):
        w = weights[i, : len(layer.candidates)]
        x = sum(w_i * block(x) for w_i, block in zip(w, layer.candidates, strict=True))
        cost = cost + (w * layer.costs).sum()
    return net.head(net.tail(x)), cost


def _named(net: nn.Module, what: str) -> dict[str, torch.Tensor]:
    return dict(net.named_parameters() if what == "params" else net.named_buffers())


def _assert_equals_the_loop(space, train: bool, **kwargs: bool) -> None:
    """One soft forward/backward through the supernet and through the written-out loop (a
    twin with equal weights, NCHW) gives equal logits, cost, gradients of every parameter and
    of the mixture weights, and equal running statistics."""
    net, twin = _net(space, **kwargs), _net(space, channels_last=False)
    x = torch.randn(4, 3, RES, RES, dtype=torch.float64)
    y = torch.arange(4) % 10
    weights = net.sample_weights(1.0, "soft")[0].detach()
    results = []
    for model, forward in ((net, net.forward), (twin, lambda x, weights: _loop_forward(
            twin, x, weights))):
        model.train(train)
        w = weights.clone().requires_grad_()
        logits, cost = forward(x, weights=w)
        (F.cross_entropy(logits, y) + cost / 1e7).backward()
        results.append((logits, cost, w.grad))
    (la, ca, wa), (lb, cb, wb) = results
    torch.testing.assert_close(la, lb, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(ca, cb)
    torch.testing.assert_close(wa, wb, rtol=1e-8, atol=1e-10)
    pa, pb = _named(net, "params"), _named(twin, "params")
    assert pa.keys() == pb.keys()
    for name, p in pa.items():
        if name == "theta":
            continue
        assert (p.grad is None) == (pb[name].grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(p.grad, pb[name].grad, rtol=1e-7, atol=1e-10,
                                       msg=name)
    ba, bb = _named(net, "buffers"), _named(twin, "buffers")
    for name, b in ba.items():
        torch.testing.assert_close(b, bb[name], rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("train", [True, False])
def test_soft_step_equals_the_candidate_loop(train: bool) -> None:
    _assert_equals_the_loop(TINY, train)


def test_nchw_supernet_equals_the_loop_too() -> None:
    _assert_equals_the_loop(TINY, train=True, channels_last=False)


def test_every_fbnet_inverted_residual_folds_its_weight_into_bn(fbnet: Supernet) -> None:
    names = [c.name for c in get_space(SPACE).layers[0].candidates]
    for layer in fbnet.layers:
        folds = [isinstance(c, WeightedIRFBlock) for c in layer.candidates]
        assert folds == [name != "skip" for name in names]
    assert fbnet.layers[3].candidates[2].pw.conv.weight.is_contiguous(
        memory_format=torch.channels_last)


def test_other_blocks_run_whole_and_still_equal_the_loop() -> None:
    """SE blocks, hswish, a last activation, drop-connect and momentum-free BN: blocks fold
    their weight where that is exact, else run whole; the step equals the loop either way."""
    candidates = (
        Candidate("k3_e3", "ir_k3", {"expansion": 3}),
        Candidate("k5_e3_hs", "ir_k5", {"expansion": 3, "relu_args": "hswish"}),
        Candidate("k3_se", "ir_k3_se", {"expansion": 3}),
        Candidate("k3_g2", "ir_k3_g2", {"expansion": 1, "pwl_groups": 2}),
        Candidate("k3_last_act", "ir_k3", {"expansion": 3, "last_relu": True}),
        Candidate("skip", "skip"),
    )
    space = SearchSpace(
        "mixed", RES, prefix=((("conv_k3", 8, 2, 1),),),
        layers=(LayerChoice(1, 8, 1, candidates), LayerChoice(1, 16, 2, candidates)),
        suffix=())
    net = _net(space)
    folds = [isinstance(c, WeightedIRFBlock) for c in net.layers[0].candidates]
    assert folds == [True, True, True, True, False, False]
    _assert_equals_the_loop(space, train=True)
    stale = SearchSpace("stale", RES, space.prefix, space.layers, (),
                        basic_args=FrozenKwargs({"bn_args": {"name": "bn", "momentum": None}}))
    _assert_equals_the_loop(stale, train=True)


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("train", [True, False])
def test_scaled_batch_norm_is_scale_times_bn(momentum: float | None, train: bool) -> None:
    a, b = nn.BatchNorm2d(5, momentum=momentum), nn.BatchNorm2d(5, momentum=momentum)
    with torch.no_grad():
        a.weight.uniform_(0.5, 1.5)
        a.bias.uniform_(-1, 1)
    b.load_state_dict(a.state_dict())
    a.train(train)
    b.train(train)
    scale = torch.tensor(0.3)
    for _ in range(3):
        x = torch.randn(4, 5, 3, 3) * 2 + 1
        torch.testing.assert_close(scaled_batch_norm(a, x, scale), scale * b(x))
    for name, buffer in a.named_buffers():
        torch.testing.assert_close(buffer, dict(b.named_buffers())[name], msg=name)


def test_channel_shuffle_keeps_the_memory_format() -> None:
    x = torch.randn(2, 8, 3, 3)
    shuffle = ChannelShuffle(2)
    plain, last = shuffle(x), shuffle(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(last, plain, rtol=0, atol=0)
    torch.testing.assert_close(plain, F.channel_shuffle(x, 2), rtol=0, atol=0)
    assert last.is_contiguous(memory_format=torch.channels_last)


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
    # In float64: in training mode a batch of 2 on 2x2 maps makes BN amplify float32
    # rounding (channels-last supernet vs contiguous network) past any fixed tolerance.
    net = copy.deepcopy(fbnet).double()
    space = get_space(SPACE)
    x = torch.randn(2, 3, RES, RES, dtype=torch.float64)
    for choices in ([0, 1, 2, 3, 4, 5, 6, 7, 8] * 3)[:22], list(range(8, -1, -1)) * 2 + [8] * 4:
        model = build_model(net.arch_def(choices), num_classes=10).double()
        model.load_state_dict(subnet_state_dict(net, choices))  # strict: every key matches
        weights = torch.zeros_like(net.theta)
        weights[torch.arange(22), torch.tensor(choices)] = 1.0
        model.train(train)
        net.train(train)
        with torch.no_grad():
            expected, _ = net(x, weights=weights, indices=choices)
            torch.testing.assert_close(model(x), expected, rtol=1e-9, atol=1e-10)
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
