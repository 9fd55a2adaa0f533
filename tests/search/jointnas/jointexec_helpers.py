"""Tiny JointNAS candidates for the executor and store tests (a second each on one core)."""

from __future__ import annotations

import os
from pathlib import Path

from fbnas.search.jointnas.candidate import CandidateJob, CandidateResult

TINY_ARCH = {
    "input_size": 16,
    "basic_args": {"width_divisor": 8},
    "blocks": [
        [("conv_k3_hs", 8, 2, 1)],
        [("ir_k3", 8, 1, 1, {"expansion": 2})],
        [("ir_k3_se", 16, 2, 1, {"expansion": 2})],
    ],
}

BROKEN_ARCH = {"blocks": [[("conv_k3_hs", 8, 2, 1)], [("ir_k9_nope", 16, 1, 1)]]}
"""An arch def the builder refuses (unknown op)."""

DATA = "digits?per_class=10&val_per_class=10"

RECIPE = {"epochs": 2, "batch_size": 32, "optimizer": "sgd", "lr": 0.1, "weight_decay": 1e-4,
          "label_smoothing": 0.0, "random_crop": False, "resolution": 16, "workers": 0,
          "amp": False, "channels_last": False}


def tiny_job(seed: int = 0, tag: str = "", **recipe: object) -> CandidateJob:
    """A 2-epoch candidate on 100 digits at 16x16."""
    return CandidateJob(arch_def=TINY_ARCH, recipe={**RECIPE, **recipe}, data=DATA, seed=seed,
                        tag=tag)


def broken_job() -> CandidateJob:
    return CandidateJob(arch_def=BROKEN_ARCH, recipe=RECIPE, data=DATA, tag="broken")


def nan_job() -> CandidateJob:
    """A recipe whose huge learning rate makes the loss NaN within the first epoch."""
    return tiny_job(tag="nan", lr=1e30)


def fake_result(job: CandidateJob, accuracy: float = 0.5) -> CandidateResult:
    """A result without training, for store tests (the store does not care who trained)."""
    return CandidateResult(key=job.key, status="ok", accuracy=accuracy, error=None,
                           seconds=0.1, metrics={"val_top1": [accuracy]})


def process_children(pid: int | None = None) -> list[tuple[int, str]]:
    """(pid, command line) of every live descendant of ``pid`` (default: this process),
    from /proc. Zombies (exited, not yet reaped) and multiprocessing's own services do not
    count: the resource tracker and the forkserver itself (one per process that used them,
    idle, ending with it); the workers the forkserver forked do count (they carry its
    command line too, so they are told apart by their parent)."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat[stat.rindex(")") + 2:].split()[:2]
        table[int(entry.name)] = (int(ppid), state)
    found, todo = [], [(pid or os.getpid(), "")]
    while todo:
        parent, parent_text = todo.pop()
        for child, (ppid, state) in table.items():
            if ppid != parent:
                continue
            try:
                command = (Path("/proc") / str(child) / "cmdline").read_bytes()
            except OSError:
                continue
            text = command.replace(b"\0", b" ").decode(errors="replace").strip()
            todo.append((child, text))
            service = "multiprocessing.resource_tracker" in text or (
                "multiprocessing.forkserver" in text
                and "multiprocessing.forkserver" not in parent_text)
            if state != "Z" and not service:
                found.append((child, text))
    return found
