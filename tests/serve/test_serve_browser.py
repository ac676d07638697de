"""End to end in a real browser: Playwright drives Chromium (Debian's, or Playwright's own build) against
`cnnkit serve` on a loopback port.

Screenshots of each page go to test-artifacts/ (kept by CI as artefacts, ignored by git).
"""

import contextlib
import re
from pathlib import Path

import pytest
from conftest import serving
from serve_helpers import ARTIFACTS, DENOISING_RUN, TRAINED_RUN

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
STEP_TIMEOUT_MS = 30_000  # a bound on every wait; the steps themselves take a second or two
TRAINING_TIMEOUT_MS = 90_000
PHONE = {"width": 400, "height": 800}  # the narrow screen of issue 22
PAGES = ["/", "/photo", "/train", "/zoo", "/explain", "/teach", "/detect"]


def chromium_executable(debian: Path = CHROMIUM) -> str | None:
    """Debian's Chromium when it is installed, else None: Playwright then launches its own build (the one
    'python -m playwright install chromium' downloads). `make test` installs one or the other."""
    return str(debian) if debian.exists() else None


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=chromium_executable(), args=CHROMIUM_ARGS,
                                                  headless=True)
        except Error as exc:
            pytest.fail(f"The browser tests need Chromium ({str(exc).splitlines()[0]}); 'make test' installs it "
                        "(apt-get install chromium as root on Debian/Ubuntu, else python -m playwright install "
                        "chromium).")
        yield launched
        launched.close()


@contextlib.contextmanager
def opened_page(browser, base_url, viewport):
    context = browser.new_context(base_url=base_url, viewport=viewport, has_touch=viewport == PHONE)
    opened = context.new_page()
    opened.set_default_timeout(STEP_TIMEOUT_MS)
    errors = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def page(browser, live_server):
    with opened_page(browser, live_server, {"width": 1280, "height": 900}) as opened:
        yield opened


@pytest.fixture
def phone(browser, live_server):
    with opened_page(browser, live_server, PHONE) as opened:
        yield opened


@pytest.fixture(scope="module")
def mixed_server(mixed_checkpoints_dir):
    with serving(mixed_checkpoints_dir) as url:
        yield url


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"serve-{name}.png"), full_page=True)


def draw_stroke(page, points) -> None:
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + points[0][0], box["y"] + points[0][1])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(box["x"] + x, box["y"] + y, steps=8)
    page.mouse.up()


def test_draw_a_stroke_and_see_a_prediction(page):
    from playwright.sync_api import expect

    page.goto("/")
    expect(page.locator(f"#checkpoint option[value='{TRAINED_RUN}']")).to_have_count(1)
    expect(page.locator("#filters")).to_have_attribute("src", re.compile("^data:image/png"))
    assert page.locator("#prediction").inner_text() == ""
    draw_stroke(page, [(150, 50), (145, 140), (140, 230)])
    expect(page.locator("#prediction")).to_have_text(re.compile(r"^\d \(\d+\.\d%\)$"))
    expect(page.locator("#bars .bar-row")).to_have_count(10)
    expect(page.locator("#maps figure")).to_have_count(4)  # LeNet-5 (ReLU): three convolutions, one hidden FC
    expect(page.locator("#seen")).to_have_attribute("src", re.compile("^data:image/png"))
    screenshot(page, "draw")


def test_upload_a_photo_and_see_five_labels(page):
    from playwright.sync_api import expect

    from cnnkit.serve.photo import EXAMPLES_DIR

    page.goto("/photo")
    expect(page.locator("#examples button")).to_have_count(2)
    page.set_input_files("#file", str(EXAMPLES_DIR / "golden_gate.jpg"))
    expect(page.locator("#labels li")).to_have_count(5)
    expect(page.locator("#labels")).to_contain_text("suspension bridge")
    expect(page.locator("#overlay")).to_have_attribute("src", re.compile("^data:image/png"))
    screenshot(page, "photo")


def test_a_bad_upload_shows_the_servers_message(page, tmp_path):
    from playwright.sync_api import expect

    fake = tmp_path / "notes.png"
    fake.write_bytes(b"not really a picture")
    page.goto("/photo")
    page.set_input_files("#file", str(fake))
    expect(page.locator("#message.error")).to_contain_text("notes.png is not a readable")


def test_start_training_and_watch_the_curve_update(page):
    from playwright.sync_api import expect

    page.goto("/train")
    # All of MNIST for an epoch: long enough (seconds, even on a fast CPU) for the curve to be seen growing
    # over several updates; the test then stops it, which still evaluates and saves the model.
    page.fill("#train-images", "60000")
    page.fill("#epochs", "1")
    page.click("#start")
    points = "Number(document.querySelector('#loss-curve').dataset.points)"
    page.wait_for_function(f"{points} >= 2")
    first = int(page.locator("#loss-curve").get_attribute("data-points"))
    page.wait_for_function(f"{points} > {first}")
    expect(page.locator("#filters")).to_have_attribute("src", re.compile("^data:image/png"))
    page.click("#stop")
    expect(page.locator("#result")).to_contain_text("Saved as", timeout=TRAINING_TIMEOUT_MS)
    expect(page.locator("#status")).to_contain_text("stopped")
    expect(page.locator("#start")).to_be_enabled()
    screenshot(page, "train")
    run = page.locator("#result b").inner_text()

    page.click("#result a")  # "draw digits for it": the Draw page with the new checkpoint chosen
    expect(page.locator("#checkpoint")).to_have_value(run)


def test_zoo_page_shows_resnet18_parameters(page):
    from playwright.sync_api import expect

    page.goto("/zoo")
    page.select_option("#model", "resnet18")
    page.fill("#input-size", "3x224x224")
    page.click("#show")
    expect(page.locator("#total-params")).to_have_text("11,689,512")
    expect(page.locator("#diagram .stage")).to_have_count(6)
    expect(page.locator("#layers tbody tr").first).to_contain_text("conv1")
    screenshot(page, "zoo")


# ---------------------------------------------------------------------------------- issue 22: the web pages
def horizontal_overflow(page) -> int:
    """How many pixels the page is wider than the window (0: nothing is cut off or needs a sideways scroll)."""
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")


def visible_images_without_picture(page) -> list[str]:
    """Images shown with no picture to show: the browser draws a broken-image icon or their alt text."""
    return page.eval_on_selector_all(
        "img", "els => els.filter(e => !e.getAttribute('src') && e.getClientRects().length).map(e => e.id || e.alt)")


def test_draw_offers_only_classifiers_and_opens_on_the_newest(browser, mixed_server):
    from playwright.sync_api import expect

    with opened_page(browser, mixed_server, {"width": 1280, "height": 900}) as page:
        page.goto("/")  # the denoising autoencoder is the newest run, but it cannot read a drawing
        expect(page.locator("#checkpoint")).to_have_value(TRAINED_RUN)
        assert page.locator("#checkpoint option").all_inner_texts() == [TRAINED_RUN]
        draw_stroke(page, [(150, 50), (145, 140), (140, 230)])
        expect(page.locator("#prediction")).to_have_text(re.compile(r"^\d \(\d+\.\d%\)$"))
        expect(page.locator("#message")).to_be_hidden()

        page.goto(f"/?checkpoint={DENOISING_RUN}")  # a link to a run of another task: said, not crashed into
        expect(page.locator("#checkpoint")).to_have_value(TRAINED_RUN)
        expect(page.locator("#message")).to_contain_text(f"{DENOISING_RUN} is not a classifier")


def test_no_classifier_at_all_is_explained(browser, mixed_checkpoints_dir, tmp_path):
    import shutil

    from playwright.sync_api import expect

    shutil.copytree(mixed_checkpoints_dir / DENOISING_RUN, tmp_path / DENOISING_RUN)
    with serving(tmp_path) as url, opened_page(browser, url, {"width": 1280, "height": 900}) as page:
        page.goto("/")
        expect(page.locator("#message")).to_contain_text("No trained classifiers")
        expect(page.locator("#message")).to_contain_text("denoising")
        assert page.locator("#checkpoint option").count() == 0


@pytest.mark.parametrize("path", PAGES)
def test_pages_fit_a_narrow_screen(phone, path):
    from playwright.sync_api import expect

    phone.goto(path)
    expect(phone.locator("header nav a")).to_have_count(len(PAGES))
    phone.wait_for_load_state("networkidle")
    assert horizontal_overflow(phone) <= 0
    ARTIFACTS.mkdir(exist_ok=True)
    phone.screenshot(path=str(ARTIFACTS / f"serve-400px{path.replace('/', '-').rstrip('-')}.png"), full_page=True)


def test_drawing_on_a_narrow_screen_shows_the_whole_prediction(phone):
    from playwright.sync_api import expect

    phone.goto("/")
    expect(phone.locator("#filters")).to_have_attribute("src", re.compile("^data:image/png"))
    phone.locator("#pad").scroll_into_view_if_needed()
    draw_stroke(phone, [(150, 50), (145, 140), (140, 230)])
    expect(phone.locator("#prediction")).to_have_text(re.compile(r"^\d \(\d+\.\d%\)$"))
    expect(phone.locator("#bars .bar-row")).to_have_count(10)
    assert horizontal_overflow(phone) <= 0
    width = PHONE["width"]
    for selector in ("#pad", "#prediction", "#bars"):
        box = phone.locator(selector).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, (selector, box)
    # The answer sits right under the drawing (before the other panels), so a finger that draws sees it.
    pad, prediction = phone.locator("#pad").bounding_box(), phone.locator("#prediction").bounding_box()
    assert 0 < prediction["y"] - (pad["y"] + pad["height"]) < PHONE["height"] / 2
    ARTIFACTS.mkdir(exist_ok=True)
    phone.screenshot(path=str(ARTIFACTS / "serve-400px-draw-result.png"), full_page=True)


@pytest.mark.parametrize("path", PAGES)
def test_empty_panels_show_no_broken_images(page, path):
    from playwright.sync_api import expect

    page.goto(path)
    expect(page.locator("header nav a")).to_have_count(len(PAGES))
    page.wait_for_load_state("networkidle")
    assert visible_images_without_picture(page) == []
    if path == "/":
        expect(page.locator(".panel.prediction .placeholder")).to_be_visible()


def test_train_menus_show_their_whole_choice(page):
    """Each option's text fits its menu's box (the long model names were cut off)."""
    page.goto("/train")
    cut = page.evaluate("""() => {
        const measure = document.createElement("canvas").getContext("2d"), cut = [];
        for (const select of document.querySelectorAll("select")) {
            const style = getComputedStyle(select);
            measure.font = style.font;
            const room = select.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight) - 20;
            for (const option of select.options) {
                if (measure.measureText(option.text).width > room) cut.push(option.text);
            }
        }
        return cut;
    }""")
    assert cut == []
    page.select_option("#model", "lenet5")
    assert "1998 paper" in page.locator("#model-note").inner_text()


def test_zoo_table_says_that_it_scrolls(page):
    from playwright.sync_api import expect

    page.goto("/zoo?model=resnet18")
    expect(page.locator("#total-params")).to_have_text("11,689,512")
    cue = page.locator("#layers-cue")
    expect(cue).to_be_visible()
    expect(cue).to_contain_text(re.compile(r"\d+ layers: scroll the table down"))
    expect(page.locator("#layers-wrap")).to_have_class(re.compile("more-below"))
    page.eval_on_selector("#layers-wrap", "wrap => wrap.scrollTo(0, wrap.scrollHeight)")
    expect(page.locator("#layers-wrap")).not_to_have_class(re.compile("more-below"))
    page.select_option("#model", "lenet5")  # a dozen layers fit: no cue
    expect(page.locator("#total-params")).not_to_have_text("11,689,512")
    expect(cue).to_be_hidden()
    screenshot(page, "zoo-lenet5")


def test_a_refused_upload_clears_the_previous_result(page, tmp_path):
    from playwright.sync_api import expect

    page.goto("/photo")
    page.click("#examples button[data-name='golden_gate.jpg']")
    expect(page.locator("#labels li")).to_have_count(5)
    expect(page.locator("#overlay")).to_be_visible()
    fake = tmp_path / "notes.png"
    fake.write_bytes(b"not really a picture")
    page.set_input_files("#file", str(fake))
    expect(page.locator("#message.error")).to_contain_text("notes.png is not a readable")
    expect(page.locator("#labels li")).to_have_count(0)
    expect(page.locator("#overlay")).to_be_hidden()
    expect(page.locator("#input")).to_be_hidden()
    assert "golden_gate" not in page.locator("#labels-note").inner_text()
    assert visible_images_without_picture(page) == []
