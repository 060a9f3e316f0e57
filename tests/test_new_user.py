"""What a new user runs into (issue 27, round 3): the train/test folder trap, advice that leads
somewhere, labels that print safely, listings that add up, and a CLI that stops quietly."""

from __future__ import annotations

import os
import subprocess
import sys

from click.testing import CliRunner

from lookalike.cli import main


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_a_closed_stdout_ends_the_cli_quietly(synthetic) -> None:
    """`lookalike info -c X | head`: head gone, the CLI stops without a word on stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has left before the first line is written
    try:
        finished = subprocess.run(
            [sys.executable, "-m", "lookalike", "info", "-c", str(synthetic.path)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert finished.stderr.decode() == ""
    assert finished.returncode != 0
