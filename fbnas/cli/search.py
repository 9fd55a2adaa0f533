"""``fbnas search dnas``: FBNetV1 differentiable architecture search."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from fbnas.cli.format import human, table
from fbnas.cli.launch import relaunch_under_torchrun
from fbnas.cli.search_dmasking import search_dmasking
from fbnas.cli.width import search_width
from fbnas.cost.latency import DeviceInfo
from fbnas.cost.lut import BuildSettings, LatencyTable, measure_table
from fbnas.data import open_datasets
from fbnas.errors import ConfigError
from fbnas.search import get_space
from fbnas.search.dnas.search import (
    COST_KINDS,
    DNASConfig,
    builtin_search_configs,
    load_search_config,
    run_search,
)
from fbnas.search.dnas.supernet import MODES
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


def _say_model_share(table_: LatencyTable, space_name: str, resolution: int | None,
                     num_classes: int) -> None:
    """Says how many of the space's candidate blocks the block latency model prices (the
    table answers the others), so a search on predicted latencies is never silent."""
    if table_.model is None:
        return
    nets, _ = space_networks(get_space(space_name), resolution, 1, 0, num_classes)
    keys = list(dict.fromkeys(k for n in nets for k in n.keys))
    modelled = [k for k in table_.unmeasured(keys) if k not in table_.missing([k])]
    if modelled:
        click.echo(f"latency costs: {len(modelled)} of {len(keys)} distinct blocks of the "
                   f"space predicted by the block latency model, the rest measured",
                   err=True)


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


DEFAULTS = DNASConfig()
"""The defaults every setting option shows and falls back to: :class:`DNASConfig`'s."""


def _setting(decls: tuple[str, ...], field: str, **kwargs: Any) -> Callable:
    """A click option for the :class:`DNASConfig` field ``field``: its default (shown in
    --help) is the field's; given on the command line it overrides --config and --set."""
    return click.option(*decls, field, default=getattr(DEFAULTS, field), show_default=True,
                        **kwargs)


SETTING_OPTIONS = (
    _setting(("--cost",), "cost", type=click.Choice(COST_KINDS)),
    _setting(("--mode",), "mode", type=click.Choice(MODES),
             help="soft: every candidate runs, Gumbel-softmax weighted; single-path: one "
                  "sampled candidate per layer and step (with --nproc every process runs "
                  "the same sampled path)."),
    _setting(("--epochs",), "epochs", type=click.IntRange(min=1)),
    _setting(("--warmup-epochs",), "warmup_epochs", type=click.IntRange(min=0)),
    _setting(("--batch-size",), "batch_size", type=click.IntRange(min=1),
             help="Global batch, split over the processes."),
    _setting(("--loss",), "loss_form", type=click.Choice(["mul", "log", "add"]),
             help="With r = e * cost / cheapest network's cost: mul: CE * alpha * "
                  "log(r)^beta (the paper); log: alpha * CE * log(r^beta) (the public "
                  "CIFAR code); add: CE + alpha * (r/e)^beta (NNI)."),
    _setting(("--alpha",), "alpha", type=float),
    _setting(("--beta",), "beta", type=float),
    _setting(("--tau-final",), "tau_final", type=click.FloatRange(min=0, min_open=True),
             help="Anneal tau from tau0 to this by the last epoch (unset: x tau_decay per "
                  "search epoch)."),
    _setting(("--alternate",), "alternate", type=click.Choice(["epoch", "step"])),
    _setting(("--w-lr",), "w_lr", type=click.FloatRange(min=0, min_open=True),
             help="SGD learning rate of the weights."),
    _setting(("--theta-lr",), "theta_lr", type=click.FloatRange(min=0, min_open=True),
             help="Learning rate of theta (the paper's 0.01 suits ~90 epochs; --config "
                  "demo has the settings of a short search)."),
    _setting(("--target-band",), "target_band",
             type=click.FloatRange(0, 1, min_open=True, max_open=True),
             help="With a target: derive the argmax if its cost is within this share of "
                  "the target, else the most probable architecture within it."),
    _setting(("--resolution", "-r"), "resolution", type=click.IntRange(min=8),
             help="Input size (default: the space's)."),
    _setting(("--seed",), "seed", type=int),
    _setting(("--device",), "device", help="auto (CUDA when present), cpu, cuda, cuda:1..."),
    _setting(("--amp",), "amp", is_flag=True,
             help="bfloat16 autocast of the forward passes (CUDA only; ignored on the CPU)."),
    _setting(("--tensorboard/--no-tensorboard",), "tensorboard",
             help="Also write RUN/tensorboard/."),
)


def setting_options(command: Callable) -> Callable:
    """Adds :data:`SETTING_OPTIONS` to a click command (in their order in --help)."""
    for option in reversed(SETTING_OPTIONS):
        command = option(command)
    return command


def resolve_config(ctx: click.Context, source: str | None, assignments: Sequence[str],
                   settings: dict[str, Any], target_ms: float | None,
                   target_macs: float | None) -> DNASConfig:
    """The search settings: --config (a file or a built-in name; else the defaults), then
    --set KEY=VALUE, then the options given on the command line, then the target.

    Raises:
        click.UsageError: a bad combination of options, or bad settings (named).
    """
    given = {name: value for name, value in settings.items()
             if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT}
    if target_ms is not None and target_macs is not None:
        raise click.UsageError("give at most one of --target-ms and --target-macs")
    try:
        base = load_search_config(source).with_overrides(assignments)
        merged = {**base.to_dict(), **given}
        if target_ms is not None:
            if merged["cost"] != "latency":
                raise click.UsageError("--target-ms needs --cost latency")
            merged["target"] = target_ms
        if target_macs is not None:
            if "cost" in given and given["cost"] != "macs":
                raise click.UsageError("--target-macs needs --cost macs")
            merged.update(target=target_macs, cost="macs")
        if merged["warmup_epochs"] >= merged["epochs"]:
            raise click.UsageError(
                f"--warmup-epochs {merged['warmup_epochs']} leaves no search epoch in "
                f"--epochs {merged['epochs']}: give fewer warm-up epochs (default "
                f"{DEFAULTS.warmup_epochs}) or more epochs")
        return DNASConfig.from_dict(merged, "search settings")
    except ConfigError as exc:  # names the file or option and the key
        raise click.UsageError(str(exc)) from None


@search.command("dnas")
@click.option("--space", "space_name",
              help="Search space: a name (fbnas space list) or a .json/.yaml space file "
                   "(fbnas space show NAME --json writes one to start from); with --task "
                   "landmarks the PFLD supernet's pfld space.")
@click.option("--task", "task_name", type=click.Choice(["classification", "landmarks"]),
              default="classification", show_default=True,
              help="landmarks: search the PFLD supernet (seed 004) on --data, a folder with "
                   "train_data/ and test_data/; settings default to --config pfld.")
@click.option("--data", "-d", "data_spec", required=True, help="Dataset spec, e.g. digits.")
@click.option("--config", "-c", "config_source", metavar="FILE|NAME",
              help=f"Search settings: a YAML/JSON file with any DNASConfig keys, or a "
                   f"built-in config ({', '.join(builtin_search_configs())}). Unset keys "
                   f"keep the defaults shown below.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Override one setting (repeatable), e.g. --set tau0=3 --set topk=[1,3].")
@click.option("--lut", "lut_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Latency table (default: measured now into RUN/lut.json).")
@click.option("--target-ms", type=float, help="Pull the expected latency to this target.")
@click.option("--target-macs", type=float,
              help="Pull the expected MACs to this target (implies --cost macs).")
@setting_options
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads for latency measurement.")
@click.option("--resume", is_flag=True, help="Continue RUN/last.pt.")
@click.option("--nproc", type=click.IntRange(min=1),
              help="Run N data-parallel processes on this machine (via torchrun; on CUDA "
                   "one GPU each).")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run folder (RUN below).")
@click.pass_context
def search_dnas(ctx: click.Context, space_name: str, data_spec: str, config_source: str | None,
                assignments: tuple[str, ...], lut_path: Path | None, target_ms: float | None,
                target_macs: float | None, threads: int, resume: bool, nproc: int | None,
                out: Path, task_name: str = "classification", **settings: Any) -> None:
    """Searches a space with FBNetV1's Gumbel-softmax supernet and a cost-aware loss.

    Settings: --config (a file or a built-in name: paper, the FBNetV1 paper's schedule;
    demo, a short search that converges on digits), then --set KEY=VALUE, then the options
    below; every other setting keeps DNASConfig's default (shown). The resolved settings
    are saved in RUN/search_config.json.

    Writes RUN/metrics.jsonl (per epoch and pass: the search loss, the task loss, the cost
    term and the target pull; accuracy (top-k of the config's topk), tau, theta entropy,
    expected cost; also in RUN/tensorboard/), RUN/theta.json, RUN/last.pt (the previous
    one kept as RUN/last.prev.pt), RUN/best.pt (the epoch whose argmax path validated
    best), the plots RUN/theta.png (theta per layer over epochs) and RUN/curves.png (cost,
    accuracy, tau, entropy), and the derived RUN/arch.json plus architectures sampled from
    the final distribution under RUN/samples/ — arch files every other command accepts
    (fbnas train RUN/arch.json ..., fine-tuned from the supernet with --init-from-supernet
    RUN).

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
    if nproc is not None and nproc > 1:
        relaunch_under_torchrun(ctx, ["search", "dnas"], nproc, None)
    if (out / "last.pt").exists() and not resume:
        raise click.UsageError(f"{out} already holds a search (last.pt); pass --resume to "
                               f"continue it or choose another --out")
    if task_name == "landmarks":
        if space_name not in (None, "pfld"):
            raise click.UsageError(f"--task landmarks searches the pfld space, not "
                                   f"{space_name!r}")
        config_source = config_source or "pfld"
    elif space_name is None:
        raise click.UsageError("--space is required (unless --task landmarks)")
    config = resolve_config(ctx, config_source, assignments, settings, target_ms, target_macs)
    cost, resolution, target = config.cost, config.resolution, config.target
    context = init_distributed(resolve_device(config.device, DistContext()).type)
    if task_name == "landmarks":
        from fbnas.cli.landmarks import search_landmarks

        try:
            search_landmarks(data_spec, config, out, lut_path, threads, resume, context,
                             SearchProgress() if context.is_main else None)
        finally:
            shutdown_distributed()
        return
    try:
        num_classes = open_datasets(data_spec, resolution).num_classes
        table_ = _shared_table(space_name, lut_path, out, resolution, threads, cost, context,
                               num_classes)
        if table_ is not None and context.is_main:
            _say_model_share(table_, space_name, resolution, num_classes)
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
    click.echo(f"searched {config.epochs} epochs: val top-1 of the argmax path "
               f"{last['val_top1']:.1%}, theta entropy {last['entropy']:.2f}, expected cost "
               f"{human(last['expected_cost'])} {unit}")
    rows = [[i, name] for i, name in enumerate(result.choice_names)]
    click.echo(table(["layer", "derived block"], rows, align_right=[True, False]))
    searched = result.supernet.space if result.supernet is not None else get_space(space_name)
    most = sum(math.log(len(layer.candidates)) for layer in searched.layers)
    most /= len(searched.layers)
    if last["entropy"] > UNDECIDED * most:
        click.echo(f"note: theta is still undecided (entropy {last['entropy']:.2f} of at most "
                   f"{most:.2f} nats): the derived architecture is little better than a "
                   f"random draw; search longer, or see --config demo for the settings of "
                   f"a short search", err=True)
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
search.add_command(search_dmasking)
