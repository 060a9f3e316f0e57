"""Server settings: one frozen dataclass, from a TOML file and/or LOOKALIKE_* environment variables."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from lookalike.checks import check_range
from lookalike.embedder.sources import check_max_pixels
from lookalike.errors import InvalidArgument
from lookalike.service.parse import collection_dirs

ENV_PREFIX = "LOOKALIKE_"
MiB = 2**20
WHOLE_NUMBERS = (
    "max_upload_bytes", "max_pixels", "max_images_per_request",
    "max_queued_jobs", "max_queued_jobs_per_key", "job_history",
)  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """What the server serves and how it guards it.

    `collections` maps the name used in URLs to a collection directory. With no API keys at all
    the server is open (for a laptop on loopback); with any key, every /v1 route needs one: read
    keys may search, embed and predict, write keys may also change collections.
    """

    collections: Mapping[str, Path] = field(default_factory=dict)
    read_keys: frozenset[str] = frozenset()
    write_keys: frozenset[str] = frozenset()
    max_upload_bytes: int = 32 * MiB
    max_pixels: int = 40_000_000
    max_images_per_request: int = 16
    rate_limit: str | None = None  # flask-limiter syntax, e.g. "1000/second;20000/minute"
    allowed_roots: tuple[Path, ...] = ()  # server-side folders embed jobs may read
    request_timeout: float = 10.0  # seconds a request (head and body) has to arrive whole
    # background jobs: live (queued or running) ones a collection, and one API key (with no keys:
    # one client address), may have (429 past it); finished records kept per collection
    max_queued_jobs: int = 32
    max_queued_jobs_per_key: int = 8
    job_history: int = 500  # the newest finished records
    job_history_days: float = 30.0  # older finished records are removed
    # a shared vector store instead of each process's FAISS index: milvus://HOST:PORT (each
    # collection in the Milvus collection of its served name) or milvus://HOST:PORT/NAME
    store: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.request_timeout < float("inf"):
            raise InvalidArgument(
                f"request_timeout must be a positive number of seconds, got {self.request_timeout!r}"
            )
        check_range("max_upload_bytes", self.max_upload_bytes, 1, integer=True)
        check_range("max_images_per_request", self.max_images_per_request, 1, integer=True)
        for name in ("max_queued_jobs", "max_queued_jobs_per_key", "job_history"):
            check_range(name, getattr(self, name), 1, integer=True)
        check_range("job_history_days", self.job_history_days, 0, low_open=True)
        check_max_pixels(self.max_pixels)  # Pillow's own limit would cap a larger one silently
        if self.store is not None:
            from lookalike.index.milvus_sync import check_store_uri

            check_store_uri(self.store, list(self.collections))  # a bad URI fails here

    @property
    def open_access(self) -> bool:
        return not (self.read_keys or self.write_keys)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Settings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidArgument(
                f"unknown settings: {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        values = dict(data)
        if "collections" in values:
            values["collections"] = {
                str(k): Path(v).expanduser() for k, v in values["collections"].items()
            }
        for name in ("read_keys", "write_keys"):
            if name in values:
                values[name] = frozenset(values[name])
        if "allowed_roots" in values:
            values["allowed_roots"] = tuple(
                Path(p).expanduser().resolve() for p in values["allowed_roots"]
            )
        for name in WHOLE_NUMBERS:
            if name in values:
                values[name] = _whole(name, values[name])
        for name, unit in (("request_timeout", "seconds"), ("job_history_days", "days")):
            if name in values:
                values[name] = _number(name, values[name], unit)
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> Settings:
        """A TOML file whose keys are the field names."""
        with open(path, "rb") as handle:
            return cls.from_mapping(tomllib.load(handle))

    def with_env(self, environ: Mapping[str, str] | None = None) -> Settings:
        """These settings overridden by LOOKALIKE_* variables (lists are comma-separated;
        collections as name=dir pairs)."""
        environ = os.environ if environ is None else environ
        changes: dict[str, Any] = {}
        for item in fields(self):
            raw = environ.get(ENV_PREFIX + item.name.upper())
            if raw is None:
                continue
            parts = [p.strip() for p in raw.split(",") if p.strip()]
            if item.name == "collections":
                changes[item.name] = collection_dirs(parts, bare=False)
            elif item.name in ("read_keys", "write_keys", "allowed_roots"):
                changes[item.name] = parts
            else:
                changes[item.name] = raw
        return _merge(self, changes) if changes else self


def _whole(name: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{name} must be a whole number, got {value!r}") from None


def _number(name: str, value: Any, unit: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{name} must be a number of {unit}, got {value!r}") from None


def _merge(settings: Settings, changes: dict[str, Any]) -> Settings:
    parsed = Settings.from_mapping(changes)
    return replace(settings, **{name: getattr(parsed, name) for name in changes})
