"""Regenerate the README's screenshots of `cnnkit serve` (docs/images/serve-*.png).

    CNNKIT_DATA=../shared/datasets python docs/screenshots.py            # every page
    CNNKIT_DATA=../shared/datasets python docs/screenshots.py explain teach    # only the pages named
    CNNKIT_DETECTOR=runs/frcnn-canvas python docs/screenshots.py detect        # a detector trained before

Trains a LeNet-5 (ReLU) on 10,000 MNIST digits for 3 epochs into a temporary checkpoints folder (about a
minute on two cores), copies the detection run CNNKIT_DETECTOR beside it (a `cnnkit detect train` run, default
runs/frcnn-canvas; it takes about 15 CPU minutes to train, so it is not trained here, and without it "every page"
leaves the Detect page out), serves the playground on a free loopback port, drives Debian's Chromium through the
pages and saves each as a palette PNG small enough to commit.
"""

import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import uvicorn
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from cnnkit import TrainConfig, Trainer, create_model
from cnnkit.data.datasets import DatasetBundle
from cnnkit.serve import create_app
from cnnkit.serve.training import cached_dataset

OUT = Path(__file__).resolve().parent / "images"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
MAX_BYTES = 150_000


def train_digits(root: Path) -> None:
    full = cached_dataset("mnist")
    order = torch.randperm(len(full.train), generator=torch.Generator().manual_seed(0))
    data = DatasetBundle(full.name, full.train.subset(order[:10_000]), full.test.subset(torch.arange(2000)),
                         full.classes, full.mean, full.std)
    torch.manual_seed(0)
    config = TrainConfig(epochs=3, lr=0.003, optimizer="adam", weight_decay=0.0, batch_size=64, progress=False,
                         augment={"crop": 2})
    Trainer(create_model("lenet5_relu"), data, config, out=root / "lenet5-relu-mnist").fit()


def save_small(path: Path, width: int = 1100) -> None:
    """Scale to ``width`` and reduce to a 128-colour palette until the file is under MAX_BYTES."""
    image = Image.open(path).convert("RGB")
    if image.width > width:
        image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    for colours in (128, 64, 32):
        image.quantize(colours, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        if path.stat().st_size <= MAX_BYTES:
            return
    sys.exit(f"{path} is {path.stat().st_size} bytes even with 32 colours; crop the page")


def draw_seven(page) -> None:
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + 70, box["y"] + 60)
    page.mouse.down()
    for x, y in [(210, 60), (190, 110), (150, 170), (130, 230)]:
        page.mouse.move(box["x"] + x, box["y"] + y, steps=10)
    page.mouse.up()


def shoot_explain(page) -> None:
    """The pretrained EfficientNet-Lite0's first convolution on the bridge: one unit's 27 products."""
    page.goto("/explain?source=zoo:efficientnet_lite0@imagenet")
    expect(page.locator("#map-caption")).to_contain_text("_conv_stem", timeout=120_000)  # loads the weights
    page.fill("#channel", "5")
    page.locator("#channel").dispatch_event("change")
    expect(page.locator("#map-caption")).to_contain_text("channel 5")
    box = page.locator("#map").bounding_box()
    page.locator("#map").click(position={"x": box["width"] * 0.42, "y": box["height"] * 0.3})
    expect(page.locator("#arithmetic table.products")).to_have_count(3, timeout=60_000)
    page.wait_for_timeout(300)
    page.screenshot(path=str(OUT / "serve-explain.png"), full_page=True)


def shoot_draw(page) -> None:
    page.goto("/")
    expect(page.locator("#filters")).to_have_attribute("src", re.compile("^data:"))
    draw_seven(page)
    expect(page.locator("#maps figure")).to_have_count(4)
    page.wait_for_timeout(500)
    page.screenshot(path=str(OUT / "serve-draw.png"), full_page=True)


def shoot_photo(page) -> None:
    page.goto("/photo")
    page.locator("#examples button").nth(1).click()
    expect(page.locator("#labels li")).to_have_count(5)
    page.screenshot(path=str(OUT / "serve-photo.png"), full_page=True)


def shoot_train(page) -> None:
    page.goto("/train")
    page.fill("#train-images", "3000")
    page.fill("#epochs", "2")
    page.click("#start")
    expect(page.locator("#result")).to_contain_text("Saved as")
    page.screenshot(path=str(OUT / "serve-train.png"), full_page=True)


def shoot_zoo(page) -> None:
    page.goto("/zoo?model=resnet18&input_size=3x224x224")
    expect(page.locator("#total-params")).to_have_text("11,689,512")
    page.screenshot(path=str(OUT / "serve-zoo.png"), clip={"x": 0, "y": 0, "width": 1200, "height": 860})


PAINTINGS = {"starry night": "starry_night.jpg", "scream": "the_scream.jpg", "matisse": "woman-with-hat-matisse.jpg"}
STYLE_DIR = Path(__file__).resolve().parents[2] / "shared" / "images" / "style"


def painting_crops(folder: Path, per_class: int = 12) -> dict[str, list[str]]:
    """Square crops of three paintings (the classes of benchmarks/teach_time.py), the last one of each kept back
    to try the taught classifier with."""
    import numpy as np

    rng = np.random.default_rng(0)
    files = {}
    for name, file_name in PAINTINGS.items():
        painting = Image.open(STYLE_DIR / file_name).convert("RGB")
        files[name] = []
        for index in range(per_class + 1):
            side = int(min(painting.size) * rng.uniform(0.35, 0.7))
            left, top = (int(rng.integers(0, extent - side + 1)) for extent in painting.size)
            path = folder / f"{name.replace(' ', '-')}-{index}.jpg"
            painting.crop((left, top, left + side, top + side)).resize((320, 320), Image.LANCZOS).save(path)
            files[name].append(str(path))
    return files


def shoot_teach(page) -> None:
    """Three paintings taught from 12 crops each, then a fresh crop of The Scream classified with Grad-CAM."""
    with tempfile.TemporaryDirectory() as folder:
        crops = painting_crops(Path(folder))
        _teach_and_try(page, crops)


def _teach_and_try(page, crops: dict[str, list[str]]) -> None:
    page.goto("/teach")
    page.click("#add-class")
    for index, (name, files) in enumerate(crops.items()):
        card = page.locator(".class-card").nth(index)
        card.locator(".class-name").fill(name)
        card.locator(".class-files").set_input_files(files[:-1])
    page.click("#teach")
    expect(page.locator("#accuracy")).to_have_text(re.compile("%$"), timeout=300_000)
    page.set_input_files("#try-file", crops["scream"][-1])
    expect(page.locator("#try-overlay")).to_have_attribute("src", re.compile("^data:"), timeout=120_000)
    page.screenshot(path=str(OUT / "serve-teach.png"), full_page=True)


DETECTOR = Path(os.environ.get("CNNKIT_DETECTOR", "runs/frcnn-canvas"))


def copy_detector(root: Path, source: Path = DETECTOR) -> None:
    if not (source / "checkpoint.json").is_file():
        sys.exit(f"the Detect page's picture needs a trained detector, and {source} holds none: train one with "
                 f"'cnnkit detect train --out {source}', or name its run folder in CNNKIT_DETECTOR")
    shutil.copytree(source, root / "frcnn-canvas")


def shoot_detect(page) -> None:
    """A test canvas's three digits found, boxes with classes and scores at the default threshold of 0.5."""
    page.goto("/detect")
    page.locator("#examples button[data-name='canvas-001.png']").click()
    expect(page.locator("#view")).to_have_attribute("data-drawn", re.compile(r"^\d+$"))
    page.screenshot(path=str(OUT / "serve-detect.png"), full_page=True)


SHOTS = {"draw": shoot_draw, "photo": shoot_photo, "train": shoot_train, "zoo": shoot_zoo, "explain": shoot_explain,
         "teach": shoot_teach, "detect": shoot_detect}
NEED_A_RUN = {"draw"}  # pages that show the trained digits run (Train trains its own)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    wanted = sys.argv[1:] or [name for name in SHOTS if name != "detect" or (DETECTOR / "checkpoint.json").is_file()]
    unknown = [name for name in wanted if name not in SHOTS]
    if unknown:
        sys.exit(f"no page called {', '.join(unknown)}; pages: {', '.join(SHOTS)}")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        if NEED_A_RUN & set(wanted):
            train_digits(root)
        if "detect" in wanted:
            copy_detector(root)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(create_app(root), host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(base_url=f"http://127.0.0.1:{port}", viewport={"width": 1200, "height": 860})
            page.set_default_timeout(120_000)
            for name in wanted:
                SHOTS[name](page)
            browser.close()
        server.should_exit = True
    for name in wanted:
        save_small(OUT / f"serve-{name}.png")
        print(OUT / f"serve-{name}.png", (OUT / f"serve-{name}.png").stat().st_size, "bytes")


if __name__ == "__main__":
    main()
