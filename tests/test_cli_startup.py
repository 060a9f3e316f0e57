"""`lookalike --help` starts fast: the command list comes from `SUMMARIES`, so no command module
(and none of torch, FAISS, scikit-learn, Flask, pyarrow behind them) is imported. A property of
what is imported, not a timing, so it cannot flake on a busy machine."""

from __future__ import annotations

import json
import subprocess
import sys

import click

from lookalike.cli import COMMANDS, SUMMARIES, main

HEAVY = ("torch", "torchvision", "timm", "faiss", "sklearn", "scipy", "flask", "pyarrow", "numpy",
         "PIL", "umap", "matplotlib", "onnxruntime", "cleanlab", "pandas")  # fmt: skip

RUN_HELP = f"""
import json, runpy, sys
sys.argv = ["lookalike", "--help"]
try:
    runpy.run_module("lookalike", run_name="__main__")
except SystemExit:
    pass
print(json.dumps([name for name in {HEAVY!r} if name in sys.modules]), file=sys.stderr)
"""


def test_help_imports_no_heavy_module() -> None:
    done = subprocess.run(
        [sys.executable, "-c", RUN_HELP], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stderr.splitlines()[-1]) == []
    listed = done.stdout.split("Commands:")[1]
    assert all(f"  {name} " in listed for name in COMMANDS), listed


def test_each_summary_is_its_commands_own_first_sentence() -> None:
    context = click.Context(main)
    for name in COMMANDS:
        command = main.get_command(context, name)
        assert command is not None
        assert SUMMARIES.get(name) == command.get_short_help_str(limit=10**6), (
            f"SUMMARIES[{name!r}] in cli/__init__.py differs from the command's help: copy it"
        )
