"""The web page in a real browser (headless Chromium) against a real server on loopback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import TINY, running_server

from lookalike.classify import train_classifier
from lookalike.index import build_index
from lookalike.jobs.bulk import embed_images
from lookalike.store.collection import Collection

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "page.png"

pytestmark = [
    pytest.mark.skipif(
        not (CHROMIUM and DRIVER),
        reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
    ),
    pytest.mark.slow,  # a real browser: `make test` runs it, `pytest -m "not slow"` does not
]


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def test_drop_an_image_see_its_lookalikes_then_click_one(browser, digit_dir: Path, tmp_path: Path):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    collection = tmp_path / "digits"
    embed_images(
        [digit_dir], collection, TINY, labels_from_folders=True, progress=False, num_workers=0
    )
    build_index(Collection.open(collection), progress=False)
    train_classifier(collection, "digits", folds=3)
    query = sorted((digit_dir / "7").glob("*.png"))[0]

    with running_server({"digits": collection}) as (base, _):
        browser.get(base + "/")
        # the grid is redrawn as answers come in: an element read between a find and its use
        # may be gone (stale), which only means "not yet"
        wait = WebDriverWait(browser, 60, ignored_exceptions=(StaleElementReferenceException,))
        wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#classifier option[value=digits]"))
        k = browser.find_element(By.ID, "k")
        k.clear()
        k.send_keys("6")
        browser.find_element(By.ID, "file").send_keys(str(query))
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#grid .hit")) == 6)
        cards = browser.find_elements(By.CSS_SELECTOR, "#grid .hit")
        first = cards[0]
        assert first.find_element(By.CSS_SELECTOR, ".label").text == "7"
        assert first.find_element(By.CSS_SELECTOR, ".distance").text == "d=0.000"
        labels = [card.find_element(By.CSS_SELECTOR, ".label").text for card in cards]
        assert set(labels) <= {"0", "1", "7"}
        wait.until(ready.visibility_of_element_located((By.ID, "prediction")))
        wait.until(lambda b: b.find_element(By.ID, "prediction").text.startswith("digits: "))
        wait.until(  # every thumbnail loaded from the API
            lambda b: all(
                img.get_attribute("naturalWidth") not in (None, "0")
                for img in b.find_elements(By.CSS_SELECTOR, "#grid .hit img")
            )
        )
        SCREENSHOT.parent.mkdir(exist_ok=True)
        browser.save_screenshot(str(SCREENSHOT))

        clicked = cards[3].get_attribute("data-id")
        cards[3].click()
        wait.until(
            lambda b: (
                b.find_elements(By.CSS_SELECTOR, "#grid .hit")
                and b.find_elements(By.CSS_SELECTOR, "#grid .hit")[0].get_attribute("data-id")
                == clicked
            )
        )
        assert browser.find_element(By.ID, "status").text == "6 neighbours"

        browser.get(base + "/docs")  # the API docs page renders the spec, with no CDN reachable
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".opblock")) >= 18)
        paths = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
        assert "/v1/collections/{name}/search" in paths
