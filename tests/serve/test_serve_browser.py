"""End to end in a real browser: Playwright drives Chromium (Debian's, or Playwright's own build) against
`cnnkit serve` on a loopback port.

Screenshots of each page go to test-artifacts/ (kept by CI as artefacts, ignored by git).
"""

import re
from pathlib import Path

import pytest
from serve_helpers import ARTIFACTS, TRAINED_RUN

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
STEP_TIMEOUT_MS = 30_000  # a bound on every wait; the steps themselves take a second or two
TRAINING_TIMEOUT_MS = 90_000


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


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server, viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(STEP_TIMEOUT_MS)
    errors = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


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
