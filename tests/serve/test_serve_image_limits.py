"""Issue 24, item 1 on the server: /api/photo and /api/draw decode uploads through cnnkit.data.image_io, so an
image too elongated or too large to resize is a 400 with the reason, before the server allocates it (a 138-byte
20000x1 PNG used to cost /api/photo 21 s and 5.8 GB)."""

import pytest
from PIL import Image
from serve_helpers import TRAINED_RUN, local_client, png_bytes

from cnnkit.serve import create_app


@pytest.fixture(scope="module")
def client(checkpoints_dir):
    with local_client(create_app(checkpoints_dir)) as test_client:
        yield test_client


@pytest.mark.parametrize("size", [(20000, 1), (1, 3000)])
def test_photo_refuses_a_strip_it_would_resize_into_gigabytes(client, size):
    response = client.post("/api/photo", files={"image": ("strip.png", png_bytes(Image.new("RGB", size)), "image/png")})
    assert response.status_code == 400
    assert "strip.png" in response.json()["error"] and "aspect ratio" in response.json()["error"]


def test_draw_refuses_a_strip_too(client):
    response = client.post("/api/draw", data={"checkpoint": TRAINED_RUN},
                           files={"image": ("strip.png", png_bytes(Image.new("RGB", (20000, 1))), "image/png")})
    assert response.status_code == 400 and "aspect ratio" in response.json()["error"]


def test_a_16_bit_drawing_is_scaled_not_clipped(client):
    """A faint 16-bit stroke (level 40 of 255) reads as faint, as its 8-bit copy does; clipped it read as white."""
    from cnnkit.serve.images import decode_upload

    stroke = Image.new("I;16", (28, 28))
    stroke.paste(40 * 257, (10, 4, 18, 24))
    picture = decode_upload(png_bytes(stroke), "image/png", "stroke.png")
    assert picture.mode == "RGB" and picture.getpixel((12, 10)) == (40, 40, 40)
