"""Every package the code imports is one pyproject.toml declares: in the base list, or in the
extra that the importing module belongs to (tests and benches: the dev extra). A package that
arrives only as another's dependency (werkzeug through flask, scipy through scikit-learn) works
until that one drops it, and then a fresh install breaks."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIRS: dict[str, str] = PROJECT["tool"]["setuptools"]["package-dir"]

# Modules that run only with an extra installed (they import its packages inside functions).
EXTRA_OF_MODULE = {
    "lookalike.jobs.ray_job": "ray",
    "lookalike.index.milvus_store": "milvus",
    "lookalike.index.milvus_sync": "milvus",
}
# Packages used only when present, each with why it is never a requirement.
OPTIONAL = {"imagededup": "the dedup bench's peer, run when installed (bench/dedup_peers.py)"}


def normalized(name: str) -> str:
    """A distribution's name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(extra: str | None) -> set[str]:
    """The distributions the base list declares, plus those of `extra` and of the extras it
    names through `lookalike[...]`."""
    requirements = [Requirement(line) for line in PROJECT["project"]["dependencies"]]
    extras, seen = [extra] if extra else [], set()
    while extras:
        current = extras.pop()
        seen.add(current)
        for line in PROJECT["project"]["optional-dependencies"][current]:
            requirement = Requirement(line)
            if normalized(requirement.name) == "lookalike":
                extras.extend(set(requirement.extras) - seen)
            else:
                requirements.append(requirement)
    return {normalized(requirement.name) for requirement in requirements}


def top_level_imports(source: Path) -> set[str]:
    """The top-level names of the absolute imports in `source`, wherever they sit (a function's
    deferred import counts: it runs when the function does), except those under a `try` that
    catches ImportError: optional, with a fallback."""
    tree = ast.parse(source.read_text(), filename=str(source))
    optional = {
        id(node)
        for guard in ast.walk(tree)
        if catches_import_error(guard)
        for node in guarded(guard)
    }
    names = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def catches_import_error(node: ast.AST) -> bool:
    """Whether `node` is a `try` with an `except ImportError` (or ModuleNotFoundError)."""
    if not isinstance(node, ast.Try):
        return False
    caught = [ast.unparse(handler.type) for handler in node.handlers if handler.type is not None]
    return any("ImportError" in text or "ModuleNotFoundError" in text for text in caught)


def guarded(guard: ast.Try) -> list[ast.AST]:
    """The nodes in the body of `guard`."""
    return [node for statement in guard.body for node in ast.walk(statement)]


def modules() -> list[tuple[str, Path, str | None]]:
    """(installed module name, file, the extra it needs) for the package, tests and benches."""
    found = []
    for package, folder in PACKAGE_DIRS.items():
        for source in sorted((ROOT / folder).glob("*.py")):
            name = f"{package}.{source.stem}"
            found.append((name, source, EXTRA_OF_MODULE.get(name)))
    for folder in ("tests", "bench"):
        for source in sorted((ROOT / folder).rglob("*.py")):
            found.append((str(source.relative_to(ROOT)), source, "dev"))
    return found


def local_names() -> set[str]:
    """Names the tests and benches import from their own folders (conftest helpers)."""
    return {
        source.stem for folder in ("tests", "bench") for source in (ROOT / folder).rglob("*.py")
    } | {
        path.name
        for folder in ("tests", "bench")
        for path in (ROOT / folder).rglob("*")
        if path.is_dir()
    }


def test_every_imported_package_is_declared() -> None:
    providers = packages_distributions()
    local = local_names() | {"lookalike", "tests", "bench"}
    undeclared = []
    for module, source, extra in modules():
        allowed = declared(extra)
        for name in sorted(top_level_imports(source)):
            if name in sys.stdlib_module_names or name in local or name in OPTIONAL:
                continue
            distributions = {normalized(d) for d in providers.get(name, [])}
            if not distributions & allowed:
                undeclared.append(
                    f"{module}: {name} (from {sorted(distributions) or 'nothing installed'})"
                )
    assert not undeclared, "imported but not declared in pyproject.toml:\n" + "\n".join(undeclared)
