"""The protocol beyond inference, in-process through berth._core.Service.handle: health
bodies, version paths, Triton's model configuration and statistics extensions, gzip and
deflate request bodies (with a limit on what they inflate to) and gzip responses."""
import gzip
import json
import zlib

import numpy as np
import pytest

import berth
from berth import _core

JSON = "application/json"
ROW = {"name": "dense_input", "shape": [1, 10], "datatype": "FP32", "data": [0.25] * 10}


@pytest.fixture(scope="module")
def seed(seed_model_path):
    service = _core.Service(berth.load(seed_model_path), "seed", max_delay_ms=1.0)
    service.set_ready(True)
    yield service
    service.close()


def call(service, method, path, body=b"", **headers):
    status, hdrs, out = service.handle(method, path, body, JSON, **headers)
    return status, dict(hdrs), out


def infer_body(rows=1):
    return json.dumps({"inputs": [dict(ROW, shape=[rows, 10], data=[0.25] * (10 * rows))]}).encode()


def test_health_endpoints_answer_with_bodies(seed_model_path, seed):
    assert json.loads(call(seed, "GET", "/v2/health/live")[2]) == {"live": True}
    assert json.loads(call(seed, "GET", "/v2/health/ready")[2]) == {"ready": True}
    assert json.loads(call(seed, "GET", "/v2/models/seed/ready")[2]) == {"ready": True}
    starting = _core.Service(berth.load(seed_model_path), "seed")
    try:
        status, _, body = call(starting, "GET", "/v2/health/ready")
        assert status == 503
        assert json.loads(body) == {"ready": False, "error": "not ready: the model is warming up"}
    finally:
        starting.close()


def test_version_paths_reach_the_model_only_at_its_version(seed):
    status, _, body = call(seed, "POST", "/v2/models/seed/versions/1/infer", infer_body())
    assert status == 200 and json.loads(body)["model_version"] == "1"
    for path in ("/v2/models/seed/versions/1", "/v2/models/seed/versions/1/ready",
                 "/v2/models/seed/versions/1/config", "/v2/models/seed/versions/1/stats"):
        assert call(seed, "GET", path)[0] == 200, path
    for method, path in (("POST", "/v2/models/seed/versions/7/infer"),
                         ("GET", "/v2/models/seed/versions/7"),
                         ("GET", "/v2/models/seed/versions/7/ready"),
                         ("GET", "/v2/models/seed/versions/2/config")):
        status, _, body = call(seed, method, path, infer_body() if method == "POST" else b"")
        assert status == 404, (path, status, body)
        assert "model 'seed' has no version" in json.loads(body)["error"]
        assert "its only version is 1" in json.loads(body)["error"]


def test_model_config_in_tritons_shape(seed_model_path, seed):
    status, _, body = call(seed, "GET", "/v2/models/seed/config")
    assert status == 200
    config = json.loads(body)
    assert config["name"] == "seed" and config["platform"] == "pytorch_libtorch"
    assert config["max_batch_size"] == 64
    assert config["input"] == [{"name": "dense_input", "data_type": "TYPE_FP32", "dims": [10]}]
    assert config["output"] == [{"name": "dense_2", "data_type": "TYPE_FP32", "dims": [1]}]
    assert config["dynamic_batching"] == {"max_queue_delay_microseconds": 1000}
    unbatched = _core.Service(berth.load(seed_model_path), "seed", batching=False)
    try:
        config = json.loads(call(unbatched, "GET", "/v2/models/seed/config")[2])
        assert config["max_batch_size"] == 0 and "dynamic_batching" not in config
        assert config["input"][0]["dims"] == [-1, 10]  # the whole shape without batching
    finally:
        unbatched.close()


def test_statistics_count_what_was_served(seed_model_path):
    service = _core.Service(berth.load(seed_model_path), "seed")
    try:
        assert service.warmup(tune_batch=False) is not None  # warm-up is not counted
        service.set_ready(True)
        empty = json.loads(call(service, "GET", "/v2/models/seed/stats")[2])["model_stats"][0]
        assert empty["inference_count"] == 0 and empty["execution_count"] == 0
        assert empty["batch_stats"] == [] and empty["last_inference"] == 0
        for rows in (1, 1, 3):
            assert call(service, "POST", "/v2/models/seed/infer", infer_body(rows))[0] == 200
        assert call(service, "POST", "/v2/models/seed/infer", b"{nope")[0] == 400
        status, _, body = call(service, "GET", "/v2/models/stats")
        assert status == 200
        stats = json.loads(body)["model_stats"]
        assert [s["name"] for s in stats] == ["seed"]
        s = stats[0]
        assert s["version"] == "1" and s["inference_count"] == 5
        assert s["execution_count"] == 3
        assert s["last_inference"] > 1.7e12  # ms since the epoch
        inf = s["inference_stats"]
        assert set(inf) == {"success", "fail", "queue", "compute_input", "compute_infer",
                            "compute_output"}
        assert inf["success"]["count"] == 3 and inf["fail"]["count"] == 1
        for key in ("queue", "compute_input", "compute_infer", "compute_output"):
            assert inf[key]["count"] == 3, key
        assert inf["success"]["ns"] >= inf["compute_infer"]["ns"] > 0
        sizes = {b["batch_size"]: b for b in s["batch_stats"]}
        assert sorted(sizes) == [1, 3]
        assert sizes[1]["compute_infer"]["count"] == 2 and sizes[3]["compute_infer"]["count"] == 1
        assert json.loads(call(service, "GET", "/v2/models/seed/stats")[2])["model_stats"][0][
            "inference_count"] == 5
        assert call(service, "GET", "/v2/models/other/stats")[0] == 404
    finally:
        service.close()


def test_gzip_and_deflate_bodies_are_inflated(seed):
    plain = call(seed, "POST", "/v2/models/seed/infer", infer_body())
    assert plain[0] == 200
    want = json.loads(plain[2])["outputs"][0]["data"]
    raw = zlib.compressobj(wbits=-15)
    for coding, body in (("gzip", gzip.compress(infer_body())),
                         ("GZip", gzip.compress(infer_body())),
                         ("deflate", zlib.compress(infer_body())),
                         ("deflate", raw.compress(infer_body()) + raw.flush())):
        status, _, out = call(seed, "POST", "/v2/models/seed/infer", body, content_encoding=coding)
        assert status == 200, (coding, out)
        np.testing.assert_allclose(json.loads(out)["outputs"][0]["data"], want, rtol=1e-6)
    status, _, out = call(seed, "POST", "/v1/models/seed:predict",
                          gzip.compress(b'{"instances": [[0,0,0,0,0,0,0,0,0,0]]}'),
                          content_encoding="gzip")
    assert status == 200, out


def test_bad_codings_and_bombs_are_the_clients_fault(seed):
    status, _, out = call(seed, "POST", "/v2/models/seed/infer", infer_body(), content_encoding="br")
    assert status == 415 and "unsupported Content-Encoding 'br'" in json.loads(out)["error"]
    status, _, out = call(seed, "POST", "/v2/models/seed/infer", infer_body(), content_encoding="gzip")
    assert status == 400 and "not valid gzip data" in json.loads(out)["error"]
    truncated = gzip.compress(infer_body())[:-12]
    status, _, out = call(seed, "POST", "/v2/models/seed/infer", truncated, content_encoding="gzip")
    assert status == 400 and "not valid gzip data" in json.loads(out)["error"]
    bomb = gzip.compress(b" " * (8 << 20))  # 8 MiB of spaces in ~8 KB
    assert len(bomb) < 64 << 10
    status, _, out = call(seed, "POST", "/v2/models/seed/infer", bomb, content_encoding="gzip",
                          max_body_bytes=1 << 20)
    assert status == 413
    assert "inflates to more than the limit of 1048576 bytes" in json.loads(out)["error"]


def test_responses_are_gzipped_when_asked_and_worth_it(seed):
    big = infer_body(200)  # 200 rows answer with a few KB of JSON
    status, headers, out = call(seed, "POST", "/v2/models/seed/infer", big, accept_encoding="gzip")
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    plain = call(seed, "POST", "/v2/models/seed/infer", big)[2]
    assert gzip.decompress(out) == plain and len(out) < len(plain)
    status, headers, out = call(seed, "POST", "/v2/models/seed/infer", big,
                                accept_encoding="br;q=1.0, gzip;q=0")
    assert "Content-Encoding" not in headers and out == plain
    status, headers, out = call(seed, "GET", "/v2/health/live", accept_encoding="gzip")
    assert "Content-Encoding" not in headers and out == b'{"live":true}'  # too small to gain


def binary_request(name, datatype, shape, raw):
    header = json.dumps({"inputs": [{"name": name, "datatype": datatype, "shape": shape,
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()
    return header + raw, str(len(header))


def test_bf16_through_the_binary_extension_reaches_a_float32_model(seed):
    x = np.array([[0.25, -1.5, 2.0, 0.0, 3.0, -0.125, 1.0, 8.0, -4.0, 0.5]], np.float32)
    bf16 = (x.view(np.uint32) >> 16).astype("<u2").tobytes()  # exact for these values
    body, hlen = binary_request("dense_input", "BF16", [1, 10], bf16)
    status, _, out = seed.handle("POST", "/v2/models/seed/infer", body,
                                 "application/octet-stream", None, hlen)
    assert status == 200, out
    body32, hlen32 = binary_request("dense_input", "FP32", [1, 10], x.tobytes())
    status, _, want = seed.handle("POST", "/v2/models/seed/infer", body32,
                                  "application/octet-stream", None, hlen32)
    assert status == 200 and json.loads(out)["outputs"] == json.loads(want)["outputs"]
    # A size that is not 2 bytes per element is named as such.
    body, hlen = binary_request("dense_input", "BF16", [1, 10], x.tobytes())
    status, _, out = seed.handle("POST", "/v2/models/seed/infer", body,
                                 "application/octet-stream", None, hlen)
    assert status == 400 and "needs 20 bytes" in json.loads(out)["error"]
    status, _, out = call(seed, "POST", "/v2/models/seed/infer", json.dumps(
        {"inputs": [dict(ROW, datatype="BF16")]}).encode())
    assert status == 400 and "BF16 data must come as binary tensor data" in json.loads(out)["error"]


def test_garbage_and_cut_compressed_bodies_are_400s(seed):
    rng = np.random.default_rng(7)
    good = gzip.compress(infer_body(3))
    bodies = [rng.integers(0, 256, int(n), dtype=np.uint8).tobytes()
              for n in rng.integers(0, 300, 100)]
    bodies += [good[:k] for k in range(0, len(good), max(1, len(good) // 50))]
    bodies += [good + b"trailing", zlib.compress(b"{") + b"\x00"]
    for i, body in enumerate(bodies):
        coding = "gzip" if i % 2 == 0 or body[:2] == b"\x1f\x8b" else "deflate"
        status, _, out = call(seed, "POST", "/v2/models/seed/infer", body, content_encoding=coding)
        assert status == 400, (i, status, out)
        assert "error" in json.loads(out)
