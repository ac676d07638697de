"""Helpers shared by the `cnnkit serve` tests (fixtures are in conftest.py)."""

import io
import socket
from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
TRAINED_RUN = "digits"
DENOISING_RUN = "denoiser"  # a run of another task (mixed_checkpoints_dir): no drawing goes to it
LOCAL_URL = "http://127.0.0.1"  # the test client's requests name a loopback host, as a browser's would


def local_client(app, **options):
    """FastAPI's test client addressing the app as 127.0.0.1 (its default, "testserver", is refused as a
    foreign Host by the playground)."""
    from fastapi.testclient import TestClient

    return TestClient(app, base_url=LOCAL_URL, **options)


def png_bytes(image: Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def drawn_one() -> Image.Image:
    """A canvas-sized drawing of a '1': a thick white vertical stroke on black."""
    image = Image.new("RGB", (280, 280))
    ImageDraw.Draw(image).line([(150, 50), (140, 230)], fill=(255, 255, 255), width=20)
    return image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
