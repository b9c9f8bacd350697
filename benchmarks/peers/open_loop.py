"""Open-loop Poisson arrivals over HTTP keep-alive, the way perf_analyzer's request-rate
mode sends them: each request is sent at its scheduled time whether or not earlier ones
have been answered, and its latency counts from that time (a late send is the server's
delay too, so nothing is hidden by a slow answer holding the next request back).

wrk's request-rate stand-in (connections that wait an exponential time before each
request) leaves a connection idle for seconds at low rates: servers close such
connections (berth's header timeout, uvicorn's 5 s keep-alive), and wrk counts each as
an error. Here, as in any HTTP client's pool, a kept-alive connection the server closed
is opened again and the request sent on the new one.

    python open_loop.py URL BODY_FILE RATE SECONDS [--header NAME:VALUE ...]

prints one JSON object: rps (answers per second of the window), requests, p50/p99 (ms),
non2xx, errors (requests that got no answer), reconnects.
"""
import argparse
import http.client
import json
import random
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
         http.client.CannotSendRequest, http.client.BadStatusLine)


class Sender:
    """One kept-alive connection per worker thread."""

    def __init__(self, url, body, headers):
        u = urllib.parse.urlsplit(url)
        self.host, self.port, self.path = u.hostname, u.port or 80, u.path or "/"
        self.body, self.headers = body, headers
        self.local = threading.local()
        self.lock = threading.Lock()
        self.latencies, self.non2xx, self.errors, self.reconnects = [], 0, 0, 0

    def _post(self, conn):
        conn.request("POST", self.path, body=self.body, headers=self.headers)
        r = conn.getresponse()
        r.read()
        return r.status

    def send(self, due):
        conn = getattr(self.local, "conn", None)
        status = None
        for attempt in (0, 1):
            fresh = conn is None
            if fresh:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                status = self._post(conn)
                break
            except STALE:
                conn.close()
                conn = None
                if fresh:  # a new connection failing is a real error
                    break
                with self.lock:
                    self.reconnects += 1
            except OSError:
                conn.close()
                conn = None
                break
        self.local.conn = conn
        done = time.perf_counter()
        with self.lock:
            if status is None:
                self.errors += 1
            elif not 200 <= status < 300:
                self.non2xx += 1
            else:
                self.latencies.append(done - due)


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(q * len(xs))) - 1))] if xs else float("nan")


def run(url, body, headers, rate, seconds, seed=None, workers=256):
    sender = Sender(url, body, headers)
    rng = random.Random(seed)
    pool = ThreadPoolExecutor(max_workers=workers)
    start = time.perf_counter()
    due, sent = start, 0
    while True:
        due += rng.expovariate(rate)
        if due - start > seconds:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        pool.submit(sender.send, due)
        sent += 1
    pool.shutdown(wait=True)
    lat = sender.latencies
    return {"rps": len(lat) / seconds, "requests": sent, "p50": 1000 * percentile(lat, 0.50),
            "p99": 1000 * percentile(lat, 0.99), "non2xx": sender.non2xx, "errors": sender.errors,
            "reconnects": sender.reconnects}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("body_file")
    p.add_argument("rate", type=float)
    p.add_argument("seconds", type=float)
    p.add_argument("--header", action="append", default=[])
    a = p.parse_args()
    with open(a.body_file, "rb") as f:
        body = f.read()
    headers = dict(h.split(":", 1) for h in a.header)
    json.dump(run(a.url, body, headers, a.rate, a.seconds), sys.stdout)
    print()


if __name__ == "__main__":
    main()
