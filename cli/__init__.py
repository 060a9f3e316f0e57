"""The `lookalike` command line: one module per command group; parsing, calling and printing
only, the work is in the library."""

from __future__ import annotations

import logging
from typing import Any

import click

from lookalike import __version__
from lookalike.errors import LookalikeError

# Errors of the user's input or environment: one line. Anything else is a bug: a hint to rerun
# with -v for the traceback.
USER_ERRORS = (LookalikeError, OSError)


class LookalikeGroup(click.Group):
    """The library's errors (and the file system's) as one-line messages; a traceback with -v."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as error:
            if ctx.params.get("verbose"):
                raise
            if isinstance(error, USER_ERRORS):
                raise click.ClickException(str(error)) from error
            raise click.ClickException(
                f"internal error: {type(error).__name__}: {error}. This is a bug: rerun with -v "
                "for the traceback, and report it"
            ) from error


@click.group(cls=LookalikeGroup)
@click.version_option(__version__, prog_name="lookalike")
@click.option(
    "-v", "--verbose", count=True, help="More logging (-v: info, -vv: debug); tracebacks."
)
def main(verbose: int) -> None:
    """Embed images with a frozen pretrained backbone; search and classify the cached features."""
    logging.basicConfig(
        level=max(logging.DEBUG, logging.WARNING - 10 * verbose),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _register_commands() -> None:
    from lookalike.cli.backbones import backbones, layers
    from lookalike.cli.classify import classifiers, predict, probe, train
    from lookalike.cli.collection import info, remove
    from lookalike.cli.demo import demo
    from lookalike.cli.distill import distill
    from lookalike.cli.embed import embed
    from lookalike.cli.finetune import advise, finetune
    from lookalike.cli.index import index
    from lookalike.cli.map import map_command
    from lookalike.cli.search import dedup, search
    from lookalike.cli.serve import serve

    commands = (embed, layers, backbones, info, remove, index, search, dedup, demo)
    commands += (train, predict, probe, classifiers, serve, finetune, advise, distill, map_command)
    for command in commands:
        main.add_command(command)


_register_commands()
