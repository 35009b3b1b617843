"""`difflm serve`: the event stream (steps, then the final sentences, marked), bad input as
one message while the server goes on, concurrent requests kept apart, and the page end to
end in headless Chromium (skipped, with the reason, where no Chromium is installed)."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

fastapi = pytest.importorskip("fastapi", reason="difflm serve needs the serve extra (pip install 'difflm[serve]')")
from fastapi.testclient import TestClient  # noqa: E402

from difflm.serve import create_app  # noqa: E402

MODEL = "pretrained:grammar"  # shipped in the package: no training in these tests


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(MODEL))


def events(client: TestClient, **query: str) -> list[tuple[str, dict]]:
    """The (event, data) pairs of one /generate stream."""
    out, kind = [], None
    with client.stream("GET", "/generate", params=query) as response:
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                out.append((kind, json.loads(line.removeprefix("data: "))))
    return out


def test_a_run_streams_its_steps_then_the_marked_sentences(client):
    assert "Generate" in client.get("/").text
    stream = events(client, length="8", keywords="cheap", steps="12", n="3")
    kinds = [kind for kind, _ in stream]
    assert kinds.count("step") == 12 and kinds[-1] == "done", kinds
    assert [d["step"] for k, d in stream if k == "step"] == list(range(1, 13))
    samples = stream[-1][1]["samples"]
    assert len(samples) == 3 and all(set(s["checks"]) == {"length", "keywords"} for s in samples)
    assert all(s["checks"]["length"] and len(s["text"].split()) == 8 for s in samples)  # exact under anchors
    assert all(isinstance(s["grammatical"], bool) for s in samples)


def test_a_discrete_run_streams_its_steps_too(tmp_path, toy_corpus):
    from difflm.train import train
    from tests.conftest import tiny_config

    run = tmp_path / "masked"
    train(tiny_config(f"lines:{toy_corpus}", "model.kind=masked", "train.steps=20"), run, progress=False)
    stream = events(TestClient(create_app(str(run))), length="6", steps="6", n="2")
    steps = [data for kind, data in stream if kind == "step"]
    assert [d["step"] for d in steps] == list(range(1, 7)) and stream[-1][0] == "done", stream
    assert all(len(d["rows"]) == 2 for d in steps)
    assert all(len(s["text"].split()) == 6 for s in stream[-1][1]["samples"])


@pytest.mark.parametrize(
    "query, message",
    [
        ({"keywords": "xylophone"}, "keyword 'xylophone' is not in the vocabulary"),
        ({"length": "many"}, "length"),
        ({"steps": "0"}, "steps must be 1"),
        ({"sampler": "nonsense"}, "unknown sampler 'nonsense'"),
        ({"attribute": "food=Italian"}, "no attribute classifier"),
    ],
)
def test_bad_input_is_one_message_and_the_server_goes_on(client, query, message):
    stream = events(client, **query)
    assert [k for k, _ in stream] == ["error"] and message in stream[0][1]["message"], stream
    assert events(client, steps="2", n="1")[-1][0] == "done"


def test_concurrent_requests_do_not_see_each_other(client):
    def final(length: str) -> list[str]:
        return [s["text"] for s in events(client, length=length, steps="10", n="2")[-1][1]["samples"]]

    with ThreadPoolExecutor(2) as pool:
        short, long = pool.map(final, ["5", "12"])
    assert all(len(t.split()) == 5 for t in short) and all(len(t.split()) == 12 for t in long)


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.mark.skipif(
    _chromium() is None, reason="no Chromium with chromedriver installed (apt install chromium chromium-driver)"
)
def test_the_page_in_a_real_browser(tmp_path):
    """Open the page, submit a constraint, see at least two intermediate steps and the final
    sentences, and save a screenshot (tmp_path/serve.png; docs/img/serve.png is one of these)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (the dev extra)")
    import uvicorn
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(MODEL), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    browser, driver_path = _chromium()  # type: ignore[misc]
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        driver.find_element(By.ID, "length").send_keys("10")
        driver.find_element(By.ID, "keywords").send_keys("cheap")
        steps = driver.find_element(By.ID, "steps")
        steps.clear()
        steps.send_keys("40")
        driver.find_element(By.ID, "go").click()
        body = driver.find_element(By.TAG_NAME, "body")
        WebDriverWait(driver, 120).until(lambda d: body.get_attribute("data-state") in ("done", "error"))
        assert driver.find_element(By.ID, "error").text == ""
        assert int(body.get_attribute("data-steps")) >= 2  # intermediate steps were shown
        final = driver.find_elements(By.CSS_SELECTOR, "#final div")
        assert len(final) == 4 and all("length" in row.text and "grammatical" in row.text for row in final)
        driver.save_screenshot(str(tmp_path / "serve.png"))
        assert (tmp_path / "serve.png").stat().st_size > 10_000
        driver.find_element(By.ID, "keywords").send_keys(",xylophone")  # bad input: a message on the page
        driver.find_element(By.ID, "go").click()
        WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "error").text)
        assert "xylophone" in driver.find_element(By.ID, "error").text
    finally:
        driver.quit()
        server.should_exit = True
        thread.join(timeout=10)
