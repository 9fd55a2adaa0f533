"""``fbnas search dnas``: FBNetV1 differentiable architecture search."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from fbnas.cli.format import human, table
from fbnas.cli.launch import relaunch_under_torchrun
from fbnas.cli.width import search_width
from fbnas.cost.latency import DeviceInfo
from fbnas.cost.lut import BuildSettings, LatencyTable, measure_table
from fbnas.data import open_datasets
from fbnas.search import get_space
from fbnas.search.space import space_networks
from fbnas.train.distributed import (
    DistContext,
    barrier,
    init_distributed,
    resolve_device,
    shutdown_distributed,
)
from fbnas.train.memory import keep_freed_memory


@click.group()
def search() -> None:
    """Architecture search."""


UNDECIDED = 0.9
"""θ entropy above this share of its maximum at the end of a search: θ has not decided."""


class SearchProgress:
    """A tqdm bar per search phase, opened at the first batch (an input error raised before
    any training then prints no empty bar)."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, phase: str, done: int, total: int, info: dict) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="batch", dynamic_ncols=True, mininterval=0.5)
        bar = self.bar
        if bar.total != total or done == 1:
            bar.reset(total=total)
        bar.set_description(f"epoch {info['epoch']}/{info['epochs']} {phase}", refresh=False)
        bar.set_postfix_str(f"tau {info['tau']:.2f}", refresh=False)
        bar.update(done - bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def ensure_table(space_name: str, lut_path: Path | None, out: Path, resolution: int | None,
                 threads: int, num_classes: int = 1000) -> LatencyTable:
    """The given table, or one measured now over the space's candidates (saved in the run);
    ``num_classes`` sizes the classifier head, which is part of every network's cost."""
    if lut_path is not None:
        return LatencyTable.load(lut_path)
    path = out / "lut.json"
    space = get_space(space_name)
    device = DeviceInfo.current("torch", threads)
    table_ = LatencyTable.load(path, expect=device) if path.exists() else LatencyTable(device)
    nets, calibration = space_networks(space, resolution, 1, 5, num_classes)
    if not table_.missing(k for n in nets for k in n.keys) and table_.calibration:
        return table_
    click.echo(f"measuring a latency table for {space.name} on this machine -> {path}",
               err=True)
    measure_table(table_, nets, BuildSettings(threads=threads), path, calibration=calibration)
    return table_


def _shared_table(space_name: str, lut_path: Path | None, out: Path, resolution: int | None,
                  threads: int, cost: str, context: DistContext,
                  num_classes: int = 1000) -> LatencyTable | None:
    """The latency table, measured (when missing) by rank 0 alone while the others wait."""
    if cost != "latency":
        return None
    if context.is_main:
        out.mkdir(parents=True, exist_ok=True)
        table_ = ensure_table(space_name, lut_path, out, resolution, threads, num_classes)
    barrier(context)
    if not context.is_main:
        table_ = ensure_table(space_name, lut_path, out, resolution, threads,  # now saved
                              num_classes)
    return table_


@search.command("dnas")
@click.option("--space", "space_name", required=True,
              help="Search space: a name (fbnas space list) or a .json/.yaml space file "
                   "(fbnas space show NAME --json writes one to start from).")
@click.option("--data", "-d", "data_spec", required=True, help="Dataset spec, e.g. digits.")
@click.option("--lut", "lut_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Latency table (default: measured now into RUN/lut.json).")
@click.option("--cost", type=click.Choice(["latency", "macs", "params"]), default="latency",
              show_default=True)
@click.option("--target-ms", type=float, help="Pull the expected latency to this target.")
@click.option("--target-macs", type=float,
              help="Pull the expected MACs to this target (implies --cost macs).")
@click.option("--mode", type=click.Choice(["soft", "single-path"]), default="soft",
              show_default=True,
              help="soft: every candidate runs, Gumbel-softmax weighted; single-path: one "
                   "sampled candidate per layer and step (with --nproc every process runs "
                   "the same sampled path).")
@click.option("--epochs", type=click.IntRange(min=1), default=90, show_default=True)
@click.option("--warmup-epochs", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Global batch, split over the processes.")
@click.option("--loss", "loss_form", type=click.Choice(["mul", "log", "add"]), default="mul",
              show_default=True,
              help="With r = e * cost / cheapest network's cost: mul: CE * alpha * "
                   "log(r)^beta (the paper); log: alpha * CE * log(r^beta) (the public "
                   "CIFAR code); add: CE + alpha * (r/e)^beta (NNI).")
@click.option("--alpha", type=float, default=0.2, show_default=True)
@click.option("--beta", type=float, default=0.6, show_default=True)
@click.option("--tau-final", type=float,
              help="Anneal tau from 5 to this by the last epoch (default: x0.956 per epoch).")
@click.option("--alternate", type=click.Choice(["epoch", "step"]), default="epoch",
              show_default=True)
@click.option("--w-lr", type=click.FloatRange(min=0, min_open=True), default=0.1,
              show_default=True, help="SGD learning rate of the weights.")
@click.option("--theta-lr", type=click.FloatRange(min=0, min_open=True), default=0.01,
              show_default=True,
              help="Adam learning rate of theta (the paper's 0.01 suits ~90 epochs; short "
                   "searches need ~0.1-0.2 for theta to decide).")
@click.option("--target-band", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.05, show_default=True,
              help="With a target: derive the argmax if its cost is within this share of "
                   "the target, else the most probable architecture within it.")
@click.option("--resolution", "-r", type=click.IntRange(min=8),
              help="Input size (default: the space's).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads for latency measurement.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue RUN/last.pt.")
@click.option("--nproc", type=click.IntRange(min=1),
              help="Run N data-parallel processes on this machine (via torchrun; on CUDA "
                   "one GPU each).")
@click.option("--device", default="auto", show_default=True,
              help="auto (CUDA when present), cpu, cuda, cuda:1...")
@click.option("--amp", is_flag=True,
              help="bfloat16 autocast of the forward passes (CUDA only; ignored on the CPU).")
@click.option("--tensorboard/--no-tensorboard", default=True, show_default=True,
              help="Also write RUN/tensorboard/.")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run folder (RUN below).")
@click.pass_context
def search_dnas(ctx: click.Context, space_name: str, data_spec: str, lut_path: Path | None,
                cost: str, target_ms: float | None, target_macs: float | None, mode: str,
                epochs: int, warmup_epochs: int, batch_size: int, loss_form: str, alpha: float,
                beta: float, tau_final: float | None, alternate: str, w_lr: float,
                theta_lr: float, target_band: float, resolution: int | None,
                threads: int, seed: int, resume: bool, nproc: int | None, device: str,
                amp: bool, tensorboard: bool, out: Path) -> None:
    """Searches a space with FBNetV1's Gumbel-softmax supernet and a cost-aware loss.

    Writes RUN/metrics.jsonl (per epoch: losses, accuracy, tau, theta entropy, expected
    cost; also in RUN/tensorboard/), RUN/theta.json, RUN/last.pt (the previous one kept as
    RUN/last.prev.pt), RUN/best.pt (the epoch whose argmax path validated best), the plots
    RUN/theta.png (theta per layer over epochs) and RUN/curves.png (cost, accuracy, tau,
    entropy), and the derived RUN/arch.json plus architectures sampled from the final
    distribution under RUN/samples/ — arch files every other command accepts (fbnas train
    RUN/arch.json ..., fine-tuned from the supernet with --init-from-supernet RUN).

    Devices: --device auto searches on this machine's GPU when CUDA is present (--amp:
    bfloat16 autocast there); the architecture samples are drawn on the CPU, so a GPU
    search draws the same ones.

    Multi-process: --nproc N runs N processes here (gloo on the CPU, nccl on CUDA); or run
    `torchrun --nproc-per-node N -m fbnas search dnas ...`. Each process takes its slice of
    every global batch; weight and theta gradients are averaged over processes, so theta stays
    the same on all of them. All processes draw the same architecture sample at every step
    (in single-path mode: the same path) from a stream seeded alike, so the candidates off
    the path get no gradient on any process. Rank 0 alone writes RUN; --resume continues on
    any number of processes.
    """
    keep_freed_memory()  # steps reuse freed activation memory: fbnas.train.memory
    from fbnas.search.dnas.search import DNASConfig, run_search

    if nproc is not None and nproc > 1:
        relaunch_under_torchrun(ctx, ["search", "dnas"], nproc, None)
    if target_ms is not None and target_macs is not None:
        raise click.UsageError("give at most one of --target-ms and --target-macs")
    explicit_cost = ctx.get_parameter_source("cost") is not click.core.ParameterSource.DEFAULT
    if target_ms is not None and cost != "latency":
        raise click.UsageError("--target-ms needs --cost latency")
    if target_macs is not None:
        if explicit_cost and cost != "macs":
            raise click.UsageError("--target-macs needs --cost macs")
        cost = "macs"
    if (out / "last.pt").exists() and not resume:
        raise click.UsageError(f"{out} already holds a search (last.pt); pass --resume to "
                               f"continue it or choose another --out")
    target = target_ms if target_ms is not None else target_macs
    if warmup_epochs >= epochs:
        raise click.UsageError(f"--warmup-epochs {warmup_epochs} leaves no search epoch in "
                               f"--epochs {epochs}: give fewer warm-up epochs (default 10) or "
                               f"more epochs")
    try:
        config = DNASConfig(epochs=epochs, warmup_epochs=warmup_epochs,  # type: ignore
                            mode=mode, batch_size=batch_size, loss_form=loss_form,  # type: ignore
                            alpha=alpha, beta=beta, target=target, tau_final=tau_final,
                            alternate=alternate, cost=cost, resolution=resolution,  # type: ignore
                            seed=seed, w_lr=w_lr, theta_lr=theta_lr, target_band=target_band,
                            device=device, amp=amp, tensorboard=tensorboard)
    except ValueError as exc:  # a bad combination of options, named by the settings check
        raise click.UsageError(str(exc)) from None
    context = init_distributed(resolve_device(device, DistContext()).type)
    try:
        table_ = _shared_table(space_name, lut_path, out, resolution, threads, cost, context,
                               open_datasets(data_spec, resolution).num_classes)
        progress = SearchProgress() if context.is_main else None
        try:
            result = run_search(space_name, data_spec, config, out, table_, resume, progress,
                                context)
        finally:
            if progress is not None:
                progress.close()
    finally:
        shutdown_distributed()
    if not context.is_main:
        return
    from fbnas.search.dnas.report import plot_search_curves, plot_theta, read_candidates

    plot_theta(result.history, read_candidates(out), out / "theta.png", result.choices)
    plot_search_curves(result.history, out / "curves.png", target)
    last = result.history[-1]
    unit = "ms" if cost == "latency" else cost
    click.echo(f"searched {epochs} epochs: val top-1 of the argmax path {last['val_top1']:.1%}, "
               f"theta entropy {last['entropy']:.2f}, expected cost "
               f"{human(last['expected_cost'])} {unit}")
    rows = [[i, name] for i, name in enumerate(result.choice_names)]
    click.echo(table(["layer", "derived block"], rows, align_right=[True, False]))
    searched = result.supernet.space if result.supernet is not None else get_space(space_name)
    most = sum(math.log(len(layer.candidates)) for layer in searched.layers)
    most /= len(searched.layers)
    if last["entropy"] > UNDECIDED * most:
        click.echo(f"note: theta is still undecided (entropy {last['entropy']:.2f} of at most "
                   f"{most:.2f} nats): the derived architecture is little better than a "
                   f"random draw; search longer, or raise --theta-lr (0.1-0.2 for short "
                   f"searches)", err=True)
    record = json.loads((out / "arch.json").read_text())
    extra = f", predicted {record['predicted_ms']:.2f} ms" if "predicted_ms" in record else ""
    if record["derived"] != "argmax":
        extra += (f" — {record['derived']} (the plain argmax would cost "
                  f"{human(record['argmax_cost'])} {unit})")
    click.echo(f"\n{out / 'arch.json'}: {human(record['params'])} params, "
               f"{human(record['macs'])} MACs{extra}; {len(result.samples)} sampled "
               f"architectures in {out / 'samples'}/; plots {out / 'theta.png'}, "
               f"{out / 'curves.png'}")


search.add_command(search_width)
