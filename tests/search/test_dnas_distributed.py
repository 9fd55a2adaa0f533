"""DNAS search on two real gloo processes (torchrun): shared θ, one-process equivalence, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

# argv[1]: a JSON list of jobs run one after the other in one process group. An "api" job
# calls run_search (optionally crashing at the first step of epoch "stop" on every rank); a
# "cli" job runs `fbnas search dnas ARGS` in this process, as torchrun would start it (it
# leaves the group, so it comes last). Every rank saves its final θ and weights to
# DUMP_rank{r}.pt: only the test writes per-rank files, the search does not.
SCRIPT = """
import json
import sys
import torch
import fbnas.search.dnas.search as dnas
from fbnas.arch.spec import FrozenKwargs
import fbnas.cli.search as cli_search
from fbnas.cli.main import main
from fbnas.search.space import SPACES, Candidate, LayerChoice, SearchSpace
from fbnas.train.distributed import init_distributed

candidates = (Candidate("e1", "ir_k3", {"expansion": 1}), Candidate("e3", "ir_k5",
              {"expansion": 3}), Candidate("skip", "skip"))
for bn in (True, False):
    # No skip where the width changes: its 1x1 projection has batch norm even when the
    # network's bn_args is None.
    space = SearchSpace("tiny_ddp" + ("_bn" if bn else ""), 16,
                        prefix=((("conv_k3", 8, 2, 1),),),
                        layers=(LayerChoice(1, 8, 1, candidates),
                                LayerChoice(1, 16, 2, candidates[:2]),
                                LayerChoice(2, 16, 1, candidates)), suffix=(),
                        basic_args=FrozenKwargs({} if bn else {"bn_args": None}))
    SPACES[space.name] = space
config = dnas.DNASConfig(epochs=3, warmup_epochs=1, cost="macs", tau_final=0.5,
                         batch_size=16, mode="soft", resolution=16, alternate="step")
search = dnas.run_search
dump = None


def run_and_dump(*args, **kwargs):
    result = search(*args, **kwargs)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    torch.save({"theta": result.supernet.theta.detach().clone(),
                "weights": result.supernet.state_dict(), "choices": result.choices},
               f"{dump}_rank{rank}.pt")
    return result


dnas.run_search = run_and_dump
cli_search.run_search = run_and_dump  # the CLI calls the name it imported
for job in json.loads(sys.argv[1]):
    dump = job["dump"]
    if "cli" in job:
        sys.exit(main(["search", "dnas", *job["cli"]]))

    def crash(phase, step, total, info):
        if info["epoch"] == job.get("stop"):
            raise RuntimeError("planned crash")

    dnas.run_search("tiny_ddp", "digits?per_class=8", config, job["out"],
                    resume=job.get("resume", False), progress=crash,
                    context=init_distributed("cpu"))
"""

CLI_ARGS = ["--space", "tiny_ddp_bn", "--data", "digits?per_class=8", "--cost", "macs",
            "--mode", "single-path", "--epochs", "3", "--warmup-epochs", "1", "--batch-size",
            "16", "--resolution", "16", "--tau-final", "0.5", "--device", "cpu"]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _launch(script: Path, nproc: int, jobs: list[dict]) -> subprocess.CompletedProcess:
    launcher = [sys.executable] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={nproc}"]
    return subprocess.run([*launcher, str(script), json.dumps(jobs)], env=_env(),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three launches (the test's cost is mostly process start-up):

    1. one process: a BN-free soft search (``one``);
    2. two processes: the same search, crashed at the first step of epoch 3 (``two``);
    3. two processes: ``two`` resumed, then ``fbnas search dnas`` single-path with batch
       norm (``sp``).
    """
    root = tmp_path_factory.mktemp("ddp")
    script = root / "search.py"
    script.write_text(SCRIPT)
    done = _launch(script, 1, [{"out": str(root / "one"), "dump": str(root / "one")}])
    assert done.returncode == 0, done.stderr[-3000:]
    crashed = _launch(script, 2, [{"out": str(root / "two"), "stop": 3,
                                   "dump": str(root / "crashed")}])
    assert crashed.returncode != 0 and "planned crash" in crashed.stderr, \
        crashed.stderr[-3000:]
    assert json.loads((root / "two" / "theta.json").read_text())["epoch"] == 1  # 2 saved
    assert not list(root.glob("crashed_rank*"))
    done = _launch(script, 2, [
        {"out": str(root / "two"), "resume": True, "dump": str(root / "two")},
        {"cli": [*CLI_ARGS, "--out", str(root / "sp")], "dump": str(root / "sp")}])
    assert done.returncode == 0, done.stderr[-3000:]
    (root / "stdout.txt").write_text(done.stdout)
    return root


def _ranks(dump: Path, nproc: int) -> list[dict]:
    return [torch.load(f"{dump}_rank{r}.pt", weights_only=True) for r in range(nproc)]


def _assert_ranks_identical(ranks: list[dict]) -> None:
    first = ranks[0]
    for other in ranks[1:]:
        assert torch.equal(other["theta"], first["theta"])
        assert other["choices"] == first["choices"]
        for key, value in first["weights"].items():
            assert torch.equal(other["weights"][key], value), key


def test_two_processes_match_one_on_the_same_global_batch_after_a_resume(runs: Path) -> None:
    """BN-free soft search: identical ranks, equal to one process up to summation order.

    Without batch norm the loss of a global batch is the share-weighted sum of the ranks'
    losses, so the reduced gradients are one process's; the resumed run continues with the
    checkpointed optimisers and sampling stream.
    """
    two = _ranks(runs / "two", 2)
    _assert_ranks_identical(two)
    (one,) = _ranks(runs / "one", 1)
    assert two[0]["theta"].abs().max() > 1e-3  # θ was trained
    torch.testing.assert_close(two[0]["theta"], one["theta"], rtol=1e-5, atol=1e-6)
    for key, value in one["weights"].items():
        torch.testing.assert_close(two[0]["weights"][key], value, rtol=1e-5, atol=1e-6)
    assert two[0]["choices"] == one["choices"]
    lines = [json.loads(x) for x in (runs / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2, 3]  # rank 0 alone; the crash left no repeat
    single = [json.loads(x) for x in (runs / "one" / "metrics.jsonl").read_text()
              .splitlines()]
    for a, b in zip(lines, single, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_top1"] == b["val_top1"]  # the validation shards add up to the whole
    config = json.loads((runs / "two" / "search_config.json").read_text())
    assert config["world_size"] == 2 and config["num_classes"] == 10


def test_single_path_ranks_share_the_path_with_batch_norm(runs: Path) -> None:
    """``fbnas search dnas --mode single-path`` under torchrun, with batch norm.

    Each rank normalises its half batch with its own statistics (no SyncBN on CPU), so the
    run is not expected to equal one process; what holds is that the ranks stay identical
    (θ, weights, BN running statistics). Every rank runs the same sampled path, so all
    reduce the gradients of the same candidates.
    """
    ranks = _ranks(runs / "sp", 2)
    _assert_ranks_identical(ranks)
    assert ranks[0]["theta"].abs().max() > 1e-3
    running = [k for k in ranks[0]["weights"] if k.endswith("running_mean")]
    assert running and any(ranks[0]["weights"][k].abs().sum() > 0 for k in running)
    run = runs / "sp"
    assert sorted(p.name for p in run.iterdir()) == [
        "arch.json", "best.pt", "curves.png", "last.prev.pt", "last.pt", "metrics.jsonl",
        "samples", "search_config.json", "tensorboard", "theta.json", "theta.png"]
    assert (runs / "stdout.txt").read_text().count("searched 3 epochs") == 1  # rank 0 only
    record = json.loads((run / "arch.json").read_text())
    assert [["e1", "e3", "skip"].index(n) for n in record["choices"]] == ranks[0]["choices"]
