"""The Flask blueprint and the FastAPI router: the same C codec behind each app's own
test client, answers compared with berth.load(...).predict."""
import json

import numpy as np
import pytest

import berth
from berth.serving import fastapi_router, flask_blueprint
from conftest import assert_same_answer


def infer_body(x):
    return json.dumps({"inputs": [{"name": "dense_input", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.tolist()}]})


@pytest.fixture(scope="module")
def fastapi_client(seed_model_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI()

    @app.get("/hello")
    def hello():
        return {"app": "still mine"}

    app.include_router(fastapi_router(seed_model_path))
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def flask_client(seed_model_path):
    from flask import Flask

    app = Flask("host_app")

    @app.route("/hello")
    def hello():
        return {"app": "still mine"}

    app.register_blueprint(flask_blueprint(berth.load(seed_model_path), name="seed"))
    return app.test_client()


@pytest.fixture(params=["fastapi", "flask"])
def client(request, fastapi_client, flask_client):
    return fastapi_client if request.param == "fastapi" else flask_client


def send(client, method, path, body=b"", headers=None):
    headers = headers or {}
    if method == "GET":
        r = client.get(path, headers=headers)
    elif hasattr(client, "application"):  # Flask
        r = client.post(path, data=body, headers=headers)
    else:
        r = client.post(path, content=body, headers=headers)
    content = r.data if hasattr(r, "data") and not hasattr(r, "content") else r.content
    return r.status_code, r.headers, content


def test_infer_json_and_binary(client, seed_model_path):
    model = berth.load(seed_model_path, optimize=True)  # as the adapters load it
    x = np.random.default_rng(5).standard_normal((3, 10)).astype(np.float32)
    status, headers, body = send(client, "POST", "/v2/models/seed/infer", infer_body(x).encode(),
                                 {"Content-Type": "application/json"})
    assert status == 200, body
    out = json.loads(body)["outputs"][0]
    assert_same_answer(np.float32(out["data"]).reshape(out["shape"]), model.predict(x))
    head = json.dumps({"inputs": [{"name": "dense_input", "shape": [3, 10], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 120}}],
                       "parameters": {"binary_data_output": True}}).encode()
    status, headers, body = send(client, "POST", "/v2/models/seed/infer", head + x.tobytes(),
                                 {"Content-Type": "application/octet-stream",
                                  "Inference-Header-Content-Length": str(len(head))})
    assert status == 200, body
    assert headers["Content-Type"] == "application/octet-stream"
    n = int(headers["Inference-Header-Content-Length"])
    assert_same_answer(np.frombuffer(body[n:], np.float32).reshape(3, 1), model.predict(x))
    status, _, body = send(client, "POST", "/v1/models/seed:predict",
                           json.dumps({"instances": x.tolist()}).encode(), {"Content-Type": "application/json"})
    assert status == 200
    assert_same_answer(np.float32(json.loads(body)["predictions"]), model.predict(x))


def test_probes_metadata_metrics_and_the_host_app(client):
    assert send(client, "GET", "/v2/health/ready")[0] == 200
    status, _, body = send(client, "GET", "/v2/models/seed")
    assert status == 200 and json.loads(body)["name"] == "seed"
    status, headers, body = send(client, "GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b"berth_requests_total" in body
    status, _, body = send(client, "GET", "/hello")
    assert status == 200 and json.loads(body) == {"app": "still mine"}


def test_bad_input_is_a_clear_4xx(client):
    cases = [(b"{nope", {"Content-Type": "application/json"}, 400, "not valid JSON"),
             (b"{}", {"Content-Type": "text/plain"}, 415, "Content-Type"),
             (infer_body(np.zeros((1, 3), np.float32)).encode(), {"Content-Type": "application/json"},
              400, "expects shape (-1, 10), got (1, 3)")]
    for body, headers, status, words in cases:
        got, resp_headers, reply = send(client, "POST", "/v2/models/seed/infer", body, headers)
        assert got == status and words in json.loads(reply)["error"]
        assert resp_headers["Content-Type"] == "application/json"
    status, _, reply = send(client, "POST", "/v2/models/other/infer", b"{}", {"Content-Type": "application/json"})
    assert status == 404 and "model 'other' not found" in json.loads(reply)["error"]


def test_a_wrong_model_argument_is_refused():
    with pytest.raises(TypeError, match="expected a model file path or a berth.Model, got int"):
        flask_blueprint(3)
    with pytest.raises(berth.ModelLoadError):
        fastapi_router("/nonexistent/model.pt")


@pytest.fixture(scope="module")
def double_model_path(models_dir):
    import torch
    from conftest import save_script

    class Double(torch.nn.Module):
        def forward(self, x):
            return x * 2

    meta = {"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 3]}],
            "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 3]}]}
    return save_script(Double(), models_dir / "double.pt", meta)


@pytest.fixture(params=["fastapi", "flask"])
def two_model_app(request, seed_model_path, double_model_path):
    """One app, two models: each from its own router or blueprint."""
    if request.param == "fastapi":
        from fastapi import FastAPI
        from fastapi.testclient import TestClient
        app = FastAPI()
        routers = [fastapi_router(seed_model_path), fastapi_router(double_model_path)]
        for r in routers:
            app.include_router(r)
        with TestClient(app) as client:
            yield client, [r.berth_service for r in routers]
    else:
        from flask import Flask
        app = Flask("two_models")
        blueprints = [flask_blueprint(seed_model_path), flask_blueprint(double_model_path)]
        for b in blueprints:
            app.register_blueprint(b)
        yield app.test_client(), [b.berth_service for b in blueprints]


def test_two_models_in_one_app_each_answer_their_own(two_model_app):
    client, services = two_model_app
    json_ct = {"Content-Type": "application/json"}
    status, _, body = send(client, "POST", "/v2/models/double/infer", json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}).encode(),
        json_ct)
    assert status == 200, body
    assert json.loads(body)["model_name"] == "double"
    assert json.loads(body)["outputs"][0]["data"] == [2, 4, 6]
    x = np.zeros((1, 10), np.float32)
    status, _, body = send(client, "POST", "/v2/models/seed/infer", infer_body(x).encode(), json_ct)
    assert status == 200 and json.loads(body)["model_name"] == "seed"
    status, _, body = send(client, "POST", "/v1/models/double:predict", b'{"instances": [[1, 1, 1]]}', json_ct)
    assert status == 200 and json.loads(body) == {"predictions": [[2, 2, 2]]}
    assert json.loads(send(client, "GET", "/v2/models/double")[2])["name"] == "double"
    assert json.loads(send(client, "GET", "/v2/models/seed/config")[2])["name"] == "seed"
    status, _, body = send(client, "POST", "/v2/models/nope/infer", b"{}", json_ct)
    assert status == 404
    assert json.loads(body)["error"] == "model 'nope' not found: this app serves 'seed', 'double'"
    # The shared paths answer for both models.
    assert json.loads(send(client, "GET", "/v2/health/live")[2]) == {"live": True}
    names = [m["name"] for m in json.loads(send(client, "GET", "/v2/models/stats")[2])["model_stats"]]
    assert names == ["seed", "double"]
    status, headers, body = send(client, "GET", "/v2/models/stats", headers={"Accept-Encoding": "gzip"})
    if headers.get("Content-Encoding") == "gzip" and body[:2] == b"\x1f\x8b":
        import gzip
        body = gzip.decompress(body)
    assert status == 200 and len(json.loads(body)["model_stats"]) == 2
    assert send(client, "GET", "/v2/health/ready")[0] == 200
    services[1].set_ready(False)  # the second model drains: the app is not ready
    status, _, body = send(client, "GET", "/v2/health/ready")
    assert status == 503 and json.loads(body)["ready"] is False
    assert send(client, "GET", "/v2/models/seed/ready")[0] == 200
    assert send(client, "GET", "/v2/models/double/ready")[0] == 503


def test_adapters_take_gzip_bodies_and_give_gzip_answers(client):
    import gzip
    x = np.ones((200, 10), np.float32)
    status, headers, body = send(client, "POST", "/v2/models/seed/infer",
                                 gzip.compress(infer_body(x).encode()),
                                 {"Content-Type": "application/json", "Content-Encoding": "gzip",
                                  "Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    if body[:2] == b"\x1f\x8b":  # Flask's test client hands over the bytes as sent
        body = gzip.decompress(body)
    assert json.loads(body)["outputs"][0]["shape"] == [200, 1]


@pytest.mark.parametrize("framework", ["fastapi", "flask"])
def test_a_repository_behind_either_framework(framework, tmp_path, seed_model_path):
    """One router or blueprint for a whole repository, beside a single-model one."""
    from model_repository import add_version
    add_version(tmp_path, "a", 1, 2)
    add_version(tmp_path, "a", 2, 3, "[version_policy]\nall = true\n")
    add_version(tmp_path, "b", 4, 5)
    if framework == "fastapi":
        from fastapi import FastAPI
        from fastapi.testclient import TestClient
        app = FastAPI()
        app.include_router(fastapi_router(tmp_path))
        app.include_router(fastapi_router(seed_model_path))
        client = TestClient(app)
    else:
        from flask import Flask
        app = Flask("repo_app")
        app.register_blueprint(flask_blueprint(tmp_path))
        app.register_blueprint(flask_blueprint(seed_model_path))
        client = app.test_client()
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32",
                                   "data": [1, 1, 1]}]}).encode()
    for path, k, version in (("/v2/models/a/versions/1/infer", 2, "1"), ("/v2/models/a/infer", 3, "2"),
                             ("/v2/models/b/infer", 5, "4")):
        status, _, out = send(client, "POST", path, body, {"Content-Type": "application/json"})
        out = json.loads(out)
        assert status == 200 and out["outputs"][0]["data"] == [k] * 3 and out["model_version"] == version
    status, _, out = send(client, "GET", "/v2/models/a")
    assert status == 200 and json.loads(out)["versions"] == ["1", "2"]
    status, _, out = send(client, "GET", "/v2/models/stats")
    assert sorted((m["name"], m["version"]) for m in json.loads(out)["model_stats"]) == \
        [("a", "1"), ("a", "2"), ("b", "4"), ("seed", "1")]
    status, _, out = send(client, "GET", "/v2/models/nope")
    assert status == 404 and "'a', 'b', 'seed'" in json.loads(out)["error"]
    assert send(client, "GET", "/v2/health/ready")[0] == 200


def test_a_repository_that_cannot_load_is_refused(tmp_path):
    from berth.repository import RepositoryError
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "model.pt").write_bytes(b"broken")
    with pytest.raises(RepositoryError, match="m: "):
        fastapi_router(tmp_path)
    with pytest.raises(TypeError, match="named by their directories"):
        flask_blueprint(tmp_path, name="x")
