"""Threads, memory over many calls, import hygiene, and the thread-count policy."""
import os
import threading

import numpy as np
import pytest

import berth
from conftest import run_python


def test_many_threads_get_their_own_answers(seed_model_path):
    import torch
    model = berth.load(seed_model_path)
    reference = torch.jit.load(seed_model_path)
    rng = np.random.default_rng(3)
    inputs = [rng.standard_normal((1 + i % 5, 10)).astype(np.float32) for i in range(8)]
    with torch.inference_mode():
        expected = [reference(torch.from_numpy(x)).numpy() for x in inputs]
    failures = []

    def worker(i):
        for _ in range(1000):
            got = model.predict(inputs[i])
            if got.shape != expected[i].shape or np.max(np.abs(got - expected[i])) > 1e-5:
                failures.append(i)
                return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


@pytest.mark.skipif(os.environ.get("BERTH_SANITIZED") == "1", reason="ASan's allocator grows by design")
def test_rss_stays_flat_over_100k_predictions(seed_model_path, identity_model_path):
    model, identity = berth.load(seed_model_path), berth.load(identity_model_path)
    x = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)
    for _ in range(5000):  # warm up allocator pools and libtorch caches
        model.predict(x)
        identity.predict(x)
    before = rss_kib()
    for _ in range(50000):
        model.predict(x)
        identity.predict(x)
    after = rss_kib()
    assert after <= before * 1.05, (before, after)


def test_import_and_predict_do_not_import_torch(seed_model_path):
    code = f"""
import sys, numpy as np, berth
m = berth.load({seed_model_path!r})
m.predict(np.zeros((2, 10), np.float32))
print(sorted(k for k in sys.modules if k == "torch" or k.startswith("torch.")))
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_numpy_is_imported_when_an_array_is_first_made(seed_model_path):
    """`import berth` and loading leave NumPy unimported (``berth serve`` never needs it);
    a list input or the first output array imports it."""
    code = f"""
import sys, berth
m = berth.load({seed_model_path!r})
print("numpy" in sys.modules)
y = m.predict([[0.5] * 10, [1.0] * 10])
print("numpy" in sys.modules, type(y).__name__, y.dtype, y.shape)
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["False", "True ndarray float32 (2, 1)"]


def _torch_lib_dir():
    import importlib.util
    spec = importlib.util.find_spec("torch")
    return os.path.join(os.path.dirname(spec.origin), "lib") if spec and spec.origin else ""


@pytest.mark.skipif(not os.path.exists(os.path.join(_torch_lib_dir(), "libtorch_cuda.so")),
                    reason="this torch is a CPU build (no libtorch_cuda.so)")
def test_a_cuda_torch_serving_on_the_cpu_leaves_its_cuda_half_unloaded(seed_model_path):
    """A CUDA wheel's libtorch_cuda (and cuDNN, cuBLAS, ...) is loaded only for
    device='cuda'; without a GPU that request is refused with the reason."""
    code = f"""
import numpy as np, berth
m = berth.load({seed_model_path!r})
m.predict(np.zeros((2, 10), np.float32))
print(sorted({{line.split("/")[-1].strip() for line in open("/proc/self/maps") if "libtorch" in line}}))
try:
    berth.load({seed_model_path!r}, device="cuda")
    print("loaded on cuda")
except ValueError as error:
    print(error)
print("libtorch_cuda.so" in open("/proc/self/maps").read())
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    libraries, refusal, loaded_after = result.stdout.strip().splitlines()
    assert libraries == "['libtorch_cpu.so']"
    import torch
    if torch.cuda.is_available():
        assert refusal == "loaded on cuda"
    else:
        assert "device='cuda' needs a CUDA build of libtorch with a visible GPU" in refusal
    assert loaded_after == "True"


def test_berth_num_threads_sets_intra_op_threads(seed_model_path):
    code = f"import berth; berth.load({seed_model_path!r}); print(berth._core.num_threads())"
    result = run_python(code, env={"BERTH_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"


def test_bad_berth_num_threads_is_a_clear_error(seed_model_path):
    result = run_python(f"import berth; berth.load({seed_model_path!r})", env={"BERTH_NUM_THREADS": "lots"})
    assert result.returncode != 0
    assert "BERTH_NUM_THREADS must be a positive integer, got 'lots'" in result.stderr


def test_default_threads_follow_affinity_without_a_quota(monkeypatch):
    monkeypatch.delenv("BERTH_NUM_THREADS", raising=False)
    assert 1 <= berth._core.default_num_threads() <= len(os.sched_getaffinity(0))


def test_cgroup_v2_quota(tmp_path):
    pod = tmp_path / "kubepods" / "pod1"
    pod.mkdir(parents=True)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "kubepods" / "cpu.max").write_text("max 100000\n")
    (pod / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs -> 2 threads
    assert berth._core.cgroup_cpu_limit(str(tmp_path), "/kubepods/pod1") == 2
    (tmp_path / "kubepods" / "cpu.max").write_text("100000 100000\n")  # a tighter parent wins
    assert berth._core.cgroup_cpu_limit(str(tmp_path), "/kubepods/pod1") == 1
    assert berth._core.cgroup_cpu_limit(str(tmp_path), "/") == 0


def test_cgroup_v1_quota(tmp_path):
    (tmp_path / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu.cfs_period_us").write_text("100000\n")
    assert berth._core.cgroup_cpu_limit(str(tmp_path), "/") == 0
    (tmp_path / "cpu.cfs_quota_us").write_text("400000\n")
    assert berth._core.cgroup_cpu_limit(str(tmp_path), "/") == 4


@pytest.mark.skipif(os.environ.get("BERTH_SANITIZED") != "1", reason="only in `make sanitize`")
def test_the_sanitizer_build_is_the_one_under_test(seed_model_path):
    berth.load(seed_model_path)  # loads the shim too
    maps = open("/proc/self/maps").read()
    assert "/build/asan/berth/" in berth._core.__file__
    assert "libasan" in maps and "/build/asan/berth/libberth_torch.so" in maps


def test_gc_sees_the_subclass_type_once(seed_model_path):
    # berth.Model is a heap type over the static _core.Model: CPython's subtype_traverse
    # visits the heap type; the static base's traverse must not visit it again.
    import gc
    from berth import _core
    m = berth.load(seed_model_path)
    assert gc.get_referents(m) == [type(m)]
    assert gc.get_referents(_core.Model(seed_model_path)) == []


def test_requires_python_admits_no_version_the_extension_cannot_build_on():
    # Py_NewRef, used by the C core, appeared in Python 3.10.
    import glob
    import re
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))  # tests/core/ -> root
    sources = "".join(open(p).read() for p in glob.glob(os.path.join(root, "csrc", "*", "*.c")))
    text = open(os.path.join(root, "pyproject.toml")).read()
    minimum = tuple(int(x) for x in re.search(r'requires-python = ">=(\d+)\.(\d+)"', text).groups())
    if "Py_NewRef" in sources or "Py_XNewRef" in sources:
        assert minimum >= (3, 10)
