"""berth.load(path, optimize=True): frozen and optimized for inference, same numbers as
torch, and a clear error for modules libtorch cannot freeze."""
import numpy as np
import pytest
import torch

import berth
from conftest import save_script
from serve_process import JSON_HEADERS, ServeProcess, infer_body, output_of


def conv_net():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 4, 3, stride=2), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(4 * 7 * 7, 5))
    for bn in (net[1], net[4]):  # non-trivial statistics, so folding them matters
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    return net.eval()


class Doubling(torch.nn.Module):
    def forward(self, x):
        return x * 2.0


@torch.jit.interface
class ModuleInterface(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pass


class Routing(torch.nn.Module):
    """Picks a submodule by a runtime key: libtorch cannot freeze that."""

    def __init__(self):
        super().__init__()
        self.routes = torch.nn.ModuleDict({"a": Doubling(), "b": Doubling()})

    def forward(self, x, route: str = "a"):
        chosen: ModuleInterface = self.routes[route]
        return chosen.forward(x)


@pytest.fixture(scope="module")
def conv_path(models_dir):
    meta = {"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 3, 16, 16]}],
            "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 5]}]}
    return save_script(conv_net(), models_dir / "conv.pt", meta)


@pytest.fixture(scope="module")
def routing_path(models_dir):
    return save_script(Routing(), models_dir / "routing.pt")  # route: str has no berth dtype


@pytest.mark.parametrize("batch", [1, 5])
def test_optimized_model_matches_torch(conv_path, batch):
    model = berth.load(conv_path, optimize=True)
    assert model.optimized and not berth.load(conv_path).optimized
    x = np.random.default_rng(batch).standard_normal((batch, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        expected = conv_net()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-4, atol=1e-5)
    assert [s.name for s in model.inputs] == ["x"]  # the signature survives freezing


def test_a_module_that_cannot_be_frozen_is_refused_clearly(routing_path):
    with pytest.raises(berth.ModelLoadError, match=r"cannot optimize '.*routing\.pt' for inference: .*"
                                                   r"load it without optimizing"):
        berth.load(routing_path, optimize=True)
    x = np.ones((2, 10), np.float32)
    np.testing.assert_array_equal(berth.load(routing_path).predict(x), x * 2)


def test_serve_optimizes(conv_path):
    server = ServeProcess(conv_path, "--name", "conv", "--max-batch-size", "4")
    try:
        assert "; optimized for inference" in "".join(server.lines)
    finally:
        assert server.stop() == 0


def test_serve_falls_back_to_the_model_as_saved(routing_path):
    server = ServeProcess(routing_path, "--name", "m", "--max-batch-size", "4")
    try:
        log = "".join(server.lines)
        assert "warning: serving m version 1 unoptimized: cannot optimize" in log
        assert "(--no-optimize, or optimize = false in its config.toml, serves it as saved" in log
        assert "optimized for inference" not in log
        x = np.arange(10, dtype=np.float32).reshape(1, 10)
        status, _, body = server.request("POST", "/v2/models/m/infer", infer_body(x, "x"),
                                         JSON_HEADERS)
        assert status == 200
        np.testing.assert_array_equal(output_of(body), x * 2)
    finally:
        assert server.stop() == 0


def test_the_adapters_load_paths_as_serve_does(conv_path, routing_path):
    from berth.serving.adapters import service_for
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        service_for(conv_path).close()  # optimizes quietly
    with pytest.warns(RuntimeWarning, match=r"serving '.*routing\.pt' unoptimized: cannot optimize"):
        service = service_for(routing_path)
    service.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        service_for(routing_path, optimize=False).close()


@pytest.mark.parametrize("kind", ["mobilenet_v3_small", "frozen_resnet18"])
def test_optimize_works_on_mobilenet_and_frozen_modules(tmp_path, kind):
    """libtorch's oneDNN passes asserted on these outside InferenceMode; the shim now
    optimizes under it, as it loads."""
    import models
    torch.manual_seed(0)
    module = models.mobilenet_v3_small().eval() if kind.startswith("mobilenet") else models.resnet18().eval()
    scripted = torch.jit.script(module)
    if kind.startswith("frozen"):
        scripted = torch.jit.freeze(scripted)
    path = str(tmp_path / f"{kind}.pt")
    torch.jit.save(scripted, path)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    optimized = berth.load(path, optimize=True)
    assert optimized.optimized
    with torch.inference_mode():
        want = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(optimized.predict(x), want, rtol=1e-4, atol=1e-4)
