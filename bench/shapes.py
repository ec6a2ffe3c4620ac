"""Message shapes: what a call costs when the message is not one array — named inputs (a
dict), several outputs (a dict or a tuple), a reply that is a view, a DataFrame — beside the
one-array call, over shm:// (client → worker) and tcp:// (client → `ferry serve` gateway →
worker), side by side in one run.

Two columns: the compiled path (_fastcall.c, what `make build` gives) and the ctypes path
(FERRY_PURE_PYTHON=1 in client and worker: message.py's general path for every shape, i.e.
what every shape but the one array cost before plain messages took the compiled path).
The model returns replies it made once (issue 28's method: the rows differ only in what
Ferry does), chosen by the request's first element; the client checks every reply. Client on CPU 0; gateway and worker on CPU 1. Each client
process runs every row (--calls timed calls after a warm-up), alternating compiled and ctypes
processes --repeat times; a row's figure is the median of its per-process p50s.

    python3 bench/shapes.py [--calls 2000] [--repeat 3] [--out bench/results/shapes.json]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FERRY = os.path.join(ROOT, "bin", "ferry")
CLIENT_CPU, SERVER_CPU = 0, 1

MODEL = '''
import numpy as np

# Replies made once: the model's own work is one element read and a lookup, so the rows
# differ only in what Ferry does (issue 28's method: "the model returns a constant").
ONE = np.array([1.0, 2.0], np.float32)
TWO = {"first": np.array([1.0], np.float32), "last": np.array([2.0], np.float32)}
PAIR = (np.array([1.0], np.float32), np.array([2.0], np.float32))
_buf = np.array([1.0, 2.0, 3.0, 4.0], np.float32)


def predict(x):
    if hasattr(x, "columns"):  # a DataFrame
        return ONE if len(x.columns) == 4 else None
    if isinstance(x, dict):  # named inputs
        return ONE if len(x) == 4 else None
    shape = int(x[0])  # the first element says which reply shape
    if shape == 0:
        return ONE  # an array that owns its data
    if shape == 1:
        return TWO
    if shape == 2:
        return PAIR
    if shape == 3:
        return _buf[:2]  # a view of the model's own array
    if shape == 4:
        return x[1:3]  # a view of the input
    raise ValueError(f"shape {shape}")
'''

CLIENT = r'''
import json, sys, time
import numpy as np
import ferry

urls, calls = json.loads(sys.argv[1]), int(sys.argv[2])
n = 1792  # float32 elements: 7 KB an array
rng = np.random.default_rng(3)


def request(shape):
    x = rng.standard_normal(n).astype(np.float32)
    x[0] = shape
    return x


def rows():
    import pandas as pd
    x0, x1, x2, x3, x4 = (request(s) for s in range(5))
    named = {k: rng.standard_normal(n).astype(np.float32) for k in "abcd"}
    frame = pd.DataFrame({k: rng.standard_normal(256) for k in "abcd"})
    one = lambda r: type(r) is np.ndarray and r.tolist() == [1.0, 2.0]  # noqa: E731
    yield "one array → one array", x0, one
    yield "dict of 4 arrays (7 KB each) → one array", named, one
    yield "one array → dict of 2 arrays", x1, lambda r: r["first"].tolist() == [1.0] and r["last"].tolist() == [2.0]
    yield "one array → tuple of 2 arrays", x2, lambda r: type(r) is tuple and r[0].tolist() == [1.0] and r[1].tolist() == [2.0]
    yield "one array → a view of the model's array", x3, one
    yield "one array → a view of the input", x4, lambda r: r.tolist() == x4[1:3].tolist()
    yield "DataFrame of 4 float64 columns (256 rows) → one array", frame, one


out = {}
for transport, url in urls.items():
    with ferry.Client(url) as c:
        for label, value, ok in rows():
            for _ in range(200):
                assert ok(c.call(value)), (label, "wrong reply")
            lat = []
            for _ in range(calls):
                t0 = time.perf_counter_ns()
                r = c.call(value)
                lat.append(time.perf_counter_ns() - t0)
                if not ok(r):
                    raise SystemExit(f"{label}: wrong reply {r!r}")
            lat.sort()
            out[f"{transport}|{label}"] = lat[len(lat) // 2] / 1e3
path = "compiled" if ferry.client._fastcall is not None else "ctypes"
print(json.dumps({"path": path, "p50_us": out}))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`ferry serve` of the model with --listen (so the channel is on shm:// and tcp://)."""

    def __init__(self, model: str, pure: bool):
        self.name = f"bench-shapes-{os.getpid()}-{'pure' if pure else 'fast'}"
        port = free_port()
        env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"), OPENBLAS_NUM_THREADS="1")
        env.pop("FERRY_PURE_PYTHON", None)
        if pure:
            env["FERRY_PURE_PYTHON"] = "1"
        self.proc = subprocess.Popen(["taskset", "-c", str(SERVER_CPU), FERRY, "serve", model, "--name", self.name,
                                      "--listen", f"tcp://127.0.0.1:{port}"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.urls = {"shm://": f"shm://{self.name}", "tcp://": f"tcp://127.0.0.1:{port}/{self.name}"}
        import numpy as np
        sys.path.insert(0, os.path.join(ROOT, "python"))
        import ferry
        deadline = time.monotonic() + 60
        while True:
            try:
                with ferry.Client(self.urls["tcp://"]) as c:
                    c.call(np.zeros(4, np.float32), timeout=10)
                return
            except (ferry.Disconnected, ferry.NoServer, ferry.Timeout):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.close()
                    raise
                time.sleep(0.1)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "shapes.json"))
    args = ap.parse_args()
    runs: dict = {"compiled": [], "ctypes": []}
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "shapes_model.py")
        with open(model, "w") as f:
            f.write(MODEL)
        servers = {}
        try:
            for pure in (False, True):
                servers[pure] = Server(model, pure)
            for _ in range(args.repeat):
                for pure in (False, True):
                    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"), OPENBLAS_NUM_THREADS="1")
                    env.pop("FERRY_PURE_PYTHON", None)
                    if pure:
                        env["FERRY_PURE_PYTHON"] = "1"
                    r = subprocess.run(["taskset", "-c", str(CLIENT_CPU), sys.executable, "-c", CLIENT,
                                        json.dumps(servers[pure].urls), str(args.calls)],
                                       env=env, capture_output=True, text=True, timeout=1800)
                    if r.returncode != 0:
                        raise SystemExit(r.stderr)
                    got = json.loads(r.stdout.splitlines()[-1])
                    assert got["path"] == ("ctypes" if pure else "compiled"), got["path"]
                    runs[got["path"]].append(got["p50_us"])
        finally:
            for s in servers.values():
                s.close()
    import statistics
    keys = list(runs["compiled"][0])
    rows = []
    for key in keys:
        transport, label = key.split("|", 1)
        fast = statistics.median(r[key] for r in runs["compiled"])
        pure = statistics.median(r[key] for r in runs["ctypes"])
        rows.append({"transport": transport, "shape": label, "compiled_us": round(fast, 1), "ctypes_us": round(pure, 1)})
    for transport in ("shm://", "tcp://"):
        base = next(r for r in rows if r["transport"] == transport)
        for r in rows:
            if r["transport"] == transport:
                r["x_one_array"] = round(r["compiled_us"] / base["compiled_us"], 2)
                r["over_one_array_us"] = round(r["compiled_us"] - base["compiled_us"], 1)
                print(f"{transport} {r['shape']:55s} {r['compiled_us']:8.1f} µs ({r['x_one_array']:4.2f}×)  ctypes {r['ctypes_us']:8.1f} µs")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   "placement": f"client CPU {CLIENT_CPU}; gateway and worker CPU {SERVER_CPU}",
                   "command": "python3 bench/shapes.py", "calls": args.calls, "repeat": args.repeat, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
