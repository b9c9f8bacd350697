"""Triton's perf_analyzer (PyPI ``perf-analyzer``) runs a short concurrency sweep against
`python -m berth serve` without errors, for a berth-saved model and a plain file given a
signature. Marked slow; skipped where no perf_analyzer binary runs here.

Not in requirements/pypi-stack.txt: perf-analyzer's wheels (2.58 to 2.60) are built for
manylinux_2_38 (glibc >= 2.38, libstdc++ GLIBCXX_3.4.32); on an older glibc pip installs
the 0.1.0 placeholder, which has no binary. Point PERF_ANALYZER at a binary, or install
perf-analyzer on a newer system."""
import os
import re
import shutil
import subprocess

import pytest

from serve_process import ServeProcess

pytestmark = pytest.mark.slow


def perf_analyzer_binary():
    """(path, None) of a perf_analyzer that runs here, or (None, why not)."""
    candidates = [os.environ.get("PERF_ANALYZER"), shutil.which("perf_analyzer")]
    try:
        import perf_analyzer
        candidates.append(os.path.join(os.path.dirname(perf_analyzer.__file__), "bin", "perf_analyzer"))
    except ImportError:
        pass
    found = [c for c in candidates if c and os.path.isfile(c)]
    if not found:
        return None, ("no perf_analyzer binary (set PERF_ANALYZER, or pip install perf-analyzer where glibc >= 2.38: "
                      "its wheels are manylinux_2_38; older systems get the 0.1.0 placeholder without a binary)")
    done = subprocess.run([found[0], "--version"], capture_output=True, text=True, timeout=60)
    text = (done.stdout + done.stderr).strip()
    if "not found" in text and "GLIBC" in text:
        return None, f"{found[0]} cannot run here: {text.splitlines()[0]}"
    return found[0], None


@pytest.fixture(scope="module")
def perf_analyzer():
    path, why = perf_analyzer_binary()
    if path is None:
        pytest.skip(why)
    return path


def sweep(binary, port, model):
    done = subprocess.run([binary, "-m", model, "-u", f"127.0.0.1:{port}", "-i", "http",
                           "--concurrency-range", "1:4", "-p", "2000", "--max-trials", "5"],
                          capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert not re.search(r"(?i)\berror\b", out), out
    return out


def test_sweep_seed_model(perf_analyzer, seed_model_path):
    server = ServeProcess(seed_model_path, "--name", "seed", "--threads", "1")
    try:
        out = sweep(perf_analyzer, server.port, "seed")
        assert "Concurrency: 4" in out, out
    finally:
        assert server.stop() == 0


def test_sweep_plain_file_with_a_signature(perf_analyzer, plain_ids_path):
    server = ServeProcess(plain_ids_path, "--name", "ids", "--input", "ids:INT64:-1,4",
                          "--output", "doubled:INT64:-1,4", "--threads", "1")
    try:
        sweep(perf_analyzer, server.port, "ids")
    finally:
        assert server.stop() == 0
