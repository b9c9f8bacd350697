"""`python -m berth serve REPO/`: many models and versions in one server, loaded, replaced
and unloaded while it serves (issue 12)."""
import json
import os
import re
import shutil
import threading
import time

import numpy as np
import pytest

from conftest import save_script
from model_repository import META, Scale, add_version
from serve_process import JSON_HEADERS, ServeProcess, infer_body


def infer(server, path, x):
    status, _, body = server.request("POST", path, infer_body(x, "x"), JSON_HEADERS)
    return status, json.loads(body)


def answer(server, path, x=None):
    x = np.ones((1, 3), np.float32) if x is None else x
    status, out = infer(server, path, x)
    assert status == 200, out
    return out["outputs"][0]["data"][0], out["model_version"]


def get(server, path):
    status, _, body = server.request("GET", path)
    return status, json.loads(body) if body.startswith(b"{") or body.startswith(b"[") else body


def post(server, path, payload=None):
    status, _, body = server.request("POST", path, json.dumps(payload or {}).encode(), JSON_HEADERS)
    return status, json.loads(body)


def wait_for(predicate, seconds=60, what="condition"):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def two_by_two(tmp_path_factory):
    """Models a (x*1, x*2) and b (x*10, x*20), every version served."""
    repo = tmp_path_factory.mktemp("repo")
    for name, ks in (("a", (1, 2)), ("b", (10, 20))):
        for version, k in enumerate(ks, 1):
            add_version(repo, name, version, k, "[version_policy]\nall = true\n")
    server = ServeProcess(repo, "--max-delay-ms", "1")
    yield server
    assert server.stop() == 0


def test_every_endpoint_of_two_models_with_two_versions(two_by_two):
    s = two_by_two
    for name, ks in (("a", (1, 2)), ("b", (10, 20))):
        for version, k in enumerate(ks, 1):
            base = f"/v2/models/{name}/versions/{version}"
            assert answer(s, base + "/infer") == (k, str(version))
            assert get(s, base + "/ready")[0] == 200
            status, meta = get(s, base)
            assert status == 200 and meta["versions"] == ["1", "2"] and meta["name"] == name
            status, config = get(s, base + "/config")
            assert status == 200 and config["version_policy"] == {"all": {}}
            status, stats = get(s, base + "/stats")
            assert [(m["name"], m["version"]) for m in stats["model_stats"]] == [(name, str(version))]
        # no version: the newest
        assert answer(s, f"/v2/models/{name}/infer") == (ks[1], "2")
        status, out = s.request("POST", f"/v1/models/{name}:predict",
                                json.dumps({"instances": [[1, 1, 1]]}).encode(), JSON_HEADERS)[:3:2]
        assert status == 200 and json.loads(out)["predictions"] == [[ks[1]] * 3]
        status, stats = get(s, f"/v2/models/{name}/stats")
        assert sorted(m["version"] for m in stats["model_stats"]) == ["1", "2"]
    status, stats = get(s, "/v2/models/stats")
    assert sorted((m["name"], m["version"]) for m in stats["model_stats"]) == \
        [("a", "1"), ("a", "2"), ("b", "1"), ("b", "2")]
    status, out = infer(s, "/v2/models/a/versions/3/infer", np.ones((1, 3), np.float32))
    assert status == 404 and out["error"] == "model 'a' has no version '3': its versions are 1, 2"
    for bad in ("01", "-1", "1.0", "x"):
        assert infer(s, f"/v2/models/a/versions/{bad}/infer", np.ones((1, 3), np.float32))[0] == 404
    status, out = infer(s, "/v2/models/c/infer", np.ones((1, 3), np.float32))
    assert status == 404 and out["error"] == "model 'c' not found: this server serves 'a', 'b'"
    assert get(s, "/v2/health/ready")[0] == 200
    assert "model_repository" in get(s, "/v2")[1]["extensions"]


def test_metrics_carry_model_and_version_labels(two_by_two):
    for name in ("a", "b"):
        for version in (1, 2):
            answer(two_by_two, f"/v2/models/{name}/versions/{version}/infer")
    assert get(two_by_two, "/v2/health/live")[0] == 200
    text = two_by_two.metrics()
    for name in ("a", "b"):
        for version in (1, 2):
            labels = f'model="{name}",version="{version}"'
            m = re.search(r"^berth_requests_total\{" + labels + r',endpoint="infer",code="200"\} (\d+)$',
                          text, re.M)
            assert m and int(m.group(1)) >= 1, (labels, text[:2000])
            assert re.search(r"^berth_model_ready\{" + labels + r"\} 1$", text, re.M)
            assert re.search(r"^berth_batch_size_count\{" + labels + r"\} \d+$", text, re.M)
    assert text.count("# TYPE berth_requests_total counter") == 1  # one family, every series
    # the server's own endpoints are counted without model labels
    assert re.search(r'^berth_requests_total\{endpoint="health_live",code="200"\} \d+$', text, re.M)


def test_tritonclient_index_load_and_unload(tmp_path):
    tritonclient = pytest.importorskip("tritonclient.http")
    from tritonclient.utils import InferenceServerException
    add_version(tmp_path, "a", 1, 3)
    add_version(tmp_path, "b", 1, 5)
    add_version(tmp_path, "b", 2, 7)
    s = ServeProcess(tmp_path, "--model-control-mode", "explicit", "--load-model", "a")
    try:
        client = tritonclient.InferenceServerClient(f"127.0.0.1:{s.port}")
        index = client.get_model_repository_index()
        assert {(m["name"], m.get("version"), m["state"]) for m in index} == \
            {("a", "1", "READY"), ("b", "1", "UNAVAILABLE"), ("b", "2", "UNAVAILABLE")}
        assert not client.is_model_ready("b")
        client.load_model("b")
        assert client.is_model_ready("b") and client.is_model_ready("b", "2")
        x = tritonclient.InferInput("x", [1, 3], "FP32")
        x.set_data_from_numpy(np.ones((1, 3), np.float32))
        assert client.infer("b", [x]).as_numpy("y").tolist() == [[7, 7, 7]]  # latest 1: version 2
        ready = client.get_model_repository_index()
        assert {(m["name"], m.get("version"), m["state"]) for m in ready if m["state"] == "READY"} == \
            {("a", "1", "READY"), ("b", "2", "READY")}
        client.unload_model("a")
        assert not client.is_model_ready("a")
        index = {(m["name"], m.get("version")): m for m in client.get_model_repository_index()}
        assert index[("a", "1")]["state"] == "UNAVAILABLE" and index[("a", "1")]["reason"] == "unloaded"
        with pytest.raises(InferenceServerException, match="no such model in the repository"):
            client.load_model("nope")
        status, ready_only = post(s, "/v2/repository/index", {"ready": True})
        assert status == 200 and [(m["name"], m["version"]) for m in ready_only] == [("b", "2")]
    finally:
        assert s.stop() == 0


def test_control_is_refused_unless_explicit_and_needs_the_token(tmp_path):
    add_version(tmp_path, "a", 1, 3)
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    s = ServeProcess(tmp_path, "--auth-token-file", str(token))
    try:
        status, _, body = s.request("POST", "/v2/repository/models/a/unload", b"{}", JSON_HEADERS)
        assert status == 401
        auth = {**JSON_HEADERS, "Authorization": "Bearer s3cret"}
        status, _, body = s.request("POST", "/v2/repository/models/a/unload", b"{}", auth)
        assert status == 400 and "--model-control-mode none" in json.loads(body)["error"]
        status, _, body = s.request("POST", "/v2/repository/index", b"", auth)
        assert status == 200 and json.loads(body)[0]["state"] == "READY"
        status, _, body = s.request("GET", "/v2/repository/index", None, {"Authorization": "Bearer s3cret"})
        assert status == 405
    finally:
        assert s.stop() == 0


def test_poll_picks_up_a_new_version_and_a_deleted_model(tmp_path):
    add_version(tmp_path, "a", 1, 3)
    add_version(tmp_path, "b", 1, 5)
    s = ServeProcess(tmp_path, "--model-control-mode", "poll", "--repository-poll-secs", "0.2")
    try:
        assert answer(s, "/v2/models/a/infer") == (3, "1")
        add_version(tmp_path, "a", 2, 4)
        wait_for(lambda: get(s, "/v2/models/a")[1].get("versions") == ["2"], what="version 2 alone")
        assert answer(s, "/v2/models/a/infer") == (4, "2")
        assert get(s, "/v2/models/a/versions/1")[0] == 404
        shutil.rmtree(tmp_path / "b")
        wait_for(lambda: get(s, "/v2/models/b")[0] == 404, what="b unloaded")
        assert get(s, "/v2/health/ready")[0] == 200
        assert any("b version 1: removed from the repository" in line for line in s.lines)
    finally:
        assert s.stop() == 0


def test_a_swap_under_load_fails_no_request(tmp_path):
    """A client that counts every answer while version 2 replaces version 1."""
    add_version(tmp_path, "m", 1, 1)
    s = ServeProcess(tmp_path, "--model-control-mode", "poll", "--repository-poll-secs", "0.2")
    counts, versions, stop = {}, [], threading.Event()
    lock = threading.Lock()

    def client():
        conn = s.connection()
        body = infer_body(np.ones((1, 3), np.float32), "x")
        while not stop.is_set():
            conn.request("POST", "/v2/models/m/infer", body, JSON_HEADERS)
            resp = conn.getresponse()
            data = resp.read()
            with lock:
                counts[resp.status] = counts.get(resp.status, 0) + 1
                if resp.status == 200:
                    versions.append(json.loads(data)["model_version"])

    try:
        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        wait_for(lambda: len(versions) > 50, what="traffic")
        add_version(tmp_path, "m", 2, 2)
        wait_for(lambda: versions and versions[-1] == "2", what="answers from version 2")
        seen = len(versions)
        wait_for(lambda: len(versions) > seen + 50, what="traffic after the swap")
        stop.set()
        for t in threads:
            t.join()
        assert set(counts) == {200}, counts
        first_new = versions.index("2")
        assert set(versions[:first_new]) == {"1"}
        assert versions[-50:] == ["2"] * 50  # every answer after the swap is version 2's
        assert any("m version 1: unloaded" in line for line in s.lines)
    finally:
        stop.set()
        assert s.stop() == 0


def test_a_rewritten_version_file_is_swapped_in_place(tmp_path):
    """The same version number with a new file: replaced where it stands, no request
    failing meanwhile (Registry.replace)."""
    add_version(tmp_path, "m", 1, 3)
    s = ServeProcess(tmp_path, "--model-control-mode", "poll", "--repository-poll-secs", "0.2")
    answers, stop = [], threading.Event()

    def client():
        conn = s.connection()
        body = infer_body(np.ones((1, 3), np.float32), "x")
        while not stop.is_set():
            conn.request("POST", "/v2/models/m/infer", body, JSON_HEADERS)
            resp = conn.getresponse()
            data = resp.read()
            answers.append((resp.status, json.loads(data)["outputs"][0]["data"][0]
                            if resp.status == 200 else data))

    thread = threading.Thread(target=client)
    try:
        thread.start()
        wait_for(lambda: len(answers) > 20, what="traffic")
        add_version(tmp_path, "m", 1, 5)  # renamed over the old file
        wait_for(lambda: answers and answers[-1] == (200, 5), what="the new file's answers")
        stop.set()
        thread.join()
        assert {status for status, _ in answers} == {200}, [a for a in answers if a[0] != 200][:3]
        values = [v for _, v in answers]
        first_new = values.index(5)
        assert set(values[:first_new]) == {3} and set(values[first_new:]) == {5}
        assert get(s, "/v2/models/m")[1]["versions"] == ["1"]
        assert any("m version 1: replaced" in line for line in s.lines)
    finally:
        stop.set()
        thread.join()
        assert s.stop() == 0


def test_a_broken_new_version_leaves_the_old_one_serving(tmp_path):
    add_version(tmp_path, "m", 1, 3)
    s = ServeProcess(tmp_path, "--model-control-mode", "poll", "--repository-poll-secs", "0.2")
    try:
        (tmp_path / "m" / "2").mkdir()
        (tmp_path / "m" / "2" / "model.pt").write_bytes(b"not a model")
        wait_for(lambda: any("cannot load m version 2" in line for line in s.lines), what="the failure")
        assert answer(s, "/v2/models/m/infer") == (3, "1")
        time.sleep(1.0)  # five more polls: the same file is not loaded (nor logged) again
        assert sum("cannot load m version 2" in line for line in s.lines) == 1
        index = {(r["name"], r["version"]): r for r in post(s, "/v2/repository/index")[1]}
        assert index[("m", "1")]["state"] == "READY"
        assert index[("m", "2")]["state"] == "UNAVAILABLE" and index[("m", "2")]["reason"]
        # a version whose sha256 in config.toml does not match is refused likewise
        add_version(tmp_path, "m", 3, 9, '[sha256]\n"3" = "' + "0" * 64 + '"\n')
        wait_for(lambda: any("cannot load m version 3" in line for line in s.lines), what="the refusal")
        assert answer(s, "/v2/models/m/infer") == (3, "1")
        assert "expected " + "0" * 64 in post(s, "/v2/repository/index")[1][-1]["reason"]
    finally:
        assert s.stop() == 0


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))


@pytest.mark.slow
def test_a_hundred_load_unload_cycles_keep_memory_bounded(tmp_path):
    """Measured on the primary stack: 64-68 KiB over 100 cycles after 10 to settle, at 146 MiB
    (each cycle loads, optimizes and warms up a TorchScript file). Under ASan the cycles
    run for its checks, and the bound is left aside (its allocator keeps freed memory in
    quarantine)."""
    add_version(tmp_path, "m", 1, 3)
    s = ServeProcess(tmp_path, "--model-control-mode", "explicit", "--load-model", "m")
    try:
        def cycle():
            assert post(s, "/v2/repository/models/m/unload")[0] == 200
            assert post(s, "/v2/repository/models/m/load")[0] == 200
            assert answer(s, "/v2/models/m/infer") == (3, "1")
        for _ in range(10):  # allocator pools and libtorch's caches settle
            cycle()
        settled = rss_kib(s.proc.pid)
        for _ in range(100):
            cycle()
        grown = rss_kib(s.proc.pid) - settled
        print(f"RSS {settled} KiB after 10 cycles, grew {grown} KiB over 100 more")
        if not os.environ.get("BERTH_SANITIZED"):
            assert grown < 16 * 1024, f"RSS grew {grown} KiB over 100 load/unload cycles"
    finally:
        assert s.stop() == 0


def test_concurrent_control_requests_are_answered_one_at_a_time(tmp_path):
    for name in ("a", "b", "c"):
        add_version(tmp_path, name, 1, 2)
    s = ServeProcess(tmp_path, "--model-control-mode", "explicit")
    results = []

    def control(action, name):
        results.append((action, name, post(s, f"/v2/repository/models/{name}/{action}")[0]))

    try:
        threads = [threading.Thread(target=control, args=(action, name))
                   for name in ("a", "b", "c") for action in ("load", "load", "unload", "load")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert {status for _, _, status in results} == {200}, results
        index = post(s, "/v2/repository/index")[1]
        states = {r["name"]: r["state"] for r in index}
        assert set(states.values()) <= {"READY", "UNAVAILABLE"}
        for name, state in states.items():  # the index and the routes agree
            assert (get(s, f"/v2/models/{name}/ready")[0] == 200) == (state == "READY")
    finally:
        assert s.stop() == 0


def test_path_tricks_are_refused(tmp_path):
    repo = tmp_path / "repo"
    add_version(repo, "a", 1, 2)
    outside = tmp_path / "outside"
    add_version(outside, "x", 1, 5)
    os.symlink(outside / "x", repo / "escape")
    os.symlink(outside / "x" / "1", repo / "a" / "2")
    s = ServeProcess(repo, "--model-control-mode", "explicit", "--load-model", "a")
    try:
        for name in ("..", "%2e%2e", "..%2F..%2Fetc", "/etc", "a%2F1", "escape"):
            status, body = post(s, f"/v2/repository/models/{name}/load")
            assert status in (400, 404, 500) and "error" in body, (name, status, body)
        status, body = post(s, "/v2/repository/models/escape/load")
        assert status == 500 and "outside the repository" in body["error"]
        status, body = post(s, "/v2/repository/models/a/load")  # a/2 leaves the repository
        assert status == 500 and "outside the repository" in body["error"]
        assert answer(s, "/v2/models/a/infer") == (2, "1")  # what was serving still is
        assert get(s, "/v2/models/escape")[0] == 404
    finally:
        assert s.stop() == 0


def test_strict_readiness_waits_for_every_model(tmp_path):
    add_version(tmp_path, "a", 1, 2)
    (tmp_path / "b" / "1").mkdir(parents=True)
    (tmp_path / "b" / "1" / "model.pt").write_bytes(b"broken")
    for flags, ready in (((), 503), (("--no-strict-readiness",), 200)):
        s = ServeProcess(tmp_path, "--model-control-mode", "poll", *flags, wait_ready=False)
        try:
            wait_for(lambda: any("model version(s) loaded" in line for line in s.lines), what="start")
            status, body = get(s, "/v2/health/ready")
            assert status == ready, body
            if status == 503:
                assert "b:" in body["error"]
            assert answer(s, "/v2/models/a/infer") == (2, "1")
        finally:
            assert s.stop() == 0


def test_files_on_the_command_line_are_a_repository_of_one_version_each(tmp_path):
    a = add_version(tmp_path / "x", "ignored", 1, 2)
    b = tmp_path / "b.pt"
    save_script(Scale(5), b, META)
    shutil.copy(a, tmp_path / "a.pt")
    s = ServeProcess(tmp_path / "a.pt", str(b))
    try:
        assert answer(s, "/v2/models/a/infer") == (2, "1")
        assert answer(s, "/v2/models/b/versions/1/infer") == (5, "1")
    finally:
        assert s.stop() == 0
