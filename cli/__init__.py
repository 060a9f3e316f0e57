"""The `lookalike` command line: one module per command group; parsing, calling and printing
only, the work is in the library."""

from __future__ import annotations

import errno
import importlib
import logging
import select
import sys
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
            if ctx.params.get("verbose") or stdout_closed(error):
                raise  # click ends a run whose reader left (`| head`) quietly, as Unix tools do
                raise
            if isinstance(error, USER_ERRORS):
                raise click.ClickException(str(error)) from error
            raise click.ClickException(
                f"internal error: {type(error).__name__}: {error}. This is a bug: rerun with -v "
                "for the traceback, and report it"
            ) from error

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMANDS:
            self.add_command(_command(name), name)
        return self.commands.get(name)


def stdout_closed(error: Exception) -> bool:
    """Whether `error` is a write to a standard output whose reader has gone (a pipe to `head`
    that closed), not a broken connection of the library's own."""
    if not isinstance(error, OSError) or error.errno != errno.EPIPE:
        return False
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll(), or no real file behind stdout
        return True


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


# Each command's module, imported only when the command runs (or `--help` lists it): a command
# that needs no torch (`index build`, `info`) never imports it, so its memory is its own work's.
COMMANDS = {
    "embed": "embed",
    "layers": "backbones",
    "backbones": "backbones",
    "info": "collection",
    "remove": "collection",
    "index": "index",
    "search": "search",
    "dedup": "search",
    "demo": "demo",
    "train": "classify",
    "predict": "classify",
    "probe": "classify",
    "classifiers": "classify",
    "serve": "serve",
    "finetune": "finetune",
    "advise": "finetune",
    "distill": "distill",
    "audit": "audit",
    "map": "map",
}


def _command(name: str) -> click.Command:
    module = importlib.import_module(f"lookalike.cli.{COMMANDS[name]}")
    return getattr(module, name)
