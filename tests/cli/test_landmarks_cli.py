"""The landmark flow from the command line (issue 18 item 6): search the PFLD supernet,
fine-tune the derived subnet from it, evaluate it (NME, failure rate, AUC, CED plot) and
export it to ONNX, on a tiny synthetic set."""

import json

from click.testing import CliRunner

from fbnas.cli.main import cli
from fbnas.tasks.landmarks.synthetic import make_landmark_set


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_search_finetune_eval_export(tmp_path):
    data = make_landmark_set(tmp_path / "set", 10, seed=3)
    search = tmp_path / "search"
    out = run("search", "dnas", "--task", "landmarks", "-d", data, "-o", search,
              "--epochs", 2, "--warmup-epochs", 1, "--batch-size", 4, "--mode",
              "single-path", "--no-tensorboard", "--device", "cpu")
    assert "derived block" in out and "val NME" in out
    arch = json.loads((search / "arch.json").read_text())
    assert arch["arch_def"]["family"] == "pfld" and len(arch["choices"]) == 5
    config = json.loads((search / "search_config.json").read_text())
    assert (config["alpha"], config["beta"], config["loss_form"]) == (0.25, 0.6, "mul")

    tuned = tmp_path / "tuned"
    out = run("train", search / "arch.json", "--task", "landmarks", "-d", data, "-o", tuned,
              "--init-from-supernet", search, "--epochs", 1, "--batch-size", 4,
              "--set", "warmup_epochs=0", "--no-tensorboard", "--device", "cpu")
    assert "started from the supernet's weights" in out and "best val nme" in out

    out = run("eval", "--ckpt", tuned / "best.pt", "-d", data, "--json")
    result = json.loads(out)
    assert {"nme", "failure_rate", "auc"} <= set(result["model"])
    assert (tuned / "best_ced.png").is_file()

    out = run("export", tuned / "best.pt", "-o", tmp_path / "subnet.onnx")
    assert "106 landmarks" in out and (tmp_path / "subnet.onnx").is_file()
