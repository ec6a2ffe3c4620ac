"""asyncio: calls/s from one event loop (ferry.AsyncClient) with 1, 8 and 64 calls in flight,
beside the synchronous client's calls/s from one thread, over shm:// — side by side in one run.

The model (two workers, CPU 1) sums its input and answers the sum; the client (CPU 0) checks
every reply. Each row runs --seconds after a warm-up; rows interleave --repeat times and the
median counts.

    python3 bench/aio.py [--seconds 2] [--repeat 3] [--out bench/results/aio.json]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))

import numpy as np  # noqa: E402

import ferry  # noqa: E402

MODEL = '''
import numpy as np

def predict(x):
    return np.array([x.sum()], np.float64)
'''


def sync_rate(url: str, seconds: float) -> float:
    x = np.arange(64, dtype=np.float64)
    want = float(x.sum())
    with ferry.Client(url) as c:
        for _ in range(200):
            assert c.call(x)[0] == want
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(100):
                assert c.call(x)[0] == want
            n += 100
        return n / (time.perf_counter() - t0)


async def async_rate(url: str, seconds: float, in_flight: int) -> float:
    async with ferry.AsyncClient(url) as c:
        done = 0
        stop = time.perf_counter() + seconds

        async def runner(k: int):
            nonlocal done
            x = np.full(64, k, dtype=np.float64)
            want = float(x.sum())
            while time.perf_counter() < stop:
                r = await c.call(x)
                assert r[0] == want, (r, want)
                done += 1

        for _ in range(3):  # warm-up
            await asyncio.gather(*(c.call(np.ones(64)) for _ in range(in_flight)))
        t0 = time.perf_counter()
        await asyncio.gather(*(runner(k) for k in range(in_flight)))
        return done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "aio.json"))
    args = ap.parse_args()
    os.sched_setaffinity(0, {0})
    rows = {"sync client, 1 thread": [], "AsyncClient, 1 in flight": [], "AsyncClient, 8 in flight": [],
            "AsyncClient, 64 in flight": []}
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "aio_model.py")
        with open(model, "w") as f:
            f.write(MODEL)
        url = f"shm://bench-aio-{os.getpid()}?slots=64&slot_size=64K"
        env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"), OPENBLAS_NUM_THREADS="1")
        workers = [subprocess.Popen(["taskset", "-c", "1", sys.executable, "-m", "ferry.worker", model, "--url", url], env=env)
                   for _ in range(2)]
        try:
            for _ in range(400):
                try:
                    with ferry.Client(url) as c:
                        c.call(np.ones(1))
                    break
                except ferry.NoServer:
                    time.sleep(0.05)
            for _ in range(args.repeat):
                rows["sync client, 1 thread"].append(sync_rate(url, args.seconds))
                for k in (1, 8, 64):
                    rows[f"AsyncClient, {k} in flight"].append(asyncio.run(async_rate(url, args.seconds, k)))
        finally:
            for w in workers:
                w.terminate()
            for w in workers:
                w.wait(10)
    out = []
    for label, rates in rows.items():
        med = statistics.median(rates)
        out.append({"client": label, "calls_per_s": round(med)})
        print(f"{label:28s} {med:10.0f} calls/s")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   "placement": "client (one event loop) CPU 0; two workers CPU 1", "command": "python3 bench/aio.py",
                   "rows": out}, f, indent=1)


if __name__ == "__main__":
    main()
