"""The Detect page in a real browser (Chromium via Playwright, as test_serve_browser.py): an example canvas sent to
a detection run comes back with its boxes drawn on the page, as many as the score slider lets through; a bad
upload shows the server's message; with no detector the page gives the command that trains one."""

import re

import pytest
from conftest import serving
from serve_helpers import ARTIFACTS
from test_serve_browser import browser, opened_page, page  # noqa: F401

COLOURED_PIXELS = """() => {
    const view = document.getElementById("view");
    const pixels = view.getContext("2d").getImageData(0, 0, view.width, view.height).data;
    let coloured = 0;
    for (let i = 0; i < pixels.length; i += 4) {
        if (pixels[i] !== pixels[i + 1] || pixels[i + 1] !== pixels[i + 2]) coloured += 1;
    }
    return coloured;
}"""


@pytest.fixture(scope="module")
def detect_server(detector_checkpoints_dir):
    with serving(detector_checkpoints_dir) as url:
        yield url


def test_an_example_comes_back_with_its_boxes_drawn(browser, detect_server):  # noqa: F811
    from playwright.sync_api import expect

    with opened_page(browser, detect_server, {"width": 1280, "height": 900}) as tab:
        # The list of detectors is held back until the example is clicked: a click before it arrives waits for it.
        held = []
        tab.route("**/api/detect/detectors", lambda route: held.append(route))
        tab.goto("/detect")
        tab.locator("#examples button[data-name='canvas-001.png']").click()
        while not held:
            tab.wait_for_timeout(50)
        held[0].continue_()
        expect(tab.locator("#view")).to_have_attribute("data-drawn", re.compile(r"^\d+$"))
        expect(tab.locator("#detector option")).to_have_count(1)
        expect(tab.locator("#no-detector")).to_be_hidden()
        # The picture is grey: every coloured pixel on the page's canvas belongs to a box or its label.
        tab.locator("#threshold").fill("0")
        expect(tab.locator("#count")).to_contain_text("score at least 0.00")
        shown, total = re.match(r"(\d+) of (\d+) detection", tab.locator("#count").inner_text()).groups()
        assert shown == total and int(total) > 0
        assert tab.locator("#view").get_attribute("data-drawn") == total
        expect(tab.locator("#list li")).to_have_count(int(total))
        assert tab.evaluate(COLOURED_PIXELS) > 0
        ARTIFACTS.mkdir(exist_ok=True)
        tab.screenshot(path=str(ARTIFACTS / "serve-detect.png"), full_page=True)
        tab.locator("#threshold").fill("1")
        expect(tab.locator("#view")).to_have_attribute("data-drawn", "0")
        assert tab.evaluate(COLOURED_PIXELS) == 0
        tab.locator("#file").set_input_files({"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"})
        expect(tab.locator("#message")).to_have_class(re.compile("error"))
        expect(tab.locator("#message")).to_contain_text("upload a PNG, JPEG")
        expect(tab.locator("#view")).to_be_hidden()  # the previous picture's boxes do not stay beside the error


def test_without_a_detector_the_page_gives_the_command_that_trains_one(page, checkpoints_dir):  # noqa: F811
    from playwright.sync_api import expect

    page.goto("/detect")  # the live server's folder holds a classifier only
    expect(page.locator("#no-detector")).to_be_visible()
    out = re.escape(str(checkpoints_dir / "frcnn-canvas"))
    command = re.compile(rf"^cnnkit detect train --data canvas-mnist .*--out {out}$")
    expect(page.locator("#train-command")).to_have_text(command)
    assert page.locator("#detector option").count() == 0
