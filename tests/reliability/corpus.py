"""A malformed-input corpus, generated in code: broken and hostile images on every upload route,
bad JSON and vectors, odd parameters, unknown ids and collections, path traversal, bad requests.

Every answer must be a 4xx `application/problem+json` (or a 2xx where the input is in fact
valid), never a 5xx, never a traceback; `expect` says which cases must be refused or accepted.
"""

from __future__ import annotations

import collections
import http.client
import json
import random
import threading
import time
from dataclasses import dataclass, field

from lookalike.embedder.sources import MAX_LABEL_LENGTH

from .bad_images import base_images, image_payloads
from .harness import PROBLEM, Answer, Client, early_answer_request, leaks_traceback, multipart

C = "/v1/collections/c"
UPLOAD_ROUTES = (
    (f"{C}/search/images", {"k": "3"}),
    (f"{C}/embed", {}),
    ("/v1/embed", {}),
    (f"{C}/classifiers/clf/predict", {"k": "2"}),
    (f"{C}/items", {"label": "fuzz"}),
)


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()
    expect: str = "4xx"  # "4xx": must be refused; "2xx": must be accepted; "any": either
    early: bool = False  # send the head, wait for an early answer (413), then the body


def image_cases(seed: int = 0) -> list[Case]:
    cases = []
    for name, data, expect in image_payloads(seed):
        for path, fields in UPLOAD_ROUTES:
            body, content_type = multipart(
                [("image", f"{name.replace('/', '-')}.img", data)], fields
            )
            cases.append(
                Case(
                    f"{name} -> {path}",
                    "POST",
                    path,
                    body,
                    (("Content-Type", content_type),),
                    expect,
                )
            )
    return cases


# ----- JSON and parameters --------------------------------------------------------------------


def search_bodies(width: int, item: int) -> list[tuple[str, bytes | str, str]]:
    """(name, raw JSON body, expect) for POST /search; `item` is an id the collection holds."""
    v = [0.1] * width
    bodies: list[tuple[str, object, str]] = [
        ("valid-id", {"id": item, "k": 3}, "2xx"),
        ("valid-vector", {"vector": v}, "2xx"),
        ("threshold-zero", {"id": item, "threshold": 0}, "2xx"),
        ("threshold-minus-zero", {"id": item, "threshold": -0.0}, "2xx"),
        ("threshold-two", {"id": item, "threshold": 2}, "2xx"),
        ("k-max", {"id": item, "k": 10_000}, "2xx"),
        ("labels-unknown", {"id": item, "labels": ["nope"]}, "2xx"),
        ("path-prefix-traversal", {"id": item, "path_prefix": "../../etc"}, "2xx"),
        ("unknown-id", {"id": 10**12}, "4xx"),
        ("max-int64-id", {"id": 2**63 - 1}, "4xx"),
    ]
    for value in (0, -1, 10_001, 10**6, 2**31, 2**63, 2**64, 1.5, None, True, [], {}):
        bodies.append((f"k={value!r}", {"id": item, "k": value}, "4xx"))
    bodies.append(("k-as-string", {"id": item, "k": "5"}, "any"))  # form fields are strings
    bodies.append(("id-as-string", {"id": "1"}, "any"))
    for value in (-1, -1e-9, 2.0001, 3, 1e308, "x", True, [], {}):
        bodies.append((f"threshold={value!r}", {"id": item, "threshold": value}, "4xx"))
    for value in (-1, 2**63, 2**64, -(2**63), 10**30, 1.5, 1e300, True, None, [], {}):
        bodies.append((f"id={value!r}", {"id": value}, "4xx"))
    for count in (0, 1, width - 1, width + 1, 2 * width, 5000, 100_000):
        bodies.append((f"vector-width-{count}", {"vector": [0.1] * count}, "4xx"))
    for name, bad in (
        ("string", "x"),
        ("bool", True),
        ("null", None),
        ("nested", [0.1]),
        ("object", {}),
        ("huge", 1e39),
        ("minus-huge", -1e39),
    ):
        bodies.append((f"vector-with-{name}", {"vector": [*v[:-1], bad]}, "4xx"))
    bodies += [
        ("vector-string", {"vector": "0.1,0.2"}, "4xx"),
        ("vector-matrix", {"vector": [v, v]}, "4xx"),
        ("vector-and-id", {"vector": v, "id": 1}, "4xx"),
        ("neither", {"k": 3}, "4xx"),
        ("unknown-field", {"id": item, "bogus": 1}, "4xx"),
        ("labels-string", {"id": item, "labels": "7"}, "4xx"),
        ("labels-numbers", {"id": item, "labels": [1, 2]}, "4xx"),
        ("labels-null-inside", {"id": item, "labels": [None]}, "4xx"),
        ("path-prefix-number", {"id": item, "path_prefix": 5}, "4xx"),
        ("fingerprint-wrong", {"vector": v, "spec_fingerprint": "0" * 16}, "4xx"),
        ("fingerprint-number", {"vector": v, "spec_fingerprint": 5}, "4xx"),
        ("body-list", [1, 2], "4xx"),
        ("body-string", "id", "4xx"),
        ("body-number", 5, "4xx"),
        ("body-null", None, "4xx"),
    ]
    raw: list[tuple[str, bytes | str, str]] = [
        (name, json.dumps(body), expect) for name, body, expect in bodies
    ]
    row = ", ".join(["0.1"] * (width - 1))
    raw += [
        ("nan-literal", f'{{"vector": [{row}, NaN]}}', "4xx"),
        ("infinity-literal", f'{{"vector": [{row}, Infinity]}}', "4xx"),
        ("minus-infinity-literal", f'{{"vector": [{row}, -Infinity]}}', "4xx"),
        ("nan-threshold", '{"id": ITEM, "threshold": NaN}', "4xx"),
        ("empty-body", "", "4xx"),
        ("open-brace", "{", "4xx"),
        ("trailing-comma", '{"id": ITEM,}', "4xx"),
        ("single-quotes", "{'id': 1}", "4xx"),
        ("comment", '{"id": ITEM /* c */}', "4xx"),
        ("bom", "\ufeff" + '{"id": ITEM}', "any"),
        ("duplicate-keys", '{"id": ITEM, "id": 2}', "any"),
        ("deep-nesting", "[" * 100_000 + "]" * 100_000, "4xx"),
        ("deep-object", '{"a":' * 5000 + "1" + "}" * 5000, "4xx"),
        ("invalid-utf8", b'{"id": 0, "labels": ["\xff\xfe"]}', "4xx"),
        ("lone-surrogate", '{"id": ITEM, "labels": ["\\ud800"]}', "any"),
        ("nul-in-string", '{"id": ITEM, "path_prefix": "\\u0000"}', "2xx"),
        ("huge-exponent", '{"id": 1e999999}', "4xx"),
        ("long-number", '{"id": ' + "9" * 5000 + "}", "4xx"),
        ("long-string", json.dumps({"id": item, "labels": ["x" * 1_000_000]}), "2xx"),
        (
            "many-labels",
            json.dumps({"id": item, "labels": [str(n) for n in range(100_000)]}),
            "2xx",
        ),
    ]
    return [
        (name, body.replace("ITEM", str(item)) if isinstance(body, str) else body, expect)
        for name, body, expect in raw
    ]


def json_cases(width: int, allowed_root: str, item: int) -> list[Case]:
    json_type = (("Content-Type", "application/json"),)
    cases = []
    for name, body, expect in search_bodies(width, item):
        data = body if isinstance(body, bytes) else body.encode()
        cases.append(Case(f"search/{name}", "POST", f"{C}/search", data, json_type, expect))
    predict = f"{C}/classifiers/clf/predict/items"
    for name, payload, expect in (
        ("valid", {"ids": [item, item], "k": 2}, "2xx"),
        ("empty-ids", {"ids": []}, "4xx"),
        ("too-many-ids", {"ids": list(range(1001))}, "4xx"),
        ("unknown-ids", {"ids": [10**12]}, "4xx"),
        ("negative-id", {"ids": [-1]}, "4xx"),
        ("id-beyond-int64", {"ids": [2**64]}, "4xx"),
        ("ids-string", {"ids": "0,1"}, "4xx"),
        ("k-negative", {"ids": [item], "k": -1}, "4xx"),
        ("k-huge", {"ids": [item], "k": 10**9}, "4xx"),
        ("embedding-string", {"ids": [item], "embedding": "yes please"}, "4xx"),
    ):
        cases.append(
            Case(
                f"predict-items/{name}",
                "POST",
                predict,
                json.dumps(payload).encode(),
                json_type,
                expect,
            )
        )
    for name, folder in (
        ("etc", "/etc"),
        ("root", "/"),
        ("dot-dot", "../../.."),
        ("escape", f"{allowed_root}/../.."),
        ("escape-encoded", f"{allowed_root}/%2e%2e/%2e%2e"),
        ("home", "~"),
        ("empty", ""),
        ("nul", "\x00"),
        ("symlink-out", f"{allowed_root}/link-out"),
        ("proc", "/proc/self"),
    ):
        body = json.dumps({"collection": "c", "folder": folder}).encode()
        cases.append(Case(f"embed-job/{name}", "POST", "/v1/jobs/embed", body, json_type, "4xx"))
    body = json.dumps({"collection": "../c", "folder": allowed_root}).encode()
    cases.append(Case("embed-job/collection-traversal", "POST", "/v1/jobs/embed", body, json_type))
    for name in ("../../evil", "..", "", "a/b", "/etc/passwd", "x" * 65, "-x", "é", "a\x00b"):
        body = json.dumps({"name": name}).encode()
        cases.append(
            Case(f"train/name={name[:12]!r}", "POST", f"{C}/classifiers", body, json_type, "4xx")
        )
    for name, payload in (
        ("labels-number", {"name": "x", "labels": 5}),
        ("labels-bad-ids", {"name": "x", "labels": {"a": "b"}}),
        ("folds-1", {"name": "x", "folds": 1}),
        ("model-unknown", {"name": "x", "model": "os.system"}),
        ("holdout-1", {"name": "x", "holdout": 1}),
    ):
        body = json.dumps(payload).encode()
        cases.append(Case(f"train/{name}", "POST", f"{C}/classifiers", body, json_type, "4xx"))
    return cases


# ----- routes, paths and requests -------------------------------------------------------------


def path_cases() -> list[Case]:
    traversals = [
        "../../etc/passwd",
        "..%2f..%2fetc%2fpasswd",
        "%2e%2e/%2e%2e/etc/passwd",
        "%252e%252e%252fetc%252fpasswd",
        "..%5c..%5cwindows",
        "....//....//etc/passwd",
        "%00",
        "manifest.json",
        "..;/manifest.json",
        "%c0%ae%c0%ae/etc/passwd",
    ]
    cases = []
    for bad in traversals:
        for path in (
            f"{C}/items/{bad}",
            f"{C}/items/{bad}/thumbnail",
            f"/v1/collections/{bad}",
            f"/v1/collections/{bad}/items/1",
            f"/v1/collections/{bad}/items/1/thumbnail",
            f"/docs/assets/{bad}",
            f"/static/{bad}",
            f"/v1/jobs/{bad}",
        ):
            cases.append(Case(f"traversal/{path}", "GET", path))
        cases.append(Case(f"traversal/delete/{bad}", "DELETE", f"{C}/items/{bad}"))
        cases.append(Case(f"traversal/classifier/{bad}", "DELETE", f"{C}/classifiers/{bad}"))
    for name in ("nope", "C", "c%20", "%20c", "c%00", "c.", "x" * 2000, "%e2%80%ae", "<script>"):
        for suffix in ("", "/items/1", "/items/1/thumbnail", "/classifiers", "/search"):
            method = "POST" if suffix == "/search" else "GET"
            cases.append(
                Case(
                    f"unknown-collection/{name[:20]}{suffix}",
                    method,
                    f"/v1/collections/{name}{suffix}",
                )
            )
    for item in (
        "-1",
        "1.0",
        "1e3",
        "0x10",
        "99999999999999999999",
        "9223372036854775808",
        "%201",
    ):
        cases.append(Case(f"bad-id/{item}", "GET", f"{C}/items/{item}"))
        cases.append(Case(f"bad-id/{item}/thumbnail", "GET", f"{C}/items/{item}/thumbnail"))
    fullwidth_one = "%EF%BC%91"  # werkzeug's int converter takes any Unicode digit: item 1
    cases.append(Case("fullwidth-id", "GET", f"{C}/items/{fullwidth_one}", expect="any"))
    for item in (10**6, 2**63 - 1):
        cases.append(Case(f"unknown-id/{item}", "GET", f"{C}/items/{item}"))
        cases.append(Case(f"unknown-id/{item}/thumbnail", "GET", f"{C}/items/{item}/thumbnail"))
        cases.append(Case(f"unknown-id/{item}/delete", "DELETE", f"{C}/items/{item}"))
    cases += [
        Case("unknown-classifier/predict", "POST", f"{C}/classifiers/nope/predict"),
        Case("unknown-classifier/delete", "DELETE", f"{C}/classifiers/nope"),
        Case("unknown-job", "GET", "/v1/jobs/ffffffffffffffffffffffffffffffff"),
        Case("unknown-route", "GET", "/v2/collections"),
        Case("method-put", "PUT", f"{C}/search", b"{}"),
        Case("method-patch", "PATCH", f"{C}/items/1", b"{}"),
        Case("method-delete-collection", "DELETE", C),
        Case("method-trace", "TRACE", "/v1/collections"),
        Case("options", "OPTIONS", f"{C}/search", expect="2xx"),
        Case("head", "HEAD", "/v1/collections", expect="2xx"),
    ]
    return cases


def request_cases(max_upload_bytes: int, rng: random.Random) -> list[Case]:
    """Wrong content types, oversized and malformed multipart bodies, bad credentials."""
    image = base_images()["png"]
    body, content_type = multipart([("image", "a.png", image)], {"k": "3"})
    search, items = f"{C}/search/images", f"{C}/items"
    big, big_type = multipart([("image", "big.png", rng.randbytes(max_upload_bytes + 1))])
    many, many_type = multipart([("image", f"{n}.png", image) for n in range(17)])
    cases = [
        Case(
            "content-type/json-to-multipart-route",
            "POST",
            search,
            b"{}",
            (("Content-Type", "application/json"),),
        ),
        Case("content-type/text-plain", "POST", search, body, (("Content-Type", "text/plain"),)),
        Case("content-type/none", "POST", search, body),
        Case(
            "content-type/no-boundary",
            "POST",
            search,
            body,
            (("Content-Type", "multipart/form-data"),),
        ),
        Case(
            "content-type/wrong-boundary",
            "POST",
            search,
            body,
            (("Content-Type", "multipart/form-data; boundary=nope"),),
        ),
        Case(
            "content-type/urlencoded",
            "POST",
            search,
            b"image=abc&k=3",
            (("Content-Type", "application/x-www-form-urlencoded"),),
        ),
        Case(
            "content-type/multipart-to-json-route",
            "POST",
            f"{C}/search",
            body,
            (("Content-Type", content_type),),
        ),
        Case(
            "content-type/text-to-json-route",
            "POST",
            f"{C}/search",
            b'{"id": 1}',
            (("Content-Type", "text/plain"),),
        ),
        Case(
            "multipart/unterminated",
            "POST",
            search,
            body[: len(body) // 2],
            (("Content-Type", content_type),),
        ),
        Case(
            "multipart/garbage",
            "POST",
            search,
            rng.randbytes(2000),
            (("Content-Type", content_type),),
        ),
        Case(
            "multipart/no-parts",
            "POST",
            search,
            b"--x--\r\n",
            (("Content-Type", "multipart/form-data; boundary=x"),),
        ),
        Case("oversized/one-file", "POST", search, big, (("Content-Type", big_type),), early=True),
        Case("oversized/items", "POST", items, big, (("Content-Type", big_type),), early=True),
        Case(
            "oversized/json",
            "POST",
            f"{C}/search",
            b" " * (max_upload_bytes + 1),
            (("Content-Type", "application/json"),),
            early=True,
        ),
        Case("too-many-images", "POST", search, many, (("Content-Type", many_type),)),
        Case("too-many-images/items", "POST", items, many, (("Content-Type", many_type),)),
    ]
    fields = [
        ("image-as-plain-field", [], {"image": "not a file"}),
        ("no-image", [], {"k": "3"}),
        ("k-not-a-number", [("image", "a.png", image)], {"k": "many"}),
        ("k-zero", [("image", "a.png", image)], {"k": "0"}),
        ("threshold-negative", [("image", "a.png", image)], {"threshold": "-1"}),
        ("threshold-nan", [("image", "a.png", image)], {"threshold": "nan"}),
        ("threshold-inf", [("image", "a.png", image)], {"threshold": "inf"}),
        ("unknown-field", [("image", "a.png", image)], {"bogus": "1"}),
        ("label-too-long", [("image", "a.png", image)], {"label": "x" * (MAX_LABEL_LENGTH + 1)}),
        ("label-empty", [("image", "a.png", image)], {"label": ""}),
    ]
    for name, files, values in fields:
        part_body, part_type = multipart(files, values)
        for path in (search, items):
            cases.append(
                Case(
                    f"form/{name} -> {path}",
                    "POST",
                    path,
                    part_body,
                    (("Content-Type", part_type),),
                )
            )
    for name, filename in (
        ("traversal", "../../../../etc/passwd"),
        ("nul", "a\x00.png"),
        ("long", "x" * 5000),
    ):
        part_body, part_type = multipart([("image", filename, image)], {"label": "fuzz"})
        cases.append(
            Case(
                f"filename/{name}", "POST", items, part_body, (("Content-Type", part_type),), "2xx"
            )
        )
    for name, headers in (
        ("no-key", (("Authorization", ""),)),
        ("wrong-key", (("Authorization", "Bearer wrong"),)),
        ("basic-auth", (("Authorization", "Basic dXNlcjpwYXNz"),)),
        ("bearer-empty", (("Authorization", "Bearer "),)),
        ("bearer-huge", (("Authorization", "Bearer " + "x" * 6000),)),
        ("api-key-latin1", (("X-API-Key", "cl\xe9"),)),
        ("read-key-writes", (("Authorization", "Bearer corpus-reader"),)),
    ):
        path, method = (items, "POST") if name == "read-key-writes" else (f"{C}/search", "POST")
        payload = body if path == items else b'{"id": 1}'
        kind = content_type if path == items else "application/json"
        cases.append(
            Case(f"auth/{name}", method, path, payload, (*headers, ("Content-Type", kind)))
        )
    return cases


def corpus(
    width: int, allowed_root: str, max_upload_bytes: int, item: int, seed: int = 0
) -> list[Case]:
    """Every case; `item` is an id the collection holds (for the cases that must succeed)."""
    rng = random.Random(seed)
    return (
        image_cases(seed)
        + json_cases(width, allowed_root, item)
        + path_cases()
        + request_cases(max_upload_bytes, rng)
    )


# ----- running it -----------------------------------------------------------------------------


@dataclass
class CorpusReport:
    tried: int = 0
    statuses: collections.Counter = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    cut_off: list[str] = field(default_factory=list)
    slowest: list[tuple[float, str]] = field(default_factory=list)
    seconds: float = 0.0
    healthy_after: bool = False

    @property
    def five_xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def lines(self) -> list[str]:
        classes = collections.Counter(f"{status // 100}xx" for status in self.statuses.elements())
        slow = ", ".join(f"{name} {s:.2f} s" for s, name in sorted(self.slowest)[-3:])
        return [
            f"malformed inputs: {self.tried} cases in {self.seconds:.0f} s: "
            + ", ".join(f"{k} {v}" for k, v in sorted(classes.items()))
            + f"; 5xx: {self.five_xx}; tracebacks or wrong shapes: {len(self.failures)}; "
            f"connections cut: {len(self.cut_off)}; healthz after: "
            + ("ok" if self.healthy_after else "FAILED"),
            f"  slowest answers: {slow}",
        ]


def judge(case: Case, answer: Answer) -> str | None:
    """Why this answer breaks the contract, or None."""
    status = answer.status
    if status >= 500:
        return f"{status}"
    if leaks_traceback(answer.body):
        return "a traceback in the body"
    if status >= 400:
        if not answer.content_type.startswith(PROBLEM):
            return f"{status} as {answer.content_type!r}, not problem+json"
        problem = answer.json()
        if problem.get("status") != status or not problem.get("title"):
            return f"a malformed problem: {answer.body[:200]!r}"
    if case.expect == "4xx" and not 400 <= status < 500:
        return f"{status}, expected a refusal"
    if case.expect == "2xx" and not 200 <= status < 300:
        return f"{status}, expected success: {answer.body[:300]!r}"
    return None


def run_corpus(base: str, cases: list[Case], key: str, threads: int = 4) -> CorpusReport:
    """Send every case (with a write key unless the case sets its own credentials), `threads`
    clients at a time; then check /healthz."""
    report, lock, queue = CorpusReport(), threading.Lock(), list(reversed(cases))
    started = time.monotonic()

    def work() -> None:
        client = Client(base, {"Authorization": f"Bearer {key}"}, timeout=120)
        while True:
            with lock:
                if not queue:
                    break
                case = queue.pop()
            headers = dict(case.headers)
            if headers.get("Authorization") == "":
                del headers["Authorization"]
                client.close()
                client.headers = {}
            try:
                if case.early:
                    answer = early_answer_request(
                        base,
                        case.method,
                        case.path,
                        case.body or b"",
                        {**client.headers, **headers},
                    )
                else:
                    answer = client.request(case.method, case.path, case.body, headers)
            except (OSError, http.client.HTTPException) as error:
                with lock:
                    report.tried += 1
                    report.cut_off.append(f"{case.name}: {type(error).__name__}")
                continue
            except Exception as error:  # a case this client cannot even send: the corpus's fault
                with lock:
                    report.tried += 1
                    report.failures.append(f"{case.name}: not sent: {error!r}")
                continue
            finally:
                client.headers = {"Authorization": f"Bearer {key}"}
            verdict = judge(case, answer)
            with lock:
                report.tried += 1
                report.statuses[answer.status] += 1
                report.slowest = sorted([*report.slowest, (answer.seconds, case.name)])[-5:]
                if verdict:
                    report.failures.append(f"{case.name}: {verdict}")
        client.close()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    report.seconds = time.monotonic() - started
    health = Client(base).request("GET", "/healthz")
    report.healthy_after = health.status == 200
    return report
