"""berth.load(path, device="cuda") on a GPU: TorchScript and .pt2 packages compiled for
CUDA, compared with eager torch on the same GPU, from threads, and from a process that
never imports torch.

Skipped without a CUDA torch and a visible GPU (the project's CI machines have none; a
machine with one runs them with the rest of tests/core). Without a GPU the refusal is
tested in test_pt2.py (test_device_cuda_is_refused_clearly_without_a_gpu)."""
import threading

import numpy as np
import pytest

import berth
from conftest import berth_pythonpath, run_python, save_script, seed_metadata, seed_mlp
from models import ConvNet, resnet18

torch = pytest.importorskip("torch")
TORCH = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA torch and a visible GPU")
needs_export = pytest.mark.skipif(TORCH < (2, 6), reason=f"torch.export/AOTInductor packages need torch >= 2.6, "
                                                         f"this is {torch.__version__}")


def on_gpu(module, *arrays):
    """Eager torch on the GPU, back as NumPy."""
    with torch.inference_mode():
        out = module.cuda()(*(torch.from_numpy(a).cuda() for a in arrays))
    return out.cpu().numpy()


def assert_close(got, want, tolerance):
    assert isinstance(got, np.ndarray), type(got)
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype, want.shape, want.dtype)
    scale = max(1.0, float(np.abs(want).max()))
    assert np.abs(got - want).max() <= tolerance * scale, np.abs(got - want).max()


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    """name -> (eager module, path of its TorchScript file, input of batch n)."""
    directory = tmp_path_factory.mktemp("cuda_ts")
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    mlp, net = seed_mlp().eval(), resnet18().eval()
    return {
        "mlp": (mlp, save_script(mlp, directory / "mlp.pt", seed_metadata()),
                lambda n: rng.standard_normal((n, 10)).astype(np.float32)),
        "resnet18": (net, save_script(net, directory / "resnet18.pt"),
                     lambda n: rng.standard_normal((n, 3, 64, 64)).astype(np.float32)),
    }


@pytest.fixture(scope="module")
def cuda_package(tmp_path_factory):
    """(eager module on the GPU, path of a .pt2 that berth.export compiled for CUDA).

    The package is first loaded and run in a child process: the first run of these tests
    on a GPU (torch 2.11, an H200) crashed the process in berth.load, and a crash should
    fail these tests, not end the session."""
    if TORCH < (2, 6):
        pytest.skip(f"torch {torch.__version__} cannot export .pt2 packages")
    torch.manual_seed(0)
    module = ConvNet().eval().cuda()
    path = str(tmp_path_factory.mktemp("cuda_pt2") / "conv.pt2")
    berth.export(module, torch.randn(3, 3, 16, 16, device="cuda"), path, max_batch=64)
    code = f"import numpy as np, berth; berth.load({path!r}, device='cuda').predict(np.zeros((2, 3, 16, 16), np.float32))"
    probe = run_python(code, env={"PYTHONPATH": berth_pythonpath()}, timeout=300)
    if probe.returncode != 0:
        pytest.fail(f"loading and running the CUDA package in a child process failed (exit "
                    f"{probe.returncode}): {probe.stderr[-3000:]}")
    return module, path


@pytest.mark.parametrize("name", ["mlp", "resnet18"])
def test_torchscript_on_cuda_matches_eager_torch_at_batch_1_7_and_64(scripted, name):
    module, path, make = scripted[name]
    model = berth.load(path, device="cuda")
    for n in (1, 7, 64):
        x = make(n)
        # cuDNN may use TF32 for convolutions (torch's default): both sides run the same
        # kernels in this process, so the tolerance only absorbs algorithm choice.
        assert_close(model.predict(x), on_gpu(module, x), 1e-5 if name == "mlp" else 1e-3)


def test_optimized_torchscript_on_cuda_matches_eager_torch(scripted):
    module, path, make = scripted["resnet18"]
    model = berth.load(path, device="cuda", optimize=True)
    x = make(8)
    # Batch norms folded into the convolutions change the rounding, not the result.
    assert_close(model.predict(x), on_gpu(module, x), 1e-2)


@needs_export
def test_pt2_compiled_for_cuda_runs_there_at_every_batch(cuda_package):
    module, path = cuda_package
    model = berth.load(path, device="cuda")
    assert model.format == "pt2" and model.batchable and model.max_batch == 64
    rng = np.random.default_rng(1)
    for n in (1, 5, 64):
        x = rng.standard_normal((n, 3, 16, 16)).astype(np.float32)
        assert_close(model.predict(x), on_gpu(module, x), 1e-4)
    with pytest.raises(ValueError, match="dimension 0 must be between 1 and 64"):
        model.predict(np.zeros((65, 3, 16, 16), np.float32))


@needs_export
def test_pt2_refuses_a_device_it_was_not_compiled_for(cuda_package, tmp_path):
    _, path = cuda_package
    with pytest.raises((ValueError, berth.ModelLoadError), match="cuda"):
        berth.load(path)  # compiled for CUDA, asked to run on the CPU
    cpu_path = berth.export(ConvNet().eval(), torch.randn(2, 3, 16, 16), str(tmp_path / "cpu.pt2"))
    with pytest.raises((ValueError, berth.ModelLoadError), match="cpu"):
        berth.load(cpu_path, device="cuda")


def test_predict_from_threads_on_cuda(scripted):
    module, path, make = scripted["mlp"]
    model = berth.load(path, device="cuda")
    inputs = [make(n) for n in (1, 3, 16, 64)]
    wants = [on_gpu(module, x) for x in inputs]
    failures = []

    def work():
        try:
            for _ in range(50):
                for x, want in zip(inputs, wants):
                    assert_close(model.predict(x), want, 1e-5)
        except AssertionError as error:
            failures.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[0]


@needs_export
def test_cuda_runs_without_importing_torch(scripted, cuda_package, tmp_path):
    """The C path on its own: the shim must bring libtorch's CUDA runtime itself."""
    module, ts_path, make = scripted["mlp"]
    conv, pt2_path = cuda_package
    x, image = make(5), np.random.default_rng(2).standard_normal((5, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "image.npy", image)
    code = f"""
import sys, numpy as np, berth
x, image = np.load({str(tmp_path / 'x.npy')!r}), np.load({str(tmp_path / 'image.npy')!r})
np.save({str(tmp_path / 'ts.npy')!r}, berth.load({ts_path!r}, device="cuda").predict(x))
np.save({str(tmp_path / 'pt2.npy')!r}, berth.load({pt2_path!r}, device="cuda").predict(image))
print("torch imported:", "torch" in sys.modules)
"""
    out = run_python(code, env={"PYTHONPATH": berth_pythonpath()}, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "torch imported: False" in out.stdout
    assert_close(np.load(tmp_path / "ts.npy"), on_gpu(module, x), 1e-5)
    assert_close(np.load(tmp_path / "pt2.npy"), on_gpu(conv, image), 1e-4)
