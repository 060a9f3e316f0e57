"""The page's Map view and its API key form, in a real browser (headless Chromium) against a real
server on loopback."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, running_server
from test_page import CHROMIUM, DRIVER, browser  # noqa: F401 - the fixture, by name

from lookalike.embedder import get_backbone
from lookalike.explore.map import EmbeddingMap, MapParams, compute_map, map_points, save_map
from lookalike.explore.map_place import fit_pca, project
from lookalike.index import build_index
from lookalike.jobs.bulk import embed_images
from lookalike.store.collection import Collection

pytestmark = [
    pytest.mark.skipif(
        not (CHROMIUM and DRIVER),
        reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
    ),
    pytest.mark.slow,  # a real browser: `make test` runs it, `pytest -m "not slow"` does not
]
BIG = 100_000
HOVER_BUDGET_MS = 100


@pytest.fixture(scope="module")
def digits(digit_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits embedded with the tiny model, indexed, with a map computed by UMAP."""
    path = tmp_path_factory.mktemp("map-page") / "digits"
    embed_images([digit_dir], path, TINY, labels_from_folders=True, progress=False, num_workers=0)
    build_index(Collection.open(path), progress=False)
    compute_map(Collection.open(path))
    return path


@pytest.fixture(scope="module")
def words(digit_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two of the digits' classes under other labels ("zero", "one"): indexed, with a map."""
    root = tmp_path_factory.mktemp("map-page")
    for digit, word in (("0", "zero"), ("1", "one")):
        shutil.copytree(digit_dir / digit, root / "images" / word)
    path = root / "words"
    embed_images(
        [root / "images"], path, TINY, labels_from_folders=True, progress=False, num_workers=0
    )
    build_index(Collection.open(path), progress=False)
    compute_map(Collection.open(path))
    return path


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100k synthetic items (ten labelled clusters) written through the store's writer, laid out
    by a 2-D PCA (UMAP at this size is the bench's job), saved as the map."""
    path = tmp_path_factory.mktemp("map-page") / "big"
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, BIG)
    centres = rng.standard_normal((10, 8)).astype(np.float32) * 4
    low = centres[labels] + rng.standard_normal((BIG, 8)).astype(np.float32)
    spec = get_backbone(TINY["name"], TINY["weights"], image_size=TINY["image_size"]).spec
    vectors = low @ rng.standard_normal((8, spec.dims["embedding"])).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    collection = Collection.create(path, spec)
    rows = [
        {"path": f"/nowhere/{n}.jpg", "sha256": f"{n:064x}", "width": 8, "height": 8, "bytes": 1,
         "mtime_ns": 1, "label": f"class {label}"}
        for n, label in enumerate(labels)
    ]  # fmt: skip
    with collection.writer(shard_size=25_000) as writer:
        ids = writer.add(rows, {"embedding": vectors})
    build_index(collection, factory="Flat", progress=False)  # the server opens one
    mean, components = fit_pca([low], 2)
    xy = project(low, mean, components)
    fingerprint = collection.spec.fingerprint()
    emap = EmbeddingMap("embedding", fingerprint, MapParams(), ids, xy, BIG, mean, components, xy)
    save_map(collection, emap)
    return path


def open_map(driver, base: str, timeout: float = 60) -> float:
    """Open the page's Map view; seconds until the map is drawn."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(base + "/")
    start = time.perf_counter()
    driver.find_element(By.ID, "show-map").click()
    WebDriverWait(driver, timeout).until(lambda b: b.execute_script("return lookalikeMap.loaded()"))
    return time.perf_counter() - start


def point_at(driver, item_id: int) -> None:
    """Move the pointer onto an item's point (a real mousemove event, in the viewport)."""
    from selenium.webdriver.common.action_chains import ActionChains

    where = driver.execute_script(f"return lookalikeMap.pointOnScreen({item_id})")
    actions = ActionChains(driver)
    actions.w3c_actions.pointer_action.move_to_location(round(where["x"]), round(where["y"]))
    actions.perform()


def tip(driver) -> dict:
    return driver.execute_script(
        "const t = document.getElementById('map-tip');"
        "return {hidden: t.hidden, id: t.dataset.id, text: t.innerText,"
        " ms: Number(t.dataset.answeredMs), img: t.querySelector('img').naturalWidth};"
    )


def loneliest(collection: Path, label: str) -> int:
    """The id of the item of `label` farthest from any other point (a hover finds it alone)."""
    points = map_points(Collection.open(collection))
    gaps = np.linalg.norm(points.xy[:, None] - points.xy[None], axis=2)
    np.fill_diagonal(gaps, np.inf)
    mine = np.flatnonzero(points.codes == points.labels.index(label))
    return int(points.ids[mine[np.argmax(gaps[mine].min(axis=1))]])


def test_map_view_hover_click_and_filter(browser, digits: Path):  # noqa: F811
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    seven, zero = loneliest(digits, "7"), loneliest(digits, "0")
    with running_server({"digits": digits}) as (base, _):
        open_map(browser, base)
        wait = WebDriverWait(browser, 30)
        assert browser.find_element(By.ID, "map-count").text == "36 items on the map"
        point_at(browser, seven)
        wait.until(lambda b: tip(b)["id"] == str(seven) and tip(b)["img"] > 0)  # thumbnail shown
        assert tip(browser)["text"] == f"7 · #{seven}"

        ActionChains(browser).click().perform()  # where the pointer is: a search from that item
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#grid .hit"))
        first = browser.find_elements(By.CSS_SELECTOR, "#grid .hit")[0]
        assert first.get_attribute("data-id") == str(seven)
        assert browser.find_element(By.ID, "status").text == "12 neighbours"

        Select(browser.find_element(By.ID, "map-label")).select_by_visible_text("7")
        assert browser.find_element(By.ID, "map-count").text == "12 of 36 items shown"
        point_at(browser, zero)  # filtered out: no answer
        time.sleep(0.2)
        assert tip(browser)["hidden"]
        point_at(browser, seven)
        wait.until(lambda b: tip(b)["id"] == str(seven))


SHOWN_THOUGH_HIDDEN = (
    "return [...document.querySelectorAll('[hidden]')]"
    ".filter((e) => getComputedStyle(e).display !== 'none').map((e) => e.id || e.outerHTML)"
)


def leftovers(driver) -> dict:
    """What the page shows of a collection's results and errors (what a switch must clear)."""
    from selenium.webdriver.common.by import By

    def shown(element_id: str) -> bool:
        return driver.find_element(By.ID, element_id).is_displayed()

    return {
        "hits": len(driver.find_elements(By.CSS_SELECTOR, "#grid .hit")),
        "status": driver.find_element(By.ID, "status").text,
        "problems": len(driver.find_elements(By.CSS_SELECTOR, "#problems li")),
        "query image": shown("query"),
        "prediction": shown("prediction"),
        "map tip": shown("map-tip"),
    }


def label_filter(driver) -> tuple[list[str], str]:
    """The Map view's label filter (shown or not): its options' texts and the chosen one's."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select

    select = Select(driver.find_element(By.ID, "map-label"))
    texts = [option.get_attribute("textContent") for option in select.options]
    return texts, select.first_selected_option.get_attribute("textContent")


def test_switching_collection_clears_results_errors_filter_and_map_view(
    browser,  # noqa: F811
    digits: Path,
    words: Path,
    digit_dir: Path,
):
    from selenium.webdriver.common.action_chains import ActionChains, ScrollOrigin
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    clean = {"hits": 0, "status": "", "problems": 0, "query image": False, "prediction": False,
             "map tip": False}  # fmt: skip
    seven = loneliest(digits, "7")
    with running_server({"digits": digits, "words": words}) as (base, _):
        wait = WebDriverWait(browser, 30)
        open_map(browser, base)
        Select(browser.find_element(By.ID, "map-label")).select_by_visible_text("7")
        where = browser.execute_script(f"return lookalikeMap.pointOnScreen({seven})")
        around = ScrollOrigin.from_viewport(round(where["x"]), round(where["y"]))
        ActionChains(browser).scroll_from_origin(around, 0, -400).perform()  # zoomed in on it
        point_at(browser, seven)
        wait.until(lambda b: tip(b)["id"] == str(seven))
        ActionChains(browser).click().perform()  # a search from that item: results under the map
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#grid .hit"))
        k = browser.find_element(By.ID, "k")
        k.clear()
        k.send_keys("0")
        browser.find_element(By.ID, "file").send_keys(str(next((digit_dir / "7").glob("*.png"))))
        wait.until(lambda b: b.find_element(By.ID, "status").text.startswith("k: "))  # an error

        Select(browser.find_element(By.ID, "collection")).select_by_value("words")
        wait.until(lambda b: b.execute_script("return lookalikeMap.loaded()"))
        assert leftovers(browser) == clean
        assert label_filter(browser) == (["all labels", "one", "zero"], "all labels")
        assert browser.find_element(By.ID, "map-count").text == "24 items on the map"
        one = int(Collection.open(words).items(["id"]).column("id")[0].as_py())
        before = browser.execute_script(f"return lookalikeMap.pointOnScreen({one})")
        browser.find_element(By.ID, "map-reset").click()  # the view was already the whole map
        assert browser.execute_script(f"return lookalikeMap.pointOnScreen({one})") == before

        # switched while the map is hidden: the filter is emptied, and refilled when shown
        Select(browser.find_element(By.ID, "map-label")).select_by_visible_text("zero")
        browser.find_element(By.ID, "show-search").click()
        Select(browser.find_element(By.ID, "collection")).select_by_value("digits")
        assert label_filter(browser) == (["all labels"], "all labels")
        browser.find_element(By.ID, "show-map").click()
        wait.until(lambda b: b.execute_script("return lookalikeMap.loaded()"))
        assert label_filter(browser) == (["all labels", "0", "1", "7"], "all labels")
        assert leftovers(browser) == clean
        assert browser.execute_script(SHOWN_THOUGH_HIDDEN) == []


def test_map_view_opens_100k_points_and_answers_a_hover_in_time(browser, big: Path):  # noqa: F811
    rng = np.random.default_rng(1)
    with running_server({"big": big}) as (base, _):
        opened = open_map(browser, base, timeout=120)
        answers = []
        for item_id in rng.choice(BIG, 15, replace=False).tolist():
            point_at(browser, item_id)
            seen = tip(browser)
            assert not seen["hidden"] and seen["text"].startswith("class "), seen
            answers.append(seen["ms"])
    print(f"\n100k-point map opened in {opened:.2f} s; hover answered in median "
          f"{np.median(answers):.1f} ms, max {max(answers):.1f} ms")  # fmt: skip
    assert max(answers) < HOVER_BUDGET_MS


def test_a_keyed_page_asks_for_the_key_first_and_shows_field_messages(
    browser,  # noqa: F811
    digits: Path,
    digit_dir: Path,
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with running_server({"digits": digits}, {"LOOKALIKE_READ_KEYS": "sesame"}) as (base, _):
        browser.get(base + "/")
        wait = WebDriverWait(browser, 30)
        form = browser.find_element(By.ID, "key-form")
        assert form.is_displayed() and not browser.find_element(By.ID, "app").is_displayed()
        assert "Bearer" not in browser.find_element(By.TAG_NAME, "body").text
        requested = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        assert not [url for url in requested if "/v1/" in url], requested  # nothing loaded yet

        browser.find_element(By.ID, "key").send_keys("wrong")
        browser.find_element(By.CSS_SELECTOR, "#key-form button").click()  # reloads, then 401
        wait.until(lambda b: b.find_element(By.ID, "key-problem").text == "unknown API key")
        assert browser.find_element(By.ID, "key-form").is_displayed()

        browser.find_element(By.ID, "key").send_keys("sesame")
        browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
        wait.until(lambda b: b.find_element(By.ID, "app").is_displayed())
        assert not browser.find_element(By.ID, "key-form").is_displayed()  # not just [hidden]
        assert browser.execute_script(SHOWN_THOUGH_HIDDEN) == []
        assert browser.execute_script("return sessionStorage.getItem('lookalike-key')") == "sesame"
        assert browser.execute_script("return localStorage.length") == 0

        k = browser.find_element(By.ID, "k")
        k.clear()
        k.send_keys("0")
        browser.find_element(By.ID, "file").send_keys(str(next((digit_dir / "7").glob("*.png"))))
        wait.until(lambda b: b.find_element(By.ID, "status").text.startswith("k: "))
        assert "greater than or equal to 1" in browser.find_element(By.ID, "status").text
