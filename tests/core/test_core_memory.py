"""Zero copy in and out, strided and offset inputs, every dtype, empty batches."""
import gc
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import berth
from conftest import save_script


class Constant(torch.nn.Module):
    """Returns the same buffer on every call: two outputs share memory only if not copied."""

    def __init__(self):
        super().__init__()
        self.register_buffer("value", torch.arange(12, dtype=torch.float32).reshape(3, 4))

    def forward(self, x):
        return self.value


@pytest.fixture(scope="module")
def identity(identity_model_path):
    return berth.load(identity_model_path)


def test_identity_output_shares_the_input_buffer(identity):
    x = np.arange(24, dtype=np.float32).reshape(4, 6)
    y = identity.predict(x)
    assert np.shares_memory(x, y)
    assert y.__array_interface__["data"][0] == x.__array_interface__["data"][0]
    x[0, 0] = 42.0
    assert y[0, 0] == 42.0


def test_output_keeps_the_input_alive(identity):
    x = np.arange(1000, dtype=np.float64)
    y = identity.predict(x)
    del x
    gc.collect()
    filler = [np.full(1000, 7.0) for _ in range(50)]  # would reuse freed memory
    np.testing.assert_array_equal(y, np.arange(1000, dtype=np.float64))
    del filler


def test_outputs_are_not_copied(tmp_path):
    model = berth.load(save_script(Constant(), tmp_path / "const.pt"))
    x = np.zeros(1, np.float32)
    a, b = model.predict(x), model.predict(x)
    assert np.shares_memory(a, b)  # both views of the module's one buffer
    assert type(a.base).__name__ == "PyCapsule"
    np.testing.assert_array_equal(a, np.arange(12, dtype=np.float32).reshape(3, 4))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int8", "int16", "int32", "int64",
                                   "uint8", "bool"])
def test_every_dtype_round_trips(identity, dtype):
    x = (np.arange(-6, 6).reshape(3, 4) % 5).astype(dtype)
    y = identity.predict(x)
    assert y.dtype == x.dtype
    np.testing.assert_array_equal(y, x)
    assert np.shares_memory(x, y)


def test_strided_and_offset_inputs(identity):
    base = np.arange(60, dtype=np.float32).reshape(6, 10)
    for view in (base[:, ::3], base[2:, 1:], base.T, base[1::2, 5:], np.asfortranarray(base)):
        y = identity.predict(view)
        np.testing.assert_array_equal(y, view)
        assert np.shares_memory(y, base) or np.shares_memory(y, view)


def test_negative_strides_are_copied_correctly(identity):
    x = np.arange(10, dtype=np.int64)[::-1]
    np.testing.assert_array_equal(identity.predict(x), x)


def test_read_only_input_is_copied(identity):
    x = np.arange(8, dtype=np.float32)
    x.setflags(write=False)
    y = identity.predict(x)
    np.testing.assert_array_equal(y, x)
    assert not np.shares_memory(x, y)


def test_any_buffer_is_accepted(identity):
    data = bytearray(b"\x01\x02\x03")
    np.testing.assert_array_equal(identity.predict(data), np.array([1, 2, 3], np.uint8))
    mv = memoryview(np.arange(4, dtype=np.int32))
    np.testing.assert_array_equal(identity.predict(mv), np.arange(4, dtype=np.int32))


def test_empty_batch(seed_model_path, identity):
    model = berth.load(seed_model_path)
    y = model.predict(np.zeros((0, 10), np.float32))
    assert y.shape == (0, 1) and y.dtype == np.float32
    assert identity.predict(np.zeros((0, 3), np.int64)).shape == (0, 3)


def test_scalar_input(identity):
    y = identity.predict(np.float32(2.5))
    assert y.shape == () and y == np.float32(2.5)


KEEP_FREED_PROBE = r"""
import ctypes, resource, sys
from berth import _core
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "keep":
    assert _core.keep_freed_memory() is True
size = 200 << 20

def faults_of_one_round():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults_of_one_round()
print(faults_of_one_round())
"""


@pytest.mark.skipif(os.environ.get("BERTH_SANITIZED") == "1", reason="ASan replaces glibc's malloc")
@pytest.mark.parametrize("mode", ["keep", "default"])
def test_keep_freed_memory_stops_refaulting_large_blocks(mode):
    # What `berth serve` turns on: the second 200 MiB block reuses the first one's pages
    # instead of mapping fresh ones and faulting all 51,200 pages in again.
    out = subprocess.run([sys.executable, "-c", KEEP_FREED_PROBE, mode], capture_output=True,
                         text=True, check=True).stdout
    faults = int(out)
    if mode == "keep":
        assert faults < 1000
    else:
        assert faults > 10000  # glibc's default, which the "keep" case must beat


RELEASE_FREED_PROBE = r"""
import ctypes
from berth import _core
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
assert _core.keep_freed_memory() is True

def rss_mb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) >> 10

size = 200 << 20
p = libc.malloc(size)
ctypes.memset(p, 1, size)
libc.free(p)
kept = rss_mb()
released = _core.release_freed_memory()
print(released, kept - rss_mb())
"""


@pytest.mark.skipif(os.environ.get("BERTH_SANITIZED") == "1", reason="ASan replaces glibc's malloc")
def test_release_freed_memory_hands_back_what_loading_freed():
    # What `berth serve` does after each load: with freed memory kept, a freed 200 MiB block
    # stays resident until then (resnet18's load leaves 4x its weights so).
    out = subprocess.run([sys.executable, "-c", RELEASE_FREED_PROBE], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[0] == "True" and int(out[1]) > 150, out
