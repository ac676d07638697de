"""`cnnkit serve` starts uvicorn on loopback by default and warns when asked to listen on other addresses."""

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
