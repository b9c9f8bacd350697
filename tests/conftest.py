"""Shared fixtures: TorchScript files made with torch at test time (nothing downloaded),
the deploy validators, and helpers the test modules import from here."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VALIDATE = Path(ROOT) / "tests" / "validate"  # the deploy validators (npm tools), for validator


def seed_metadata():
    """berth.json for the seed MLP (10 -> 128 -> 64 -> 1)."""
    return {"berth_format": 1,
            "inputs": [{"name": "dense_input", "dtype": "float32", "shape": [-1, 10]}],
            "outputs": [{"name": "dense_2", "dtype": "float32", "shape": [-1, 1]}],
            "batch_dim": 0}


def save_script(module, path, metadata=None, trace_inputs=None):
    """Script (or trace with trace_inputs) module in eval mode and save it to path."""
    import torch
    module = module.eval()
    scripted = torch.jit.trace(module, trace_inputs, check_trace=False) if trace_inputs is not None else torch.jit.script(module)
    extra = {"berth.json": json.dumps(metadata)} if metadata is not None else {}
    torch.jit.save(scripted, str(path), _extra_files=extra)
    return str(path)


def custom_op_model(directory):
    """(model path, library path): a TorchScript file whose forward calls a custom operator
    (``aoti_custom_ops::custom_add``, x + x) and the library that defines it, one the PyPI
    torch wheel ships for its AOTInductor tests; skips where torch ships none. The model is
    scripted in a child process, so the test's own process has not loaded the op."""
    import glob

    import torch
    found = glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib", "libaoti_custom_ops.so"))
    if not found:
        pytest.skip("this torch ships no libaoti_custom_ops.so")
    path = os.path.join(str(directory), "custom.pt")
    code = f"""
import torch
torch.ops.load_library({found[0]!r})
class Doubled(torch.nn.Module):
    def forward(self, x):
        return torch.ops.aoti_custom_ops.custom_add(x, x)
torch.jit.save(torch.jit.script(Doubled()), {path!r})
"""
    script = os.path.join(str(directory), "make_custom.py")  # TorchScript reads forward's source from a file
    with open(script, "w") as handle:
        handle.write(code)
    subprocess.run([sys.executable, script], check=True, timeout=120)
    return path, found[0]


def seed_mlp():
    """The seed MLP with fixed weights, the one deploy/ and the image test use too."""
    spec = importlib.util.spec_from_file_location("seed_model", os.path.join(ROOT, "tests", "image", "seed_model.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.seed_module()


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def seed_model_path(models_dir):
    """The seed MLP with its berth.json signature."""
    return save_script(seed_mlp(), models_dir / "seed.pt", seed_metadata())


@pytest.fixture(scope="session")
def slow_linear(models_dir):
    """SlowLinear (tests/models.py: forwards of milliseconds whatever the batch) saved with
    the seed's signature: (path, the module). For tests of batching that timing noise on a
    loaded machine must not decide."""
    import torch
    from models import SlowLinear
    torch.manual_seed(0)
    module = SlowLinear().eval()
    return save_script(module, models_dir / "slow_linear.pt", seed_metadata()), module


@pytest.fixture(scope="session")
def identity_model_path(models_dir):
    import torch

    class Identity(torch.nn.Module):
        def forward(self, x):
            return x

    return save_script(Identity(), models_dir / "identity.pt")


@pytest.fixture(scope="module")
def plain_ids_path(models_dir):
    """An int64 model saved by plain torch.jit.save: ids (-1, 4) -> ids * 2."""
    import torch

    class Double(torch.nn.Module):
        def forward(self, ids):
            return ids * 2

    return save_script(Double(), models_dir / "plain_ids.pt")


# deploy/ alone uses validator, but it lives here: a tests/deploy/conftest.py would take the
# module name "conftest" from this file while deploy/ is collected, and `from conftest
# import ...` there would fail.
@pytest.fixture(scope="module")
def validator():
    """Install the npm tools (idempotent) and return a function running the validator."""
    node = shutil.which("node")
    assert node, "node (Node.js >= 20) is needed to validate deploy output"
    subprocess.run(["sh", str(VALIDATE / "install.sh")], check=True, timeout=600)

    def run(*contexts):
        """{context: [problem lines]} for many contexts, in one node process."""
        result = subprocess.run([node, str(VALIDATE / "validate.mjs"), "--json",
                                 *map(str, contexts)],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode in (0, 1), result.stdout + result.stderr
        found = {Path(k): v["problems"] for k, v in json.loads(result.stdout).items()}
        assert (result.returncode == 1) == any(found.values())
        return found
    return run


def run_python(code, env=None, timeout=120):
    """Runs code in a fresh interpreter (this venv's), returning the CompletedProcess."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env,
                          timeout=timeout)


def assert_same_answer(got, want):
    """The same model's answer for the same rows, to float rounding.

    Not bit-for-bit: oneDNN's and MKL's GEMM kernels may sum in another order depending on
    the alignment of the input buffer (a JSON-decoded body vs a NumPy array), which moved
    the seed MLP's outputs by up to 4.5e-8 on an AVX-512 machine.
    """
    import numpy as np
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def berth_pythonpath():
    """The folder holding the imported ``berth`` package: python/ of this checkout on the
    PyPI stack (built in place), the venv's site-packages on the Debian leg."""
    import berth
    return os.path.dirname(os.path.dirname(os.path.abspath(berth.__file__)))
