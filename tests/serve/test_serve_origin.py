"""Other web sites cannot drive the playground: Origin, Sec-Fetch-Site and Host are checked on every request
(issue 24: a multipart or body-less POST needs no CORS preflight; DNS rebinding changes only the Host)."""

import http.client
import socket

import pytest
from fastapi.testclient import TestClient
from serve_helpers import TRAINED_RUN, drawn_one, png_bytes

from cnnkit.serve import create_app

PORT = 8123
OWN = f"http://127.0.0.1:{PORT}"


@pytest.fixture(scope="module")
def client(checkpoints_dir):
    with TestClient(create_app(checkpoints_dir, port=PORT), base_url=OWN) as test_client:
        yield test_client


def draw(client, **headers):
    return client.post("/api/draw", data={"checkpoint": TRAINED_RUN},
                       files={"image": ("drawing.png", png_bytes(drawn_one()), "image/png")}, headers=headers)


def assert_refused(response, *words):
    assert response.status_code == 403, response.text
    message = response.json()["error"]
    for word in words:
        assert word in message


@pytest.mark.parametrize("origin", ["http://evil.example", "https://evil.example", "null",
                                    f"http://127.0.0.1:{PORT + 1}", f"http://localhost:{PORT}",
                                    f"http://127.0.0.1:{PORT}.evil.example", "not a url"])
def test_posts_from_another_origin_are_refused(client, origin):
    assert_refused(draw(client, origin=origin), "refused", repr(origin))
    assert_refused(client.post("/api/train/stop", headers={"origin": origin}), "refused")
    assert_refused(client.post("/api/photo", data={"example": "golden_gate.jpg"}, headers={"origin": origin}))
    assert_refused(client.post("/api/train", json={"epochs": 1}, headers={"origin": origin}))


def test_own_pages_and_plain_clients_are_served(client):
    assert draw(client, origin=OWN).status_code == 200
    assert draw(client, **{"sec-fetch-site": "same-origin", "origin": OWN}).status_code == 200
    assert draw(client).status_code == 200  # curl, scripts: no Origin, not a browser page
    # No run in progress: the stop request got through the check and was answered by the app itself.
    assert client.post("/api/train/stop", headers={"origin": OWN}).status_code == 409


def test_cross_site_requests_without_origin_are_refused_on_the_api(client):
    """An <img src> on another site sends no Origin, but Sec-Fetch-Site says where it came from."""
    cross = {"sec-fetch-site": "cross-site"}
    assert_refused(client.get("/api/zoo/summary?model=resnet50&input_size=3x1024x1024", headers=cross))
    assert_refused(client.get(f"/api/checkpoints/{TRAINED_RUN}/filters", headers=cross))
    assert client.get("/", headers=cross).status_code == 200  # following a link to the playground is fine


@pytest.mark.parametrize("host", ["evil.example", f"evil.example:{PORT}", f"127.0.0.1:{PORT + 1}",
                                  f"127.0.0.1.evil.example:{PORT}", "127.0.0.1:bad", ""])
def test_foreign_host_is_refused_dns_rebinding(client, host):
    assert_refused(client.get("/api/checkpoints", headers={"host": host}), "Host", OWN)
    assert_refused(client.get("/", headers={"host": host}))
    assert_refused(draw(client, host=host))


@pytest.mark.parametrize("host", [f"127.0.0.1:{PORT}", f"localhost:{PORT}", f"LOCALHOST:{PORT}", f"[::1]:{PORT}"])
def test_loopback_names_are_served(client, host):
    origin = f"http://{host}"
    assert client.get("/api/checkpoints", headers={"host": host}).status_code == 200
    assert draw(client, host=host, origin=origin).status_code == 200


def test_another_bound_address_is_allowed_and_only_with_its_port(checkpoints_dir):
    app = create_app(checkpoints_dir, host="192.168.1.5", port=8000, allowed_hosts=("pi.local",))
    with TestClient(app, base_url="http://192.168.1.5:8000") as lan:
        assert lan.get("/api/checkpoints").status_code == 200
        assert draw(lan, origin="http://192.168.1.5:8000").status_code == 200
        assert lan.get("/api/checkpoints", headers={"host": "pi.local:8000"}).status_code == 200
        assert lan.get("/api/checkpoints", headers={"host": "localhost:8000"}).status_code == 200
        assert_refused(lan.get("/api/checkpoints", headers={"host": "192.168.1.6:8000"}), "--allow-host")
        assert_refused(lan.get("/api/checkpoints", headers={"host": "192.168.1.5:8001"}))


def test_listening_on_all_addresses_accepts_this_machines_name(checkpoints_dir):
    hostname = socket.gethostname()
    with TestClient(create_app(checkpoints_dir, host="0.0.0.0", port=8000), base_url="http://127.0.0.1:8000") as c:
        assert c.get("/api/info", headers={"host": f"{hostname}:8000"}).status_code == 200
        assert_refused(c.get("/api/info", headers={"host": "evil.example:8000"}))


def test_the_running_server_refuses_a_rebound_host(live_server):
    """Through uvicorn itself, with raw HTTP: the Host a rebinding page's requests would carry."""
    port = int(live_server.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", "/api/train/stop", headers={"Host": f"evil.example:{port}"})
        response = connection.getresponse()
        assert response.status == 403 and b"evil.example" in response.read()
        connection.request("POST", "/api/train/stop", headers={"Origin": "http://evil.example"})
        response = connection.getresponse()
        assert response.status == 403 and b"refused" in response.read()
    finally:
        connection.close()
