"""``fbnas demo``, shortened, run as a user would: every artefact it promises is there, and
a second run into the same folder reuses each finished step instead of redoing it."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from fbnas.search.dnas.report import RunFolderError, read_history

QUICK = ["--search-epochs", "2", "--train-epochs", "2", "--data", "digits?per_class=20"]
STEP_TITLES = ("latency table of every candidate block", "DNAS search (",
               "training the derived network", "ONNX export, checked")
"""The headers of steps 1-4 when they run (a reused step prints its reuse line instead)."""
MEASURED_NOW = {"measured_ms", "prediction_error", "blocks_now_vs_table", "seconds"}
"""Summary fields the report step measures anew on every run."""


def run_demo(run_cli, out: Path, *extra: str):
    result = run_cli("demo", "--out", out, *QUICK, *extra)  # a later option wins
    assert result.returncode == 0, result.stderr
    return result


def fingerprints(out: Path, *names: str) -> dict[str, tuple[int, str]]:
    """(mtime in ns, SHA-256) of each file: a rewrite changes the first, new content both."""
    return {name: ((out / name).stat().st_mtime_ns,
                   hashlib.sha256((out / name).read_bytes()).hexdigest()) for name in names}


def onnx_matches_checkpoint(onnx: Path, checkpoint: Path) -> None:
    """ONNX Runtime on ``onnx`` gives the predictions of the weights in ``checkpoint``."""
    from fbnas.export.checkpoint import load_model_from_checkpoint

    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 32, 32)
    (logits,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = load_model_from_checkpoint(checkpoint)(x).numpy()
    assert logits.shape == (2, 10)
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)


def test_demo_writes_everything_and_a_rerun_reuses_each_finished_step(tmp_path,
                                                                      run_cli) -> None:
    out = tmp_path / "demo"
    first = run_demo(run_cli, out)
    for step in range(1, 6):
        assert f"[{step}/5]" in first.stderr
    assert all(title in first.stderr for title in STEP_TITLES)
    assert "reusing" not in first.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["space"] == "fbnet_v1_tiny" and len(summary["derived"]) == 7
    assert summary["measured_ms"] > 0 and summary["predicted_ms"] > 0
    assert summary["onnx_max_abs_diff"] < 1e-3
    drift = summary["blocks_now_vs_table"]
    assert 0 < drift["min"] <= drift["median"] <= drift["max"]
    # everything lives under --out: table, search run, training run, model, report
    for name in ("lut.json", "search/arch.json", "search/metrics.jsonl", "train/best.pt",
                 "model.onnx", "export.json", "theta.png", "curves.png", "report.md"):
        assert (out / name).is_file(), name
    assert (out / "theta.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    assert "| **sum** |" in report and "predicted latency" in report
    onnx_matches_checkpoint(out / "model.onnx", out / "train" / "best.pt")
    assert len(read_history(out / "search")) == 2

    # The same settings again: every step but the report is reused, no file of theirs is
    # rewritten (the table is not re-measured, nothing is searched, trained or exported).
    kept = ("lut.json", "search/last.pt", "search/arch.json", "search/metrics.jsonl",
            "train/last.pt", "train/best.pt", "model.onnx", "export.json")
    before = fingerprints(out, *kept)
    again = run_demo(run_cli, out)
    assert f"[1/5] latency table: reusing {out / 'lut.json'} (66 entries, all measured; " \
           f"target {summary['target_ms']:.3f} ms)" in again.stderr
    assert f"[2/5] search: reusing {out / 'search'} (finished, 2 epochs)" in again.stderr
    assert f"[3/5] training: reusing {out / 'train'} (finished, 2 epochs)" in again.stderr
    assert (f"[4/5] export: reusing {out / 'model.onnx'} (exported from "
            f"{out / 'train' / 'best.pt'}, unchanged since)") in again.stderr
    assert not any(title in again.stderr for title in STEP_TITLES)
    assert "[5/5] report" in again.stderr
    assert fingerprints(out, *kept) == before
    resummed = json.loads((out / "summary.json").read_text())
    assert resummed.keys() == summary.keys()
    assert {k: v for k, v in resummed.items() if k not in MEASURED_NOW} == \
           {k: v for k, v in summary.items() if k not in MEASURED_NOW}

    # Another --train-epochs: the table and the search still fit and are reused; the
    # training is done over (not resumed from, nor reused), and so is the export of it.
    fewer = run_demo(run_cli, out, "--train-epochs", "1")
    assert "[1/5] latency table: reusing" in fewer.stderr
    assert "[2/5] search: reusing" in fewer.stderr
    assert (f"the training run in {out / 'train'} does not match (epochs 2 -> 1, "
            f"warmup_epochs 1 -> 0): training it over") in fewer.stderr
    assert (f"{out / 'train' / 'best.pt'} changed since {out / 'model.onnx'} was exported "
            f"from it: exporting it again") in fewer.stderr
    now = fingerprints(out, *kept)
    for name in ("lut.json", "search/last.pt", "search/arch.json"):
        assert now[name] == before[name], name
    for name in ("train/last.pt", "train/best.pt", "model.onnx"):
        assert now[name][1] != before[name][1], name
    from fbnas.train import read_checkpoint

    trained = read_checkpoint(out / "train" / "last.pt")
    assert trained["epoch"] == 1 and len(trained["history"]) == 1
    assert not (out / "train" / "last.prev.pt").exists()  # nothing left of the 2-epoch run
    onnx_matches_checkpoint(out / "model.onnx", out / "train" / "best.pt")
    third = json.loads((out / "summary.json").read_text())
    assert third["derived"] == summary["derived"]
    assert third["val_top1"] == trained["history"][0]["val_top1"]


def test_a_search_with_other_settings_or_data_is_not_taken_for_this_one(tmp_path) -> None:
    from fbnas.cli.demo import _search_changes
    from fbnas.search import get_space
    from fbnas.search.dnas.search import SEARCH_CONFIG, DNASConfig

    space, config = get_space("fbnet_v1_tiny"), DNASConfig(epochs=2, warmup_epochs=1,
                                                           target=0.5)
    run = tmp_path / "search"
    assert _search_changes(run, space, "digits", config) is None  # no search yet
    run.mkdir()
    (run / SEARCH_CONFIG).write_text(json.dumps(
        {"space": space.name, "space_def": space.to_dict(), "data": "digits",
         "num_classes": 10, "world_size": 1, **asdict(config)}))
    assert _search_changes(run, space, "digits", config) is None
    assert _search_changes(run, space, "digits?per_class=20", config) == \
        "data 'digits' -> 'digits?per_class=20'"
    assert _search_changes(run, space, "digits", replace(config, epochs=3, target=0.6)) == \
        "epochs 2 -> 3, target 0.5 -> 0.6"
    other = get_space("fbnet_v1_cifar")
    assert _search_changes(run, other, "digits", config) == \
        "space 'fbnet_v1_tiny' -> 'fbnet_v1_cifar'"


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


def test_the_demo_says_whether_theta_decided_by_itself() -> None:
    from fbnas.cli.demo import _convergence, _convergence_line, _convergence_rows

    def epoch(entropy: float, expected: float, argmax: float) -> dict:
        return {"entropy": entropy, "expected_cost": expected, "argmax_cost": argmax,
                "probabilities": [[1 / 9] * 9]}

    history = [epoch(2.0, 3.0, 3.0), epoch(0.5, 1.1, 1.2), epoch(0.4, 1.0, 1.0),
               epoch(0.22, 0.95, 0.9)]
    c = _convergence(history, target=1.0)
    assert c["entropy_share"] == pytest.approx(0.22 / math.log(9))
    assert c["expected_vs_target"] == pytest.approx([0.1, 0.0, -0.05])  # the last 3 only
    assert c["argmax_vs_target"] == pytest.approx(-0.1)
    assert "entropy 10% of its maximum" in _convergence_line(history, 1.0)
    assert "+10.0% / +0.0% / -5.0%" in _convergence_rows(c)
    assert _convergence_rows(None) == ""  # a summary written before the rows existed
