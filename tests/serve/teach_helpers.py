"""Pictures for the Teach page's tests: two kinds anyone can tell apart (warm dots, cool stripes), drawn with random
colours, sizes and positions so that no two are alike."""

import io
import json

import numpy as np
from PIL import Image, ImageDraw

KINDS = ("dots", "stripes")



def teaching_picture(kind: str, seed: int, size: tuple[int, int] = (240, 200)) -> Image.Image:
    """Scattered dots in random warm colours or vertical stripes in random cool ones, on a light background."""
    rng = np.random.default_rng([KINDS.index(kind), seed])
    width, height = size
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(230, 256, 3)))
    draw = ImageDraw.Draw(image)
    # Dots are warm (red to orange), stripes cool (blue to teal): two cues, so a handful of pictures suffices.
    warm = kind == "dots"
    colour = lambda: (int(rng.integers(170, 256)) if warm else int(rng.integers(0, 60)),  # noqa: E731
                      int(rng.integers(0, 140)),
                      int(rng.integers(0, 60)) if warm else int(rng.integers(150, 256)))
    if kind == "stripes":
        period = int(rng.integers(16, 30))
        for x in range(int(rng.integers(0, period)), width, period):
            draw.rectangle([x, 0, x + period // 2, height], fill=colour())
    else:
        for _ in range(int(rng.integers(40, 70))):
            x, y, r = int(rng.integers(0, width)), int(rng.integers(0, height)), int(rng.integers(6, 12))
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour())
    return image


def picture_bytes(image: Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def upload(client, session: str, label: str, image: Image.Image, name: str = "picture.png"):
    return client.post("/api/teach/images", data={"session": session, "label": label},
                       files={"image": (name, picture_bytes(image), "image/png")})


def read_events(client) -> list[tuple[str, dict]]:
    """The Teach page's server-sent events, until ``done``."""
    events, kind = [], None
    with client.stream("GET", "/api/teach/events") as response:
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: "):]
            elif line.startswith("data: ") and kind:
                events.append((kind, json.loads(line[len("data: "):])))
                if kind == "done":
                    break
    return events
