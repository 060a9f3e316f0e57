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

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's command list, written from `SUMMARIES`: `lookalike --help` imports no command
        module (they bring torch, scikit-learn, pyarrow: seconds)."""
        listed = [(name, self.listed_command(ctx, name)) for name in self.list_commands(ctx)]
        listed = [(name, command) for name, command in listed if command and not command.hidden]
        if not listed:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in listed)
        with formatter.section("Commands"):
            formatter.write_dl(
                [(name, command.get_short_help_str(limit)) for name, command in listed]
            )

    def listed_command(self, ctx: click.Context, name: str) -> click.Command | None:
        """The command if it is loaded, else a stand-in carrying its summary (the command itself
        when it has none)."""
        if name in self.commands or name not in SUMMARIES:
            return self.get_command(ctx, name)
        return click.Command(name, help=SUMMARIES[name])


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


# Each command's first sentence, for `lookalike --help` without importing its module;
# tests/test_cli_startup.py checks each against the command's own help.
SUMMARIES = {
    "advise": "Recommend head, partial, gradual or full fine-tuning for a labelled dataset, and why.",
    "audit": "Audit a collection: likely label errors (cleanlab on cross-validated probabilities), outliers (mean distance to the k nearest items) and near-duplicates across splits.",
    "backbones": "List backbone names (hub:<repo>:<entry> and checkpoint files work too).",
    "classifiers": "List the classifiers saved in a collection.",
    "dedup": "Find every pair of near-duplicate items and group them into clusters.",
    "demo": "Embed a small real image set (digits, photos); search it; train and use a digit classifier.",
    "distill": "Train --student to reproduce --teacher's embeddings of the images in --data; report its recall@10 of the teacher's neighbours on held-out images and its speed against the teacher.",
    "embed": "Bring a collection in step with the images under IMAGES (folders, image files, or listings: .csv or .parquet files with a 'path' column and an optional 'label'): new and changed files embedded, with --prune files gone removed; resumable, and a second run into the same collection waits for the first.",
    "finetune": "Fine-tune a backbone on labelled images; the best epoch becomes an embedder.",
    "index": "Build, update, evaluate and describe a collection's FAISS index; push it to Milvus.",
    "info": "Describe a collection: its embedder spec, size, labels, splits and failures.",
    "layers": "List the hookable layers of BACKBONE with their output shapes for one image.",
    "map": "Lay out the collection in 2-D (PCA, then UMAP with a fixed seed) and draw it.",
    "predict": "Class probabilities and labelled neighbours for IMAGES (new files) and/or --id items.",
    "probe": "Rank layers and poolings by how well a linear probe (and kNN) separates the labels.",
    "remove": "Remove items (by id, and/or --missing) from a collection; its saved index follows.",
    "search": "Find the items most like IMAGES (files) and/or stored items (--id).",
    "serve": "Serve COLLECTIONS (DIR or NAME=DIR) over HTTP with gunicorn; settings also from LOOKALIKE_*.",
    "train": "Train a classifier on the collection's cached embeddings (the backbone never runs).",
}


def _command(name: str) -> click.Command:
    module = importlib.import_module(f"lookalike.cli.{COMMANDS[name]}")
    return getattr(module, name)
