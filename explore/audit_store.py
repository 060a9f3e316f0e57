"""The latest audit of a collection, stored in it (``audit.json``): what `lookalike audit` and
the server's audit job found, for `GET .../audit` to answer without running it again."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from lookalike.durable import write_atomic
from lookalike.store.collection import Collection

from .audit import AuditReport

AUDIT = "audit.json"
STORED_TOP = 100  # findings kept a part


def save_report(collection: Collection, report: AuditReport, request: dict[str, Any]) -> None:
    """Store `report`'s first `STORED_TOP` findings a part, with what was asked and the
    collection's generation (to tell, later, whether items changed since)."""
    stored = {
        **report.to_dict(STORED_TOP),
        "request": request,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "generation": list(collection.generation()),
        "fingerprint": collection.spec.fingerprint(),
    }
    write_atomic(collection.path / AUDIT, json.dumps(stored).encode())


def load_report(collection: Collection, top: int = STORED_TOP) -> dict[str, Any] | None:
    """The stored audit (its first `top` findings a part), with ``stale`` true when items were
    added or deleted since; None when there is none (or it was made with another embedder)."""
    try:
        stored = json.loads((collection.path / AUDIT).read_text())
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(stored, dict) or stored.get("fingerprint") != collection.spec.fingerprint():
        return None
    for part in ("label_errors", "outliers", "leaks"):
        if isinstance(stored.get(part), dict):
            stored[part]["top"] = stored[part].get("top", [])[:top]
    stored["stale"] = stored.pop("generation", None) != list(collection.generation())
    del stored["fingerprint"]
    return stored
