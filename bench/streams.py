"""Streams: one 1080p publisher (BGR uint8, 6.2 MB a frame) and 1, 2 or 4 Python subscribers
in latest-frame mode, as fast as the publisher can go and paced like a 60 fps camera.

Publisher on CPU 0, every subscriber on CPU 1 (stated in the output). The publisher makes
frame n as (row pattern + n) and publishes it with its capture time; each subscriber reads
every byte of every frame it takes (a uint64 sum compared with the expected one) and
records the frame's end-to-end age at receipt. A frame with a wrong sum fails the row.

    python3 bench/streams.py [--seconds 3] [--out bench/results/streams.json]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

H, W = 1080, 1920


def base_frame() -> np.ndarray:
    return np.broadcast_to((np.arange(H) % 256).astype(np.uint8)[:, None, None], (H, W, 3)).copy()


def expected_sums() -> list[int]:
    rows = np.arange(H)
    return [int((((rows + n) % 256) * (W * 3)).sum()) for n in range(256)]


def publisher(name: str, seconds: float, fps: float, ready, go, out):
    os.sched_setaffinity(0, {0})
    import ferry
    base = base_frame()
    img = np.empty_like(base)
    with ferry.Publisher(name, slots=8, slot_size=H * W * 3 + (1 << 16)) as pub:
        ready.set()
        go.wait()
        t0 = time.monotonic()
        n = 0
        period = 1.0 / fps if fps else 0.0
        while time.monotonic() - t0 < seconds:
            np.add(base, np.uint8(n % 256), out=img)  # "capture" frame n
            pub.publish(img, timestamp_ns=time.monotonic_ns(), metadata={"n": str(n)})
            n += 1
            if period:
                delay = t0 + n * period - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        out.put(("pub", n, time.monotonic() - t0))


def subscriber(name: str, joined, out):
    os.sched_setaffinity(0, {1})
    import ferry
    sums = expected_sums()
    ages, got, wrong = [], 0, 0
    with ferry.Subscriber(name) as sub:
        joined.release()
        t_first = None
        for frame in sub:
            n = int(frame.meta["n"])
            if int(frame.array.sum(dtype=np.uint64)) != sums[n % 256]:
                wrong += 1
            ages.append(frame.age)
            got += 1
            if t_first is None:
                t_first = time.monotonic()
            t_last = time.monotonic()
        out.put(("sub", got, sub.dropped, wrong, ages, (t_last - t_first) if got > 1 else 0.0))


def run(subscribers: int, seconds: float, fps: float) -> dict:
    name = f"bench-stream-{os.getpid()}"
    ctx = mp.get_context("fork")
    ready, go, joined, out = ctx.Event(), ctx.Event(), ctx.Semaphore(0), ctx.Queue()
    pub = ctx.Process(target=publisher, args=(name, seconds, fps, ready, go, out))
    pub.start()
    ready.wait(30)
    subs = [ctx.Process(target=subscriber, args=(name, joined, out)) for _ in range(subscribers)]
    for s in subs:
        s.start()
    for _ in subs:
        joined.acquire(timeout=30)
    go.set()
    results = [out.get(timeout=seconds + 60) for _ in range(subscribers + 1)]
    for p in [pub, *subs]:
        p.join(timeout=30)
    pub_row = next(r for r in results if r[0] == "pub")
    sub_rows = [r for r in results if r[0] == "sub"]
    ages = sorted(a for r in sub_rows for a in r[4])
    q = lambda f: ages[min(len(ages) - 1, int(f * len(ages)))] * 1e3 if ages else None  # noqa: E731
    return {
        "subscribers": subscribers, "paced_fps": fps or None, "published_fps": pub_row[1] / pub_row[2],
        "published": pub_row[1],
        "subscriber_fps": [r[1] / r[5] if r[5] else 0.0 for r in sub_rows],
        "received": [r[1] for r in sub_rows], "dropped": [r[2] for r in sub_rows], "wrong": sum(r[3] for r in sub_rows),
        "age_p50_ms": q(0.5), "age_p99_ms": q(0.99),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "streams.json"))
    ap.add_argument("--quick", action="store_true", help="one second per row")
    a, _ = ap.parse_known_args()
    seconds = 1.0 if a.quick else a.seconds
    rows = []
    for fps in (0.0, 60.0):
        for n in (1, 2, 4):
            r = run(n, seconds, fps)
            rows.append(r)
            print(json.dumps(r if len(json.dumps(r)) < 400 else {k: v for k, v in r.items()}), flush=True)
    doc = {"when": time.strftime("%Y-%m-%d"), "frame": f"{H}x{W}x3 uint8", "placement": "publisher CPU 0, subscribers CPU 1",
           "command": "python3 bench/streams.py", "rows": rows}
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=1)
    bad = [r for r in rows if r["wrong"]]
    if bad:
        sys.exit(f"wrong frames in {bad}")


if __name__ == "__main__":
    main()
