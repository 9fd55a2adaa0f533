"""Landmark losses by hand, and the PFLD / MobileNetV3-PFLD networks (issue 18 item 3)."""

import math

import pytest
import torch

from fbnas.arch.errors import ArchDefError
from fbnas.tasks.landmarks.losses import (
    attribute_weights,
    l2_loss,
    pfld_loss,
    wing_loss,
)
from fbnas.tasks.landmarks.models import (
    LandmarkOutputs,
    aux_cost,
    build_landmark_model,
    pfld_layers,
)

PRED = torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.0, 0.0, 1.0, 1.0]])
TRUE = torch.tensor([[0.5, 0.4, 0.2, 0.5], [0.0, 0.0, 1.0, 1.0]])


def test_l2_by_hand():
    # sample 0: 0.1^2 + 0.2^2 = 0.05; sample 1: 0 -> mean 0.025
    assert l2_loss(PRED, TRUE).item() == pytest.approx(0.025)
    assert l2_loss(PRED.view(2, 2, 2), TRUE.view(2, 2, 2)).item() == pytest.approx(0.025)


def test_pfld_loss_weights_by_angle_error_in_degrees():
    pred_angles = torch.tensor([[60.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    true_angles = torch.zeros(2, 3)
    # weight_0 = 1 - cos(60 deg) = 0.5 -> 0.5 * 0.05; sample 1 has no error
    assert pfld_loss(PRED, TRUE, pred_angles, true_angles).item() == pytest.approx(0.0125)
    same = pfld_loss(PRED, TRUE, true_angles, true_angles)
    assert same.item() == 0.0  # angles right: no weight (NNI's form)


def test_attribute_class_weights():
    attrs = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    assert attribute_weights(attrs, [2.0, 3.0]).tolist() == [2.0, 1.0, 5.0, 3.0]
    # per batch: class shares 0.5 and 0.5 -> weights 2, 2
    assert attribute_weights(attrs, "batch").tolist() == [2.0, 1.0, 4.0, 2.0]
    angles = torch.tensor([[90.0, 0.0, 0.0], [90.0, 0.0, 0.0]])
    loss = pfld_loss(PRED, TRUE, angles, torch.zeros(2, 3), attrs[:2], [2.0, 3.0])
    assert loss.item() == pytest.approx(2.0 * 1.0 * 0.05 / 2)


def test_wing_loss_by_hand():
    w, eps = 10.0, 2.0
    c = w - w * math.log(1 + w / eps)
    pred = torch.tensor([[0.0, 0.0]])
    true = torch.tensor([[1.0 / 112, 20.0 / 112]])  # 1 px (log part) and 20 px (linear)
    expected = w * math.log(1 + 1 / eps) + (20 - c)
    assert wing_loss(pred, true).item() == pytest.approx(expected, rel=1e-5)


def test_pfld_network_modes_and_aux_only_when_asked():
    net = build_landmark_model("pfld")
    x = torch.rand(2, 3, 112, 112)
    out = net.train()(x)
    assert isinstance(out, LandmarkOutputs) and out.points.shape == (2, 212)
    assert out.features.shape == (2, 16, 56, 56) and out.angles().shape == (2, 3)
    assert net.eval()(x).shape == (2, 212)
    # NNI's auxiliary net reads 16@56: ~46 M MACs, more than PFLD itself.
    assert aux_cost(net.aux, (16, 56, 56)).macs == 46_164_064


def test_pfld_layers_carry_the_seed_names_and_ese_sizes():
    layers = pfld_layers()
    assert [len(layer.candidates) for layer in layers] == [9, 9, 9, 9, 9]
    assert "mb_k3_e2_res_se" in layers[2].names and "gh_k3" in layers[0].names
    ese = dict((n, k) for n, _, k in layers[3].candidates)["mb_k5_e2_res_se"]
    assert ese["se_args"]["fm_size"] == 7
    with pytest.raises(ArchDefError, match="not a candidate of this layer"):
        build_landmark_model({"family": "pfld", "layers": ["gh_k3"] * 4 + ["gh_k3x"]})


def test_mobilenetv3_pfld_baseline_size():
    net = build_landmark_model("mbv3_pfld").eval()
    params = sum(p.numel() for p in net.parameters()) - sum(
        p.numel() for p in net.aux.parameters())
    # The baseline repository's README lists 1.44 M parameters for MobileNetV3-PFLD.
    assert params == 1_448_938
    assert net(torch.rand(1, 3, 112, 112)).shape == (1, 212)
    assert net.train()(torch.rand(2, 3, 112, 112)).features.shape == (2, 40, 28, 28)
