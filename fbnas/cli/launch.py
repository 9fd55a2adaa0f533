"""``--nproc N``: re-running a command under torchrun, shared by ``train`` and ``search``.

A command given ``--nproc N`` does no work itself: it re-runs the same command line (its
options as the user typed them, minus ``--nproc``) as N processes through ``torchrun
--standalone`` and exits with their status. Inside, each process joins the group with
:func:`fbnas.train.distributed.init_distributed`, exactly as under a hand-written torchrun.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

import click

from fbnas.train.distributed import launched_by_torchrun, torchrun_command


def forwarded_args(ctx: click.Context) -> list[str]:
    """This command's arguments as given on the command line, minus ``--nproc``."""
    args: list[str] = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name)  # type: ignore[arg-type]
        source = ctx.get_parameter_source(param.name)  # type: ignore[arg-type]
        if param.name == "nproc" or source is not click.core.ParameterSource.COMMANDLINE:
            continue
        if isinstance(param, click.Argument):
            args.append(str(value))
            continue
        assert isinstance(param, click.Option)
        flag = max(param.opts, key=len)
        if param.is_flag:
            if param.secondary_opts and not value:
                args.append(max(param.secondary_opts, key=len))
            elif value:
                args.append(flag)
        elif param.multiple:
            for item in value:
                args += [flag, str(item)]
        else:
            args += [flag, str(value)]
    return args


def relaunch_under_torchrun(ctx: click.Context, command: Sequence[str], nproc: int,
                            threads: int | None) -> None:
    """Runs ``fbnas COMMAND ...`` (this command's own arguments) in ``nproc`` processes; exits.

    Without ``threads`` and without ``OMP_NUM_THREADS`` set, each process gets an equal share
    of the machine's cores, so N processes do not oversubscribe it N times.

    Raises:
        click.UsageError: already inside a torchrun job.
    """
    if launched_by_torchrun():
        raise click.UsageError("--nproc inside a torchrun job: drop one of the two")
    env = dict(os.environ)
    if threads is None and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    ctx.exit(subprocess.call(torchrun_command(nproc, [*command, *forwarded_args(ctx)]),
                             env=env))
