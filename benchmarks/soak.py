"""Soak and restart figures for `python -m berth serve` (issue 14): mixed load for a long
run with the server's RSS and open fds sampled, and kill -9 + restart under load.

    soak   (default) `berth serve` of the seed MLP, for --duration seconds (1800; --quick: 60):
           good requests from wrk (most of the traffic, --connections keep-alive
           connections), malformed ones (bad JSON, wrong shapes, wrong datatypes) from
           Python threads, bodies over --max-body-mb (Content-Length, chunked, and gzip
           that inflates past the limit), and --slow-clients connections that trickle a
           request head a byte at a time until the server closes them, then reconnect.
           A probe opens a fresh connection every second and checks the answer. Every
           --sample seconds (10): VmRSS/VmHWM/VmSize, threads, open fds (sockets and
           others) and the port's ESTABLISHED/CLOSE-WAIT sockets, from /proc.
    kill9  client threads send good requests in a loop; each round SIGKILLs the server,
           starts it again on the same port, and times the restart to ready
           (`/v2/health/ready` 200) and to the first successful inference.

Loopback (127.0.0.1) only. Every loop is bounded by the duration and by a request cap,
and the script stops by itself. The server is pinned to --server-cpu and this process
(its threads and wrk) to --load-cpu with sched_setaffinity/taskset. Results: a JSON
summary, the samples as CSV, the server's log and its final /metrics in --out.

    .venv/bin/python benchmarks/soak.py --quick
    .venv/bin/python benchmarks/soak.py --duration 1800 --out /tmp/soak
    .venv/bin/python benchmarks/soak.py kill9 --rounds 5 --out /tmp/kill9

Standard library and numpy only; torch is used once, in a child process, to write the
seed MLP when --model is not given.
"""
import argparse
import collections
import csv
import gzip
import http.client
import json
import os
import random
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HOST = "127.0.0.1"
NAME = "seed"
INFER_PATH = f"/v2/models/{NAME}/infer"
JSON_HEADERS = {"Content-Type": "application/json"}


# ------------------------------------------------------------------ set-up

def make_seed_model(directory):
    """Writes the seed MLP (tests/conftest.py's, fixed weights, berth.json signature)."""
    path = os.path.join(directory, "seed.pt")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import conftest; "
            "conftest.save_script(conftest.seed_mlp(), sys.argv[2], conftest.seed_metadata())")
    subprocess.run([sys.executable, "-c", code, os.path.join(ROOT, "tests"), path], check=True)
    return path


def good_body(seed=0):
    x = np.random.default_rng(seed).standard_normal((1, 10)).astype(np.float32)
    return json.dumps({"inputs": [{"name": "dense_input", "shape": [1, 10], "datatype": "FP32",
                                   "data": [round(float(v), 6) for v in x.ravel()]}]}).encode()


def start_server(model, port, cpu, log_path, extra=()):
    cmd = [sys.executable, "-m", "berth", "serve", model, "--host", HOST, "--port", str(port),
           "--name", NAME, *extra]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu)] + cmd  # taskset execs: the pid is the server's
    log = open(log_path, "ab")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
    log.close()
    return proc


def ready_status(port, timeout=1.0):
    try:
        c = http.client.HTTPConnection(HOST, port, timeout=timeout)
        c.request("GET", "/v2/health/ready")
        status = c.getresponse().status
        c.close()
        return status
    except (OSError, http.client.HTTPException):
        return None


def wait_ready(proc, port, timeout=180, poll=0.01):
    """Seconds until /v2/health/ready answers 200 (RuntimeError if the process exits)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        if ready_status(port) == 200:
            return time.monotonic() - started
        time.sleep(poll)
    raise RuntimeError("server not ready in time")


def free_port():
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ------------------------------------------------------------------ /proc sampling

def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "VmSize"):
                out[key] = int(value.split()[0])
            elif key == "Threads":
                out[key] = int(value)
    return out


def fd_counts(pid):
    sockets = other = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            sockets += 1
        else:
            other += 1
    return sockets, other


def tcp_states(port):
    """Server-side sockets on port by TCP state (ESTABLISHED, CLOSE_WAIT, ...)."""
    names = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN"}
    counts = collections.Counter()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if int(parts[1].rsplit(":", 1)[1], 16) == port:
                        counts[names.get(parts[3], parts[3])] += 1
        except OSError:
            pass
    return counts


class Sampler(threading.Thread):
    FIELDS = ["t_s", "cpu_pct", "rss_kib", "hwm_kib", "vmsize_kib", "threads", "fds", "fd_sockets",
              "fd_other", "established", "close_wait"]

    def __init__(self, pid, port, every, stop, csv_path):
        super().__init__(daemon=True)
        self.pid, self.port, self.every, self.stop, self.rows = pid, port, every, stop, []
        self.csv_path = csv_path
        self.t0 = time.monotonic()
        self.last_cpu = None

    def cpu_seconds(self):
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def sample(self, record=True):
        now, cpu = time.monotonic(), self.cpu_seconds()
        cpu_pct = (round(100.0 * (cpu - self.last_cpu[1]) / (now - self.last_cpu[0]), 1)
                   if self.last_cpu and now > self.last_cpu[0] else None)
        self.last_cpu = (now, cpu)
        st = proc_status(self.pid)
        sockets, other = fd_counts(self.pid)
        tcp = tcp_states(self.port)
        row = {"t_s": round(now - self.t0, 1), "cpu_pct": cpu_pct, "rss_kib": st["VmRSS"],
               "hwm_kib": st["VmHWM"], "vmsize_kib": st["VmSize"], "threads": st["Threads"],
               "fds": sockets + other, "fd_sockets": sockets, "fd_other": other,
               "established": tcp["ESTABLISHED"], "close_wait": tcp["CLOSE_WAIT"]}
        if record:
            self.rows.append(row)
            with open(self.csv_path, "a", newline="") as f:
                csv.DictWriter(f, self.FIELDS).writerow(row)
        print(("sample " if record else "after load ") + " ".join(f"{k}={v}" for k, v in row.items()),
              flush=True)
        return row

    def run(self):
        with open(self.csv_path, "w", newline="") as f:
            csv.DictWriter(f, self.FIELDS).writeheader()
        next_at = self.t0
        while not self.stop.is_set():
            try:
                self.sample()
            except (OSError, KeyError):
                return  # the process is gone
            next_at += self.every
            self.stop.wait(max(0.0, next_at - time.monotonic()))


# ------------------------------------------------------------------ load generators

class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = collections.Counter()  # (kind, outcome) -> n
        self.examples = {}                    # (kind, outcome) -> one reply, for the unexpected

    def add(self, kind, outcome, example=None):
        with self.lock:
            self.counts[(kind, outcome)] += 1
            if example is not None and (kind, outcome) not in self.examples:
                self.examples[(kind, outcome)] = example[:300]

    def total(self):
        with self.lock:
            return sum(self.counts.values())


def malformed_case(rng, valid):
    """(kind, body, headers): bad JSON, a wrong shape, or a wrong datatype."""
    kind = rng.choice(["bad_json", "wrong_shape", "wrong_dtype"])
    req = json.loads(valid)
    inp = req["inputs"][0]
    if kind == "bad_json":
        choice = rng.randrange(4)
        if choice == 0:
            body = valid[:rng.randrange(1, len(valid) - 1)]  # truncated
        elif choice == 1:
            body = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 300)))
            if body.strip().startswith((b"{", b"[", b'"')) or body.strip()[:1].isdigit():
                body = b"{" + body
        elif choice == 2:
            body = valid.replace(b":", b"=", 1)
        else:
            body = b'{"inputs": [' * 50 + b"]" * 50  # nesting, unclosed
    elif kind == "wrong_shape":
        inp["shape"] = rng.choice([[1, 9], [2, 10], [10], [1, 10, 1], [0, 10], [-1, 10], [1, 11]])
        body = json.dumps(req).encode()
    else:
        choice = rng.randrange(3)
        if choice == 0:
            # (FP64 is not among them: JSON FP64 data is cast for a float32 model, on purpose)
            inp["datatype"] = rng.choice(["INT8", "INT32", "BOOL", "BYTES", "FP8", "fp32", ""])
        elif choice == 1:
            inp["data"] = ["x"] * 10
        else:
            inp["data"] = [[True] * 10]
        body = json.dumps(req).encode()
    return kind, body, dict(JSON_HEADERS)


def outcome_of(status):
    return str(status)


def malformed_client(port, stop, deadline, cap, tally, seed, valid):
    rng = random.Random(seed)
    conn = None
    sent = 0
    while not stop.is_set() and time.monotonic() < deadline and sent < cap:
        kind, body, headers = malformed_case(rng, valid)
        sent += 1
        try:
            if conn is None:
                conn = http.client.HTTPConnection(HOST, port, timeout=10)
            conn.request("POST", INFER_PATH, body=body, headers=headers)
            resp = conn.getresponse()
            reply = resp.read()
            tally.add(kind, outcome_of(resp.status), reply if not 400 <= resp.status < 500 else None)
            if resp.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as e:
            tally.add(kind, "conn:" + type(e).__name__, repr(e).encode())
            if conn is not None:
                conn.close()
            conn = None
            stop.wait(0.05)
    if conn is not None:
        conn.close()


def read_status(sock, timeout):
    """The status code of the first response on sock, or an outcome word."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n" not in data:
            d = sock.recv(4096)
            if not d:
                break
            data += d
    except socket.timeout:
        return "no-answer(timeout)", data
    except ConnectionResetError:
        return "reset", data
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return (m.group(1).decode() if m else "closed-no-status"), data


def oversized_client(port, stop, deadline, cap, tally, seed, limit_bytes):
    """Bodies over the limit: Content-Length, chunked, and gzip that inflates past it."""
    rng = random.Random(seed)
    n_values = limit_bytes // 9 + 1000  # "0.123456," is 9 bytes: over the limit
    big = (b'{"inputs":[{"name":"dense_input","shape":[%d,10],"datatype":"FP32","data":['
           % (n_values // 10) + b",".join([b"0.123456"] * (n_values // 10 * 10)) + b"]}]}")
    zipped = gzip.compress(big, 6)
    head = b"POST " + INFER_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    sent = 0
    while not stop.is_set() and time.monotonic() < deadline and sent < cap:
        kind = rng.choice(["over_content_length", "over_chunked", "over_gzip"])
        sent += 1
        try:
            s = socket.create_connection((HOST, port), timeout=10)
        except OSError as e:
            tally.add(kind, "connect:" + type(e).__name__)
            stop.wait(0.1)
            continue
        try:
            if kind == "over_content_length":
                s.sendall(head + b"Content-Length: %d\r\n\r\n" % len(big))
                payload = big
            elif kind == "over_chunked":
                s.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n")
                step = 64 << 10
                payload = b"".join(b"%x\r\n" % len(big[i:i + step]) + big[i:i + step] + b"\r\n"
                                   for i in range(0, len(big), step)) + b"0\r\n\r\n"
            else:
                s.sendall(head + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(zipped))
                payload = zipped
            try:
                s.sendall(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered and closed before the whole body: read its answer
            outcome, data = read_status(s, 10)
            tally.add(kind, outcome, data if outcome != "413" else None)
        except OSError as e:
            tally.add(kind, "conn:" + type(e).__name__, repr(e).encode())
        finally:
            s.close()
        stop.wait(0.05)


def slow_clients(port, stop, deadline, count, interval, tally, lifetimes):
    """count connections that trickle a request head a byte every interval seconds; when
    the server closes one, its lifetime and any answer are recorded and it reconnects."""
    head = (b"POST " + INFER_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + b"X-Slow: " + b"a" * 4000)
    conns = {}  # socket -> [opened, next byte index, next send time, received]

    def open_one(now):
        try:
            s = socket.create_connection((HOST, port), timeout=5)
            s.setblocking(False)
            conns[s] = [now, 0, now, b""]
        except OSError as e:
            tally.add("slow_client", "connect:" + type(e).__name__)

    start = time.monotonic()
    for i in range(count):  # staggered over one interval
        open_one(start + i * interval / max(count, 1))
    while not stop.is_set() and time.monotonic() < deadline:
        now = time.monotonic()
        readable, _, _ = select.select(list(conns), [], [], 0.05) if conns else ([], [], [])
        for s in readable:
            try:
                d = s.recv(4096)
            except (ConnectionResetError, BlockingIOError):
                d = b""
            if d:
                conns[s][3] += d
                continue
            opened, idx, _, got = conns.pop(s)
            m = re.match(rb"HTTP/1\.[01] (\d{3})", got)
            tally.add("slow_client", "closed:" + (m.group(1).decode() if m else "no-status"))
            lifetimes.append(now - opened)
            s.close()
            open_one(now)
        for s, state in list(conns.items()):
            if now >= state[2] and state[1] < len(head):
                try:
                    s.send(head[state[1]:state[1] + 1])
                    state[1] += 1
                    state[2] = now + interval
                except BlockingIOError:
                    pass
                except OSError:
                    opened = conns.pop(s)[0]
                    tally.add("slow_client", "closed:send-failed")
                    lifetimes.append(now - opened)
                    s.close()
                    open_one(now)
        stop.wait(0.02)
    for s in conns:
        s.close()
    return len(conns)


def probe(port, stop, deadline, every, tally, latencies, body):
    """A fresh connection every `every` seconds; the answer must match the first one (to
    1e-5: a row batched with others may differ from one alone in the last bits)."""
    reference = None
    while not stop.is_set() and time.monotonic() < deadline:
        started = time.monotonic()
        try:
            c = http.client.HTTPConnection(HOST, port, timeout=10)
            c.request("POST", INFER_PATH, body=body, headers=JSON_HEADERS)
            r = c.getresponse()
            reply = r.read()
            c.close()
            latencies.append(time.monotonic() - started)
            if r.status == 200:
                data = json.loads(reply)["outputs"][0]["data"]
                if reference is None:
                    reference = data
                same = np.allclose(data, reference, rtol=1e-5, atol=1e-6)
                tally.add("probe", ("200" if data == reference else "200-last-bits-differ") if same
                          else "200-wrong-answer", None if same else reply)
            else:
                tally.add("probe", str(r.status), reply)
        except (OSError, http.client.HTTPException, ValueError) as e:
            tally.add("probe", "conn:" + type(e).__name__, repr(e).encode())
        stop.wait(max(0.0, every - (time.monotonic() - started)))


WRK_LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("%(body)s", "rb")
wrk.body = f:read("*a")
f:close()
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  counts = {}
  n = 0
  cap = %(cap_per_thread)d
end
function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
  n = n + 1
  if n >= cap then wrk.thread:stop() end
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do total[k] = (total[k] or 0) + v end
  end
  for k, v in pairs(total) do io.write(string.format("STATUS %%d %%d\n", k, v)) end
  io.write(string.format("LAT %%d %%d %%d %%d\n", latency:percentile(50), latency:percentile(99),
                         latency:percentile(99.9), latency.max))
  io.write(string.format("SUMMARY %%d %%d %%d %%d %%d %%d %%d %%d\n", summary.requests, summary.duration,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status,
    summary.errors.timeout, summary.bytes))
end
"""


def parse_wrk(out):
    statuses = {int(a): int(b) for a, b in re.findall(r"^STATUS (\d+) (\d+)$", out, re.M)}
    lat = re.search(r"^LAT (\d+) (\d+) (\d+) (\d+)$", out, re.M)
    s = re.search(r"^SUMMARY" + r" (\d+)" * 8 + "$", out, re.M)
    if not s:
        return {"raw": out}
    keys = ["requests", "duration_us", "err_connect", "err_read", "err_write", "err_status",
            "err_timeout", "bytes"]
    result = dict(zip(keys, map(int, s.groups())))
    result["statuses"] = statuses
    if lat:
        result.update(zip(["p50_us", "p99_us", "p999_us", "max_us"], map(int, lat.groups())))
    return result


# ------------------------------------------------------------------ soak

def pct(a, b):
    return 100.0 * (a - b) / b if b else float("nan")


def curve_summary(rows, key, warmup_s):
    after = [r[key] for r in rows if r["t_s"] >= warmup_s] or [r[key] for r in rows]
    if not after:
        return {}
    first = after[0]
    return {"start": rows[0][key], "after_warmup": first, "end": after[-1], "min": min(after),
            "max": max(after), "end_vs_warmup_pct": round(pct(after[-1], first), 3),
            "max_vs_warmup_pct": round(pct(max(after), first), 3),
            "spread_pct": round(100.0 * (max(after) - min(after)) / first, 3) if first else None}


def soak(args):
    out = args.out
    port = args.port or free_port()
    model = args.model or make_seed_model(out)
    body = good_body()
    body_file = os.path.join(out, "good.json")
    with open(body_file, "wb") as f:
        f.write(body)
    server_log = os.path.join(out, "server.log")
    extra = ["--max-body-mb", str(args.max_body_mb), *args.berth_args.split()]
    proc = start_server(model, port, args.server_cpu, server_log, extra)
    print(f"server pid {proc.pid} port {port} ready in {wait_ready(proc, port):.2f} s", flush=True)
    duration = args.duration
    stop = threading.Event()
    tally = Tally()
    lifetimes, latencies = [], []
    sampler_stop = threading.Event()  # set at the deadline, before the generators stop
    sampler = Sampler(proc.pid, port, args.sample, sampler_stop, os.path.join(out, "samples.csv"))
    t0 = time.monotonic()
    deadline = t0 + duration
    cap = args.request_cap
    lua = os.path.join(out, "good.lua")
    with open(lua, "w") as f:
        f.write(WRK_LUA % {"body": body_file, "cap_per_thread": max(1, cap // args.wrk_threads)})
    wrk_cmd = ["wrk", f"-t{args.wrk_threads}", f"-c{args.connections}", f"-d{int(round(duration))}s",
               "--timeout", "10s", "-s", lua, f"http://{HOST}:{port}{INFER_PATH}"]
    if args.load_cpu is not None:
        wrk_cmd = ["taskset", "-c", str(args.load_cpu)] + wrk_cmd
    sampler.start()
    wrk = subprocess.Popen(wrk_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    threads = [threading.Thread(target=malformed_client, daemon=True,
                                args=(port, stop, deadline, cap, tally, 100 + i, body))
               for i in range(args.malformed_threads)]
    threads += [threading.Thread(target=oversized_client, daemon=True,
                                 args=(port, stop, deadline, cap, tally, 200 + i,
                                       int(args.max_body_mb * (1 << 20))))
                for i in range(args.oversized_threads)]
    threads.append(threading.Thread(target=slow_clients, daemon=True,
                                    args=(port, stop, deadline, args.slow_clients,
                                          args.slow_interval, tally, lifetimes)))
    threads.append(threading.Thread(target=probe, daemon=True,
                                    args=(port, stop, deadline, 1.0, tally, latencies, body)))
    for t in threads:
        t.start()
    try:
        wrk_out, _ = wrk.communicate(timeout=duration + 60)
    except subprocess.TimeoutExpired:
        wrk.kill()
        wrk_out, _ = wrk.communicate()
    if wrk.returncode != 0:
        print(f"wrk exited with {wrk.returncode}:\n{wrk_out}", flush=True)
    stop.wait(max(0.0, deadline - time.monotonic()))  # the other generators run to the end
    sampler_stop.set()
    sampler.join(30)
    stop.set()
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - t0
    alive = proc.poll() is None
    after_load = None
    if alive:
        time.sleep(2)
        try:
            after_load = sampler.sample(record=False)
        except (OSError, KeyError):
            pass
    metrics = ""
    if alive:
        try:
            c = http.client.HTTPConnection(HOST, port, timeout=10)
            c.request("GET", "/metrics")
            metrics = c.getresponse().read().decode()
            c.close()
        except (OSError, http.client.HTTPException):
            pass
        with open(os.path.join(out, "metrics.txt"), "w") as f:
            f.write(metrics)
        stop_started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = "killed after 60 s"
        stop_s = time.monotonic() - stop_started
    else:
        rc, stop_s = proc.returncode, None
    with open(os.path.join(out, "wrk.txt"), "w") as f:
        f.write(wrk_out)
    good = parse_wrk(wrk_out)
    by_kind = collections.defaultdict(dict)
    for (kind, outcome), n in sorted(tally.counts.items()):
        by_kind[kind][outcome] = n
    classes = collections.Counter()
    for (kind, outcome), n in tally.counts.items():
        classes[outcome[0] + "xx" if outcome[:1].isdigit() else outcome.split("(")[0]] += n
    for status, n in good.get("statuses", {}).items():
        classes[str(status)[0] + "xx"] += n
    server_codes = {}
    # the server's own endpoints have no labels but these; a model's carry model and version
    for endpoint, code, n in re.findall(r'^berth_requests_total\{(?:model="[^"]*",version="[^"]*",)?'
                                        r'endpoint="([^"]+)",code="(\d+)"\} (\d+)', metrics, re.M):
        key = f"{endpoint} {code}"
        server_codes[key] = server_codes.get(key, 0) + int(n)
    log_text = open(server_log, errors="replace").read()
    summary = {
        "duration_s": round(elapsed, 1), "port": port, "server_cpu": args.server_cpu,
        "load_cpu": args.load_cpu, "server_args": extra, "wrk": good, "by_kind": by_kind,
        "status_classes": dict(classes),
        "unexpected_examples": {f"{k} {o}": e.decode("utf-8", "replace")
                                for (k, o), e in tally.examples.items()},
        "slow_client_lifetime_s": (
            {"n": len(lifetimes), "min": round(min(lifetimes), 2),
             "median": round(statistics.median(lifetimes), 2), "max": round(max(lifetimes), 2)}
            if lifetimes else {}),
        "probe_latency_ms": (
            {"n": len(latencies), "median": round(1e3 * statistics.median(latencies), 2),
             "max": round(1e3 * max(latencies), 2),
             "p99": round(1e3 * sorted(latencies)[int(0.99 * (len(latencies) - 1))], 2)}
            if latencies else {}),
        "server_alive_at_end": alive, "server_exit": rc,
        "sigterm_to_exit_s": round(stop_s, 2) if stop_s is not None else None,
        "server_metrics_requests": server_codes,
        "server_log_suspicious": [line for line in log_text.splitlines()
                                  if re.search(r"abort|panic|segfault|assert|traceback|fatal", line, re.I)][:20],
        "rss_kib": curve_summary(sampler.rows, "rss_kib", args.warmup),
        "fds": curve_summary(sampler.rows, "fds", args.warmup),
        "fd_other": curve_summary(sampler.rows, "fd_other", args.warmup),
        "threads": curve_summary(sampler.rows, "threads", args.warmup),
        "server_cpu_pct": curve_summary([r for r in sampler.rows if r["cpu_pct"] is not None],
                                        "cpu_pct", args.warmup),
        "after_load_2s": after_load,
        "close_wait_max": max((r["close_wait"] for r in sampler.rows), default=None),
        "samples": len(sampler.rows),
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, default=str)
    print(json.dumps(summary, indent=1, default=str))
    print(f"results in {out}")


# ------------------------------------------------------------------ kill -9

class LoopClient(threading.Thread):
    """Sends good requests in a loop (keep-alive, reconnecting after a failure) and records
    each outcome with its send time."""

    def __init__(self, port, stop, deadline, cap, body, events, lock):
        super().__init__(daemon=True)
        self.port, self.stop, self.deadline, self.cap, self.body = port, stop, deadline, cap, body
        self.events, self.lock = events, lock

    def run(self):
        conn, sent = None, 0
        while not self.stop.is_set() and time.monotonic() < self.deadline and sent < self.cap:
            sent += 1
            t = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(HOST, self.port, timeout=5)
                conn.request("POST", INFER_PATH, body=self.body, headers=JSON_HEADERS)
                r = conn.getresponse()
                r.read()
                outcome = str(r.status)
            except (OSError, http.client.HTTPException) as e:
                outcome = type(e).__name__
                if conn is not None:
                    conn.close()
                conn = None
            with self.lock:
                self.events.append((t, time.monotonic(), outcome))
            if outcome != "200":
                self.stop.wait(0.005)
        if conn is not None:
            conn.close()


def kill9(args):
    out = args.out
    port = args.port or free_port()
    model = args.model or make_seed_model(out)
    body = good_body()
    server_log = os.path.join(out, "server.log")
    extra = ["--max-body-mb", str(args.max_body_mb), *args.berth_args.split()]
    proc = start_server(model, port, args.server_cpu, server_log, extra)
    first_ready = wait_ready(proc, port, poll=0.01)
    print(f"server pid {proc.pid} port {port}: first start to ready {first_ready:.2f} s", flush=True)
    stop, lock, events = threading.Event(), threading.Lock(), []
    deadline = time.monotonic() + args.duration
    clients = [LoopClient(port, stop, deadline, args.request_cap, body, events, lock)
               for _ in range(args.clients)]
    for c in clients:
        c.start()
    rounds = []
    try:
        for k in range(args.rounds):
            stop.wait(args.load_seconds)
            if time.monotonic() > deadline - 60:
                print("duration nearly spent: no more rounds", flush=True)
                break
            with lock:
                before_ok = sum(1 for e in events if e[2] == "200")
            kill_at = time.monotonic()
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            dead_at = time.monotonic()
            proc = start_server(model, port, args.server_cpu, server_log, extra)
            start_at = time.monotonic()
            try:
                ready_s = wait_ready(proc, port, poll=0.01)
                ready_at = start_at + ready_s
            except RuntimeError as e:
                rounds.append({"round": k + 1, "error": str(e)})
                print(f"round {k + 1}: restart failed: {e}", flush=True)
                break
            first_ok = None
            wait_until = time.monotonic() + 30
            while first_ok is None and time.monotonic() < wait_until:
                with lock:
                    oks = [e[1] for e in events if e[2] == "200" and e[0] >= start_at]
                if oks:
                    first_ok = min(oks)
                else:
                    time.sleep(0.01)
            with lock:
                outage = collections.Counter(e[2] for e in events if kill_at <= e[0] < (first_ok or ready_at))
            r = {"round": k + 1, "kill_to_reaped_ms": round(1e3 * (dead_at - kill_at), 1),
                 "restart_to_ready_s": round(ready_s, 3),
                 "restart_to_first_ok_s": round(first_ok - start_at, 3) if first_ok else None,
                 "kill_to_first_ok_s": round(first_ok - kill_at, 3) if first_ok else None,
                 "ok_before_kill": before_ok, "outage_outcomes": dict(outage)}
            rounds.append(r)
            print(json.dumps(r), flush=True)
    finally:
        stop.wait(args.load_seconds)
        stop.set()
        for c in clients:
            c.join(30)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = "killed"
        else:
            rc = proc.returncode
    totals = collections.Counter(e[2] for e in events)
    good = [r for r in rounds if "error" not in r]

    def spread(key):
        vals = [r[key] for r in good if r.get(key) is not None]
        return {"min": min(vals), "median": round(statistics.median(vals), 3), "max": max(vals)} if vals else {}

    summary = {"port": port, "server_cpu": args.server_cpu, "load_cpu": args.load_cpu,
               "server_args": extra, "clients": args.clients, "first_start_to_ready_s": round(first_ready, 3),
               "rounds": rounds, "restart_to_ready_s": spread("restart_to_ready_s"),
               "restart_to_first_ok_s": spread("restart_to_first_ok_s"),
               "kill_to_first_ok_s": spread("kill_to_first_ok_s"),
               "client_outcomes": dict(totals), "final_sigterm_exit": rc,
               "startup_lines": [line for line in open(server_log, errors="replace").read().splitlines()
                                 if re.search(r"ready|listening|warm|error|in use", line, re.I)][-12:]}
    with open(os.path.join(out, "kill9.json"), "w") as f:
        json.dump(summary, f, indent=1, default=str)
    print(json.dumps(summary, indent=1, default=str))
    print(f"results in {out}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", nargs="?", choices=["soak", "kill9"], default="soak")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds (soak: 1800; kill9: an upper bound on the whole run, 600)")
    p.add_argument("--quick", action="store_true", help="a 60 s soak (kill9: 2 rounds)")
    p.add_argument("--model", help="a TorchScript file with the seed MLP's signature (default: write it)")
    p.add_argument("--out", help="directory for the results (default: a new temporary one)")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--max-body-mb", type=float, default=1.0)
    p.add_argument("--berth-args", default="", help="more arguments for berth serve")
    p.add_argument("--server-cpu", type=int, default=0, help="taskset CPU for the server (-1: none)")
    p.add_argument("--load-cpu", type=int, default=1, help="CPU for this process and wrk (-1: none)")
    p.add_argument("--connections", type=int, default=64, help="wrk keep-alive connections")
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--malformed-threads", type=int, default=2)
    p.add_argument("--oversized-threads", type=int, default=1)
    p.add_argument("--slow-clients", type=int, default=36)
    p.add_argument("--slow-interval", type=float, default=0.5, help="seconds between a slow client's bytes")
    p.add_argument("--sample", type=float, default=10.0, help="seconds between /proc samples")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds left out of the drift figures")
    p.add_argument("--request-cap", type=int, default=200_000_000,
                   help="most requests per generator (wrk: in all)")
    p.add_argument("--rounds", type=int, default=5, help="kill9 rounds")
    p.add_argument("--load-seconds", type=float, default=5.0, help="kill9: load before each kill")
    p.add_argument("--clients", type=int, default=4, help="kill9 client threads")
    args = p.parse_args()
    if args.duration is None:
        args.duration = (60 if args.quick else 1800) if args.mode == "soak" else 600
    if args.quick and args.mode == "kill9":
        args.rounds = min(args.rounds, 2)
    if args.mode == "soak" and args.quick:
        args.duration = min(args.duration, 60)
        args.warmup = min(args.warmup, 20)
    args.server_cpu = None if args.server_cpu < 0 else args.server_cpu
    args.load_cpu = None if args.load_cpu < 0 else args.load_cpu
    if args.load_cpu is not None:
        os.sched_setaffinity(0, {args.load_cpu})
    args.out = args.out or tempfile.mkdtemp(prefix=f"berth-{args.mode}-")
    os.makedirs(args.out, exist_ok=True)
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())} {args.mode}: "
          f"{' '.join(sys.argv[1:])}; load average {os.getloadavg()}", flush=True)
    (soak if args.mode == "soak" else kill9)(args)


if __name__ == "__main__":
    main()
