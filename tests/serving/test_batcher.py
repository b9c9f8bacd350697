"""The C dynamic batcher (model.batcher / berth.serving.batcher): coalescing, each caller
getting its own rows, overload, timeouts, counters, and the GIL released while waiting."""
import threading

import numpy as np
import pytest

import berth
from batching import run_threads, slow_model
from conftest import save_script


@pytest.fixture(scope="module")
def slow_path(models_dir):
    meta = {"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 512]}],
            "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 512]}]}
    return save_script(slow_model(), models_dir / "slow.pt", meta)


@pytest.fixture(scope="module")
def seed(seed_model_path):
    return berth.load(seed_model_path)


def test_concurrent_requests_are_coalesced_and_each_gets_its_rows(seed):
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1 + i % 3, 10)).astype(np.float32) for i in range(16 * 40)]
    expected = [seed.predict(x) for x in inputs]
    results = [None] * len(inputs)
    with seed.batcher(max_batch_size=64, max_delay_ms=20) as b:
        assert b.batching
        start = threading.Barrier(16)

        def worker(t):
            start.wait()
            for k in range(t, len(inputs), 16):
                results[k] = b.predict(inputs[k])

        assert run_threads(16, worker) == []
        stats = b.stats()
    for got, want in zip(results, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert stats["requests"] == len(inputs)
    assert stats["rows"] == sum(len(x) for x in inputs)
    assert stats["batches"] < stats["requests"]
    sizes = stats["batch_sizes"]["buckets"]
    assert sum(count for bound, count in sizes.items() if bound > 1) > 0
    assert stats["batch_sizes"]["count"] == stats["batches"]
    assert stats["queue_seconds"]["count"] == len(inputs)


def test_full_queue_raises_overloaded_at_once(slow_path):
    model = berth.load(slow_path)
    x = np.ones((1, 512), np.float32)
    outcomes = []
    with model.batcher(max_batch_size=1, max_queue=1) as b:
        def worker(i):
            try:
                b.predict(x)
                outcomes.append("ok")
            except berth.Overloaded as e:
                assert "queue is full" in str(e) and "max_queue=1" in str(e)
                outcomes.append("overloaded")

        assert run_threads(8, worker) == []
        stats = b.stats()
    assert "ok" in outcomes and "overloaded" in outcomes
    assert stats["overloaded"] == outcomes.count("overloaded")
    assert issubclass(berth.Overloaded, berth.BerthError)


def test_timeout_in_queue(slow_path):
    model = berth.load(slow_path)
    x = np.ones((1, 512), np.float32)
    with model.batcher(max_batch_size=1) as b:
        done = []
        t = threading.Thread(target=lambda: done.append(b.predict(x)))
        t.start()
        while b.stats()["requests"] == 0:  # the first request is queued or running
            pass
        # queued behind (or alongside) a forward of tens of ms: a 0.1 ms budget expires
        with pytest.raises(TimeoutError, match="longer than its timeout"):
            b.predict(x, timeout=0.0001)
        t.join()
        assert len(done) == 1 and b.stats()["timeouts"] == 1
        with pytest.raises(ValueError, match="timeout must be a positive number"):
            b.predict(x, timeout=-1)


def test_gil_is_released_while_waiting(slow_path):
    model = berth.load(slow_path)
    x = np.ones((4, 512), np.float32)
    with model.batcher() as b:
        b.predict(x)  # first call warms libtorch up
        finished = threading.Event()
        t = threading.Thread(target=lambda: (b.predict(x), finished.set()))
        spins = 0
        t.start()
        while not finished.is_set():
            spins += 1
        t.join()
    assert spins > 1000


def test_model_without_batch_dimension_runs_one_request_per_forward(identity_model_path):
    model = berth.load(identity_model_path)
    with model.batcher() as b:
        assert not b.batching
        outs = [None] * 64

        def worker(i):
            outs[i] = b.predict(np.full((i % 5 + 1, 2), i, np.int64))

        assert run_threads(64, worker) == []
        stats = b.stats()
    for i, out in enumerate(outs):
        np.testing.assert_array_equal(out, np.full((i % 5 + 1, 2), i, np.int64))
    assert stats["batches"] == stats["requests"] == 64


def test_batching_forced_on_a_model_without_signature(identity_model_path):
    model = berth.load(identity_model_path)
    with model.batcher(batching=True, max_delay_ms=10) as b:
        assert b.batching
        outs = [None] * 32

        def worker(i):
            outs[i] = b.predict(np.arange(3, dtype=np.float32).reshape(1, 3) + i)

        assert run_threads(32, worker) == []
        with pytest.raises(ValueError, match="scalar"):
            b.predict(np.float32(1.0))
    for i, out in enumerate(outs):
        np.testing.assert_array_equal(out, np.arange(3, dtype=np.float32).reshape(1, 3) + i)


def test_bad_input_is_refused_before_queueing(seed):
    with seed.batcher() as b:
        with pytest.raises(ValueError, match=r"expects shape \(-1, 10\), got \(2, 3\)"):
            b.predict(np.zeros((2, 3), np.float32))
        with pytest.raises(TypeError, match="expects dtype float32, got int64"):
            b.predict(np.zeros((2, 10), np.int64))
        np.testing.assert_allclose(b.predict(np.zeros((2, 10))),  # float64 is cast
                                   seed.predict(np.zeros((2, 10), np.float32)), rtol=1e-6)
        assert b.stats()["requests"] == 1
    with pytest.raises(ValueError, match="the batcher is closed"):
        b.predict(np.zeros((1, 10), np.float32))


def test_parameters_are_checked(seed):
    with pytest.raises(ValueError, match="max_batch_size must be between 1"):
        seed.batcher(max_batch_size=0)
    with pytest.raises(ValueError, match="max_delay_ms must be between 0 and 60000, got -1"):
        seed.batcher(max_delay_ms=-1)
    with pytest.raises(ValueError, match="max_queue must be at least 1"):
        seed.batcher(max_queue=0)


def test_several_workers_run_forwards_concurrently(identity_model_path):
    model = berth.load(identity_model_path)
    with model.batcher(workers=3) as b:
        outs = [None] * 48

        def worker(i):
            outs[i] = b.predict(np.full((2, 2), i, np.int32))

        assert run_threads(48, worker) == []
        assert b.stats()["batches"] == 48
    for i, out in enumerate(outs):
        np.testing.assert_array_equal(out, np.full((2, 2), i, np.int32))
    with pytest.raises(ValueError, match="workers must be between 1 and 64, got 0"):
        model.batcher(workers=0)
