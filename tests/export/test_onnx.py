"""ONNX export checked by ONNX Runtime; checkpoints rebuilt for export; ``fbnas export``.

Every model here gets calibrated BatchNorm statistics first: a freshly built fbnas model in
eval mode outputs its head's bias for every input (activations shrink to ~1e-8 through the
stages), and comparing two constant outputs would pass whatever the export did.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import fbnas
from fbnas.blocks.layers import ConvBNRelu, ConvNormAct, ConvSpec, NormSpec
from fbnas.export import (
    ExportError,
    calibrate_batchnorm,
    fold_batchnorm,
    load_model_from_checkpoint,
    to_onnx,
)
from fbnas.zoo.checkpoint import CheckpointError

RESOLUTION = 64
FAMILY_SAMPLES = ["fbnet_a", "FBNetV2_F1", "FBNetV3_A", "mnv3_small", "eff_0", "eff_v2_b0",
                  "RegNetY_200M", "ResNet18", "MobileOne-S0-Train"]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread: on a shared 2-core machine two OpenMP threads stall whenever
    another process holds a core (the tests then run 5x slower); the results are the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def calibrated(source: str | dict, resolution: int = RESOLUTION,
               num_classes: int = 1000) -> nn.Module:
    """An untrained model with BN statistics of random inputs, in eval mode."""
    model = fbnas.build_model(source, num_classes=num_classes)
    return calibrate_batchnorm(model, (4, 3, resolution, resolution)).eval()


def eager(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def random_input(batch: int, resolution: int = RESOLUTION, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, 3, resolution, resolution)).astype(np.float32)


def op_types(path: Path) -> list[str]:
    return [node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node]


def conv_count(model: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) for m in model.modules())


# --------------------------------------------------------------------------- to_onnx


@pytest.mark.parametrize("name", FAMILY_SAMPLES)
def test_each_family_exports_and_matches_onnx_runtime(name: str, tmp_path: Path) -> None:
    model = calibrated(name)
    outputs = eager(model, random_input(2))
    # The comparison only means something if the output follows the input.
    assert np.abs(outputs[0] - outputs[1]).max() > 0.05
    report = to_onnx(model, tmp_path / f"{name}.onnx", (1, 3, RESOLUTION, RESOLUTION),
                     timing_runs=1)
    assert report.output_spread > 0.05
    assert report.max_abs_diff < report.output_spread / 100
    assert report.input_shape == (1, 3, RESOLUTION, RESOLUTION) and not report.external_data
    assert report.ort_latency_ms > 0 and report.size_bytes == Path(report.path).stat().st_size
    assert "BatchNormalization" not in op_types(tmp_path / f"{name}.onnx")


def test_mobileone_train_exports_in_its_deploy_form(tmp_path: Path) -> None:
    model = calibrated("MobileOne-S0-Train")
    path = tmp_path / "s0.onnx"
    to_onnx(model, path, (1, 3, RESOLUTION, RESOLUTION), timing_runs=0)
    # Re-parameterised: one dw 3x3 and one pw 1x1 conv per block, as the deploy definition.
    deploy = fbnas.build_model("MobileOne-S0-Deploy")
    assert op_types(path).count("Conv") == conv_count(deploy) < conv_count(model)


def test_batch_axis_is_dynamic(tmp_path: Path) -> None:
    model = calibrated("fbnet_a")
    path = tmp_path / "a.onnx"
    to_onnx(model, path, (1, 3, RESOLUTION, RESOLUTION), timing_runs=0)
    x = random_input(3)
    got = ort_run(path, x)
    assert got.shape == (3, 1000)
    np.testing.assert_allclose(got, eager(model, x), atol=1e-3, rtol=1e-3)
    assert np.abs(got[0] - got[2]).max() > 0.05  # three different images, three answers


class BakedBatch(nn.Module):
    """Converts the batch size to a Python int: the trace stores it as a constant."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).reshape(int(x.shape[0]), -1)


def test_a_batch_size_baked_into_the_graph_is_caught(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="at batch 2"):
        to_onnx(BakedBatch(), tmp_path / "baked.onnx", (1, 3, 8, 8), timing_runs=0)


def test_bn_is_folded_and_the_model_is_left_unchanged(tmp_path: Path) -> None:
    model = calibrated("fbnet_a").train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    module_types = [type(m) for m in model.modules()]
    path = tmp_path / "a.onnx"
    to_onnx(model, path, (2, 3, RESOLUTION, RESOLUTION), timing_runs=0)

    ops = op_types(path)
    assert "BatchNormalization" not in ops
    assert ops.count("Conv") == conv_count(model)  # every BN went into its conv
    assert model.training
    assert [type(m) for m in model.modules()] == module_types
    after = model.state_dict()
    assert after.keys() == state.keys()
    assert all(torch.equal(after[k], v) for k, v in state.items())


@pytest.mark.parametrize("norm", [nn.BatchNorm2d(8), nn.BatchNorm2d(8, affine=False),
                                  nn.SyncBatchNorm(8)], ids=["bn", "bn_no_affine", "sync_bn"])
def test_fold_batchnorm_keeps_eval_outputs(norm: nn.Module) -> None:
    block = ConvBNRelu(ConvNormAct(ConvSpec(3, 8, 3, padding=1), NormSpec("bn", 8)))
    block.bn = norm
    with torch.no_grad():
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
        if norm.affine:
            norm.weight.uniform_(0.5, 2)
            norm.bias.uniform_(-1, 1)
    block.eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = block(x)
        folded = fold_batchnorm(copy.deepcopy(block))
        got = folded(x)
    assert isinstance(folded.bn, nn.Identity) and folded.conv.bias is not None
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_external_data_holds_the_weights_and_runs(tmp_path: Path) -> None:
    model = calibrated("mnv3_small")
    path = tmp_path / "small.onnx"
    report = to_onnx(model, path, (1, 3, RESOLUTION, RESOLUTION), external_data=True,
                     timing_runs=0)
    data = tmp_path / "small.onnx.data"
    assert report.external_data and data.is_file()
    weight_bytes = 4 * sum(p.numel() for p in fold_batchnorm(copy.deepcopy(model)).parameters())
    assert data.stat().st_size > 0.95 * weight_bytes > 100 * path.stat().st_size
    assert report.size_bytes == data.stat().st_size + path.stat().st_size
    x = random_input(2)
    np.testing.assert_allclose(ort_run(path, x), eager(model, x), atol=1e-3, rtol=1e-3)

    # Exporting again without external data removes the stale .data file.
    report = to_onnx(model, path, (1, 3, RESOLUTION, RESOLUTION), external_data=False,
                     timing_runs=0)
    assert not report.external_data and not data.exists()


class DriftingOutput(nn.Module):
    """Adds how often it was called: the trace records one count, eager runs another."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.conv(x).mean((2, 3)) + float(self.calls)


def test_a_mismatch_between_onnx_runtime_and_pytorch_raises(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="differs from PyTorch: max \\|diff\\| 1.000e\\+00 > "):
        to_onnx(DriftingOutput(), tmp_path / "drift.onnx", (1, 3, 8, 8), timing_runs=0)


class TwoOutputs(nn.Module):
    """A head with two outputs (as landmarks and pose angles); ``drift`` breaks the second."""

    def __init__(self, drift: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.drift = drift
        self.calls = 0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        y = self.conv(x)
        return y.mean((2, 3)), y.amax((2, 3)) + (float(self.calls) if self.drift else 0.0)


def test_every_output_of_a_multi_output_model_is_checked(tmp_path: Path) -> None:
    import onnx

    path = tmp_path / "two.onnx"
    report = to_onnx(TwoOutputs(), path, (2, 3, 8, 8), timing_runs=0)
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["output_0", "output_1"]
    assert report.max_abs_diff < 1e-5 < report.output_spread
    with pytest.raises(ExportError, match="\\(output_1\\): ONNX Runtime output differs"):
        to_onnx(TwoOutputs(drift=True), tmp_path / "drift.onnx", (1, 3, 8, 8),
                timing_runs=0)


def test_calibration_gives_input_dependent_outputs_and_restores_the_model() -> None:
    model = fbnas.build_model("fbnet_a").train()
    x = torch.from_numpy(random_input(2))
    with torch.no_grad():
        before = model.eval()(x)
        model.train()
    momenta = [m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    calibrate_batchnorm(model, (4, 3, RESOLUTION, RESOLUTION))
    assert model.training
    assert [m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)] == momenta
    with torch.no_grad():
        after = model.eval()(x)
    assert (before[0] - before[1]).abs().max() < 1e-4  # untrained: the head's bias
    assert (after[0] - after[1]).abs().max() > 0.05
    with pytest.raises(ValueError, match="batch of at least 2"):
        calibrate_batchnorm(model, (1, 3, RESOLUTION, RESOLUTION))


def zero_gammas(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) and not m.weight.any() for m in model.modules())


def test_calibration_revives_zero_initialised_bn_weights() -> None:
    # mnv3_small zero-initialises the last BN of its residual blocks; left at zero those
    # blocks' convs would not take part in any output comparison.
    model = fbnas.build_model("mnv3_small")
    assert zero_gammas(model) == 6
    kept = calibrate_batchnorm(copy.deepcopy(model), (2, 3, 32, 32), zero_gamma_to_one=False)
    assert zero_gammas(kept) == 6
    assert zero_gammas(calibrate_batchnorm(model, (2, 3, 32, 32))) == 0


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, arch_def: dict, **entries: object) -> Path:
    torch.save({"arch_def": arch_def, **entries}, path)
    return path


def test_checkpoint_rebuilds_the_model_with_its_weights(tmp_path: Path, tiny_arch) -> None:
    trained = calibrated(tiny_arch, resolution=32, num_classes=10)
    ema = calibrated(tiny_arch, resolution=32, num_classes=10)
    path = save_checkpoint(tmp_path / "run.pt", tiny_arch, model=trained.state_dict(),
                           model_ema=ema.state_dict(), resolution=48)
    model = load_model_from_checkpoint(path)
    assert (model.name, model.resolution, model.num_classes) == ("run", 48, 10)
    assert not model.training
    x = random_input(2, 32)
    assert not np.allclose(eager(trained, x), eager(ema, x))
    np.testing.assert_array_equal(eager(model, x), eager(ema, x))  # EMA weights preferred


def test_checkpoint_num_classes_comes_from_the_head(tmp_path: Path, tiny_arch) -> None:
    source = fbnas.build_model(tiny_arch, num_classes=7)
    path = save_checkpoint(tmp_path / "head.pth", tiny_arch, model=source.state_dict())
    model = load_model_from_checkpoint(path)
    assert model.num_classes == 7 and model.resolution == 32


@pytest.mark.parametrize(("content", "message"), [
    ([1, 2, 3], "must hold a dict with 'arch_def' and 'model', got a list"),
    ({"model": {}}, "has no 'arch_def' key"),
    ({"arch_def": {"blocks": []}}, "has no 'model' key"),
    ({"arch_def": "fbnet_a", "model": {}}, "'arch_def' must be an arch-def dict"),
    ({"supernet": {}, "theta": []}, "is a DNAS search's supernet, not one network: train a "
                                    "derived one"),
    ({"arch_def": {"blocks": []}, "model": {}, "run_info": {"slim": {}}},
     "is a slim training run .* export its OUT/subnet.pt"),
])
def test_malformed_checkpoints_say_what_is_wrong(tmp_path: Path, content: object,
                                                 message: str) -> None:
    path = tmp_path / "bad.pt"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=message):
        load_model_from_checkpoint(path)


def test_state_dict_of_another_architecture_is_refused(tmp_path: Path, tiny_arch) -> None:
    wider = copy.deepcopy(tiny_arch)
    wider["blocks"][-1] = [("ir_pool_hs", 96, 1, 1, {"expansion": 6})]
    other = fbnas.build_model(wider, num_classes=10)
    path = save_checkpoint(tmp_path / "other.pt", tiny_arch, model=other.state_dict())
    with pytest.raises(CheckpointError, match="other.pt' \\('model'\\): shape mismatch"):
        load_model_from_checkpoint(path)


def test_missing_checkpoint_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model_from_checkpoint(tmp_path / "nope.pt")


# --------------------------------------------------------------------------- CLI


def test_cli_exports_a_zoo_name(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "m.onnx"
    proc = run_cli("export", "mnv3_small", "--out", out, "--resolution", "64",
                   "--num-classes", "10", "--batch", "2", "--opset", "13")
    assert proc.returncode == 0, proc.stderr
    assert "mnv3_small: 10 classes at 64x64" in proc.stdout
    assert "opset 13" in proc.stdout and "input 2x3x64x64 (batch dynamic)" in proc.stdout
    assert "max |diff| ONNX Runtime vs PyTorch:" in proc.stdout
    assert "ONNX Runtime latency:" in proc.stdout and "at batch 2" in proc.stdout
    assert ort_run(out, random_input(3)).shape == (3, 10)


def test_cli_exports_a_checkpoint_with_its_weights(tmp_path: Path, tiny_arch,
                                                   run_cli) -> None:
    model = calibrated(tiny_arch, resolution=32, num_classes=10)
    path = save_checkpoint(tmp_path / "tiny.pt", tiny_arch, model=model.state_dict(),
                           num_classes=10)
    out = tmp_path / "tiny.onnx"
    proc = run_cli("export", path, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "tiny: 10 classes at 32x32 (trained weights)" in proc.stdout
    x = random_input(2, 32)
    np.testing.assert_allclose(ort_run(out, x), eager(model, x), atol=1e-4, rtol=1e-4)


class CreatesFolderWhenUnpickled:
    """Unpickling this runs ``os.mkdir``: what a malicious checkpoint could do."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __reduce__(self):
        return (os.mkdir, (str(self.folder),))


def test_cli_refuses_a_checkpoint_that_needs_unpickling(tmp_path: Path, tiny_arch,
                                                        run_cli) -> None:
    marker = tmp_path / "code-ran"
    path = save_checkpoint(tmp_path / "evil.pt", tiny_arch,
                           model=fbnas.build_model(tiny_arch).state_dict(),
                           payload=CreatesFolderWhenUnpickled(marker))
    out = tmp_path / "evil.onnx"
    proc = run_cli("export", path, "--out", out)
    assert proc.returncode == 2 and proc.stderr.startswith("error: checkpoint")
    assert re.search(r"need arbitrary unpickling \(\w+\.mkdir\)", proc.stderr)
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize(("source", "message"), [
    ("fbnet_x", "did you mean"),
    ("{tmp}/missing.pth", "does not exist"),
])
def test_cli_bad_sources_exit_2_with_one_line(tmp_path: Path, source: str, message: str,
                                              run_cli) -> None:
    proc = run_cli("export", source.format(tmp=tmp_path), "--out", tmp_path / "x.onnx")
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith("error:") and message in proc.stderr
    assert not (tmp_path / "x.onnx").exists()
