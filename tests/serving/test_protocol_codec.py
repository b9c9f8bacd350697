"""The C protocol codec (Open Inference Protocol v2, binary extension, KServe v1), driven
in-process through berth._core.Service.handle: bytes in, status + bytes out, numbers
compared with berth.load(...).predict."""
import json
import os
import struct

import numpy as np
import pytest

import berth
from berth import _core
from conftest import save_script

JSON = "application/json"


@pytest.fixture(scope="module")
def seed(seed_model_path):
    model = berth.load(seed_model_path)
    service = _core.Service(model, "seed")
    service.set_ready(True)
    yield model, service
    service.close()


def spec_model():
    """The model of the protocol spec's examples: two inputs, two named outputs."""
    import torch

    class Spec(torch.nn.Module):
        def forward(self, input0, input1):
            flags = input1.to(torch.float32)
            return torch.stack([flags + 1.0, flags + 1.1], dim=1), input0.to(torch.float32)

    return Spec()


SPEC_META = {"inputs": [{"name": "input0", "dtype": "int32", "shape": [2, 2]},
                        {"name": "input1", "dtype": "bool", "shape": [3]}],
             "outputs": [{"name": "output0", "dtype": "float32", "shape": [3, 2]},
                         {"name": "output1", "dtype": "float32", "shape": [2, 2]}]}


@pytest.fixture(scope="module")
def spec(models_dir):
    path = save_script(spec_model(), models_dir / "spec.pt", SPEC_META)
    service = _core.Service(berth.load(path), "mymodel")
    yield service
    service.close()


@pytest.fixture(scope="module")
def identity(identity_model_path):
    service = _core.Service(berth.load(identity_model_path), "identity")
    yield service
    service.close()


def infer(service, name, body, content_type=JSON, header_length=None):
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    return service.handle("POST", f"/v2/models/{name}/infer", body, content_type, None,
                          None if header_length is None else str(header_length))


def binary_request(header, *chunks):
    head = json.dumps(header).encode()
    return head + b"".join(chunks), len(head)


def split_binary(headers, body):
    length = int(dict(headers)["Inference-Header-Content-Length"])
    return json.loads(body[:length]), body[length:]


def test_spec_json_example(spec):
    """The request/response example of the spec (JSON data), with supported types."""
    status, headers, body = infer(spec, "mymodel", {
        "id": "42",
        "inputs": [{"name": "input0", "shape": [2, 2], "datatype": "INT32", "data": [1, 2, 3, 4]},
                   {"name": "input1", "shape": [3], "datatype": "BOOL", "data": [True, False, True]}],
        "outputs": [{"name": "output0"}]})
    assert status == 200, body
    assert dict(headers)["Content-Type"] == JSON
    reply = json.loads(body)
    assert reply["id"] == "42" and reply["model_name"] == "mymodel"
    assert [o["name"] for o in reply["outputs"]] == ["output0"]
    out = reply["outputs"][0]
    assert out["shape"] == [3, 2] and out["datatype"] == "FP32"
    np.testing.assert_allclose(out["data"], [2.0, 2.1, 1.0, 1.1, 2.0, 2.1], rtol=1e-6)


def test_spec_binary_example(spec):
    """The binary tensor data extension example: binary in, one output binary, one JSON."""
    a = np.array([[1, 2], [3, 4]], dtype=np.int32)
    flags = np.array([True, True, False])
    body, length = binary_request({
        "model_name": "mymodel",
        "inputs": [{"name": "input0", "shape": [2, 2], "datatype": "INT32",
                    "parameters": {"binary_data_size": 16}},
                   {"name": "input1", "shape": [3], "datatype": "BOOL",
                    "parameters": {"binary_data_size": 3}}],
        "outputs": [{"name": "output0", "parameters": {"binary_data": True}}, {"name": "output1"}]},
        a.tobytes(), flags.tobytes())
    status, headers, reply = infer(spec, "mymodel", body, "application/octet-stream", length)
    assert status == 200, reply
    assert dict(headers)["Content-Type"] == "application/octet-stream"
    head, tail = split_binary(headers, reply)
    out0, out1 = head["outputs"]
    assert out0 == {"name": "output0", "datatype": "FP32", "shape": [3, 2],
                    "parameters": {"binary_data_size": 24}}
    assert len(tail) == 24
    np.testing.assert_allclose(np.frombuffer(tail, np.float32).reshape(3, 2),
                               [[2.0, 2.1], [2.0, 2.1], [1.0, 1.1]], rtol=1e-6)
    assert out1["data"] == [1, 2, 3, 4] and out1["shape"] == [2, 2]


def test_seed_numbers_match_predict(seed):
    model, service = seed
    x = np.random.default_rng(0).standard_normal((5, 10)).astype(np.float32)
    expected = model.predict(x)
    flat = {"inputs": [{"name": "dense_input", "shape": [5, 10], "datatype": "FP32",
                        "data": x.ravel().tolist()}]}
    nested = {"inputs": [{"name": "dense_input", "shape": [5, 10], "datatype": "FP32",
                          "data": x.tolist()}]}
    for req in (flat, nested):
        status, _, body = infer(service, "seed", req)
        assert status == 200, body
        out = json.loads(body)["outputs"][0]
        assert out["name"] == "dense_2" and out["shape"] == [5, 1]
        np.testing.assert_array_equal(np.float32(out["data"]), expected.ravel())
    # binary in, binary out (binary_data_output), bit-exact
    body, length = binary_request({"inputs": [{"name": "dense_input", "shape": [5, 10],
                                               "datatype": "FP32",
                                               "parameters": {"binary_data_size": 200}}],
                                   "parameters": {"binary_data_output": True}}, x.tobytes())
    status, headers, reply = infer(service, "seed", body, "application/octet-stream", length)
    assert status == 200, reply
    head, tail = split_binary(headers, reply)
    assert head["outputs"][0]["parameters"] == {"binary_data_size": 20}
    np.testing.assert_array_equal(np.frombuffer(tail, np.float32).reshape(5, 1), expected)


def test_float64_json_data_is_cast_for_a_float32_model(seed):
    model, service = seed
    x = np.linspace(-1, 1, 10).reshape(1, 10)
    status, _, body = infer(service, "seed", {"inputs": [{"name": "dense_input", "shape": [1, 10],
                                                          "datatype": "FP64", "data": x.ravel().tolist()}]})
    assert status == 200, body
    np.testing.assert_allclose(json.loads(body)["outputs"][0]["data"],
                               model.predict(x.astype(np.float32)).ravel(), rtol=1e-6)


@pytest.mark.parametrize("datatype,dtype,values", [
    ("BOOL", np.bool_, [True, False, True, True]),
    ("UINT8", np.uint8, [0, 7, 200, 255]),
    ("INT8", np.int8, [-128, -1, 0, 127]),
    ("INT16", np.int16, [-32768, 5, 300, 32767]),
    ("INT32", np.int32, [-2147483648, 0, 1, 2147483647]),
    # JSON numbers carry integers exactly only below 2^53 (RFC 7493): the extremes of INT64
    # travel as binary data (test_int64_beyond_2_53_needs_the_binary_extension)
    ("INT64", np.int64, [-(2**53 - 1), -1, 1 << 40, 2**53 - 1]),
    ("FP16", np.float16, [0.5, -2.0, 65504.0, 0.0999755859375]),
    ("FP32", np.float32, [0.1, -3.5, 1e30, 1.17549435e-38]),
    ("FP64", np.float64, [0.1, -1e300, 2.5, 5e-324]),
])
def test_every_datatype_round_trips(identity, datatype, dtype, values):
    """JSON and binary in, JSON and binary out, through an identity model: exact."""
    x = np.array(values, dtype=dtype).reshape(2, 2)
    status, _, body = infer(identity, "identity", {"inputs": [
        {"name": "x", "shape": [2, 2], "datatype": datatype, "data": x.tolist()}]})
    assert status == 200, body
    out = json.loads(body)["outputs"][0]
    assert out["datatype"] == datatype and out["shape"] == [2, 2]
    np.testing.assert_array_equal(np.array(out["data"], dtype=dtype).reshape(2, 2), x)
    req, length = binary_request({"inputs": [{"name": "x", "shape": [2, 2], "datatype": datatype,
                                              "parameters": {"binary_data_size": x.nbytes}}],
                                  "outputs": [{"name": "output_0",
                                               "parameters": {"binary_data": True}}]}, x.tobytes())
    status, headers, reply = infer(identity, "identity", req, "application/octet-stream", length)
    assert status == 200, reply
    head, tail = split_binary(headers, reply)
    assert head["outputs"][0]["datatype"] == datatype
    assert tail == x.tobytes()


INT64_EXACT_MESSAGE = ("input 'x': {} cannot be carried exactly by a JSON number (|value| >= 2^53, "
                       "see RFC 7493); send INT64 data this large with the binary tensor data extension")


def test_int64_beyond_2_53_needs_the_binary_extension(identity):
    """-2^63 and 2^63-1 round-trip exactly as binary tensor data; in JSON, 2^53-1 is the
    largest magnitude accepted (exactly) and 2^53 is refused with a message saying why."""
    extremes = np.array([-(2**63), -(2**53), 2**53, 2**63 - 1], dtype=np.int64)
    req, length = binary_request({"inputs": [{"name": "x", "shape": [4], "datatype": "INT64",
                                              "parameters": {"binary_data_size": 32}}],
                                  "parameters": {"binary_data_output": True}}, extremes.tobytes())
    status, headers, reply = infer(identity, "identity", req, "application/octet-stream", length)
    assert status == 200, reply
    assert np.array_equal(np.frombuffer(split_binary(headers, reply)[1], np.int64), extremes)

    exact = [2**53 - 1, -(2**53 - 1), 2**53 - 2]
    status, _, body = infer(identity, "identity", {"inputs": [
        {"name": "x", "shape": [3], "datatype": "INT64", "data": exact}]})
    assert status == 200, body
    assert json.loads(body)["outputs"][0]["data"] == exact
    for value, shown in ((2**53, "9007199254740992"), (-(2**53), "-9007199254740992"),
                         (2**53 + 1, "9007199254740992"), (2**63 - 1, "9223372036854775808")):
        status, _, body = infer(identity, "identity", {"inputs": [
            {"name": "x", "shape": [1], "datatype": "INT64", "data": [value]}]})
        assert status == 400, body
        assert json.loads(body)["error"] == INT64_EXACT_MESSAGE.format(shown)


def test_v1_predict(seed, spec, models_dir):
    model, service = seed
    x = np.random.default_rng(1).standard_normal((3, 10)).astype(np.float32)
    status, _, body = service.handle("POST", "/v1/models/seed:predict",
                                     json.dumps({"instances": x.tolist()}).encode(), JSON)
    assert status == 200, body
    np.testing.assert_array_equal(np.float32(json.loads(body)["predictions"]), model.predict(x))
    # several inputs: instances keyed by input name; several outputs: one object per row
    import torch

    class Two(torch.nn.Module):
        def forward(self, a, b):
            return a + b, a * 2.0

    meta = {"inputs": [{"name": "a", "dtype": "float32", "shape": [-1, 2]},
                       {"name": "b", "dtype": "float32", "shape": [-1, 2]}],
            "outputs": [{"name": "sum", "dtype": "float32", "shape": [-1, 2]},
                        {"name": "double", "dtype": "float32", "shape": [-1, 2]}]}
    two = _core.Service(berth.load(save_script(Two(), models_dir / "two.pt", meta)), "two")
    try:
        status, _, body = two.handle("POST", "/v1/models/two:predict", json.dumps(
            {"instances": [{"a": [1, 2], "b": [10, 20]}, {"a": [3, 4], "b": [30, 40]}]}).encode(), JSON)
        assert status == 200, body
        assert json.loads(body) == {"predictions": [{"sum": [11, 22], "double": [2, 4]},
                                                    {"sum": [33, 44], "double": [6, 8]}]}
        status, _, body = two.handle("POST", "/v1/models/two:predict",
                                     b'{"instances": [[1, 2]]}', JSON)
        assert status == 400 and "object keyed by input name" in json.loads(body)["error"]
    finally:
        two.close()


def test_metadata_and_health(seed):
    _, service = seed
    status, _, body = service.handle("GET", "/v2/models/seed", b"")
    assert status == 200
    meta = json.loads(body)
    assert meta["name"] == "seed" and meta["platform"] == "pytorch_torchscript"
    assert meta["inputs"] == [{"name": "dense_input", "datatype": "FP32", "shape": [-1, 10]}]
    assert meta["outputs"] == [{"name": "dense_2", "datatype": "FP32", "shape": [-1, 1]}]
    status, _, body = service.handle("GET", "/v2", b"")
    assert status == 200 and "binary_tensor_data" in json.loads(body)["extensions"]
    assert service.handle("GET", "/v2/health/live", b"")[0] == 200
    assert service.handle("GET", "/v2/models/seed/ready", b"")[0] == 200
    assert service.handle("GET", "/v2/models/seed/versions/1/ready", b"")[0] == 200
    assert json.loads(service.handle("GET", "/v1/models/seed", b"")[2]) == {"name": "seed", "ready": True}


def test_readiness_is_a_status_code(seed_model_path):
    service = _core.Service(berth.load(seed_model_path), "seed")
    try:
        status, _, body = service.handle("GET", "/v2/health/ready", b"")
        assert status == 503 and "warming up" in json.loads(body)["error"]
        service.set_ready(True)
        assert service.handle("GET", "/v2/health/ready", b"")[0] == 200
        service.set_ready(False)
        status, _, body = service.handle("GET", "/v2/health/ready", b"")
        assert status == 503 and "shutting down" in json.loads(body)["error"]
    finally:
        service.close()


SEED_INPUT = {"name": "dense_input", "shape": [1, 10], "datatype": "FP32", "data": [0.0] * 10}

BAD_BODIES = [
    # (body, content type, header length, expected status, words the error must contain)
    (b"{not json", JSON, None, 400, "not valid JSON"),
    (b"[1, 2]", JSON, None, 400, "must be a JSON object"),
    (b"{}", JSON, None, 400, "non-empty 'inputs' list"),
    ({"inputs": "x"}, JSON, None, 400, "non-empty 'inputs' list"),
    ({"inputs": [{"shape": [1, 10], "datatype": "FP32", "data": [0] * 10}]}, JSON, None, 400, "string 'name'"),
    ({"inputs": [dict(SEED_INPUT, datatype="FP8")]}, JSON, None, 400, "unsupported datatype 'FP8'"),
    ({"inputs": [dict(SEED_INPUT, datatype="BYTES")]}, JSON, None, 400, "expected one of BOOL"),
    ({"inputs": [dict(SEED_INPUT, shape=[1, 9])]}, JSON, None, 400, "needs 9 elements but 'data' holds 10"),
    ({"inputs": [dict(SEED_INPUT, shape=[1, -10])]}, JSON, None, 400, "non-negative integer"),
    ({"inputs": [dict(SEED_INPUT, shape=[1 << 40, 1 << 40])]}, JSON, None, 400, "elements but 'data' holds 10"),
    ({"inputs": [dict(SEED_INPUT, shape=[1 << 31] * 8)]}, JSON, None, 400, "more than"),
    ({"inputs": [dict(SEED_INPUT, data=["a"] * 10)]}, JSON, None, 400, "expected numbers for FP32 data, got a string"),
    ({"inputs": [dict(SEED_INPUT, data=[1e39] + [0] * 9)]}, JSON, None, 400, "out of range for FP32"),
    ({"inputs": [SEED_INPUT, SEED_INPUT]}, JSON, None, 400, "appears twice"),
    ({"inputs": [dict(SEED_INPUT, name="x")]}, JSON, None, 400, "unknown input 'x'"),
    ({"inputs": [dict(SEED_INPUT, shape=[1, 5], data=[0] * 5)]}, JSON, None, 400, "expects shape (-1, 10), got (1, 5)"),
    ({"inputs": [dict(SEED_INPUT, datatype="INT64", data=[0] * 10)]}, JSON, None, 400, "expects dtype float32, got int64"),
    ({"inputs": [SEED_INPUT], "outputs": [{"name": "nope"}]}, JSON, None, 400, "unknown output 'nope'"),
    ({"inputs": [SEED_INPUT], "id": 5}, JSON, None, 400, "'id' must be a string"),
    ({"inputs": [SEED_INPUT]}, "text/plain", None, 415, "unsupported Content-Type 'text/plain'"),
    ({"inputs": [dict(SEED_INPUT, data=None, parameters={"binary_data_size": 40})]}, JSON, None, 400,
     "both 'data' and"),
    ({"inputs": [{"name": "dense_input", "shape": [1, 10], "datatype": "FP32",
                  "parameters": {"binary_data_size": 40}}]}, "application/octet-stream", 0, 400, "not valid JSON"),
    ({"inputs": [SEED_INPUT]}, JSON, "12x", 400, "Inference-Header-Content-Length must be"),
    ({"inputs": [SEED_INPUT]}, JSON, 100000, 400, "but the body has only"),
]


@pytest.mark.parametrize("body,content_type,header_length,status,words", BAD_BODIES)
def test_bad_requests_get_a_clear_4xx(seed, body, content_type, header_length, status, words):
    _, service = seed
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    got_status, headers, reply = infer(service, "seed", body, content_type, header_length)
    assert got_status == status, reply
    assert dict(headers)["Content-Type"] == JSON
    assert words in json.loads(reply)["error"]


def test_binary_size_checks(seed):
    _, service = seed
    x = np.zeros((1, 10), np.float32)
    header = {"inputs": [{"name": "dense_input", "shape": [1, 10], "datatype": "FP32",
                          "parameters": {"binary_data_size": 40}}]}
    for tail, words in ((x.tobytes()[:39], "only 39 bytes of binary data remain"),
                        (x.tobytes() + b"!", "41 bytes follow the JSON header")):
        body, length = binary_request(header, tail)
        status, _, reply = infer(service, "seed", body, "application/octet-stream", length)
        assert status == 400 and words in json.loads(reply)["error"], reply
    header["inputs"][0]["parameters"]["binary_data_size"] = 36
    body, length = binary_request(header, x.tobytes()[:36])
    status, _, reply = infer(service, "seed", body, "application/octet-stream", length)
    assert status == 400 and "needs 40 bytes" in json.loads(reply)["error"]


def test_routing_errors(seed):
    _, service = seed
    status, _, body = infer(service, "other", {"inputs": [SEED_INPUT]})
    assert status == 404 and "model 'other' not found" in json.loads(body)["error"]
    status, headers, body = service.handle("GET", "/v2/models/seed/infer", b"")
    assert status == 405 and dict(headers)["Allow"] == "POST"
    status, _, body = service.handle("GET", "/nowhere", b"")
    assert status == 404 and "no such endpoint" in json.loads(body)["error"]


def test_auth_token(seed_model_path):
    service = _core.Service(berth.load(seed_model_path), "seed", auth_token="s3cret")
    service.set_ready(True)
    try:
        body = json.dumps({"inputs": [SEED_INPUT]}).encode()
        path = "/v2/models/seed/infer"
        status, headers, reply = service.handle("POST", path, body, JSON)
        assert status == 401 and dict(headers)["WWW-Authenticate"] == "Bearer"
        assert "missing Authorization" in json.loads(reply)["error"]
        assert service.handle("POST", path, body, JSON, "Bearer wrong")[0] == 401
        assert service.handle("POST", path, body, JSON, "Bearer s3cret")[0] == 200
        assert service.handle("GET", "/metrics", b"")[0] == 401
        for open_path in ("/v2/health/live", "/v2/health/ready", "/v2/models/seed/ready"):
            assert service.handle("GET", open_path, b"")[0] == 200
    finally:
        service.close()


def test_metrics_count_requests(seed_model_path):
    service = _core.Service(berth.load(seed_model_path), "seed")
    try:
        body = json.dumps({"inputs": [SEED_INPUT]}).encode()
        for _ in range(3):
            assert infer(service, "seed", body)[0] == 200
        assert infer(service, "seed", b"{")[0] == 400
        text = service.metrics()
        labels = 'model="seed",version="1",'
        assert 'berth_requests_total{' + labels + 'endpoint="infer",code="200"} 3\n' in text
        assert 'berth_requests_total{' + labels + 'endpoint="infer",code="400"} 1\n' in text
        assert 'berth_request_duration_seconds_count{' + labels + 'endpoint="infer"} 4\n' in text
        assert "berth_batch_size_count{" + labels.rstrip(",") + "} 3\n" in text
        assert "# TYPE berth_queue_seconds histogram" in text
        assert 'berth_model_load_seconds{model="seed",version="1"} ' in text and "berth_ready 0\n" in text
    finally:
        service.close()


def test_nan_outputs_are_null(identity):
    body, length = binary_request({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32",
                                               "parameters": {"binary_data_size": 8}}]},
                                  struct.pack("<2f", float("nan"), 1.5))
    status, _, reply = infer(identity, "identity", body, "application/octet-stream", length)
    assert status == 200 and json.loads(reply)["outputs"][0]["data"] == [None, 1.5]


# What a strict JSON parser checked for the codec and cJSON does not: the codec checks it
# itself (csrc/runtime/json.c).

def identity_input(**fields):
    return dict({"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}, **fields)


def raw_request(*inputs, **top):
    """A body built from JSON text pieces, so that it can hold what json.dumps never writes."""
    parts = [f'"inputs": [{", ".join(inputs)}]'] + [f'"{k}": {v}' for k, v in top.items()]
    return ("{" + ", ".join(parts) + "}").encode()


X = '{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}'


@pytest.mark.parametrize("body,words", [
    (b'{"inputs": [' + X.encode() + b'], "inputs": []}', "duplicate key 'inputs' in the request body"),
    (b'{"id": "a", "inputs": [' + X.encode() + b'], "id": "b"}', "duplicate key 'id' in the request body"),
    (raw_request('{"name": "x", "name": "y", "shape": [2], "datatype": "FP32", "data": [1, 2]}'),
     "duplicate key 'name' in inputs[0]"),
    (raw_request(X, '{"name": "z", "shape": [1], "datatype": "FP32", "shape": [1], "data": [1]}'),
     "duplicate key 'shape' in inputs[1]"),
    (raw_request('{"name": "x", "shape": [2], "datatype": "FP32", "datatype": "FP64", "data": [1, 2]}'),
     "duplicate key 'datatype' in inputs[0]"),
    (raw_request('{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2], "data": [3, 4]}'),
     "duplicate key 'data' in inputs[0]"),
    (raw_request(X, outputs='[{"name": "output_0", "parameters": {"binary_data": true, "binary_data": false}}]'),
     "duplicate key 'binary_data' in outputs[0].parameters"),
    (raw_request(X, parameters='{"binary_data_output": true, "binary_data_output": false}'),
     "duplicate key 'binary_data_output' in 'parameters'"),
])
def test_duplicate_keys_the_codec_reads_are_refused(identity, body, words):
    status, _, reply = infer(identity, "identity", body)
    assert status == 400, reply
    assert words in json.loads(reply)["error"]


def test_duplicate_keys_the_codec_ignores_are_tolerated(identity):
    body = raw_request('{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2], '
                       '"parameters": {"content_type": "a", "content_type": "b"}}')
    status, _, reply = infer(identity, "identity", body)
    assert status == 200, reply


def test_an_object_with_many_keys_is_scanned_once_per_lookup(identity):
    """100k distinct keys beside "inputs" (a quadratic duplicate check would take minutes)."""
    import time
    filler = ", ".join(f'"k{i}": {i}' for i in range(100_000))
    body = raw_request(X.replace('"data"', filler + ', "data"'), **{f"t{i}": i for i in range(100_000)})
    start = time.perf_counter()
    status, _, reply = infer(identity, "identity", body)
    assert status == 200, reply
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("nested", [False, True])
def test_a_resnet_sized_input_is_walked_in_linear_time(identity, nested):
    """1x3x224x224 FP32 (150,528 numbers), flat and nested: exact values, and quickly
    (indexing cJSON's linked lists in a loop would be quadratic: minutes)."""
    import time
    x = np.random.default_rng(2).standard_normal((1, 3, 224, 224)).astype(np.float32)
    body = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.tolist() if nested else x.ravel().tolist()}],
                       "parameters": {"binary_data_output": True}}).encode()
    start = time.perf_counter()
    status, headers, reply = infer(identity, "identity", body)
    assert time.perf_counter() - start < 2.0
    assert status == 200, reply[:200]
    assert np.frombuffer(split_binary(headers, reply)[1], np.float32).tobytes() == x.tobytes()


# Number texts at the edges of the text path's reader (codec_data.c): exponents, signed
# zero, more digits than a double holds, subnormals, the largest finite values.
NUMBER_TEXTS = {
    "FP64": ["0", "-0", "0.1", "-0.000001234", "1e22", "1e23", "12345678901234567890",
             "123456789012345678901234567890e-20", "1.7976931348623157e308", "4.9e-324",
             "2.2250738585072014e-308", "9007199254740993", "0.30000000000000004", "1E+2",
             "1e-7", "-2.5E-3", "100000000000000000000000e-2"],
    "FP32": ["0", "-0", "0.1", "3.4028234663852886e38", "1.17549435e-38", "1e-45",
             "16777217", "-1.0000001", "0.333333343267", "7e-46"],
    "FP16": ["0", "-0", "65504", "0.0999755859375", "6e-8", "-1.5e-3", "2049", "0.1"],
    "INT64": ["0", "-0", "9007199254740991", "-9007199254740991", "1e15", "-3e2", "2.0"],
    "INT32": ["-2147483648", "2147483647", "1.0", "-3e2", "0", "-0"],
    "INT16": ["-32768", "32767", "1e4"],
    "INT8": ["-128", "127", "-0.0"],
    "UINT8": ["0", "255", "2.55e2"],
}
NUMPY_TYPES = {"FP64": np.float64, "FP32": np.float32, "FP16": np.float16, "INT64": np.int64,
               "INT32": np.int32, "INT16": np.int16, "INT8": np.int8, "UINT8": np.uint8}


def decoded(service, datatype, texts, copies):
    """The bytes the codec decodes from `copies` repetitions of texts (binary output)."""
    n = len(texts) * copies
    body = ('{"inputs": [{"name": "x", "shape": [%d], "datatype": "%s", "data": [%s]}], '
            '"parameters": {"binary_data_output": true}}'
            % (n, datatype, ", ".join(texts * copies))).encode()
    status, headers, reply = infer(service, "identity", body)
    assert status == 200, reply[:300]
    return len(body), split_binary(headers, reply)[1]


@pytest.mark.parametrize("datatype", list(NUMBER_TEXTS))
def test_long_bodies_decode_the_numbers_short_bodies_do(identity, datatype):
    """Bodies of 4 KiB and more have their data lists read from the text (codec_data.c),
    shorter ones through cJSON nodes: the same numbers give the same bytes either way."""
    texts = NUMBER_TEXTS[datatype]
    short_len, short = decoded(identity, datatype, texts, 1)
    long_len, long = decoded(identity, datatype, texts, 400)
    assert short_len < 4096 <= long_len
    assert long == short * 400
    if datatype in ("FP64", "FP32"):
        # what a correctly rounding reader gives (Python's float is one)
        expected = np.array([float(t) for t in texts]).astype(NUMPY_TYPES[datatype])
        assert long[:len(short)] == expected.tobytes()
    # "01" is not RFC 8259 text: the reader leaves such a body to cJSON, which reads 1
    assert decoded(identity, datatype, texts + ["01"], 400)[1][-len(short) // len(texts):] == \
        np.ones(1, NUMPY_TYPES[datatype]).tobytes()


def test_long_bodies_nest_data_any_way_the_cjson_path_does(identity):
    x = np.random.default_rng(4).standard_normal((4, 3, 50)).astype(np.float32)
    ragged = [x[0].tolist(), x[1:].ravel().tolist()]  # nested unevenly: only the count counts
    for data in (x.tolist(), x.ravel().tolist(), ragged, [[], x.tolist(), [[]]]):
        body = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                       "data": data}],
                           "parameters": {"binary_data_output": True}}).encode()
        assert len(body) >= 4096
        status, headers, reply = infer(identity, "identity", body)
        assert status == 200, reply[:300]
        assert split_binary(headers, reply)[1] == x.tobytes()


@pytest.mark.parametrize("datatype, bad, words", [
    ("FP32", '"7"', "input 'x': expected numbers for FP32 data, got a string"),
    ("FP32", "null", "input 'x': expected numbers for FP32 data, got null"),
    ("FP32", "1e999", "input 'x': a number in 'data' does not fit in a double"),
    ("FP16", "65520", "input 'x': 65520 is out of range for FP16"),
    ("INT32", "1.5", "input 'x': expected integers for INT32 data, got 1.5"),
    ("INT8", "128", "input 'x': 128 is out of range for INT8"),
    ("INT64", "9007199254740992", "input 'x': 9007199254740992 cannot be carried exactly"),
    ("FP32", "{}", "input 'x': expected numbers for FP32 data, got an object"),
])
def test_long_bodies_refuse_bad_data_as_short_ones_do(identity, datatype, bad, words):
    """A bad number deep in a long body: the error the cJSON path gives, word for word."""
    for copies in (1, 2000):
        data = ", ".join(["1"] * copies + [bad] + ["1"] * copies)
        body = ('{"inputs": [{"name": "x", "shape": [%d], "datatype": "%s", "data": [%s]}]}'
                % (2 * copies + 1, datatype, data)).encode()
        status, _, reply = infer(identity, "identity", body)
        assert status == 400, reply[:300]
        assert words in json.loads(reply)["error"]


def test_long_bodies_count_the_data_against_the_shape(identity):
    data = ", ".join(["0.5"] * 3000)
    for shape, words in (([3001], "shape (3001,) needs 3001 elements but 'data' holds 3000"),
                         ([2999], "shape (2999,) needs 2999 elements but 'data' holds 3000"),
                         ([1, 10 ** 12], "shape (1, 1000000000000) needs 1000000000000 elements "
                                         "but 'data' holds 3000")):
        body = ('{"inputs": [{"name": "x", "shape": %s, "datatype": "FP32", "data": [%s]}]}'
                % (json.dumps(shape), data)).encode()
        status, _, reply = infer(identity, "identity", body)
        assert status == 400, reply[:300]
        assert words in json.loads(reply)["error"]


BAD_UTF8 = [b"\xff", b"\x80", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xf0\x80\x80\xaf",  # stray, overlong
            b"\xed\xa0\x80", b"\xed\xbf\xbf",  # surrogates U+D800, U+DFFF
            b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80",  # above U+10FFFF
            b"\xc3", b"\xe2\x82", b"a\xe2\x82"]  # truncated


def with_bytes(template, raw):
    """template (text, with @ where raw goes) as a body of bytes."""
    before, after = template.split("@")
    return before.encode() + raw + after.encode()


@pytest.mark.parametrize("raw", BAD_UTF8)
@pytest.mark.parametrize("template,words", [
    ('{"id": "@", "inputs": [%s]}' % X, "'id' is not valid UTF-8"),
    ('{"inputs": [{"name": "x@", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}',
     "inputs[0].name is not valid UTF-8"),
    ('{"inputs": [{"name": "x", "shape": [2], "datatype": "FP@", "data": [1, 2]}]}',
     "input 'x': 'datatype' is not valid UTF-8"),
    ('{"inputs": [%s], "outputs": [{"name": "@"}]}' % X, "outputs[0].name is not valid UTF-8"),
])
def test_strings_the_codec_keeps_must_be_valid_utf8(identity, raw, template, words):
    status, _, reply = infer(identity, "identity", with_bytes(template, raw))
    assert status == 400, reply
    assert json.loads(reply)["error"] == words


def test_valid_utf8_is_kept_exactly(identity):
    text = r"h\u00e9llo \u2713 \ud83d\ude00 \\u0000"  # escapes, a surrogate pair, an escaped backslash
    raw = "é ✓ 😀 \U0010ffff"  # the same as UTF-8, up to the last code point
    body = ('{"id": "%s|%s", "inputs": [%s]}' % (text, raw, X)).encode()
    status, _, reply = infer(identity, "identity", body)
    assert status == 200, reply
    assert json.loads(reply)["id"] == "héllo ✓ 😀 \\u0000|" + raw


@pytest.mark.parametrize("body,words", [
    (b'{"id": "a\\u0000b", "inputs": [' + X.encode() + b']}', "\\u0000 (NUL) is not allowed in strings (line 1, column 10)"),
    (b'{"inputs": [{"name": "x\\u0000y", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}',
     "\\u0000 (NUL) is not allowed"),
    (b'{"id": "a\x00b", "inputs": [' + X.encode() + b']}', "NUL byte (line 1, column 10)"),
    (b'{"id": "a\\u00zzb", "inputs": [' + X.encode() + b']}', "invalid \\u escape"),
    (b'{"id": "a\\u12", "inputs": [' + X.encode() + b']}', "invalid \\u escape"),
    (b'{"id": "\\udc00", "inputs": [' + X.encode() + b']}', "not valid JSON"),  # lone low surrogate
    (b'{"id": "\\ud800x", "inputs": [' + X.encode() + b']}', "not valid JSON"),  # lone high surrogate
    (b'{"inputs": [' + X.encode() + b']} x', "not valid JSON: unexpected data after the JSON value near 'x' "
                                            "(line 1, column 79)"),
    (b'{not json', "not valid JSON: syntax error near 'not json' (line 1, column 2)"),
    (b'{"inputs": [1, 2', "not valid JSON: syntax error near '2' at the end of the body (line 1, column 16)"),
    (b'{"inputs": [' + X.encode() + b']}\n\n{}', "(line 3, column 1)"),
    (b'{\n  "inputs": [1,,2]\n}', "not valid JSON"),
    (b'{\n  "inputs": [1,,2]\n}', "(line 2, column"),
    (b"", "not valid JSON: unexpected end of input (line 1, column 1)"),
    (b"   ", "not valid JSON"),
])
def test_invalid_json_is_refused_with_a_position(identity, body, words):
    status, _, reply = infer(identity, "identity", body)
    assert status == 400, reply
    assert words in json.loads(reply)["error"]


@pytest.mark.parametrize("fields,words", [
    ({"data": "[1e999, 1]"}, "input 'x': a number in 'data' does not fit in a double (it overflows to infinity)"),
    ({"data": "[1, -1e999]"}, "input 'x': a number in 'data' does not fit in a double (it overflows to -infinity)"),
    ({"datatype": '"FP64"', "data": "[1e400, 1]"}, "input 'x': a number in 'data' does not fit in a double"),
    ({"datatype": '"INT32"', "data": "[1e999, 1]"}, "input 'x': a number in 'data' does not fit in a double"),
    ({"datatype": '"BOOL"', "data": "[1e999, 1]"}, "input 'x': a number in 'data' does not fit in a double"),
    ({"datatype": '"INT32"', "data": "[1.5, 1]"}, "input 'x': expected integers for INT32 data, got 1.5"),
    ({"datatype": '"INT8"', "data": "[128, 1]"}, "input 'x': 128 is out of range for INT8"),
    ({"datatype": '"UINT8"', "data": "[1e20, 1]"}, "input 'x': 100000000000000000000 is out of range for UINT8"),
    ({"datatype": '"INT32"', "data": "[2147483648, 1]"}, "input 'x': 2147483648 is out of range for INT32"),
    ({"datatype": '"BOOL"', "data": "[2, 1]"}, "input 'x': expected true/false for BOOL data, got a number"),
    ({"datatype": '"BOOL"', "data": "[0.5, 1]"}, "input 'x': expected true/false for BOOL data, got a number"),
    ({"datatype": '"BOOL"', "data": '["true", 1]'},
     "input 'x': expected true/false for BOOL data, got a non-boolean value"),
    ({"shape": "[1e999]"}, "input 'x': shape[0] must be a non-negative integer, got inf"),
    ({"shape": "[2.5]"}, "input 'x': shape[0] must be a non-negative integer, got 2.5"),
    ({"shape": "[-2]"}, "input 'x': shape[0] must be a non-negative integer, got a negative integer"),
    ({"shape": '["2"]'}, "input 'x': shape[0] must be a non-negative integer, got a string"),
    ({"shape": "[9007199254740992]"},
     "input 'x': shape[0] must be a non-negative integer, got 9007199254740992, which is not below 2^53"),
])
def test_numbers_are_finite_and_integers_integral(identity, fields, words):
    parts = dict({"name": '"x"', "shape": "[2]", "datatype": '"FP32"', "data": "[1, 2]"}, **fields)
    body = '{"inputs": [{%s}]}' % ", ".join(f'"{k}": {v}' for k, v in parts.items())
    status, _, reply = infer(identity, "identity", body.encode())
    assert status == 400, reply
    assert words in json.loads(reply)["error"]


def test_integral_numbers_with_a_fraction_part_are_integers(identity):
    """cJSON keeps only a double, so 2.0 and 2 are the same number (jansson told them apart)."""
    body = b'{"inputs": [{"name": "x", "shape": [2.0], "datatype": "INT32", "data": [1.0, -3e2]}]}'
    status, _, reply = infer(identity, "identity", body)
    assert status == 200, reply
    assert json.loads(reply)["outputs"][0]["data"] == [1, -300]
    body = b'{"inputs": [{"name": "x", "shape": [3], "datatype": "BOOL", "data": [true, 0, 1.0]}]}'
    status, _, reply = infer(identity, "identity", body)
    assert status == 200, reply
    assert json.loads(reply)["outputs"][0]["data"] == [True, False, True]
    header = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32",
                          "parameters": {"binary_data_size": 8.0}}]}
    body, length = binary_request(header, np.ones(2, np.float32).tobytes())
    assert infer(identity, "identity", body, "application/octet-stream", length)[0] == 200
    header["inputs"][0]["parameters"]["binary_data_size"] = 8.5
    body, length = binary_request(header, np.ones(2, np.float32).tobytes())
    status, _, reply = infer(identity, "identity", body, "application/octet-stream", length)
    assert status == 400 and "binary_data_size must be a non-negative integer" in json.loads(reply)["error"]


def v1(service, name, body):
    status, _, reply = service.handle("POST", f"/v1/models/{name}:predict", body, JSON)
    return status, json.loads(reply)


def test_v1_checks_keys_and_numbers_too(identity, models_dir):
    status, reply = v1(identity, "identity", b'{"instances": [[1, 2]], "instances": [[3]]}')
    assert status == 400 and "duplicate key 'instances' in the request body" in reply["error"]
    status, reply = v1(identity, "identity", b'{"instances": [[1, 2], [3, 1e999]]}')
    assert status == 400 and "a number in 'data' does not fit in a double" in reply["error"]
    status, reply = v1(identity, "identity", b'{"instances": [[1, 2], [3]]}')
    assert status == 400 and "ragged lists" in reply["error"]
    status, reply = v1(identity, "identity", b'{"instances": [[1, 2], [3, 4, "x"]]}')
    assert status == 400 and "ragged lists" in reply["error"]  # the length is checked first
    status, reply = v1(identity, "identity", b'{"instances": [[1, 2], [3, "x"]]}')
    assert status == 400 and "expected numbers for FP32 data, got a string" in reply["error"]
    status, reply = v1(identity, "identity", b'{"instances": [[1, 2], [3, [4]]]}')
    assert status == 400 and "ragged lists" in reply["error"]
    status, reply = v1(identity, "identity", b'{"instances": [[1.5, 2], [3, 4]]}')
    assert status == 200 and reply == {"predictions": [[1.5, 2], [3, 4]]}

    import torch

    class Two(torch.nn.Module):
        def forward(self, a, b):
            return a + b

    two = _core.Service(berth.load(save_script(Two(), models_dir / "two_keys.pt")), "two")
    try:
        status, reply = v1(two, "two", b'{"instances": [{"a": 1, "b": 2}, {"a": 3, "b": 4, "a": 5}]}')
        assert status == 400 and "duplicate key 'a' in instances[1]" in reply["error"]
        status, reply = v1(two, "two", b'{"instances": [{"a": 1, "b": 2, "\xff": 3}]}')
        assert status == 400 and reply["error"] == "instances[0] has a key that is not valid UTF-8"
        status, reply = v1(two, "two", b'{"instances": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]}')
        assert status == 200 and reply == {"predictions": [3, 7]}
    finally:
        two.close()


def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def test_the_body_arena_is_reused_and_stays_correct_across_requests(identity):
    """Each body's nodes come from a per-thread arena that the next body reuses: answers
    stay right when a big body follows a small one and back, and memory does not grow."""
    big = np.random.default_rng(3).standard_normal((1, 3, 224, 224)).astype(np.float32)
    small = np.arange(6, dtype=np.float32).reshape(2, 3)

    def round_trip(x):
        body = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                       "data": x.ravel().tolist()}],
                           "parameters": {"binary_data_output": True}}).encode()
        status, headers, reply = infer(identity, "identity", body)
        assert status == 200, reply[:200]
        assert np.frombuffer(split_binary(headers, reply)[1], np.float32).tobytes() == x.tobytes()

    round_trip(big)
    round_trip(small)
    start = rss_mb()
    for _ in range(20):
        round_trip(big)
        round_trip(small)
        assert infer(identity, "identity", b'{"inputs": [')[0] == 400  # a failed parse releases too
    if not os.environ.get("BERTH_SANITIZED"):  # ASan's allocator keeps freed memory in quarantine
        assert rss_mb() - start < 40


def test_error_bodies_stay_valid_utf8_when_a_name_is_cut_inside_a_character(seed):
    # messages quote names up to 64 bytes; "a" + 40 two-byte characters is cut inside one
    _, service = seed
    name = "a" + "é" * 40
    body = json.dumps({"inputs": [{"name": name, "shape": [1]}]}, ensure_ascii=False).encode()
    status, _, reply = service.handle("POST", "/v2/models/seed/infer", body, JSON)
    assert status == 400
    message = json.loads(reply.decode("utf-8"))["error"]  # strict decode: no stray byte
    assert message.startswith("input 'a" + "é" * 31 + "\ufffd'")


@pytest.mark.parametrize("rows, shape_text, lists", [
    (0, "(2, 100000000, 0)", 200000002),  # rows of 1e8 empty lists each
    (10 ** 13, "(10000000000000, 0)", 10 ** 13),  # 1e13 rows of [] for 2 instances
])
def test_v1_refuses_an_empty_output_with_huge_dimensions_quickly(models_dir, rows, shape_text, lists):
    # such outputs hold nothing but would be written as that many nested "[]"
    import time
    import torch

    class Hollow(torch.nn.Module):
        def __init__(self, rows: int):
            super().__init__()
            self.rows = rows

        def forward(self, x):
            if self.rows == 0:
                return torch.zeros(x.size(0), 100_000_000, 0)
            return torch.zeros(self.rows, 0)

    meta = {"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 1]}],
            "outputs": [{"name": "y", "dtype": "float32"}]}
    path = save_script(Hollow(rows), models_dir / f"hollow{rows}.pt", meta)
    service = _core.Service(berth.load(path), "h", batching=False)
    try:
        start = time.perf_counter()
        status, _, reply = service.handle("POST", "/v1/models/h:predict",
                                          b'{"instances": [[1.0], [2.0]]}', JSON)
        assert time.perf_counter() - start < 2.0
        assert status >= 400
        assert (f"output 'y' of shape {shape_text} holds 0 numbers but would take "
                f"{lists} nested JSON lists; ask for it through the v2 protocol"
                in json.loads(reply)["error"])
        # the v2 protocol sends the same output flat
        status, _, reply = service.handle(
            "POST", "/v2/models/h/infer",
            json.dumps({"inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP32",
                                    "data": [1.0, 2.0]}]}).encode(), JSON)
        assert status == 200, reply
        assert json.loads(reply)["outputs"][0]["shape"] == [int(d) for d in shape_text[1:-1].split(", ")]
    finally:
        service.close()
