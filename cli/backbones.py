"""`lookalike layers` and `lookalike backbones`: what can be built and hooked."""

from __future__ import annotations

import fnmatch

import click

from lookalike.cli.options import weights_value
from lookalike.embedder.registry import SOURCES


@click.command()
@click.argument("backbone", default="default")
@click.option(
    "--weights",
    default="none",
    show_default=True,
    help="Weights to build with (shapes do not depend on them).",
)
@click.option(
    "--image-size",
    type=click.IntRange(min=1),
    help="Input size (default: the weights' crop size).",
)
@click.option(
    "--filter", "pattern", help="Only layers matching this glob, e.g. 'layer*' or 'blocks.*'."
)
def layers(backbone, weights, image_size, pattern) -> None:
    """List the hookable layers of BACKBONE with their output shapes for one image."""
    from lookalike.embedder import list_layers

    rows = list_layers(backbone, weights=weights_value(weights), image_size=image_size)
    rows = [r for r in rows if not pattern or fnmatch.fnmatch(r[0], pattern)]
    width = max((len(name) for name, _, _ in rows), default=10)
    click.echo(f"{'layer':<{width}}  {'type':<24}  output shape")
    click.echo(f"{'embedding':<{width}}  {'(model output, no head)':<24}  (pooled to a vector)")
    for name, kind, shape in rows:
        click.echo(f"{name:<{width}}  {kind:<24}  {tuple(shape)}")


@click.command()
@click.option("--source", type=click.Choice(SOURCES), help="Only this source's names.")
@click.option("--filter", "pattern", help="Glob on names, e.g. 'resnet*' or 'timm:vit_*'.")
def backbones(source, pattern) -> None:
    """List backbone names (hub:<repo>:<entry> and checkpoint files work too)."""
    from lookalike.embedder import list_backbones

    for name in list_backbones(source):
        if not pattern or fnmatch.fnmatch(name, pattern):
            click.echo(name)
