"""How long a visitor of the Teach page waits, and what held-out accuracy they get: 3 classes of 20 pictures.

The classes are random crops of three paintings in /work/shared/images/style (Van Gogh's Starry Night, Munch's
The Scream, Matisse's Woman with a Hat): visually distinct, as a visitor's own classes would be, and real
photographs of paint, not drawings. Each crop is a square of 35-70 % of the painting's shorter side, resized to
320x320 and sent as a JPEG (quality 90), as a phone's picture would be after the browser scaled it.

The wait is measured as the page makes it: from opening the session, through sending the 60 pictures (one per
request, as the page does; here one after another, in-process through FastAPI's test client, so no network),
to the `done` event of the fit (features of every picture, the logistic regression with its cross-validated
strength, the run folder written). The held-out accuracy is the page's own (4 of each class's 20 pictures). As
a check that does not rest on 12 pictures, 30 fresh crops per class are then classified with the saved run
folder through `cnnkit.predict.predict_files` (what `cnnkit predict RUN` runs).

    python benchmarks/teach_time.py                 # 3 classes x 20 pictures, recorded in results.jsonl
    python benchmarks/teach_time.py --per-class 10 --no-record
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from record import record  # noqa: E402

PAINTINGS = {"starry-night": "starry_night.jpg", "scream": "the_scream.jpg", "matisse": "woman-with-hat-matisse.jpg"}
STYLE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "images" / "style"
CROP_SIDE = 320
FRESH_PER_CLASS = 30


def crop(painting: Image.Image, rng: np.random.Generator) -> Image.Image:
    shorter = min(painting.size)
    side = int(shorter * rng.uniform(0.35, 0.7))
    left = int(rng.integers(0, painting.width - side + 1))
    top = int(rng.integers(0, painting.height - side + 1))
    return painting.crop((left, top, left + side, top + side)).resize((CROP_SIDE, CROP_SIDE), Image.LANCZOS)


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def pictures(style_dir: Path, per_class: int, seed: int) -> dict[str, list[bytes]]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, file_name in PAINTINGS.items():
        with Image.open(style_dir / file_name) as opened:
            painting = opened.convert("RGB")
        out[name] = [jpeg(crop(painting, rng)) for _ in range(per_class)]
    return out


def sse_events(client) -> list[tuple[str, dict, float]]:
    """(event, data, seconds since the stream opened) until ``done``."""
    events, kind, start = [], None, time.perf_counter()
    with client.stream("GET", "/api/teach/events") as response:
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: "):]
            elif line.startswith("data: ") and kind:
                events.append((kind, json.loads(line[len("data: "):]), time.perf_counter() - start))
                if kind == "done":
                    break
    return events


def teach_through_the_page(root: Path, classes: dict[str, list[bytes]]) -> dict:
    from fastapi.testclient import TestClient

    from cnnkit.serve import create_app

    with TestClient(create_app(root), base_url="http://127.0.0.1") as client:
        start = time.perf_counter()
        session = client.post("/api/teach/session").json()["session"]
        for label, files in classes.items():
            for index, data in enumerate(files):
                answer = client.post("/api/teach/images", data={"session": session, "label": label},
                                     files={"image": (f"{label}-{index}.jpg", data, "image/jpeg")})
                answer.raise_for_status()
        sent = time.perf_counter()
        client.post("/api/teach/fit", json={"session": session}).raise_for_status()
        events = sse_events(client)
        done = time.perf_counter()
    result = events[-1][1]
    if result["state"] != "finished":
        sys.exit(f"the fit failed: {result.get('error')}")
    return {"result": result, "wait": done - start, "upload": sent - start, "fit": done - sent}


def fresh_accuracy(run_dir: Path, classes: dict[str, list[bytes]]) -> float:
    from cnnkit.predict import predict_files
    from cnnkit.runs import load_model_checkpoint

    model, meta = load_model_checkpoint(run_dir)
    folder = run_dir.parent / "fresh"
    folder.mkdir(exist_ok=True)
    files, truth = [], []
    for label, pictures_ in classes.items():
        for index, data in enumerate(pictures_):
            path = folder / f"{label}-{index}.jpg"
            path.write_bytes(data)
            files.append(path)
            truth.append(label)
    predicted = [ranked[0][0] for ranked in predict_files(model, meta, files, top_k=1)]
    return 100.0 * sum(p == t for p, t in zip(predicted, truth)) / len(truth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--style-dir", type=Path, default=STYLE_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    import torch

    load_before = os.getloadavg()[0]
    classes = pictures(args.style_dir, args.per_class, args.seed)
    with tempfile.TemporaryDirectory() as folder:
        measured = teach_through_the_page(Path(folder), classes)
        result = measured["result"]
        fresh = fresh_accuracy(Path(folder) / result["run"], pictures(args.style_dir, FRESH_PER_CLASS, args.seed + 1))
    load_after = os.getloadavg()[0]
    total = sum(len(files) for files in classes.values())
    print(f"{len(classes)} classes x {args.per_class} pictures ({total}): the visitor waits {measured['wait']:.1f} s "
          f"(sending {measured['upload']:.1f} s, then the fit {measured['fit']:.1f} s: features "
          f"{result['feature_seconds']:.1f} s, logistic regression {result['fit_seconds']:.1f} s)")
    print(f"held-out accuracy {result['accuracy']:.1f}% on {result['held_out_images']} pictures (C = {result['C']}), "
          f"confusion {result['confusion']}; {fresh:.1f}% on {FRESH_PER_CLASS * len(classes)} fresh crops")
    print(f"load average {load_before:.2f} before, {load_after:.2f} after; torch threads {torch.get_num_threads()}")
    if args.no_record:
        return
    common = {"data": "crops of 3 paintings (shared/images/style)", "classes": list(classes), "images": total,
              "held_out_images": result["held_out_images"], "load_average": [round(load_before, 2),
                                                                             round(load_after, 2)],
              "runs": 1, "note": "in-process test client, pictures sent one after another; EfficientNet-Lite0 "
                                 "fp32 features, batches of 16; machine shared with other jobs"}
    record("teach_time", f"{len(classes)} classes x {args.per_class} pictures", "seconds",
           round(measured["wait"], 1), upload_seconds=round(measured["upload"], 1),
           fit_seconds=round(measured["fit"], 1), feature_seconds=round(result["feature_seconds"], 1),
           regression_seconds=round(result["fit_seconds"], 1), **common)
    record("teach_time", f"{len(classes)} classes x {args.per_class} pictures", "held_out_accuracy",
           round(result["accuracy"], 1), C=result["C"], confusion=result["confusion"],
           fresh_crop_accuracy=round(fresh, 1), fresh_crops=FRESH_PER_CLASS * len(classes), **common)


if __name__ == "__main__":
    main()
