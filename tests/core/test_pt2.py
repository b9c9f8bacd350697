"""torch.export / AOTInductor packages (.pt2) through berth: export, load, predict with
parity against eager torch, every bad input refused before AOTInductor's kernels (which
do not check their inputs) see it, threads, memory, and serving with batching.

The packages are compiled once per session (AOTInductor runs a C++ compiler: seconds to
a minute each on two cores). On torch < 2.6 (Debian's leg) only the refusal is tested."""
import json
import os
import subprocess
import sys
import threading
import zipfile

import numpy as np
import pytest

import berth
from conftest import berth_pythonpath, seed_mlp
from models import ConvNet

torch = pytest.importorskip("torch")
TORCH = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
needs_export = pytest.mark.skipif(TORCH < (2, 6), reason=f"torch.export/AOTInductor packages need torch >= 2.6, "
                                                         f"this is {torch.__version__}")


class TextGRU(torch.nn.Module):
    """Embedding + GRU over int64 token ids."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(50, 8)
        self.gru = torch.nn.GRU(8, 16, batch_first=True)
        self.head = torch.nn.Linear(16, 3)

    def forward(self, tokens):
        out, _ = self.gru(self.embed(tokens))
        return self.head(out[:, -1])


class TwoInTwoOut(torch.nn.Module):
    """A float and an int64 input; a dict of two outputs (the Hugging Face style)."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 3)
        self.table = torch.nn.Embedding(10, 3)

    def forward(self, features, ids):
        mixed = self.proj(features) + self.table(ids)
        return {"scores": mixed, "total": mixed.sum(dim=1, keepdim=True)}


def _encoder():
    layer = torch.nn.TransformerEncoderLayer(d_model=16, nhead=4, dim_feedforward=32, batch_first=True)
    return torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)


def _cases():
    rng = np.random.default_rng(0)
    return {
        "mlp": (seed_mlp, lambda n: (rng.standard_normal((n, 10)).astype(np.float32),)),
        "conv": (ConvNet, lambda n: (rng.standard_normal((n, 3, 16, 16)).astype(np.float32),)),
        "encoder": (_encoder, lambda n: (rng.standard_normal((n, 6, 16)).astype(np.float32),)),
        "gru": (TextGRU, lambda n: (rng.integers(0, 50, (n, 7)).astype(np.int64),)),
        "two": (TwoInTwoOut, lambda n: (rng.standard_normal((n, 4)).astype(np.float32),
                                        rng.integers(0, 10, (n,)).astype(np.int64))),
    }


@pytest.fixture(scope="session")
def packages(tmp_path_factory):
    """name -> (eager module, make_inputs(n), path of its berth.export'ed package)."""
    if TORCH < (2, 6):
        pytest.skip(f"torch {torch.__version__} cannot export .pt2 packages")
    directory = tmp_path_factory.mktemp("pt2")
    made = {}
    for name, (build, make) in _cases().items():
        torch.manual_seed(0)
        module = build().eval()
        example = tuple(torch.from_numpy(a) for a in make(3))
        path = berth.export(module, example, str(directory / f"{name}.pt2"), max_batch=256)
        made[name] = (module, make, path)
    return made


def eager(module, inputs):
    with torch.inference_mode():
        out = module(*(torch.from_numpy(a) for a in inputs))
    if isinstance(out, dict):
        return [v.numpy() for v in out.values()]
    if isinstance(out, (tuple, list)):
        return [v.numpy() for v in out]
    return [out.numpy()]


def as_list(result):
    return list(result) if isinstance(result, tuple) else [result]


@needs_export
@pytest.mark.parametrize("name", list(_cases()))
def test_parity_with_eager_torch_at_batch_1_7_and_64(packages, name):
    module, make, path = packages[name]
    model = berth.load(path)
    assert model.format == "pt2" and model.batchable and model.max_batch == 256
    for n in (1, 7, 64):
        inputs = make(n)
        got, want = as_list(model.predict(*inputs)), eager(module, inputs)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape and g.dtype == w.dtype
            assert np.abs(g - w).max() <= 1e-5, (name, n, np.abs(g - w).max())


@needs_export
def test_signature_names_dtypes_and_dynamic_batch(packages):
    model = berth.load(packages["two"][2])
    assert [tuple(s) for s in model.inputs] == [("features", "float32", (-1, 4)), ("ids", "int64", (-1,))]
    assert [tuple(s) for s in model.outputs] == [("scores", "float32", (-1, 3)), ("total", "float32", (-1, 1))]
    assert model.metadata["export"]["method"] == "torch.export+aoti"
    assert model.metadata["inputs"][0]["ranges"] == [[1, 256], None]


@needs_export
def test_every_bad_input_is_a_clear_error_before_the_kernels(packages):
    model = berth.load(packages["conv"][2])
    good = np.zeros((2, 3, 16, 16), np.float32)
    cases = [
        (good.astype(np.int32), TypeError, "expects dtype float32, got int32"),
        (good[0], ValueError, "expects shape (-1, 3, 16, 16), got (3, 16, 16)"),
        (np.zeros((2, 3, 16, 15), np.float32), ValueError, "expects shape (-1, 3, 16, 16), got (2, 3, 16, 15)"),
        (np.zeros((257, 3, 16, 16), np.float32), ValueError, "dimension 0 must be between 1 and 256"),
        (np.zeros((0, 3, 16, 16), np.float32), ValueError, "dimension 0 must be between 1 and 256"),
    ]
    for bad, kind, words in cases:
        with pytest.raises(kind) as info:
            model.predict(bad)
        assert words in str(info.value)
    with pytest.raises(TypeError, match=r"expects 1 input \('image'\), got 2"):
        model.predict(good, good)
    # non-contiguous and float64 input are made right, not refused
    wide = np.zeros((2, 3, 16, 32), np.float32)[..., ::2]
    assert model.predict(wide).shape == (2, 5)
    assert model.predict(good.astype(np.float64)).shape == (2, 5)


@needs_export
def test_corrupt_truncated_and_renamed_files(packages, tmp_path, seed_model_path):
    data = open(packages["mlp"][2], "rb").read()
    truncated = tmp_path / "truncated.pt2"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(berth.ModelLoadError, match="truncated.pt2"):
        berth.load(truncated)
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a package at all")
    with pytest.raises(berth.ModelLoadError, match="not a zip archive"):
        berth.load(junk)
    # the format comes from the contents: a TorchScript file named .pt2 loads as TorchScript
    renamed = tmp_path / "script.pt2"
    renamed.write_bytes(open(seed_model_path, "rb").read())
    model = berth.load(renamed)
    assert model.format == "torchscript" and model.predict(np.ones((2, 10), np.float32)).shape == (2, 1)


def fake_package(path, with_so=False):
    """A zip in PyTorch's layout that says it is a .pt2 package but holds no model."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/archive_format", "pt2")
        archive.writestr("model/archive_version", "0")
        archive.writestr("model/.data/version", "1\n")
        archive.writestr("model/byteorder", "little")
    return str(path)


def test_a_package_without_a_model_is_refused_naming_the_file(tmp_path):
    path = fake_package(tmp_path / "empty.pt2")
    with pytest.raises(berth.ModelLoadError) as info:
        berth.load(path)
    assert "empty.pt2" in str(info.value)
    if TORCH < (2, 6):
        assert "needs libtorch 2.6 or newer" in str(info.value)


@needs_export
def test_a_package_made_without_berth_gets_its_signature_from_the_package(tmp_path):
    torch.manual_seed(0)
    module = seed_mlp().eval()
    batch = torch.export.Dim("batch", min=1, max=512)
    program = torch.export.export(module, (torch.zeros(4, 10),), dynamic_shapes=({0: batch},))
    path = torch._inductor.aoti_compile_and_package(program, package_path=str(tmp_path / "plain.pt2"))
    model = berth.load(path)
    assert [tuple(s) for s in model.inputs] == [("input_0", "float32", (-1, 10))]
    assert model.outputs[0].name == "output_0" and model.max_batch == 512
    x = np.random.default_rng(1).standard_normal((5, 10)).astype(np.float32)
    assert np.abs(model.predict(x) - eager(module, (x,))[0]).max() <= 1e-5
    with pytest.raises(ValueError, match="expects shape"):
        model.predict(np.zeros((5, 9), np.float32))


@needs_export
def test_sequential_save_pt2_round_trip(tmp_path):
    model = berth.Sequential([berth.layers.Dense(8, activation="relu", input_shape=(4,)), berth.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    path = tmp_path / "seq.pt2"
    model.save(path)
    loaded = berth.load(path)
    assert [tuple(s) for s in loaded.inputs] == [("dense_input", "float32", (-1, 4))]
    assert loaded.metadata["model"]["class"] == "Sequential"
    x = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    with torch.no_grad():
        assert np.abs(loaded.predict(x) - model(torch.from_numpy(x)).numpy()).max() <= 1e-5
    assert berth.train.saving.read_metadata(path)["inputs"][0]["name"] == "dense_input"
    with pytest.raises(ValueError, match="is a .pt2 package"):
        berth.load_model(path)


@needs_export
def test_export_errors_say_what_to_change(tmp_path):
    class FixedBatch(torch.nn.Module):
        def forward(self, x):
            return x.reshape(3, -1)

    with pytest.raises(ValueError, match="What to change: the model fixes the batch dimension"):
        berth.export(FixedBatch(), torch.zeros(3, 4), str(tmp_path / "fixed.pt2"))
    assert os.listdir(tmp_path) == []  # nothing half-written
    with pytest.raises(ValueError, match="same first"):
        berth.export(TwoInTwoOut(), (torch.zeros(3, 4), torch.zeros(2, dtype=torch.int64)), str(tmp_path / "x.pt2"))
    with pytest.raises(ValueError, match="max_batch"):
        berth.export(ConvNet(), torch.zeros(2, 3, 8, 8), str(tmp_path / "x.pt2"), max_batch=1)


@needs_export
def test_eight_threads_share_one_package(packages):
    module, make, path = packages["mlp"]
    model = berth.load(path)
    inputs = [make(1 + k % 5) for k in range(8)]
    wanted = [eager(module, x)[0] for x in inputs]
    errors = []

    def worker(k):
        for _ in range(1000):
            got = model.predict(*inputs[k])
            if np.abs(got - wanted[k]).max() > 1e-5:
                errors.append(k)
                return

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@needs_export
def test_rss_is_flat_over_100k_calls(packages):
    if os.environ.get("BERTH_SANITIZED"):
        pytest.skip("ASan's allocator keeps freed memory in quarantine")
    code = f"""
import resource, numpy as np, berth
m = berth.load({packages['mlp'][2]!r})
x = np.ones((1, 10), np.float32)
for _ in range(20000): m.predict(x)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for _ in range(100000): m.predict(x)
print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
    env = dict(os.environ, PYTHONPATH=berth_pythonpath())
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    before, after = map(int, out.stdout.split())
    assert after - before < 2048, f"RSS grew by {after - before} KiB over 100k calls"


@needs_export
def test_device_cuda_is_refused_clearly_without_a_gpu(packages, seed_model_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    for path in (packages["mlp"][2], seed_model_path):
        with pytest.raises(ValueError, match="device='cuda' needs a CUDA build of libtorch"):
            berth.load(path, device="cuda")


@pytest.fixture(scope="module")
def slow_package(tmp_path_factory):
    """SlowLinear (tests/models.py), exported: (module, path). Its forwards take milliseconds."""
    from models import SlowLinear
    torch.manual_seed(0)
    module = SlowLinear().eval()
    path = tmp_path_factory.mktemp("pt2-slow") / "slow.pt2"
    return module, berth.export(module, (torch.ones(3, 10),), str(path), max_batch=256)


@needs_export
def test_serve_batches_a_pt2_model(slow_package):
    from serve_process import ServeProcess, infer_in_rounds, metric

    module, path = slow_package
    server = ServeProcess(path, "--name", "mlp", "--max-delay-ms", "20", "--max-batch-size", "512")
    try:
        status, _, body = server.request("GET", "/v2/models/mlp")
        meta = json.loads(body)
        assert status == 200 and meta["platform"] == "torch_aoti"
        name = berth.load(path).inputs[0].name
        assert meta["inputs"] == [{"name": name, "datatype": "FP32", "shape": [-1, 10]}]
        assert meta["parameters"]["max_batch_size"] <= 256  # the exported range caps --max-batch-size
        rng = np.random.default_rng(3)
        inputs = [rng.standard_normal((1, 10)).astype(np.float32) for _ in range(16 * 6)]
        before = metric(server.metrics(), "berth_batch_size_count{}")
        answers = infer_in_rounds(server, "mlp", inputs, clients=16, name=name)
        for x, got in zip(inputs, answers):
            assert np.abs(got - eager(module, [x])[0]).max() <= 1e-5
        batches = metric(server.metrics(), "berth_batch_size_count{}") - before
        assert batches <= len(inputs) // 2, f"{batches:g} forwards for {len(inputs)} requests"
    finally:
        assert server.stop() == 0
