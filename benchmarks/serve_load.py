"""Load on `cnnkit serve`: requests per second and latency of /api/draw and /api/photo at 1 and 8 clients.

Starts the real server (`python -m cnnkit serve`) as a subprocess on a free 127.0.0.1 port, trains a small
LeNet-5 checkpoint for the Draw endpoint (1 epoch on 512 MNIST digits, a couple of seconds) unless given one,
warms both models up, then sends a bounded number of requests per endpoint and concurrency from client threads,
each with its own keep-alive connection. Every request goes to 127.0.0.1 only; the server is stopped at the end.

A request counts as an error unless it answers 200 with the fields the page reads (a prediction among the
checkpoint's classes; five ImageNet labels). Throughput is completed requests over the phase's wall time.

    python benchmarks/serve_load.py                                    # draw and photo, 1 and 8 clients
    python benchmarks/serve_load.py --draw-requests 100 --photo-requests 20 --no-record
    python benchmarks/serve_load.py --compare-src /tmp/old/src          # the same load on another source tree,
                                                                        # interleaved, labelled "baseline"
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from record import record  # noqa: E402

SOURCE = Path(__file__).resolve().parents[1] / "src"
RUN_NAME = "digits"
SERVER_START_SECONDS = 120
REQUEST_TIMEOUT_SECONDS = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_checkpoint(folder: Path) -> None:
    """A real run folder written by the Trainer (the same small run as the serve tests use)."""
    import torch

    from cnnkit import TrainConfig, Trainer, create_model
    from cnnkit.data import load_dataset
    from cnnkit.data.datasets import DatasetBundle

    full = load_dataset("mnist")
    data = DatasetBundle(full.name, full.train.subset(torch.arange(512)), full.test.subset(torch.arange(200)),
                         full.classes, full.mean, full.std)
    torch.manual_seed(0)
    config = TrainConfig(epochs=1, lr=0.003, optimizer="adam", weight_decay=0.0, batch_size=64, progress=False,
                         num_workers=0)
    Trainer(create_model("lenet5_relu"), data, config, out=folder / RUN_NAME).fit()


def drawing_png() -> bytes:
    """A canvas-sized '7' as the Draw page sends it: white strokes on black, 280x280 PNG."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (280, 280))
    pen = ImageDraw.Draw(image)
    pen.line([(70, 60), (210, 60), (120, 230)], fill=(255, 255, 255), width=20, joint="curve")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data, content_type) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                     f"Content-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class Server:
    """`cnnkit serve` from the source tree ``source`` in a subprocess; a context manager that stops it."""

    def __init__(self, source: Path, checkpoints: Path):
        self.source, self.checkpoints, self.port = source, checkpoints, free_port()

    def __enter__(self):
        env = {**os.environ, "PYTHONPATH": f"{self.source}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cnnkit", "serve", "--checkpoints", str(self.checkpoints), "--host", "127.0.0.1",
             "--port", str(self.port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.process.stderr.read().decode()[-2000:]}")
            try:
                status, _ = self.get("/api/info")
                if status == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer within {SERVER_START_SECONDS} s")
            time.sleep(0.2)

    def __exit__(self, *exc):
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def cpu_seconds(self) -> float | None:
        """CPU time the server process has used so far (user + system, all its threads), from /proc on Linux.
        Per request it shows the server's own cost, which the other programs on a shared machine do not move
        as much as they move wall-clock throughput."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT_SECONDS)

    def get(self, path: str) -> tuple[int, bytes]:
        connection = self.connect()
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


def draw_request(drawing: bytes):
    body, content_type = multipart({"checkpoint": RUN_NAME}, {"image": ("drawing.png", drawing, "image/png")})

    def valid(answer: dict) -> bool:
        best = max(answer["probabilities"], key=lambda row: row["p"])
        return answer["prediction"] == best["class"] and answer["prediction"] in [str(d) for d in range(10)]

    return "/api/draw", body, content_type, valid


def photo_request(photo: bytes):
    body, content_type = multipart({}, {"image": ("golden_gate.jpg", photo, "image/jpeg")})

    def valid(answer: dict) -> bool:
        return len(answer["labels"]) == 5 and answer["overlay"].startswith("data:image/png")

    return "/api/photo", body, content_type, valid


def load(server: Server, request, total: int, concurrency: int) -> dict:
    """``total`` requests from ``concurrency`` threads; each thread takes the next request until none is left."""
    path, body, content_type, valid = request
    latencies, errors, lock = [], [], threading.Lock()
    remaining = [total]

    def client():
        connection = server.connect()
        try:
            while True:
                with lock:
                    if remaining[0] == 0:
                        return
                    remaining[0] -= 1
                start = time.perf_counter()
                try:
                    connection.request("POST", path, body=body, headers={"Content-Type": content_type})
                    response = connection.getresponse()
                    data = response.read()
                    ok = response.status == 200 and valid(json.loads(data))
                    problem = None if ok else f"{response.status}: {data[:200]!r}"
                except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                    connection.close()
                    connection = server.connect()
                elapsed = time.perf_counter() - start
                with lock:
                    (errors.append(problem) if problem else latencies.append(elapsed))
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    load_average = os.getloadavg()[0]  # what else this machine ran, for comparing figures
    cpu_before = server.cpu_seconds()
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    cpu_after = server.cpu_seconds()
    cpu_ms = None if cpu_before is None else 1000 * (cpu_after - cpu_before) / max(1, len(latencies))
    ordered = sorted(latencies) or [float("nan")]
    percentile = (lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))])
    return {"requests": total, "completed": len(latencies), "errors": len(errors), "seconds": wall,
            "requests_per_second": len(latencies) / wall, "p50_ms": 1000 * statistics.median(ordered),
            "p99_ms": 1000 * percentile(0.99), "server_cpu_ms_per_request": cpu_ms,
            "load_average": load_average, "first_error": errors[0] if errors else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draw-requests", type=int, default=200, help="requests per concurrency level")
    parser.add_argument("--photo-requests", type=int, default=40, help="requests per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--endpoints", nargs="+", choices=["draw", "photo"], default=["draw", "photo"])
    parser.add_argument("--checkpoints", type=Path, help="a folder holding a 'digits' LeNet-5 run (else trained)")
    parser.add_argument("--compare-src", type=Path, help="also load a server from this source tree (a baseline)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the whole schedule, interleaved")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to results.jsonl")
    args = parser.parse_args()

    from cnnkit.serve.photo import EXAMPLES_DIR

    with tempfile.TemporaryDirectory(prefix="serve-load-") as scratch:
        checkpoints = args.checkpoints
        if checkpoints is None:
            checkpoints = Path(scratch)
            train_checkpoint(checkpoints)
        trees = [("current", SOURCE)] + ([("baseline", args.compare_src.resolve())] if args.compare_src else [])
        requests = {"draw": (draw_request(drawing_png()), args.draw_requests),
                    "photo": (photo_request((EXAMPLES_DIR / "golden_gate.jpg").read_bytes()), args.photo_requests)}
        requests = {endpoint: requests[endpoint] for endpoint in args.endpoints}
        results = []
        for round_index in range(args.rounds):
            for endpoint, (request, total) in requests.items():
                for concurrency in args.concurrency:
                    for label, source in trees:  # one server per phase, so no phase inherits another's state
                        with Server(source, checkpoints) as server:
                            load(server, request, 2 * concurrency, concurrency)  # models loaded, threads warm
                            figures = load(server, request, total, concurrency)
                        results.append({"tree": label, "endpoint": endpoint, "concurrency": concurrency,
                                        "round": round_index, **figures})
                        print(f"{label:8s} {endpoint:5s} x{concurrency}: {figures['requests_per_second']:7.1f} req/s  "
                              f"p50 {figures['p50_ms']:7.1f} ms  p99 {figures['p99_ms']:7.1f} ms  "
                              f"server CPU {figures['server_cpu_ms_per_request'] or float('nan'):6.1f} ms/req  "
                              f"errors {figures['errors']}/{total}  load {figures['load_average']:.1f}", flush=True)
                        if figures["first_error"]:
                            print(f"         first error: {figures['first_error']}")

    print("\n| tree | endpoint | clients | req/s | p50 ms | p99 ms | server CPU ms/req | errors | load avg |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['tree']} | {r['endpoint']} | {r['concurrency']} | {r['requests_per_second']:.1f} | "
              f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['server_cpu_ms_per_request'] or float('nan'):.1f} | "
              f"{r['errors']}/{r['requests']} | {r['load_average']:.1f} |")
    if args.no_record:
        return
    for r in results:
        note = "loopback HTTP/1.1 keep-alive, one connection per client thread; server: python -m cnnkit serve"
        if r["tree"] == "baseline":
            note += f"; baseline source tree {args.compare_src}"
        record("serve_load", f"{r['tree']}: /api/{r['endpoint']}, {r['concurrency']} concurrent clients",
               "requests_per_second", round(r["requests_per_second"], 2), seconds=round(r["seconds"], 2),
               p50_ms=round(r["p50_ms"], 1), p99_ms=round(r["p99_ms"], 1), errors=r["errors"],
               server_cpu_ms_per_request=(round(r["server_cpu_ms_per_request"], 2)
                                          if r["server_cpu_ms_per_request"] is not None else None),
               requests=r["requests"], concurrency=r["concurrency"], load_average=round(r["load_average"], 2),
               note=note)


if __name__ == "__main__":
    main()
