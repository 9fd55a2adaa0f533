"""ONNX export checked by a real ONNX Runtime session.

An exported file is only useful if it computes what the PyTorch model computes. So every
export here: puts a copy of the model in eval mode, folds BatchNorm into the preceding
convs (and MobileOne branches into single convs), exports with a dynamic batch axis, runs
``onnx.checker`` on the file, runs it in an ``onnxruntime.InferenceSession`` on random
inputs — at the example's batch size and at one more, so that the batch axis is known to
be dynamic — compares with eager PyTorch on the same inputs, raising :class:`ExportError`
beyond the tolerance, and reports the difference and ORT's latency.

Untrained fbnas models are a trap for such checks: kaiming ``fan_out`` init with identity
BatchNorm statistics shrinks activations stage after stage, so the logits are the head's
bias whatever the input, and any export "agrees". :func:`calibrate_batchnorm` gives a fresh
model the activation scale of a trained one, and the report's ``output_spread`` (how much
the output moves between two inputs) says whether a comparison meant anything.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from fbnas.blocks.fuse import fold_batchnorm
from fbnas.blocks.mobileone import reparameterize_model
from fbnas.errors import FbnasError

logger = logging.getLogger(__name__)

PROTOBUF_LIMIT_BYTES = 2**31 - 1
"""Above this a single ``.onnx`` protobuf cannot hold the weights: external data is used."""

EXTERNAL_DATA_MARGIN = 0.9
"""Weights above this fraction of the protobuf limit go to external data by default: the
graph, names and constants folded by the exporter need room too."""


class ExportError(FbnasError, RuntimeError):
    """The export failed or the exported model does not compute what PyTorch computes."""


@dataclass(frozen=True)
class ExportReport:
    """What an export produced and how well ONNX Runtime agrees with eager PyTorch.

    Attributes:
        path: the ``.onnx`` file (weights in ``path + ".data"`` when ``external_data``).
        input_shape: ``(N, C, H, W)`` of the example input; the batch axis is dynamic.
        max_abs_diff: largest ORT-vs-eager difference over the checked outputs.
        max_rel_diff: ``max_abs_diff`` over the largest ``|eager output|``.
        output_spread: largest difference between the eager outputs for two different
            random inputs. Near zero means the network ignores its input (untrained weights
            without calibrated BN), and then agreement proves nothing.
        ort_latency_ms: median ORT latency at the example's batch size (NaN if not timed).
        size_bytes: the model file plus its external data.
    """

    path: str
    input_shape: tuple[int, ...]
    opset: int
    max_abs_diff: float
    max_rel_diff: float
    output_spread: float
    ort_latency_ms: float
    size_bytes: int
    external_data: bool

    def size_text(self) -> str:
        """The file's size in KiB under 1 MiB (a small network is not "0.0 MiB")."""
        if self.size_bytes < 2**20:
            return f"{self.size_bytes / 2**10:.1f} KiB"
        return f"{self.size_bytes / 2**20:.1f} MiB"

    def summary(self) -> str:
        latency = ("not timed" if np.isnan(self.ort_latency_ms)
                   else f"{self.ort_latency_ms:.2f} ms")
        return (f"{self.path}: opset {self.opset}, {self.size_text()}"
                f"{' (external data)' if self.external_data else ''}, input "
                f"{'x'.join(map(str, self.input_shape))} (batch dynamic); ONNX Runtime vs "
                f"PyTorch max |diff| {self.max_abs_diff:.2e} (outputs vary by "
                f"{self.output_spread:.2e} across inputs); ORT latency {latency}")


# --------------------------------------------------------------------------- BatchNorm


def calibrate_batchnorm(model: nn.Module, input_shape: Sequence[int], steps: int = 2,
                        seed: int = 0, zero_gamma_to_one: bool = True) -> nn.Module:
    """Sets every BatchNorm's running statistics to those of random inputs, in place.

    Why: a freshly built fbnas model in eval mode computes almost nothing (kaiming
    ``fan_out`` init with mean 0 / var 1 statistics shrinks activations by orders of
    magnitude per stage: fbnet_a's features are ~1e-8), so its output is the head's bias
    for every input and an export check compares constants. With statistics measured on
    ``steps`` random batches (cumulative average; only the norms in train mode, so dropout
    and drop-connect stay off) activations have unit scale as in a trained network.

    Args:
        model: any module; its training flag and BN momenta are restored afterwards.
        input_shape: ``(N, C, H, W)`` of each random batch; N >= 2 (train-mode BN needs
            more than one value per channel).
        steps: random batches averaged.
        seed: for the random inputs.
        zero_gamma_to_one: set BN weights that are all zero to one first. Such weights
            come from ``zero_last_bn_gamma`` (each residual block starts as the identity);
            left at zero, those blocks' convs and SE take no part in an output comparison,
            and their folded weights are all zero (the exporter even merges them: eff_l2's
            file shrinks by a third).

    Returns:
        ``model``.
    """
    if len(input_shape) < 1 or int(input_shape[0]) < 2:
        raise ValueError(f"calibrating BatchNorm needs a batch of at least 2, got shape "
                         f"{tuple(input_shape)}")
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    was_training = model.training
    momenta = [m.momentum for m in norms]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    for norm in norms:
        if zero_gamma_to_one and norm.weight is not None and not norm.weight.any():
            with torch.no_grad():
                norm.weight.fill_(1.0)
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average: the mean over all steps
        norm.train()
    try:
        with torch.no_grad():
            for _ in range(steps):
                model(torch.randn(tuple(input_shape), generator=generator).to(device))
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.train(was_training)
    return model


# --------------------------------------------------------------------------- export


def _model_bytes(model: nn.Module) -> int:
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def _files_size(path: Path) -> int:
    data = _data_path(path)
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def _data_path(path: Path) -> Path:
    return path.with_name(path.name + ".data")


def output_names(count: int) -> list[str]:
    """The graph's output names: ``output`` for one tensor, ``output_0``... for several."""
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def _eager_outputs(model: nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    """The model's outputs as arrays: one tensor, or each tensor of a tuple/list (a task's
    head may return several, e.g. landmarks and pose angles)."""
    out = model(x)
    tensors = list(out) if isinstance(out, (tuple, list)) else [out]
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise ExportError(f"the model must return a tensor or a tuple of tensors, got "
                          f"{type(out).__name__}")
    return [t.numpy() for t in tensors]


def _torch_export(model: nn.Module, example: torch.Tensor, path: Path, opset: int,
                  outputs: int = 1) -> None:
    names = output_names(outputs)
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated upstream but is the one that needs no
        # extra packages and handles every fbnas op; the result is checked either way.
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=False,
                          input_names=["input"], output_names=names,
                          opset_version=opset, do_constant_folding=True,
                          dynamic_axes={"input": {0: "batch"},
                                        **{name: {0: "batch"} for name in names}})


def _export(model: nn.Module, example: torch.Tensor, path: Path, opset: int,
            external: bool | None, outputs: int = 1) -> bool:
    """Writes ``path`` (and ``path.data`` if external); returns whether data is external.

    Exports into a temporary folder beside ``path`` and moves the result into place, so a
    failed export leaves no half-written file. Above 2 GB the TorchScript exporter writes
    one file per tensor by itself; those are gathered into the single ``.data`` file.
    """
    import onnx

    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".onnx-export-") as tmp:
        raw = Path(tmp) / "raw" / "model.onnx"
        raw.parent.mkdir()
        _torch_export(model, example, raw, opset, outputs)
        exporter_went_external = len(list(raw.parent.iterdir())) > 1
        if exporter_went_external and external is False:
            raise ExportError("the model is over the 2 GB protobuf limit: it needs "
                              "external data (external_data=None or True)")
        data = _data_path(path)
        if not (external or exporter_went_external):
            os.replace(raw, path)
            data.unlink(missing_ok=True)  # a stale one from an earlier, larger export
            return False
        final = Path(tmp) / path.name
        proto = onnx.load(str(raw), load_external_data=True)
        onnx.save_model(proto, str(final), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=data.name,
                        size_threshold=1024)
        del proto
        os.replace(_data_path(final), data)
        os.replace(final, path)
        data.chmod(path.stat().st_mode & 0o777)  # onnx writes it owner-only
        return True


def _ort_session(path: Path, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _compare_all(got: Sequence[np.ndarray], expected: Sequence[np.ndarray], atol: float,
                 rtol: float, what: str) -> tuple[float, float]:
    """:func:`_compare` of every output; the largest differences."""
    if len(got) != len(expected):
        raise ExportError(f"{what}: ONNX Runtime gives {len(got)} outputs, PyTorch "
                          f"{len(expected)}")
    names = output_names(len(expected))
    diffs = [_compare(g, e, atol, rtol, what if len(names) == 1 else f"{what} ({name})")
             for g, e, name in zip(got, expected, names, strict=True)]
    return max(d[0] for d in diffs), max(d[1] for d in diffs)


def _compare(got: np.ndarray, expected: np.ndarray, atol: float, rtol: float,
             what: str) -> tuple[float, float]:
    """Returns (max abs, max rel) difference; raises ExportError beyond the tolerance.

    The allowance is ``atol + rtol * max|expected|``, the same for every element: float32
    rounding in a deep network grows with the size of its activations, not with each
    output's own value, so a logit near zero carries the error of its large neighbours
    (an element-wise ``rtol`` rejected a correct MobileOne-S0-Train export on those).
    """
    if got.shape != expected.shape:
        raise ExportError(f"{what}: ONNX Runtime output shape {got.shape} != PyTorch "
                          f"{expected.shape}")
    scale = float(np.abs(expected).max(initial=0.0))
    max_abs = float(np.abs(got - expected).max(initial=0.0))
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    allowed = atol + rtol * scale
    if not max_abs <= allowed:  # also catches NaN
        raise ExportError(f"{what}: ONNX Runtime output differs from PyTorch: max |diff| "
                          f"{max_abs:.3e} > {allowed:.3e} (atol {atol} + rtol {rtol} x max "
                          f"|output| {scale:.3e})")
    return max_abs, max_rel


def _median_latency_ms(session, feed: dict[str, np.ndarray], runs: int) -> float:
    if runs <= 0:
        return float("nan")
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        timings.append((time.perf_counter() - start) * 1e3)
    return float(np.median(timings))


def to_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    input_shape: Sequence[int],
    opset: int = 17,
    atol: float = 1e-3,
    rtol: float = 1e-3,
    external_data: bool | None = None,
    threads: int | None = None,
    timing_runs: int = 10,
) -> ExportReport:
    """Exports ``model`` to ONNX and verifies the file with ONNX Runtime.

    The model itself is not changed: a deep copy is put in eval mode, MobileOne branches are
    re-parameterised and BN is folded before exporting. The check runs ORT at the example's
    batch size N and at N + 1 (so a batch size baked into the graph is caught) and compares
    both with eager PyTorch on the same random inputs.

    Every output is compared, whatever the task: a head may return one tensor or a tuple
    of them (exported as ``output``, or ``output_0``, ``output_1``...).

    Args:
        model: the network (any fbnas model; other modules with one tensor input work too).
            For an untrained model call :func:`calibrate_batchnorm` first, or the check
            compares near-constant outputs (see ``ExportReport.output_spread``).
        path: the ``.onnx`` file to write (its ``.data`` file beside it for large models).
        input_shape: ``(N, C, H, W)`` of the example input; the batch axis stays dynamic.
        opset: ONNX opset.
        atol, rtol: allowed difference between ORT and eager PyTorch outputs:
            ``atol + rtol * max|eager output|`` for every element.
        external_data: store weights in ``path + ".data"``; ``None`` (default): only when
            they approach the 2 GB protobuf limit; ``False`` fails for a model beyond it.
        threads: ORT intra-op threads for the check and timing (default: ORT's choice).
        timing_runs: timed ORT runs at batch N after the check runs (which warm it up);
            the median is reported; 0 skips timing (latency NaN).

    Raises:
        ExportError: if export, the ONNX checker or ORT fails, or outputs differ.

    Example:
        >>> import fbnas, tempfile
        >>> model = calibrate_batchnorm(fbnas.build_model("mnv3_small"), (2, 3, 64, 64))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     report = to_onnx(model, f"{tmp}/m.onnx", (1, 3, 64, 64), timing_runs=0)
        >>> report.max_abs_diff < 1e-3 < report.output_spread
        True
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = tuple(int(s) for s in input_shape)
    if len(shape) < 1 or shape[0] < 1:
        raise ValueError(f"input_shape must start with a batch size >= 1, got {shape}")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if device.type == "meta":
        raise ExportError("cannot export a model on the meta device: build it on the CPU")

    # 1. Eager reference outputs on N + 1 random inputs; the first N are the example.
    prepared = copy.deepcopy(model).cpu().eval()
    inputs = torch.randn((shape[0] + 1, *shape[1:]), generator=torch.Generator().manual_seed(0))
    example = inputs[: shape[0]]
    with torch.no_grad():
        expected_all = _eager_outputs(prepared, inputs)
    expected = [out[: shape[0]] for out in expected_all]
    spread = max(float(np.abs(out[-1] - out[0]).max(initial=0.0)) for out in expected_all)
    if spread <= atol:
        logger.warning("the outputs of %s hardly depend on the input (they vary by %.1e, "
                       "atol %.1e): the ORT comparison cannot tell a wrong export apart; "
                       "calibrate BN statistics (calibrate_batchnorm) of untrained models",
                       path, spread, atol)

    # 2. Deploy form (folded branches and BN), exported and checked.
    prepared = fold_batchnorm(reparameterize_model(prepared))
    # Without this the trace builds an autograd graph that keeps every activation alive:
    # eff_l2 at 800x800 then needs over 24 GB instead of ~8.
    prepared.requires_grad_(False)
    if external_data is None and (_model_bytes(prepared)
                                  > PROTOBUF_LIMIT_BYTES * EXTERNAL_DATA_MARGIN):
        external_data = True  # else None: the exporter still goes external beyond 2 GB
    try:
        external = _export(prepared, example, path, opset, external_data, len(expected_all))
        onnx.checker.check_model(str(path), full_check=True)
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - any exporter failure is reported as one error
        raise ExportError(f"exporting to {path} failed: {type(exc).__name__}: {exc}") from exc
    del prepared  # the ORT session below holds another copy of the weights

    # 3. ONNX Runtime at batch N (the comparison reported) and N + 1 (dynamic batch axis).
    try:
        session = _ort_session(path, threads)
        feed = {"input": example.numpy()}
        got = session.run(None, feed)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"ONNX Runtime could not run {path}: {exc}") from exc
    max_abs, max_rel = _compare_all(got, expected, atol, rtol, str(path))
    try:
        got_all = session.run(None, {"input": inputs.numpy()})
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"{path}: the batch axis is not dynamic: ONNX Runtime failed at "
                          f"batch {len(inputs)}: {exc}") from exc
    _compare_all(got_all, expected_all, atol, rtol, f"{path} at batch {len(inputs)}")

    report = ExportReport(str(path), shape, opset, max_abs, max_rel, spread,
                          _median_latency_ms(session, feed, timing_runs), _files_size(path),
                          external)
    logger.info(report.summary())
    return report
