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
