"""Strings at memory speed: one way (client → a worker whose model reads its input and
answers a small checksum), side by side in one run, 1M elements each:

* numpy float64 (the reference: 8 MB copied into the slot, read as a view);
* numpy `<U4` and `<U12` str arrays (UTF-8 on the wire, vectorised both ways);
* a 1M-row DataFrame string column (pandas `str`, Arrow buffers) beside a 1M-row float64 column.

The ratio to the float64 row of the same kind is the figure (target ≤ 5×). Client on CPU 0,
worker on CPU 1; the median of --repeat interleaved rounds; each reply is checked.

    python3 bench/strings.py [--n 1000000] [--repeat 9] [--out bench/results/strings.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

MODEL = '''
import numpy as np

def predict(x):
    # Reads the whole input: a sum of numbers, or of string lengths (strings arrive decoded).
    if hasattr(x, "columns"):
        c = x[x.columns[0]]
        return np.array([len(x), int(c.str.len().sum()) if c.dtype.kind not in "fiu" else int(c.to_numpy().sum() * 0)])
    if x.dtype.kind in "US":
        return np.array([x.size, int(np.char.str_len(x).sum())])
    return np.array([x.size, int(x.sum() * 0)])
'''


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "strings.json"))
    args = ap.parse_args()
    import pandas as pd

    import ferry
    n = args.n
    rng = np.random.default_rng(5)
    floats = rng.standard_normal(n)
    u4 = np.array([f"{i % 10000:04d}" for i in range(n)], dtype="<U4")
    u12 = np.array([f"sym-{i % 5000}-é{i % 7}" for i in range(n)], dtype="<U12")
    df_str = pd.DataFrame({"sym": pd.Series([f"S{i % 5000}" for i in range(n)], dtype="str")})
    df_f = pd.DataFrame({"x": floats})
    cases = [
        ("array", "float64", floats, [n, 0]),
        ("array", "<U4", u4, [n, int(np.char.str_len(u4).sum())]),
        ("array", "<U12", u12, [n, int(np.char.str_len(u12).sum())]),
        ("frame", "float64 column", df_f, [n, 0]),
        ("frame", "str column", df_str, [n, int(df_str["sym"].str.len().sum())]),
    ]
    os.sched_setaffinity(0, {0})
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "strings_model.py")
        open(model, "w").write(MODEL)
        url = f"shm://bench-strings-{os.getpid()}?slots=2&slot_size=64M"
        env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
        w = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-m", "ferry.worker", model, "--url", url], env=env)
        try:
            for _ in range(400):
                try:
                    c = ferry.Client(url)
                    break
                except ferry.NoServer:
                    time.sleep(0.05)
            times = {i: [] for i in range(len(cases))}
            with c:
                for _ in range(args.repeat):
                    for i, (_, _, value, expect) in enumerate(cases):
                        t0 = time.perf_counter()
                        got = c.call(value, timeout=60)
                        times[i].append(time.perf_counter() - t0)
                        assert list(got) == expect, (cases[i][1], got, expect)
        finally:
            w.terminate()
            w.wait(10)
    rows = []
    ref = {}
    for i, (kind, name, _, _) in enumerate(cases):
        ms = float(np.median(times[i])) * 1e3
        ref.setdefault(kind, ms)
        rows.append({"kind": kind, "value": name, "elements": n, "p50_ms": round(ms, 2), "ratio": round(ms / ref[kind], 2)})
        print(f"{kind:6s} {name:15s} {ms:8.2f} ms  {ms / ref[kind]:5.2f}× the float64 {kind}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "placement": "client CPU 0, worker CPU 1",
                   "command": "python3 bench/strings.py", "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
