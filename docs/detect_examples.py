"""Write the Detect page's example canvases (src/cnnkit/serve/examples/detect/canvas-*.png) from their recipe in
cnnkit.serve.detection: test canvases of canvas-mnist as `cnnkit detect train` makes them by default, so a
detector trained that way has never seen them.

    CNNKIT_DATA=../shared/datasets python docs/detect_examples.py
"""

from PIL import Image

from cnnkit.data.canvas import load_canvas
from cnnkit.serve.detection import DETECT_EXAMPLES_DIR, EXAMPLE_CANVASES, EXAMPLE_INDICES


def main() -> None:
    test = load_canvas(**EXAMPLE_CANVASES).test
    DETECT_EXAMPLES_DIR.mkdir(parents=True, exist_ok=True)
    for index in EXAMPLE_INDICES:
        path = DETECT_EXAMPLES_DIR / f"canvas-{index:03d}.png"
        Image.fromarray(test.images[index, 0].numpy()).save(path, optimize=True)
        print(path)


if __name__ == "__main__":
    main()
