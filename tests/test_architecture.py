"""The layers cannot drift: import-linter's contracts (pyproject.toml).

The installed names (`lookalike.embedder`, `lookalike.store`, ...) map to top-level folders
(`package-dir`), which an editable install resolves through an import hook that import-linter
cannot walk; so the test lays the package out as it is installed, as links, and lints that.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIRS: dict[str, str] = CONFIG["tool"]["setuptools"]["package-dir"]


def installed_layout(target: Path) -> Path:
    """The `lookalike` package as installed, made of links to the source files."""
    for package, folder in PACKAGE_DIRS.items():
        place = target.joinpath(*package.split("."))
        place.mkdir(parents=True, exist_ok=True)
        for source in (ROOT / folder).iterdir():
            if source.is_file() and source.suffix == ".py":
                (place / source.name).symlink_to(source)
    return target


def test_the_import_contracts_hold(tmp_path: Path) -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed (the dev extra has it)")
    layout = installed_layout(tmp_path / "site")
    environment = {**os.environ, "PYTHONPATH": str(layout)}
    done = subprocess.run(  # not from the repository, whose lookalike/ folder would shadow it
        [str(lint), "--no-cache", str(ROOT / "pyproject.toml")],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "BROKEN" not in done.stdout and "KEPT" in done.stdout
