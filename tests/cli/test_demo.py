"""``fbnas demo``, shortened, run as a user would: every artefact it promises is there."""

from __future__ import annotations

import json
import subprocess
import sys

import onnxruntime as ort
import pytest
import torch

from fbnas.search.dnas.report import RunFolderError, read_history


def run_demo(out, *extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "fbnas", "demo", "--out", str(out),
                           "--search-epochs", "2", "--train-epochs", "2",
                           "--data", "digits?per_class=20", *extra],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_demo_writes_table_search_training_onnx_and_report(tmp_path) -> None:
    out = tmp_path / "demo"
    proc = run_demo(out)
    for step in range(1, 6):
        assert f"[{step}/5]" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["space"] == "fbnet_v1_tiny" and len(summary["derived"]) == 7
    assert summary["measured_ms"] > 0 and summary["predicted_ms"] > 0
    assert summary["onnx_max_abs_diff"] < 1e-3
    drift = summary["blocks_now_vs_table"]
    assert 0 < drift["min"] <= drift["median"] <= drift["max"]
    # everything lives under --out: table, search run, training run, model, report
    for name in ("lut.json", "search/arch.json", "search/metrics.jsonl", "train/best.pt",
                 "model.onnx", "theta.png", "curves.png", "report.md"):
        assert (out / name).is_file(), name
    assert (out / "theta.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    assert "| **sum** |" in report and "predicted latency" in report
    # the exported model is the trained one: ORT gives the checkpoint's predictions
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 32, 32)
    (logits,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert logits.shape == (2, 10)
    assert len(read_history(out / "search")) == 2

    # a second run reuses the table and the finished search instead of redoing them
    again = run_demo(out)
    assert "continuing" not in again.stderr or "0 entries" not in again.stderr
    assert json.loads((out / "summary.json").read_text())["derived"] == summary["derived"]


def test_report_reader_names_the_missing_file(tmp_path) -> None:
    with pytest.raises(RunFolderError, match="metrics.jsonl"):
        read_history(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\nnot json\n')
    with pytest.raises(RunFolderError, match="line 2"):
        read_history(tmp_path)


def test_report_says_when_the_machine_ran_at_another_speed_than_the_table() -> None:
    from fbnas.cli.demo import _report_text, machine_drift
    from fbnas.search.dnas.report import BlockRow

    def row(table_ms: float, measured_ms: float) -> BlockRow:
        return BlockRow("b", "ir_k3", "", 16, 1, 10, 100, table_ms, measured_ms)

    slow = machine_drift([row(0.2, 0.4), row(0.1, 0.19), row(0.3, 0.63), row(0.005, 1.0)])
    assert slow == pytest.approx({"median": 2.0, "min": 1.9, "max": 2.1})  # tiny one left out
    assert machine_drift([row(0.2, None)]) is None

    class Costs:
        cheapest, most_expensive = 0.2, 2.0

    summary = {"space": "s", "derived": ["a"], "data": "digits", "resolution": 32,
               "device": {"cpu": "cpu", "threads": 1, "torch": "2"}, "seconds": 1.0,
               "target_ms": 1.0, "predicted_ms": 0.9, "measured_ms": 2.0,
               "prediction_error": 0.9 / 2.0 - 1, "params": 1, "macs": 1, "val_top1": 99.0,
               "onnx_max_abs_diff": 0.0, "onnx_ort_ms": 0.1, "blocks_now_vs_table": slow}
    report = _report_text(summary, "", Costs)
    assert "every block timed now is 2.00x its table entry" in report
    assert "the network would take 1.000 ms (-10.0% prediction error)" in report
    steady = {**summary, "blocks_now_vs_table": {"median": 1.05, "min": 1.0, "max": 1.1}}
    assert "every block timed now" not in _report_text(steady, "", Costs)


def test_theta_plot_marks_the_derived_choice_and_a_differing_argmax(tmp_path) -> None:
    from fbnas.search.dnas.report import plot_theta

    history = [{"epoch": e, "phase": "search", "probabilities": [[0.2, 0.5, 0.3],
                                                                   [0.6, 0.3, 0.1]]}
               for e in (1, 2, 3)]
    names = [["a", "b", "c"], ["a", "b", "c"]]
    path = plot_theta(history, names, tmp_path / "theta.png", derived=[2, 0])
    assert path.read_bytes()[:4] == b"\x89PNG"
    other = plot_theta(history, [["a", "b", "c"], ["x", "y", "z"]], tmp_path / "t2.png")
    assert other.read_bytes()[:4] == b"\x89PNG"
