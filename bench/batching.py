"""Dynamic batching on the digits model (9 images a call → 9 labels): calls/s and latency with
4 client threads, without and with batching, with 1 and with 4 calls in flight per client,
side by side in one run. `ferry bench` starts the Python worker (CPU 1) and pins the clients
(CPU 0); every reply is read by the client.

    python3 bench/batching.py [--count 5000] [--out bench/results/batching.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(inflight: int, max_batch: int, count: int) -> dict:
    cmd = [os.path.join(ROOT, "bin", "ferry"), "bench", "--json", "--model", "ferry.models.digits", "--clients", "4",
           "--inflight", str(inflight), "--count", str(count), "--slots", "32", "--max-batch", str(max_batch)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r.update(inflight=inflight, max_batch=max_batch, command=" ".join(cmd[1:]))
    return r


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--count", type=int, default=5000)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "batching.json"))
    a, _ = p.parse_known_args()
    count = 1000 if a.quick else a.count
    rows = []
    for inflight in (1, 4):
        for mb in (1, 32):
            rows.append(run(inflight, mb, count))
            print(json.dumps(rows[-1]), flush=True)
    with open(a.out, "w") as f:
        json.dump({"when": time.strftime("%Y-%m-%d"), "placement": "4 client threads on CPU 0, one Python worker on CPU 1",
                   "model": "ferry.models.digits (9×28×28 uint8 → 9 int64 labels)", "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
