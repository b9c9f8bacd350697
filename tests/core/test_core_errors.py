"""Bad input gets a clear Python exception naming what was expected and given."""

import json

import numpy as np
import pytest
import torch

import berth
from conftest import custom_op_model


def test_missing_file(tmp_path):
    with pytest.raises(berth.ModelLoadError, match=r"cannot load '.*nope\.pt': No such file"):
        berth.load(tmp_path / "nope.pt")


def test_directory(tmp_path):
    with pytest.raises(berth.ModelLoadError, match="is a directory"):
        berth.load(tmp_path)


def test_not_torchscript(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("hello, not a model\n")
    with pytest.raises(berth.ModelLoadError, match="not a TorchScript or .pt2 file"):
        berth.load(path)


def test_pickled_state_dict_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(berth.ModelLoadError, match="not a readable TorchScript or .pt2 archive"):
        berth.load(path)


@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_truncated_file(tmp_path, seed_model_path, keep):
    data = open(seed_model_path, "rb").read()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(berth.ModelLoadError, match="TorchScript"):
        berth.load(path)


def test_corrupt_berth_json(tmp_path):
    path = tmp_path / "badmeta.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path), _extra_files={"berth.json": "{not json"})
    with pytest.raises(berth.ModelLoadError, match="berth.json .* is not a JSON object"):
        berth.load(path)


def test_more_outputs_than_berth_serves_is_a_load_error(tmp_path):
    # BT_MAX_OUTPUTS is 64: a signature listing more used to be dropped without a word.
    import json
    meta = {"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 2]}],
            "outputs": [{"name": f"y{i}", "dtype": "float32", "shape": [-1, 2]} for i in range(65)]}
    path = tmp_path / "many.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path),
                   _extra_files={"berth.json": json.dumps(meta)})
    with pytest.raises(berth.ModelLoadError, match="lists 65 outputs; berth serves at most 64"):
        berth.load(path)
    meta["outputs"] = meta["outputs"][:64]
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path),
                   _extra_files={"berth.json": json.dumps(meta)})
    assert len(berth.load(path).outputs) == 64


def save_with_input(path, spec):
    meta = {"inputs": [dict({"name": "x"}, **spec)],
            "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 2]}]}
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path),
                   _extra_files={"berth.json": json.dumps(meta)})
    return path


def test_a_signature_dtype_outside_the_table_is_named_with_the_table(tmp_path):
    path = save_with_input(tmp_path / "c64.pt", {"dtype": "complex64", "shape": [-1, 2]})
    with pytest.raises(berth.ModelLoadError,
                       match=r"inputs\[0\]\.dtype is not one of bool, uint8, int8, int16, int32, "
                             r"int64, float16, float32, float64$"):
        berth.load(path)


def test_a_signature_shape_may_have_as_many_dimensions_as_a_tensor(tmp_path):
    # BT_MAX_NDIM (64), the core's one limit; the signature parser used to stop at 32
    deep = berth.load(save_with_input(tmp_path / "deep.pt", {"dtype": "float32", "shape": [1] * 64}))
    assert deep.inputs[0].shape == (1,) * 64
    with pytest.raises(berth.ModelLoadError, match=r"inputs\[0\]\.shape is not a list of integers"):
        berth.load(save_with_input(tmp_path / "deeper.pt", {"dtype": "float32", "shape": [1] * 65}))


def test_wrong_number_of_inputs(seed_model_path):
    model = berth.load(seed_model_path)
    x = np.zeros((1, 10), np.float32)
    with pytest.raises(TypeError, match=r"expects 1 input \('dense_input'\), got 2"):
        model.predict(x, x)
    with pytest.raises(TypeError, match="got 0"):
        model.predict()


def test_wrong_feature_size_is_caught_before_forward(seed_model_path):
    model = berth.load(seed_model_path)
    with pytest.raises(ValueError, match=r"input 'dense_input' expects shape \(-1, 10\), got \(3, 7\)"):
        model.predict(np.zeros((3, 7), np.float32))
    with pytest.raises(ValueError, match=r"expects shape \(-1, 10\), got \(10,\)"):
        model.predict(np.zeros(10, np.float32))


def test_lossy_dtype_is_refused(seed_model_path):
    model = berth.load(seed_model_path)
    with pytest.raises(TypeError, match="input 'dense_input' expects dtype float32, got int64"):
        model.predict(np.zeros((2, 10), np.int64))


@pytest.mark.parametrize("value,match", [
    ("text", "must be a NumPy array, a buffer or a list of numbers; got str"),
    ({"a": 1}, "got dict"),
    (None, "got NoneType"),
    (object(), "got object"),
    (np.array([["a"] * 10]), "must hold numbers"),
    (np.array([[object()] * 10]), "must hold numbers"),
    (np.zeros((1, 10), np.uint32), "uint32, which libtorch cannot take"),
    (np.zeros((1, 10), ">f4"), "big-endian"),
])
def test_non_numeric_inputs(seed_model_path, value, match):
    model = berth.load(seed_model_path)
    with pytest.raises(TypeError, match=match):
        model.predict(value)


def test_forward_error_without_signature_names_the_input(tmp_path):
    path = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(10, 2)), str(path))
    model = berth.load(path)
    with pytest.raises(berth.InferenceError) as info:
        model.predict(np.zeros((3, 7), np.float32))
    message = str(info.value)
    assert "'input' float32 (3, 7)" in message
    assert "3x7" in message and "Traceback" not in message


def test_process_keeps_working_after_errors(seed_model_path):
    model = berth.load(seed_model_path)
    for bad in (np.zeros((2, 3), np.float32), "x", np.zeros((2, 10), np.int64)):
        with pytest.raises((TypeError, ValueError)):
            model.predict(bad)
    assert model.predict(np.ones((2, 10), np.float32)).shape == (2, 1)


def test_load_rejects_non_paths():
    with pytest.raises(TypeError, match=r"berth.load\(path\): expected a file path"):
        berth.load(3.5)


def test_custom_operators_load_from_their_library_and_say_so_when_missing(tmp_path):
    """A model that calls a custom op fails to load with libtorch's own words and the way
    out; with the op's library given (here one torch ships for its AOTInductor tests)
    it loads and runs, from Python and from `berth serve --library`."""
    path, library = custom_op_model(tmp_path)
    with pytest.raises(berth.ModelLoadError) as info:
        berth.load(path)
    assert "Unknown builtin op: aoti_custom_ops::custom_add" in str(info.value)
    assert "berth.load(path, libraries=[...])" in str(info.value)
    with pytest.raises(ValueError, match="expected an existing shared library"):
        berth.load(path, libraries=[str(tmp_path / "missing.so")])
    model = berth.load(path, libraries=[library])
    np.testing.assert_array_equal(model.predict(np.arange(3, dtype=np.float32)), [0, 2, 4])
    from serve_process import JSON_HEADERS, ServeProcess
    server = ServeProcess(path, "--name", "custom", "--library", library)
    try:
        body = b'{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[0,1,2]}]}'
        status, _, reply = server.request("POST", "/v2/models/custom/infer", body, JSON_HEADERS)
        assert status == 200 and json.loads(reply)["outputs"][0]["data"] == [0, 2, 4], reply
    finally:
        assert server.stop() == 0
