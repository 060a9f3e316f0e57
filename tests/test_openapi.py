"""The OpenAPI document against the live server: an independent validator reads the served
document, and schemathesis generates requests for every operation from it; no answer may be a 5xx
or break the spec (status, content type, body).

One check is left out: "a schema-valid request must succeed". The spec cannot say that a vector's
width must match the collection's embedder, or that a stored id must exist, so such requests are
rightly answered 4xx.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
import schemathesis
from conftest import TINY, running_server
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis.specs.openapi.checks import positive_data_acceptance

from lookalike.classify import train_classifier
from lookalike.index import build_index
from lookalike.jobs.bulk import embed_images
from lookalike.store.collection import Collection

# real servers, clusters, browsers or kills: `make test` runs it, `pytest -m "not slow"` does not
pytestmark = pytest.mark.slow

WRITE_KEY = "fuzz-writer"
EXAMPLES_PER_OPERATION = 12  # 20 operations: a few hundred requests, well under a minute


@pytest.fixture(scope="module")
def live_server(digit_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The base URL of a real server over an embedded, indexed collection with a classifier."""
    collection = tmp_path_factory.mktemp("fuzzed") / "digits"
    embed_images(
        [digit_dir], collection, TINY, labels_from_folders=True, progress=False, num_workers=0
    )
    build_index(Collection.open(collection), progress=False)
    train_classifier(collection, "digits", folds=3)
    allowed = tmp_path_factory.mktemp("allowed")
    env = {
        "LOOKALIKE_ALLOWED_ROOTS": str(allowed),
        "LOOKALIKE_READ_KEYS": "fuzz-reader",
        "LOOKALIKE_WRITE_KEYS": WRITE_KEY,
    }
    with running_server({"digits": collection}, env) as (base, output):
        yield base
    assert "Traceback" not in "".join(output), "a request made the server log a traceback"


@pytest.fixture(scope="module")
def live_schema(live_server: str):
    return schemathesis.openapi.from_url(f"{live_server}/openapi.json")


def test_the_served_document_is_valid_openapi(live_server: str) -> None:
    with urllib.request.urlopen(f"{live_server}/openapi.json") as answer:
        document = json.load(answer)
    assert document["openapi"].startswith("3.0")
    validate(document)  # openapi-spec-validator: raises on the first problem, with its path


def test_every_operation_answers_within_its_spec(live_schema) -> None:
    operations = [result.ok() for result in live_schema.get_all_operations()]
    assert len(operations) >= 20, "the spec lost operations"
    failures = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def answers_within_spec(case) -> None:
            case.call_and_validate(
                headers={"X-API-Key": WRITE_KEY},  # the auth checks also try it without
                excluded_checks=[positive_data_acceptance],
            )

        try:
            answers_within_spec()
        except Exception as error:  # every operation runs; all failures are reported together
            failures[operation.label] = str(error)[:700]
    assert not failures, "\n\n".join(f"{label}: {error}" for label, error in failures.items())
