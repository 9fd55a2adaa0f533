"""Where a search runs: device resolution, samples drawn on the CPU stream and placed on the
supernet's device, AMP off the GPU, ``fbnas search dnas --device``. The CPU-only checks use
the ``meta`` device as a stand-in for "not the CPU"; the CUDA checks run where CUDA is."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
from toy_supernet import CONFIG, DATA, RESOLUTION, toy_engine

from fbnas.cli.main import main
from fbnas.search.cost_loss import CostLoss
from fbnas.search.dnas import Supernet, layer_costs
from fbnas.search.engine import DerivesWithinBand, SearchableModel, SearchEngine
from fbnas.search.sampling import ArchSampler, gumbel_softmax
from fbnas.search.space import Candidate, LayerChoice, SearchSpace
from fbnas.tasks import ClassificationTask
from fbnas.train.config import RecipeError
from fbnas.train.distributed import DistContext, resolve_device

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
CANDIDATES = (Candidate("e1", "ir_k3", {"expansion": 1}), Candidate("skip", "skip"))
SPACE = SearchSpace("device_space", 16, prefix=((("conv_k3", 8, 2, 1),),),
                    layers=(LayerChoice(1, 8, 1, CANDIDATES),
                            LayerChoice(2, 16, 2, CANDIDATES)), suffix=())


def _supernet(mode: str = "soft") -> Supernet:
    costs = layer_costs(SPACE, "macs", resolution=16, num_classes=10)
    return Supernet(SPACE, costs, num_classes=10, resolution=16, mode=mode)  # type: ignore


def test_the_dnas_supernet_follows_the_engines_protocols() -> None:
    net = _supernet()
    assert isinstance(net, SearchableModel) and isinstance(net, DerivesWithinBand)


def test_auto_takes_this_ranks_gpu_when_cuda_is_present(monkeypatch) -> None:
    assert resolve_device("cpu", DistContext()) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto", DistContext()) == torch.device("cpu")
    assert resolve_device(None, DistContext()) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", DistContext(1, 2, 1)) == torch.device("cuda", 1)
    assert resolve_device("cuda", DistContext(1, 2, 1)) == torch.device("cuda", 1)
    assert resolve_device("cuda:0", DistContext(1, 2, 1)) == torch.device("cuda", 0)


def test_cuda_asked_for_where_it_is_absent_is_a_clear_error(monkeypatch, tmp_path,
                                                             capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RecipeError, match="device 'cuda' requested but CUDA is not available"):
        resolve_device("cuda", DistContext())
    args = ["search", "dnas", "--space", "fbnet_v1_tiny", "-d", "digits?per_class=2",
            "--cost", "macs", "--epochs", "2", "--warmup-epochs", "1", "--device", "cuda",
            "-o", str(tmp_path / "run")]
    assert main(args) == 2
    assert "error: device 'cuda' requested but CUDA is not available here" in \
        capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_samples_come_from_the_cpu_stream_and_land_on_the_supernets_device() -> None:
    """A supernet on another device (``meta``: shapes only) draws the same numbers from the
    shared stream as one on the CPU, and gets its sample on its own device."""
    cpu, meta = _supernet(), _supernet().to("meta")
    a, b = ArchSampler(5), ArchSampler(5)
    on_cpu, on_meta = a.sample(cpu, 2.0), b.sample(meta, 2.0)
    assert on_cpu.weights.device.type == "cpu" and on_meta.weights.device.type == "meta"
    assert on_meta.weights.shape == on_cpu.weights.shape == cpu.theta.shape
    assert torch.equal(a.state, b.state) and not torch.equal(a.state, ArchSampler(5).state)
    fixed = meta.fixed_sample([1, 0])
    assert fixed.weights.device.type == "meta" and fixed.indices == [1, 0]
    assert torch.equal(cpu.fixed_sample([1, 0]).weights, torch.tensor([[0.0, 1.0], [1.0, 0.0]]))


def test_the_stream_gives_bitwise_torchs_gumbel_softmax_on_the_cpu() -> None:
    logits = torch.randn(3, 4, requires_grad=True)
    for hard in (False, True):
        state = torch.Generator().manual_seed(11).get_state()
        generator = torch.Generator()
        generator.set_state(state)
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(state)
            expected = torch.nn.functional.gumbel_softmax(logits, tau=0.7, hard=hard)
        assert torch.equal(gumbel_softmax(logits, 0.7, generator, hard=hard), expected)


def test_amp_is_ignored_on_the_cpu_with_a_warning(tmp_path, caplog) -> None:
    from fbnas.data import open_datasets

    data = open_datasets(DATA, RESOLUTION)
    config = dataclasses.replace(CONFIG, epochs=2, amp=True, tensorboard=False)
    with caplog.at_level(logging.WARNING, logger="fbnas.search.engine"):
        engine = toy_engine(data, config)
    assert not engine.use_amp and engine.device == torch.device("cpu")
    assert "amp (bfloat16 autocast) needs CUDA: searching in float32 on cpu" in caplog.text
    with_amp = engine.run(tmp_path / "amp").model.theta
    plain = toy_engine(data, dataclasses.replace(config, amp=False)).run(
        tmp_path / "plain").model.theta
    assert torch.equal(with_amp, plain)


@CUDA
@pytest.mark.parametrize("mode", ["soft", "single-path"])
def test_a_cuda_supernet_draws_what_a_cpu_one_draws(mode: str) -> None:
    cpu, gpu = _supernet(mode), _supernet(mode).to("cuda")
    a, b = ArchSampler(3), ArchSampler(3)
    for _ in range(3):
        on_cpu, on_gpu = a.sample(cpu, 1.5), b.sample(gpu, 1.5)
        assert on_gpu.weights.device.type == "cuda" and on_gpu.indices == on_cpu.indices
        torch.testing.assert_close(on_gpu.weights.cpu(), on_cpu.weights)


@CUDA
def test_a_search_runs_on_cuda_with_amp_and_keeps_its_supernet_channels_last(tmp_path) -> None:
    from fbnas.data import open_datasets

    data = open_datasets(DATA, RESOLUTION)
    config = dataclasses.replace(CONFIG, device="cuda", amp=True)
    result = toy_engine(data, config).run(tmp_path / "run")
    assert result.model.theta.device.type == "cuda"
    dnas = SearchEngine(_supernet, ClassificationTask(10), data, config, CostLoss(1.0))
    conv = next(m for m in dnas.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
