"""`lookalike index push --to milvus://...` (resumable), `index eval --store`, and the one-line
errors of a bad store, against a real Milvus Lite server (small data: it is a Python engine)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_spec
from milvus_server import fresh_name
from synthetic import WIDTH, make_collection, separable

from lookalike.cli import main
from lookalike.errors import InvalidArgument, SpecMismatch, VectorStoreUnavailable
from lookalike.index.milvus_sync import StoreAddress, check_store_uri, open_milvus, push
from lookalike.server.settings import Settings
from lookalike.store.collection import Collection


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def collection(tmp_path: Path) -> Collection:
    vectors, labels = separable(30)
    return make_collection(tmp_path / "c", labels, vectors)


def test_push_is_resumable_and_eval_reads_milvus(collection: Collection, milvus_uri: str) -> None:
    uri = f"{milvus_uri}/{fresh_name('push')}"
    first = run("index", "push", "-c", str(collection.path), "--to", uri, "-q")
    assert first.exit_code == 0, first.output
    assert "added 90, removed 0; Milvus holds 90" in first.output
    assert "Milvus FLAT" in first.output
    store = open_milvus(uri, collection)
    store.remove([3, 4])  # as if a push had been cut off before these
    with collection.writer() as writer:
        writer.delete([10])  # and the collection changed since
    again = run("index", "push", "-c", str(collection.path), "--to", uri, "-q")
    assert "added 2, removed 1; Milvus holds 89" in again.output, again.output
    evaluated = run("index", "eval", "-c", str(collection.path), "--store", uri, "--queries", "20")
    assert evaluated.exit_code == 0, evaluated.output
    assert "Milvus FLAT (-) over 89 vectors, 20 queries: recall@10 1.000" in evaluated.output
    found = run("search", "-c", str(collection.path), "--store", uri, "--id", "5", "--k", "3",
                "--label", "cat", "--json")  # fmt: skip
    hits = json.loads(found.output.splitlines()[-1])["hits"]
    assert [h["id"] for h in hits][:1] == [5] and {h["label"] for h in hits} == {"cat"}
    dedup = run("dedup", "-c", str(collection.path), "--store", uri, "--threshold", "0", "-q")
    assert dedup.exit_code == 0, dedup.output


def test_milvus_refuses_another_spec_layer_or_a_missing_collection(
    collection: Collection, milvus_uri: str, tmp_path: Path
) -> None:
    uri = f"{milvus_uri}/{fresh_name('spec')}"
    push(collection, uri, progress=False)
    cosine = make_spec(dims={"embedding": WIDTH, "layer3": WIDTH}, normalize=True)
    other = Collection.create(tmp_path / "cosine", cosine)
    with pytest.raises(SpecMismatch, match="another embedder spec"):
        open_milvus(uri, other)
    with pytest.raises(SpecMismatch, match="holds layer 'embedding', not 'layer3'"):
        open_milvus(uri, collection, "layer3")
    missing = run("index", "eval", "-c", str(collection.path), "--store", f"{milvus_uri}/nobody")
    assert missing.exit_code != 0 and "no Milvus collection 'nobody'" in missing.output
    assert "Traceback" not in missing.output and len(missing.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("milvus://127.0.0.1:1/x", "Milvus at 127.0.0.1:1"),
        ("milvus://127.0.0.1/x", "milvus://HOST:PORT/NAME"),
        ("postgres://h:1/x", "unknown vector store"),
        ("milvus://127.0.0.1:19530/9lives", "letters, digits and underscores"),
        ("milvus://127.0.0.1:19530/a-b", "letters, digits and underscores"),
    ],
)
def test_a_bad_store_is_a_one_line_error(collection: Collection, uri: str, words: str) -> None:
    result = run("index", "push", "-c", str(collection.path), "--to", uri, "-q")
    assert result.exit_code != 0 and words in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_store_uris_and_settings() -> None:
    assert StoreAddress.parse("milvus://db:19530", "photos").name == "photos"
    assert StoreAddress.parse("milvus://db:19530/v1", "photos").client_uri == "http://db:19530"
    assert StoreAddress.parse("/tmp/x.db/v1").client_uri == "/tmp/x.db"
    check_store_uri("milvus://db:19530", ["a", "b"])
    with pytest.raises(InvalidArgument, match="one Milvus collection for 2"):
        check_store_uri("milvus://db:19530/v", ["a", "b"])
    with pytest.raises(InvalidArgument, match="NAME"):
        Settings(collections={"my-photos": Path("/x")}, store="milvus://db:19530")
    env = Settings().with_env({"LOOKALIKE_STORE": "milvus://db:1/v"})
    assert env.store == "milvus://db:1/v"


def test_an_unreachable_store_is_a_503_worth_retrying() -> None:
    from lookalike.server.errors import status_of

    assert status_of(VectorStoreUnavailable("Milvus at h:1: down")) == 503


def test_a_server_whose_milvus_is_down_answers_503_problems(collection: Collection) -> None:
    from lookalike.server.app import create_app

    settings = Settings(collections={"c": collection.path}, store="milvus://127.0.0.1:1")
    client = create_app(settings).test_client()
    answer = client.post("/v1/collections/c/search", json={"id": 0, "k": 3})
    assert answer.status_code == 503 and answer.mimetype == "application/problem+json"
    assert "Milvus at 127.0.0.1:1" in answer.json["detail"] and answer.headers["Retry-After"]


def test_a_large_collection_gets_ivf_tuned_to_the_recall_target(
    tmp_path: Path, milvus_uri: str
) -> None:
    from lookalike.index.milvus_sync import tune_milvus

    vectors, labels = separable(200, spread=3.0)
    collection = make_collection(tmp_path / "c", labels, vectors)
    uri = f"{milvus_uri}/{fresh_name('ivf')}"
    push(collection, uri, progress=False)
    store = open_milvus(uri, collection)
    recall = tune_milvus(store, target_recall=0.9, k=10, flat_max_values=100)
    assert recall is not None and recall >= 0.9
    index, params = open_milvus(uri, collection).describe()  # recorded for every process
    assert index == "Milvus IVF_FLAT" and params.startswith("nprobe=")
    evaluated = run("index", "eval", "-c", str(collection.path), "--store", uri, "--queries", "50")
    assert f"Milvus IVF_FLAT ({params})" in evaluated.output, evaluated.output


def test_serve_refuses_an_unreachable_milvus_or_a_shared_lite_file(
    collection: Collection, tmp_path: Path
) -> None:
    down = run("serve", f"c={collection.path}", "--store", "milvus://127.0.0.1:1", "--port", "0")
    assert down.exit_code != 0 and "Milvus at 127.0.0.1:1 is not reachable" in down.output
    lite = f"{tmp_path}/v.db"
    shared = run("serve", f"c={collection.path}", "--store", lite, "--workers", "2")
    assert shared.exit_code != 0 and "serves one worker" in shared.output, shared.output


def test_a_label_longer_than_the_milvus_field_reaches_milvus_on_every_path(
    tmp_path: Path, milvus_uri: str
) -> None:
    """A label of 3,000 characters (6,000 UTF-8 bytes: over the field in both) is cut by one
    rule on every way into Milvus (push, a server's start-up reconcile, a live write), and the
    label filter cuts the same way, so it still finds its items."""
    from lookalike.index import LiveCollection

    vectors, labels = separable(10)
    long = "é" * 3000
    labels[:2] = [long, long]
    collection = make_collection(tmp_path / "c", labels, vectors)
    uri = f"{milvus_uri}/{fresh_name('long')}"
    pushed = run("index", "push", "-c", str(collection.path), "--to", uri, "-q")
    assert pushed.exit_code == 0 and "Milvus holds 30" in pushed.output, pushed.output
    found = run("search", "-c", str(collection.path), "--store", uri, "--id", "0", "--k", "5",
                "--label", long, "--json")  # fmt: skip
    hits = json.loads(found.output.splitlines()[-1])["hits"]
    assert sorted(h["id"] for h in hits) == [0, 1] and {h["label"] for h in hits} == {long}
    open_milvus(uri, collection).remove([0, 1])  # as if a replica died before writing them
    live = LiveCollection.open(collection.path, store=uri)  # a server's start: reconciles
    assert live.searcher().vector_store.has([0, 1]).all()
    row = {"label": [long], "path": ["/img/0.jpg"]}  # a live upload's write, fields given
    live.searcher().vector_store.upsert([0], collection.vectors([0], "embedding"), row)
    live.close()


def test_a_push_cut_off_part_way_is_not_searchable_until_it_completes(
    collection: Collection, milvus_uri: str
) -> None:
    uri = f"{milvus_uri}/{fresh_name('cut')}"
    store = open_milvus(uri, collection, create=True)  # what a push does first
    store.upsert([0, 1], collection.vectors([0, 1], "embedding"))  # then it was cut off
    found = run("search", "-c", str(collection.path), "--store", uri, "--id", "5", "--json")
    assert found.exit_code != 0 and "incomplete" in found.output, found.output
    assert "lookalike index push" in found.output and "Traceback" not in found.output
    evaluated = run("index", "eval", "-c", str(collection.path), "--store", uri)
    assert evaluated.exit_code != 0 and "incomplete" in evaluated.output
    pushed = run("index", "push", "-c", str(collection.path), "--to", uri, "-q")
    assert "added 88, removed 0; Milvus holds 90" in pushed.output, pushed.output
    found = run("search", "-c", str(collection.path), "--store", uri, "--id", "5", "--json")
    assert found.exit_code == 0 and json.loads(found.output.splitlines()[-1])["hits"]
