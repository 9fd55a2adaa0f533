"""``fbnas`` command-line entry point: subcommands live in their own modules."""

from __future__ import annotations

import logging
import sys

import click

from fbnas.cli.data_landmarks import data
from fbnas.cli.demo import demo
from fbnas.cli.export import export
from fbnas.cli.info import info
from fbnas.cli.lut import latency, lut
from fbnas.cli.search import search
from fbnas.cli.space import space
from fbnas.cli.train import eval_command, train
from fbnas.cli.zoo import ops, zoo
from fbnas.errors import FbnasError
from fbnas.version import __version__

USER_ERRORS = (FbnasError, FileNotFoundError)
"""Errors caused by the user's input: printed as one line, exit status 2, no traceback.
Every fbnas error derives from :class:`fbnas.errors.FbnasError`."""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fbnas")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """fbnas: hardware-aware architecture search of efficient ConvNets (FBNet family)."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


cli.add_command(demo)
cli.add_command(zoo)
cli.add_command(info)
cli.add_command(ops)
cli.add_command(space)
cli.add_command(lut)
cli.add_command(latency)
cli.add_command(search)
cli.add_command(export)
cli.add_command(train)
cli.add_command(eval_command)
cli.add_command(data)


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI; user errors print ``error: ...`` and return 2."""
    try:
        # Outside standalone mode click returns a ``ctx.exit(code)`` as the result instead
        # of raising: that is how ``--nproc`` hands on the exit status of its torchrun job.
        code = cli.main(args=argv, prog_name="fbnas", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except USER_ERRORS as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
