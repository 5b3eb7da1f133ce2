"""The web page of `unfreeze api` in headless Chromium against a real server: the model it
describes, one card per uploaded image with the decision, probabilities and Grad-CAM overlay
the API gives, per-image errors, the token prompt, and nothing fetched from another host."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx
import pytest
from api_helpers import carded_model, png_bytes, serving, tiny_model
from conftest import chromium

from unfreeze.deploy.api import WEB, create_app
from unfreeze.deploy.api_limits import ApiSettings
from unfreeze.evaluation.calibrate import OperatingPoint

LABELS = OperatingPoint(["blue", "red"], None, None, "f1", 1.0, "none",
                        thresholds=[0.2, 0.9], temperatures=[1.0, 2.0], fallbacks={})
pytestmark = pytest.mark.slow  # a real browser process beside real servers
TOKEN = "t0k"
WAIT_S = 60

# What the page knows of one result card (None until it exists).
CARD = """
const card = [...document.querySelectorAll('.result')].find(c => c.dataset.name === arguments[0]);
if (!card) return null;
const overlay = card.querySelector('img.overlay');
const error = card.querySelector('.error');
const decision = card.querySelector('.decision');
return {
  busy: card.getAttribute('aria-busy'),
  predicted: decision.hasAttribute('data-predicted') ? decision.dataset.predicted : null,
  decision: decision.textContent,
  bars: [...card.querySelectorAll('.bars li')].map(li => ({
    name: li.querySelector('.class-name').textContent,
    value: li.querySelector('.value').textContent,
    width: parseFloat(li.querySelector('.bar').style.width),
    decided: li.classList.contains('decided'),
    tick: li.querySelector('.tick') ? parseFloat(li.querySelector('.tick').style.left) : null})),
  overlay: overlay ? overlay.complete && overlay.naturalWidth : null,
  caption: card.querySelector('.explain figcaption').textContent,
  release: card.querySelector('.release').textContent,
  error: error.hidden ? null : error.textContent};
"""


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium for the module."""
    with chromium() as driver:
        yield driver


@pytest.fixture(scope="module")
def binary_model(tmp_path_factory):
    return carded_model(tmp_path_factory.mktemp("page") / "export")


@pytest.fixture(scope="module")
def binary(browser, binary_model):
    with serving(create_app(ApiSettings(binary_model, max_wait_ms=1))) as url:
        yield url


@pytest.fixture(scope="module")
def guarded(browser, binary_model):
    with serving(create_app(ApiSettings(binary_model, max_wait_ms=1, token=TOKEN))) as url:
        yield url


@pytest.fixture(scope="module")
def multilabel(browser, tmp_path_factory):
    folder = tiny_model(tmp_path_factory.mktemp("page") / "ml", ("blue", "red"), LABELS,
                        multilabel=True)
    with serving(create_app(ApiSettings(folder, max_wait_ms=1))) as url:
        yield url


def wait(driver, condition):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(condition)


def open_page(driver, url: str) -> None:
    driver.get(url + "/")
    wait(driver, lambda d: d.find_element("id", "release").text)


def upload(driver, path) -> dict:
    """Pick ``path`` in input#files; its card once both answers are shown."""
    driver.find_element("id", "files").send_keys(str(path))
    return wait(driver, lambda d: (card := d.execute_script(CARD, path.name))
                and card["busy"] == "false" and card)


def api_predict(url: str, data: bytes, name: str, **headers) -> dict:
    r = httpx.post(url + "/v1/predict", files=[("file", (name, data, "image/png"))],
                   headers=headers)
    return r.json()


def screenshot(driver, path) -> None:
    """The whole page as a PNG (to look at: pytest --basetemp)."""
    height = driver.execute_script("return document.body.scrollHeight")
    driver.set_window_size(1200, min(height + 100, 4000))
    driver.save_screenshot(str(path))
    driver.set_window_size(1200, 900)
    assert path.stat().st_size > 10_000


def check_bars(card: dict, result: dict, ticks: dict) -> None:
    """One bar per class, its width and value the probability, its tick the threshold."""
    assert [b["name"] for b in card["bars"]] == list(result["probabilities"])
    for bar in card["bars"]:
        p = result["probabilities"][bar["name"]]
        assert bar["value"] == f"{p:.3f}"
        assert bar["width"] == pytest.approx(100 * p, abs=0.06)
        assert bar["tick"] == (None if bar["name"] not in ticks
                               else pytest.approx(100 * ticks[bar["name"]], abs=0.06))


def test_page_describes_the_model_and_shows_what_the_api_decides(browser, binary, tmp_path):
    driver = browser
    driver.get_log("browser")  # only this test's messages below
    open_page(driver, binary)
    model = httpx.get(binary + "/v1/model").json()
    assert driver.find_element("id", "release").text == model["release"]
    facts = driver.find_element("id", "facts").text
    assert "multiclass" in facts and "cat, dog" in facts and "75 × 75 px" in facts
    assert "threshold 0.300 on P(dog) (chosen by f1)" in facts
    assert re.search(r"Temperature\s+1\.50", facts) and re.search(r"TTA\s+none", facts)
    card_text = driver.find_element("id", "card-text").get_attribute("textContent")
    assert card_text == model["card"]["markdown"] and "A tiny test model." in card_text

    image = tmp_path / "cell one.png"
    image.write_bytes(png_bytes(3))
    card = upload(driver, image)
    answer = api_predict(binary, image.read_bytes(), image.name)
    result = answer["results"][0]
    assert card["error"] is None
    assert card["predicted"] == card["decision"] == result["predicted"]
    check_bars(card, result, {"dog": 0.3})
    assert [b["name"] for b in card["bars"] if b["decided"]] == [result["predicted"]]
    assert card["overlay"] > 0 and card["caption"] == f"Grad-CAM: {result['predicted']}"
    assert card["release"] == f"answered by {answer['release']}"

    junk = tmp_path / "notes.txt"
    junk.write_bytes(b"not an image")
    bad = upload(driver, junk)
    reason = api_predict(binary, junk.read_bytes(), junk.name)["results"][0]["error"]
    assert "cannot decode image" in reason and "'notes.txt'" in reason
    assert bad["error"] == reason
    assert bad["predicted"] is None and bad["overlay"] is None and bad["bars"] == []
    screenshot(driver, tmp_path / "page.png")

    # Chrome reports every HTTP error answer to fetch() as a SEVERE "Failed to load
    # resource" console message: the two 422s for notes.txt (predict and explain) are the
    # answers this test asked for; any other SEVERE message is a fault of the page.
    refused = re.compile(re.escape(binary) + r"/v1/(predict|explain\?format=json) - Failed "
                         r"to load resource: the server responded with a status of 422 ")
    severe = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert len([m for m in severe if refused.match(m)]) <= 2
    assert [m for m in severe if not refused.match(m)] == []


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.links += [value for name, value in attrs if name in ("src", "href") and value]


def test_the_page_fetches_nothing_from_another_host(browser, binary, tmp_path):
    texts = {}
    for path in ("/", *(f"/static/{f.name}" for f in sorted(WEB.iterdir()))):
        r = httpx.get(binary + path)
        assert r.status_code == 200, path
        texts[path] = r.text
    assert texts["/"] == (WEB / "index.html").read_text()
    for path, text in texts.items():  # no address of another host, not even in a comment
        assert "http://" not in text and "https://" not in text, path
        assert not re.search(r"@import|url\(|\bimport\s*\(|\bimport\s.+\bfrom\b", text), path
    parser = _Links()
    parser.feed(texts["/"])
    assert set(parser.links) == {"data:,", "static/app.css", "static/app.js"}

    # in the browser, after an upload: every element's source and every fetched resource
    driver = browser
    open_page(driver, binary)
    image = tmp_path / "x.png"
    image.write_bytes(png_bytes(8))
    assert upload(driver, image)["overlay"] > 0
    used = driver.execute_script("""
        return [...document.querySelectorAll('[src], [href]')].map(e => e.src || e.href)
          .concat(performance.getEntriesByType('resource').map(e => e.name));""")
    fetched = [u for u in used if not u.startswith(("data:", "blob:"))]
    assert {u for u in fetched if not u.startswith(binary + "/")} == set()
    assert {binary + "/v1/model", binary + "/v1/predict",
            binary + "/v1/explain?format=json"} <= set(fetched)
    assert any(u.startswith("data:image/png;base64,") for u in used)
    assert any(u.startswith("blob:" + binary + "/") for u in used)


def test_a_multilabel_card_shows_the_label_set_the_api_decides(browser, multilabel, tmp_path):
    driver = browser
    open_page(driver, multilabel)
    facts = driver.find_element("id", "facts").text
    assert "multilabel" in facts and "each label at its own threshold" in facts
    assert re.search(r"blue\s+0\.200\s+1\.00", facts)
    assert re.search(r"red\s+0\.900\s+2\.00", facts)

    for seed in (5, 6):
        image = tmp_path / f"m{seed}.png"
        image.write_bytes(png_bytes(seed))
        card = upload(driver, image)
        result = api_predict(multilabel, image.read_bytes(), image.name)["results"][0]
        shown = httpx.post(multilabel + "/v1/explain?format=json",
                           content=image.read_bytes()).json()["result"]
        explained = shown["explained"]
        assert card["error"] is None and card["predicted"] == result["predicted"]
        assert [b["name"] for b in card["bars"] if b["decided"]] == result["labels"]
        assert card["decision"] == (", ".join(result["labels"]) or "no label")
        check_bars(card, result, result["thresholds"])
        assert card["overlay"] > 0 and card["caption"] == f"Grad-CAM: {explained}"
        assert explained == max(shown["probabilities"], key=shown["probabilities"].get)
    screenshot(driver, tmp_path / "page.png")


def test_a_token_is_asked_for_kept_for_the_session_and_sent(browser, guarded, tmp_path):
    from selenium.webdriver.common.keys import Keys

    assert httpx.get(guarded + "/v1/model").status_code == 401
    driver = browser
    driver.get(guarded + "/")
    token = wait(driver, lambda d: d.find_element("id", "token").is_displayed()
                 and d.find_element("id", "token"))
    assert driver.find_element("id", "release").text == ""
    assert not driver.find_element("id", "facts").is_displayed()

    token.send_keys("wrong", Keys.ENTER)
    error = wait(driver, lambda d: d.find_element("id", "auth-error").text)
    assert "refused" in error and "bearer token" in error
    token = driver.find_element("id", "token")
    token.clear()
    token.send_keys(TOKEN, Keys.ENTER)
    wait(driver, lambda d: d.find_element("id", "release").text)
    assert not driver.find_element("id", "auth").is_displayed()
    assert driver.execute_script("return Object.values(sessionStorage)") == [TOKEN]

    image = tmp_path / "t.png"
    image.write_bytes(png_bytes(9))
    card = upload(driver, image)
    result = api_predict(guarded, image.read_bytes(), image.name,
                         authorization=f"Bearer {TOKEN}")["results"][0]
    assert card["error"] is None and card["predicted"] == result["predicted"]
    assert card["overlay"] > 0

    driver.refresh()  # the token outlives a reload of the page
    wait(driver, lambda d: d.find_element("id", "release").text)
    assert not driver.find_element("id", "auth").is_displayed()
