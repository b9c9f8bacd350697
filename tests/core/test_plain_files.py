"""Plain TorchScript files (torch.jit.save, no berth.json): a signature given by the user
(berth.load(inputs=...), serve --input/--output), python -m berth inspect and sign."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import berth
from conftest import save_script, seed_metadata
from serve_process import JSON_HEADERS, ServeProcess


@pytest.fixture(scope="module")
def plain_two_path(models_dir):
    import torch

    class Two(torch.nn.Module):
        def forward(self, a, b):
            return a + b

    return save_script(Two(), models_dir / "plain_two.pt")


def berth_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "berth", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


# --- berth.load(inputs=..., outputs=...) ---

def test_load_with_a_signature_checks_inputs(plain_ids_path):
    plain = berth.load(plain_ids_path)
    assert plain.inputs == (berth.TensorSpec("ids", None, None),) and not plain.batchable
    model = berth.load(plain_ids_path, inputs=["ids:INT64:-1,4"], outputs=[("doubled", "int64", (None, 4))])
    assert model.inputs == (berth.TensorSpec("ids", "int64", (-1, 4)),)
    assert model.outputs == (berth.TensorSpec("doubled", "int64", (-1, 4)),)
    assert model.batchable and model.metadata["inputs"][0]["dtype"] == "int64"
    np.testing.assert_array_equal(model.predict(np.arange(8).reshape(2, 4)), np.arange(8).reshape(2, 4) * 2)
    with pytest.raises(ValueError, match="ids"):
        model.predict(np.zeros((2, 5), np.int64))  # the signature is checked before forward
    spec = berth.TensorSpec("ids", "INT64", (-1, 4))
    assert berth.load(plain_ids_path, inputs=[spec]).inputs[0].dtype == "int64"


def test_load_signature_errors_name_the_argument(plain_ids_path, seed_model_path):
    with pytest.raises(ValueError, match=r"lists 2 inputs but forward takes 1"):
        berth.load(plain_ids_path, inputs=["ids:INT64:-1,4", "x:FP32:-1"])
    with pytest.raises(ValueError, match=r"^inputs: expected NAME:DATATYPE:SHAPE .* got 'ids'"):
        berth.load(plain_ids_path, inputs=["ids"])
    with pytest.raises(TypeError, match=r"^inputs: expected a list .* got str"):
        berth.load(plain_ids_path, inputs="ids:INT64:-1,4")
    with pytest.raises(ValueError, match=r"^outputs: expected a DATATYPE .* got 'FP33'"):
        berth.load(plain_ids_path, inputs=["ids:INT64:-1,4"], outputs=["y:FP33:-1"])
    with pytest.raises(ValueError, match=r"^signature: expected a plain TorchScript file .* carries its own"):
        berth.load(seed_model_path, inputs=["dense_input:FP32:-1,10"])


# --- serve --input/--output on the wire ---

def test_serve_plain_file_with_a_signature_batches_and_publishes_it(plain_ids_path):
    server = ServeProcess(plain_ids_path, "--name", "ids", "--input", "ids:INT64:-1,4",
                          "--output", "doubled:INT64:-1,4", "--threads", "1", "--max-delay-ms", "5")
    try:
        log = "".join(server.lines)
        assert "batching on" in log and "warmed up in" in log, log
        status, _, body = server.request("GET", "/v2/models/ids")
        assert status == 200
        meta = json.loads(body)
        assert meta["inputs"] == [{"name": "ids", "datatype": "INT64", "shape": [-1, 4]}]
        assert meta["outputs"] == [{"name": "doubled", "datatype": "INT64", "shape": [-1, 4]}]
        x = np.arange(8, dtype=np.int64).reshape(2, 4)
        request = {"inputs": [{"name": "ids", "shape": [2, 4], "datatype": "INT64", "data": x.ravel().tolist()}]}
        status, _, body = server.request("POST", "/v2/models/ids/infer", json.dumps(request).encode(), JSON_HEADERS)
        assert status == 200, body
        out = json.loads(body)["outputs"][0]
        assert out["name"] == "doubled" and out["datatype"] == "INT64" and out["data"] == (x * 2).ravel().tolist()
        # KServe v1: JSON integers read with the signature's dtype (int64), not as FP32
        status, _, body = server.request("POST", "/v1/models/ids:predict",
                                         json.dumps({"instances": x.tolist()}).encode(), JSON_HEADERS)
        assert status == 200, body
        assert json.loads(body)["predictions"] == (x * 2).tolist()
    finally:
        assert server.stop() == 0


def test_serve_plain_file_without_a_signature_says_which_flag(plain_ids_path):
    server = ServeProcess(plain_ids_path, "--threads", "1")
    try:
        log = "".join(server.lines)
        assert "batching off" in log and "--input NAME:DATATYPE:SHAPE" in log, log
    finally:
        assert server.stop() == 0


def _summary_model(path):
    """x (-1, -1) -> {"mean": (-1, 1) float32, "positive": (-1, -1) bool, "count": (-1, 2) int64}."""
    import torch
    from typing import Dict

    class Summary(torch.nn.Module):
        def forward(self, x) -> Dict[str, torch.Tensor]:
            return {"mean": x.mean(dim=1, keepdim=True), "positive": x > 0,
                    "count": torch.zeros(x.shape[0], 2, dtype=torch.long) + x.shape[1]}

    return save_script(Summary(), path)


def test_outputs_are_learnt_from_a_probe_forward_when_only_inputs_are_given(tmp_path):
    """Inputs known, outputs not: two forwards on zeros (free extents 1, then 2) tell each
    output's name, dtype and which extents follow the input; the model then batches."""
    import torch
    from berth._model import load_for_serving
    path = _summary_model(tmp_path / "summary.pt")
    heard = []
    model, _ = load_for_serving(path, inputs=["x:FP32:-1,-1"], on_probe=heard.append)
    assert model.outputs == (berth.TensorSpec("mean", "float32", (-1, 1)),
                             berth.TensorSpec("positive", "bool", (-1, -1)),
                             berth.TensorSpec("count", "int64", (-1, 2)))
    assert model.batchable
    assert heard == ["outputs learnt from a probe forward: mean: float32 (-1, 1), positive: bool (-1, -1), "
                     "count: int64 (-1, 2) (pass --output NAME:DATATYPE:SHAPE to state them instead)"]
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    want = torch.jit.load(path)(torch.from_numpy(x))
    got = model.predict(x)
    for key in ("mean", "positive", "count"):
        np.testing.assert_array_equal(got[key], want[key].numpy())
    # given outputs are kept as given; no probe
    heard.clear()
    given, _ = load_for_serving(path, inputs=["x:FP32:-1,-1"], outputs=["m:FP32:-1,1", "p:BOOL:-1,-1",
                                                                        "c:INT64:-1,2"], on_probe=heard.append)
    assert [s.name for s in given.outputs] == ["m", "p", "c"] and heard == []


def test_a_failed_probe_says_why_and_serving_goes_on_without_outputs(tmp_path):
    import torch

    class RefusesZeros(torch.nn.Module):
        def forward(self, x):
            if bool((x == 0).all()):
                raise ValueError("all zeros")
            return x

    from berth._model import load_for_serving
    path = save_script(RefusesZeros(), tmp_path / "refuses.pt")
    heard = []
    model, _ = load_for_serving(path, inputs=["x:FP32:-1,3"], on_probe=heard.append)
    assert model.outputs == () and not model.batchable
    assert len(heard) == 1 and heard[0].startswith(
        "outputs not learnt from a probe forward: forward on zeros with free extents 1 failed:"), heard
    assert "all zeros" in heard[0]


def test_serve_with_inputs_only_learns_outputs_batches_and_publishes_them(plain_ids_path):
    server = ServeProcess(plain_ids_path, "--name", "ids", "--input", "ids:INT64:-1,4", "--threads", "1")
    try:
        log = "".join(server.lines)
        assert "outputs learnt from a probe forward: output_0: int64 (-1, 4)" in log, log
        assert "batching on" in log and "warmed up in" in log, log
        status, _, body = server.request("GET", "/v2/models/ids")
        assert status == 200
        assert json.loads(body)["outputs"] == [{"name": "output_0", "datatype": "INT64", "shape": [-1, 4]}]
        x = np.arange(4, dtype=np.int64).reshape(1, 4)
        request = {"inputs": [{"name": "ids", "shape": [1, 4], "datatype": "INT64", "data": x.ravel().tolist()}]}
        status, _, body = server.request("POST", "/v2/models/ids/infer", json.dumps(request).encode(), JSON_HEADERS)
        assert status == 200 and json.loads(body)["outputs"][0]["data"] == (x * 2).ravel().tolist(), body
    finally:
        assert server.stop() == 0


def test_serve_refuses_a_bad_input_option(plain_ids_path):
    done = berth_cli("serve", plain_ids_path, "--input", "ids:INT64", "--port", "0")
    assert done.returncode == 2 and "--input: expected NAME:DATATYPE:SHAPE" in done.stderr, done.stderr
    done = berth_cli("serve", plain_ids_path, "--input", "ids:INT64:-1,4", "--input", "x:FP32:-1", "--port", "0")
    assert done.returncode == 1 and "lists 2 inputs but forward takes 1" in done.stderr, done.stderr


# --- inspect ---

def test_inspect_plain_file(plain_ids_path):
    info = berth.inspect(plain_ids_path)
    assert info["format"] == "torchscript" and info["signature_source"] == "schema"
    assert info["signature"] == {"inputs": [{"name": "ids", "datatype": None, "shape": None}], "outputs": []}
    assert info["size"] == os.path.getsize(plain_ids_path) and len(info["sha256"]) == 64
    assert info["archive_version"] is not None and info["metadata_keys"] == []
    assert any("--input NAME:DATATYPE:SHAPE" in flag for flag in info["serve_flags"])
    done = berth_cli("inspect", plain_ids_path)
    assert done.returncode == 0 and "from forward's schema only" in done.stdout and "--input" in done.stdout


def test_inspect_berth_file_json_without_torch(seed_model_path):
    code = ("import json, sys, berth.__main__ as m; rc = m.main(['inspect', sys.argv[1], '--json']); "
            "assert 'torch' not in sys.modules, 'inspect imported torch'; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, seed_model_path], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["signature_source"] == "embedded" and info["batchable"] is True
    assert info["signature"]["inputs"] == [{"name": "dense_input", "datatype": "FP32", "shape": [-1, 10]}]
    assert info["metadata_keys"] == sorted(seed_metadata()) and info["serve_flags"] == []


def test_inspect_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    done = berth_cli("inspect", tmp_path / "notes.txt")
    assert done.returncode == 2 and "not a zip archive" in done.stderr
    done = berth_cli("inspect", tmp_path / "missing.pt")
    assert done.returncode == 2 and "nothing is there" in done.stderr
    with pytest.raises(TypeError, match=r"berth.inspect\(path\): expected a file path"):
        berth.inspect(3)


# --- sign ---

def test_sign_embeds_the_signature_atomically(plain_two_path, tmp_path):
    out = tmp_path / "signed.pt"
    done = berth_cli("sign", plain_two_path, "--input", "a:FP32:-1,3", "--input", "b:FP32:-1,3",
                     "--output", "sum:FP32:-1,3", "--out", out)
    assert done.returncode == 0, done.stderr
    model = berth.load(out)
    assert [s.dtype for s in model.inputs] == ["float32", "float32"] and model.batchable
    assert model.outputs[0].name == "sum"
    assert berth.inspect(out)["signature_source"] == "embedded"
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(model.predict(x, x), x * 2)
    assert sorted(os.listdir(tmp_path)) == ["signed.pt"]  # no temporary file left
    # in place
    copy = tmp_path / "inplace.pt"
    copy.write_bytes(open(plain_two_path, "rb").read())
    berth.sign(copy, ["a:FP32:-1,3", ("b", "float32", (-1, 3))])
    assert berth.load(copy).inputs[1] == berth.TensorSpec("b", "float32", (-1, 3))


def test_sign_without_outputs_embeds_those_a_probe_forward_learns(plain_two_path, tmp_path):
    out = tmp_path / "signed.pt"
    done = berth_cli("sign", plain_two_path, "--input", "a:FP32:-1,3", "--input", "b:FP32:-1,3", "--out", out)
    assert done.returncode == 0, done.stderr
    assert "outputs learnt from a probe forward: output_0: float32 (-1, 3)" in done.stderr, done.stderr
    model = berth.load(out)
    assert model.outputs == (berth.TensorSpec("output_0", "float32", (-1, 3)),) and model.batchable


def test_sign_refuses_without_writing(plain_two_path, seed_model_path, tmp_path):
    copy = tmp_path / "plain.pt"
    original = open(plain_two_path, "rb").read()
    copy.write_bytes(original)
    done = berth_cli("sign", copy, "--input", "a:FP32:-1,3")  # forward takes two
    assert done.returncode == 2 and "lists 1 inputs but forward takes 2" in done.stderr, done.stderr
    done = berth_cli("sign", copy, "--input", "a:FP32:-1,x", "--input", "b:FP32:-1,3")
    assert done.returncode == 2 and "--input: expected SHAPE as comma-separated integers" in done.stderr
    done = berth_cli("sign", seed_model_path, "--input", "x:FP32:-1,10", "--out", tmp_path / "again.pt")
    assert done.returncode == 2 and "already carries a berth.json signature" in done.stderr
    assert copy.read_bytes() == original and sorted(os.listdir(tmp_path)) == ["plain.pt"]


def test_sign_refuses_a_pt2(tmp_path):
    import zipfile
    path = tmp_path / "model.pt2"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("model/archive_format", "pt2")
    with pytest.raises(ValueError, match=r"a \.pt2's signature comes from the package: export it again with "
                                         r"berth.export"):
        berth.sign(path, ["x:FP32:-1,3"])
    assert sorted(os.listdir(tmp_path)) == ["model.pt2"]


# --- a .pt2: its signature comes from the package ---

@pytest.fixture(scope="module")
def small_pt2(tmp_path_factory):
    torch = pytest.importorskip("torch")
    if tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) < (2, 6):
        pytest.skip(f"torch {torch.__version__} cannot export .pt2 packages")
    module = torch.nn.Linear(3, 2).eval()
    path = tmp_path_factory.mktemp("pt2") / "small.pt2"
    return berth.export(module, (torch.zeros(2, 3),), str(path), max_batch=16), torch.__version__


def test_inspect_and_sign_a_pt2(small_pt2, tmp_path):
    path, version = small_pt2
    info = berth.inspect(path)
    assert info["format"] == "pt2" and info["signature_source"] == "package" and info["load_error"] is None
    assert info["torch_version"] == version and info["archive_version"] is None
    assert info["signature"]["inputs"][0]["datatype"] == "FP32" and info["signature"]["inputs"][0]["shape"][1:] == [3]
    done = berth_cli("inspect", path)
    assert done.returncode == 0 and "(.pt2)" in done.stdout and f"torch {version}" in done.stdout
    done = berth_cli("sign", path, "--input", "x:FP32:-1,3", "--out", tmp_path / "signed.pt2")
    assert done.returncode == 2 and "a .pt2's signature comes from the package" in done.stderr
    assert not os.listdir(tmp_path)
    with pytest.raises(ValueError, match=r"^signature: .*a \.pt2's signature comes from the package"):
        berth.load(path, inputs=["x:FP32:-1,3"])


def test_sign_out_errors_and_symlink(plain_two_path, tmp_path):
    two = ["a:FP32:-1,3", "b:FP32:-1,3"]
    with pytest.raises(ValueError, match=r"^out: expected a file path to write, got the directory"):
        berth.sign(plain_two_path, two, out=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"^out: expected a path in an existing directory"):
        berth.sign(plain_two_path, two, out=tmp_path / "no" / "such.pt")
    real = tmp_path / "real.pt"
    real.write_bytes(open(plain_two_path, "rb").read())
    (tmp_path / "link.pt").symlink_to(real)
    berth.sign(tmp_path / "link.pt", two)
    assert os.path.islink(tmp_path / "link.pt") and berth.load(real).inputs[0].dtype == "float32"
