"""`make soak`: a bounded soak of the local path. Several clients send mixed payloads to a
supervised pool of workers while a killer SIGKILLs random workers. Every reply is checked;
every failure must be one of the documented kinds. Reports requests served, errors by kind,
and memory and segments at the start and the end (which must match).

    python3 tests/soak.py --seconds 180
"""
from __future__ import annotations

import argparse
import collections
import glob
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "python"))

import numpy as np  # noqa: E402

import ferry  # noqa: E402

EXPECTED = ("WorkerDied", "Timeout", "NoServer", "Busy")


def shm_state() -> dict:
    st = os.statvfs("/dev/shm")
    return {"segments": len(glob.glob("/dev/shm/ferry.*")), "dev_shm_used_kib": (st.f_blocks - st.f_bfree) * st.f_frsize // 1024}


def rss_kib(pid: int) -> int:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def client(url: str, seconds: float, seed: int, out: mp.Queue) -> None:
    rng = np.random.default_rng(seed)
    counts = collections.Counter()
    payloads = [
        lambda: rng.integers(0, 255, (9, 28, 28), dtype=np.uint8),
        lambda: rng.integers(0, 255, (224, 224, 3), dtype=np.uint8),
        lambda: rng.integers(0, 255, (1080, 1920, 3), dtype=np.uint8),
        lambda: {"a": rng.standard_normal((100, 4)), "s": np.array(["x", "yé"]), "n": np.int64(7)},
        lambda: {"raise": np.array("boom"), "x": np.zeros(1)},
        lambda: {"sleep": np.float64(0.05), "x": np.zeros(3)},
    ]
    deadline = time.monotonic() + seconds
    c = None
    while time.monotonic() < deadline:
        try:
            if c is None:
                c = ferry.Client(url)
            x = None
            kind = int(rng.integers(0, len(payloads)))
            x = payloads[kind]()
            y = c.call(x, timeout=10)
            if isinstance(x, dict) and "raise" in x:
                counts["unexpected: no error for raise"] += 1
            elif isinstance(x, dict) and "sleep" in x:
                counts["ok"] += int(np.array_equal(y, x["x"])) or 0
            elif isinstance(x, dict):
                same = all(np.array_equal(y[k], v) for k, v in x.items())
                counts["ok" if same else "unexpected: wrong reply"] += 1
            else:
                counts["ok" if np.array_equal(y, x) else "unexpected: wrong reply"] += 1
        except ferry.RemoteError as e:
            asked = isinstance(x, dict) and "raise" in x and "boom" in str(e)
            counts["model error reported as asked" if asked else f"unexpected: RemoteError: {e}"] += 1
        except ferry.FerryError as e:
            name = type(e).__name__
            counts[name if name in EXPECTED else f"unexpected: {name}: {e}"] += 1
            if isinstance(e, (ferry.NoServer, ferry.ChannelClosed)):
                time.sleep(0.05)
        except Exception as e:  # noqa: BLE001
            counts[f"unexpected: {type(e).__name__}: {e}"] += 1
    if c is not None:
        c.close()
    out.put(dict(counts))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    start = shm_state()
    name = f"soak-{os.getpid()}"
    url = f"shm://{name}"
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    sup = subprocess.Popen([os.path.join(ROOT, "bin", "ferry"), "serve", os.path.join(HERE, "models", "testmodel.py"),
                            "--name", name, "--workers", str(args.workers), "--slot-size", "16M", "--hang-timeout", "5", "--max-restarts", "100000", "--max-backoff", "0.1"],
                           env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                ferry.Client(url).close()
                break
            except ferry.NoServer:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        rss_start = rss_kib(sup.pid)
        q = mp.Queue()
        clients = [mp.Process(target=client, args=(url, args.seconds, i, q)) for i in range(args.clients)]
        for p in clients:
            p.start()
        kills = 0
        rng = random.Random(1)
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            time.sleep(rng.uniform(1.5, 4))
            kids = subprocess.run(["pgrep", "-P", str(sup.pid)], capture_output=True, text=True).stdout.split()
            if kids:
                os.kill(int(rng.choice(kids)), signal.SIGKILL)
                kills += 1
        totals = collections.Counter()
        for _ in clients:
            totals.update(q.get(timeout=60))
        for p in clients:
            p.join(30)
        hung = [p.pid for p in clients if p.is_alive()]
        rss_end = rss_kib(sup.pid)
    finally:
        sup.send_signal(signal.SIGTERM)
        sup.wait(20)
    time.sleep(0.5)
    finish = shm_state()
    unexpected = {k: v for k, v in totals.items() if k.startswith("unexpected")}
    print(f"soak: {args.seconds:.0f} s, {args.clients} clients, {args.workers} workers, {kills} workers killed")
    print(f"  requests answered correctly: {totals['ok']}")
    print("  errors by kind: " + (", ".join(f"{k} {v}" for k, v in sorted(totals.items()) if k != "ok") or "none"))
    print(f"  supervisor RSS: {rss_start} KiB at start, {rss_end} KiB at end")
    print(f"  /dev/shm: {start['segments']} ferry segments, {start['dev_shm_used_kib']} KiB used at start; "
          f"{finish['segments']} segments, {finish['dev_shm_used_kib']} KiB used at end")
    # Other programs use /dev/shm too (Python's semaphores, say): allow them 1 MiB of drift; a
    # leaked Ferry segment would be one more segment and megabytes.
    shm_ok = start["segments"] == finish["segments"] and abs(start["dev_shm_used_kib"] - finish["dev_shm_used_kib"]) < 1024
    ok = not unexpected and not hung and shm_ok and totals["ok"] > 0
    print("soak: " + ("PASS" if ok else f"FAIL (unexpected {unexpected}, hung clients {hung})"))
    print(f"{1 if ok else 0} passed, {0 if ok else 1} failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
