"""Every package the code imports is one pyproject.toml declares: in the base list, or in the
extra that the importing module belongs to (tests and benches: the dev extra). A package that
arrives only as another's dependency (werkzeug through flask, scipy through scikit-learn) works
until that one drops it, and then a fresh install breaks."""

from __future__ import annotations

import ast
import importlib
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
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


# marshmallow's documented way to write a field: "Creating a field class" overrides these.
DOCUMENTED_HOOKS = {"_serialize", "_deserialize"}
# Folders whose code meets other projects' objects (the server's frameworks, umap-learn).
FRAMEWORK_FOLDERS = ("server", "server/routes", "explore")


def framework_sources() -> list[Path]:
    return [
        source for folder in FRAMEWORK_FOLDERS for source in sorted((ROOT / folder).glob("*.py"))
    ]


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_reaches(source: Path) -> list[str]:
    """`thing._name` on anything but self/cls/super(), and `getattr(thing, "_name")`."""
    found = []
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            if ast.unparse(node.value) not in ("self", "cls", "super()"):
                found.append(f"{source.name}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in (
            "getattr",
            "hasattr",
            "setattr",
        ):
            name = node.args[1] if len(node.args) > 1 else None
            if (
                isinstance(name, ast.Constant)
                and isinstance(name.value, str)
                and is_private(name.value)
            ):
                found.append(f"{source.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_private_attributes_of_other_objects_are_read() -> None:
    reaches = [reach for source in framework_sources() for reach in private_reaches(source)]
    assert not reaches, "private attributes read (flask-smorest's _apidoc was one):\n" + "\n".join(
        reaches
    )


def third_party_overrides(module_name: str) -> list[str]:
    """Private methods that a class of `module_name` overrides on a base from another project."""
    module = importlib.import_module(module_name)
    found = []
    for cls in vars(module).values():
        if not isinstance(cls, type) or cls.__module__ != module_name:
            continue
        bases = [
            base
            for base in cls.__mro__[1:]
            if not base.__module__.startswith(("lookalike", "builtins"))
        ]
        for name, value in vars(cls).items():
            written_here = getattr(value, "__module__", None) == module_name  # not a metaclass's
            if not (written_here and is_private(name)) or name in DOCUMENTED_HOOKS:
                continue
            if any(name in vars(base) for base in bases):
                found.append(f"{module_name}.{cls.__name__}.{name}")
    return found


def test_no_private_methods_of_dependencies_are_overridden() -> None:
    overrides = [
        override
        for package, folder in PACKAGE_DIRS.items()
        if folder in FRAMEWORK_FOLDERS
        for source in sorted((ROOT / folder).glob("*.py"))
        for override in third_party_overrides(f"{package}.{source.stem}")
    ]
    assert not overrides, "private methods of a dependency overridden:\n" + "\n".join(overrides)


def test_umap_internals_are_called_by_keyword() -> None:
    """umap-learn's layout functions are not public API (pinned in pyproject.toml): called by
    keyword, a reordered or renamed parameter fails loudly instead of computing nonsense."""
    tree = ast.parse((ROOT / "explore" / "map_place.py").read_text())
    internal = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("umap.")
        for alias in node.names
    }
    positional = [
        f"line {node.lineno}: {ast.unparse(node.func)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and ast.unparse(node.func) in internal and node.args
    ]
    assert internal and not positional, positional


def test_whole_numbers_still_refuse_fractions_through_the_public_hook() -> None:
    """WholeNumber moved from marshmallow's private `_validated` to `_deserialize`: same answers."""
    import marshmallow as ma

    from lookalike.server.schemas import WholeNumber

    field = WholeNumber()
    assert [field.deserialize(value) for value in (3, 3.0, "4")] == [3, 3, 4]
    with pytest.raises(ma.ValidationError):
        field.deserialize(1.5)
