"""Triton's perf_analyzer drives `python -m berth serve` in its concurrency mode and in its
request-rate mode with Poisson arrivals, with binary and JSON tensors, for a berth-saved
model and a plain file given a signature: every request succeeds, and what berth's
statistics extension counted agrees with what perf_analyzer sent. Marked slow.

perf_analyzer is a test tool, never berth's own: `make perf-analyzer` installs it into
build/perf-analyzer/ (requirements/perf-analyzer.txt says from where, and why not from
PyPI's perf-analyzer, whose wheels need glibc 2.38). PERF_ANALYZER overrides the path."""
import os
import re
import subprocess

import pytest

from serve_process import ServeProcess

pytestmark = pytest.mark.slow

# perf_analyzer is not the code under test: under `make sanitize` it runs without the
# sanitizer runtimes preloaded into the server it drives.
CLIENT_ENV = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("PERF_ANALYZER") or os.path.join(ROOT, "build", "perf-analyzer", "perf_analyzer")


@pytest.fixture(scope="module")
def perf_analyzer():
    assert os.path.isfile(BINARY), f"{BINARY} is missing: run `make perf-analyzer` (./dev.sh perf-analyzer)"
    done = subprocess.run([BINARY, "--version"], capture_output=True, text=True, timeout=60, env=CLIENT_ENV)
    assert done.returncode == 0 and "Perf Analyzer Version" in done.stdout + done.stderr, done.stderr
    return BINARY


def run(binary, port, model, *mode):
    """perf_analyzer's report, after checking that it exited 0 without an error line.
    Count windows of at least 300 requests; stability only within 100% over 3 windows: this
    test checks the protocol, not the speed, on a machine the rest of the suite shares, and
    one scheduling hiccup doubles a 100 us average latency."""
    done = subprocess.run([binary, "-m", model, "-u", f"127.0.0.1:{port}", "-i", "http",
                           "--measurement-mode", "count_windows", "--measurement-request-count", "300",
                           "--stability-percentage", "100", "--max-trials", "10", *mode],
                          capture_output=True, text=True, timeout=300, env=CLIENT_ENV)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert not re.search(r"(?i)\berror\b", out), out
    return out


def windows(out):
    """(label, client request count, server inference count, server successes) per level."""
    found = re.findall(r"Request (concurrency|Rate): (\d+)[^\n]*\n  Client: \n    Request count: (\d+)\n"
                       r"(?:.*\n)*?  Server: \n    Inference count: (\d+)\n    Execution count: \d+\n"
                       r"    Successful request count: (\d+)", out)
    return [(f"{kind} {level}", int(c), int(s), int(ok)) for kind, level, c, s, ok in found]


def assert_counted(out, levels):
    """Each level was measured, and berth's statistics counted what perf_analyzer sent:
    inferences and successes within 1% of the requests (windows and the server's snapshots
    do not start at the same instant, nor are its two counts read at the same instant)."""
    seen = windows(out)
    assert [label for label, *_ in seen] == levels, out
    for label, client, inferences, successes in seen:
        assert client >= 300, (label, out)
        for counted in (inferences, successes):
            assert abs(counted - client) <= max(5, client // 100), (label, client, counted, out)


def test_concurrency_sweep_binary_and_json(perf_analyzer, seed_model_path):
    server = ServeProcess(seed_model_path, "--name", "seed", "--threads", "1")
    try:
        out = run(perf_analyzer, server.port, "seed", "--concurrency-range", "1:4:3")
        assert_counted(out, ["concurrency 1", "concurrency 4"])
        out = run(perf_analyzer, server.port, "seed", "--concurrency-range", "2",
                  "--input-tensor-format", "json", "--output-tensor-format", "json")
        assert_counted(out, ["concurrency 2"])
    finally:
        assert server.stop() == 0


def test_poisson_request_rate_on_a_plain_file_with_a_signature(perf_analyzer, plain_ids_path):
    server = ServeProcess(plain_ids_path, "--name", "ids", "--input", "ids:INT64:-1,4",
                          "--output", "doubled:INT64:-1,4", "--threads", "1")
    try:
        out = run(perf_analyzer, server.port, "ids", "--request-rate-range", "400",
                  "--request-distribution", "poisson")
        assert_counted(out, ["Rate 400"])
        assert "Using poisson distribution on request generation" in out, out
        # perf_analyzer's random INT64 data do not fit JSON numbers exactly: berth refuses
        # them, naming the input and the way that carries them.
        done = subprocess.run([perf_analyzer, "-m", "ids", "-u", f"127.0.0.1:{server.port}",
                               "--concurrency-range", "1", "--input-tensor-format", "json"],
                              capture_output=True, text=True, timeout=120, env=CLIENT_ENV)
        assert done.returncode != 0
        assert "input 'ids': " in done.stderr and "binary tensor data extension" in done.stderr, done.stderr
    finally:
        assert server.stop() == 0
