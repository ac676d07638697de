"""`cnnkit serve` starts uvicorn on loopback by default and warns when asked to listen on other addresses."""

import contextlib

import uvicorn

from cnnkit.cli import main


def capture_run(monkeypatch):
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    return calls


def test_serve_binds_loopback_by_default(monkeypatch, tmp_path, capsys):
    calls = capture_run(monkeypatch)
    folder = tmp_path / "my-runs"
    assert main(["serve", "--checkpoints", str(folder), "--port", "8123"]) == 0
    (app, kwargs), = calls
    assert kwargs["host"] == "127.0.0.1" and kwargs["port"] == 8123
    assert app.state.checkpoints.root == folder.resolve() and folder.is_dir()
    out = capsys.readouterr()
    assert "http://127.0.0.1:8123" in out.out and "warning" not in out.err


def test_serve_warns_when_listening_beyond_this_machine(monkeypatch, tmp_path, capsys):
    calls = capture_run(monkeypatch)
    assert main(["serve", "--checkpoints", str(tmp_path), "--host", "0.0.0.0"]) == 0
    assert calls[0][1]["host"] == "0.0.0.0"
    assert "no login" in capsys.readouterr().err


def test_serve_accepts_only_its_own_address_and_allowed_names(monkeypatch, tmp_path):
    from fastapi.testclient import TestClient

    calls = capture_run(monkeypatch)
    assert main(["serve", "--checkpoints", str(tmp_path), "--port", "8123", "--allow-host", "pi.local"]) == 0
    with TestClient(calls[0][0], base_url="http://127.0.0.1:8123") as client:
        assert client.get("/api/info").status_code == 200
        assert client.get("/api/info", headers={"host": "pi.local:8123"}).status_code == 200
        assert client.get("/api/info", headers={"host": "127.0.0.1:8000"}).status_code == 403
        assert client.get("/api/info", headers={"host": "evil.example:8123"}).status_code == 403


SERVER_WITH_A_RUNNING_JOB = """
import sys, tempfile, time
from pathlib import Path
import uvicorn
from cnnkit.serve import create_app

app = create_app(Path(tempfile.mkdtemp()))

def endless_run(job):  # a training run that publishes an event a second until stopped
    job.state = "running"
    while not job.stop_requested:
        job.publish("batch", {"step": len(job.events)})
        time.sleep(1)
    job.finish("stopped", {})

app.state.training._run = endless_run
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def test_one_ctrl_c_stops_the_server_while_a_page_follows_a_run(tmp_path):
    """A Train page holds /api/train/events open for the whole run; uvicorn's graceful shutdown waits for open
    responses, so the stream must end on shutdown (sse-starlette's EventSourceResponse does), or Ctrl-C hangs."""
    import signal
    import subprocess
    import sys
    import threading
    import time

    import httpx
    from serve_helpers import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER_WITH_A_RUNNING_JOB, str(port)])
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(base + "/api/info")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None, "the server did not start"
                time.sleep(0.1)
        assert httpx.post(base + "/api/train", json={"epochs": 1}).status_code == 202
        lines = []

        def follow():
            with contextlib.suppress(httpx.HTTPError), httpx.stream("GET", base + "/api/train/events",
                                                                    timeout=None) as stream:
                lines.extend(stream.iter_lines())

        threading.Thread(target=follow, daemon=True).start()
        while not any(line.startswith("event: batch") for line in lines):
            assert time.monotonic() < deadline, "no event arrived"
            time.sleep(0.1)
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=15) is not None  # raises TimeoutExpired when the open stream holds it up
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
