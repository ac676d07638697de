"""The Explain page in a real browser (Chromium via Playwright, as test_serve_browser.py): click a unit, read the
numbers the page shows and add them up; move a slider and check the output size against torch itself."""

import pytest
import torch
from serve_helpers import ARTIFACTS, TRAINED_RUN
from test_serve_browser import PHONE, browser, draw_stroke, horizontal_overflow, opened_page  # noqa: F401

DIGITS = 4  # decimals the page shows


@pytest.fixture(params=["desktop", "phone"])
def explain_page(request, browser, live_server):  # noqa: F811
    viewport = PHONE if request.param == "phone" else {"width": 1280, "height": 1000}
    with opened_page(browser, live_server, viewport) as page:
        page.goto(f"/explain?source=run:{TRAINED_RUN}")
        yield page, request.param


def numbers(page, selector) -> list[float]:
    return [float(text) for text in page.locator(selector).all_inner_texts()]


def test_click_a_unit_and_its_products_add_up_to_its_value(explain_page):
    from playwright.sync_api import expect

    page, kind = explain_page
    expect(page.locator("#layer option")).to_have_count(3)  # LeNet-5 (ReLU): three convolutions
    page.locator("#pad").scroll_into_view_if_needed()
    box = page.locator("#pad").bounding_box()
    draw_stroke(page, [(box["width"] * 0.55, 15), (box["width"] * 0.5, box["height"] * 0.5),
                       (box["width"] * 0.45, box["height"] - 15)])
    page.click("#use-drawing")
    page.fill("#channel", "2")
    page.locator("#channel").dispatch_event("change")
    expect(page.locator("#map-caption")).to_contain_text("channel 2")
    canvas = page.locator("#map").bounding_box()
    page.locator("#map").click(position={"x": canvas["width"] * 0.5, "y": canvas["height"] * 0.4})
    expect(page.locator("#arithmetic table.products")).to_have_count(1)  # one input channel: grey digits
    products = numbers(page, "#arithmetic table.products td")
    assert len(products) == 25  # a 5x5 kernel
    bias, total, value = (float(page.locator(s).inner_text()) for s in ("#bias", "#arithmetic-sum", "#unit-value"))
    half_step = 0.5 * 10 ** -DIGITS  # each shown number is rounded to DIGITS decimals
    assert abs(sum(products) + bias - value) <= (len(products) + 2) * half_step
    assert abs(total - value) <= half_step
    kernel, patch = numbers(page, "#arithmetic table.kernel td"), numbers(page, "#arithmetic table.patch td")
    for weight, pixel, product in zip(kernel, patch, products):
        assert abs(weight * pixel - product) <= (abs(weight) + abs(pixel) + 1) * half_step
    steps = page.locator("#steps").inner_text()
    assert "ReLU" in steps and "MaxPool2d" in steps
    assert horizontal_overflow(page) == 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"serve-explain-{kind}.png"), full_page=True)


def test_a_deeper_layer_shows_its_field_and_gradient(explain_page):
    from playwright.sync_api import expect

    page, _ = explain_page
    expect(page.locator("#layer option")).to_have_count(3)
    expect(page.locator("#map-caption")).to_contain_text("features.0")
    page.select_option("#layer", "features.3")
    expect(page.locator("#map-caption")).to_contain_text("features.3")
    page.locator("#map").click(position={"x": 2, "y": 2})  # unit (0, 0)
    expect(page.locator("#field-caption")).to_contain_text("14x14 pixels, rows 0 to 13, columns 0 to 13")
    expect(page.locator("#gradient-figure")).to_be_visible()
    expect(page.locator("#arithmetic")).to_contain_text("input gradient")
    assert page.locator("#arithmetic table").count() == 0


def read_output_size(page) -> tuple[list[int], int | None]:
    settings = [int(page.locator(f"#size-{name}").input_value()) for name in "nksp"]
    shown = page.locator("#size-out")
    return settings, int(shown.inner_text()) if shown.count() else None


def test_sliders_redraw_the_output_size(explain_page):
    from playwright.sync_api import expect

    page, _ = explain_page
    expect(page.locator("#layer option")).to_have_count(3)
    settings, out = read_output_size(page)
    assert settings == [32, 5, 1, 0] and out == 28  # the first layer's own: LeNet-5 reads 32x32
    for slider, key in (("#size-s", "ArrowRight"), ("#size-p", "ArrowRight"), ("#size-k", "ArrowLeft"),
                        ("#size-n", "ArrowLeft"), ("#size-s", "ArrowRight")):
        before = read_output_size(page)[0]
        page.locator(slider).focus()
        page.keyboard.press(key)
        settings, out = read_output_size(page)
        assert settings != before
        n, k, s, p = settings
        # torch itself says how big the output of such a convolution is
        expected = torch.nn.functional.conv2d(torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k), stride=s, padding=p)
        assert out == expected.shape[-1], (settings, out)
        assert page.locator("#size-grid rect.output").count() == out * out
    page.locator("#size-n").fill("3")
    page.locator("#size-p").fill("0")
    page.locator("#size-k").fill("7")
    expect(page.locator("#size-formula")).to_contain_text("does not fit")
