"""Strings at memory speed: one way (client → a worker whose model reads its input and
answers a small checksum), side by side in one run, 1M elements each:

* numpy float64 (the reference: 8 MB copied into the slot, read as a view);
* numpy `<U4`, `<U12` and `S8` arrays (numpy's own fixed-width layout on the wire, read as a view);
* a 1M-row DataFrame string column (pandas `str`, Arrow buffers) beside a 1M-row float64 column.

The ratio to the float64 row of the same kind is the figure (target ≤ 5×). Every model reads
its whole input with one numpy reduction (a sum of the numbers, code units or bytes) and the
client checks the sum. Client on CPU 0,
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

def words(b):
    """Sum of the bytes as little-endian u64 words (the tail zero-padded), wrapping."""
    n = len(b) // 8 * 8
    tail = np.zeros(8, np.uint8)
    tail[: len(b) - n] = b[n:]
    return int(b[:n].view("<u8").sum(dtype=np.uint64) + tail.view("<u8")[0])


def predict(x):
    # Reads its whole input at memory speed, as the float64 model does with x.sum(): the
    # (wrapping) sum of the strings' bytes taken as 8-byte words, so that every model sums
    # 8-byte elements and what differs between rows is Ferry, not the model.
    if hasattr(x, "columns"):
        c = x[x.columns[0]]
        if c.dtype.kind in "fiu":
            return np.array([len(x), int(c.to_numpy().sum() * 0)])
        import pyarrow as pa
        data = pa.array(c.array).buffers()[2]  # the UTF-8 bytes, zero-copy
        return np.array([len(x), words(np.frombuffer(data, np.uint8))])
    if x.dtype.kind in "US":
        return np.array([x.size, words(x.reshape(-1).view(np.uint8))])
    return np.array([x.size, int(x.sum() * 0)])
'''


_model_namespace: dict = {}
exec(MODEL, _model_namespace)
words = _model_namespace["words"]


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
    s8 = np.array([f"id{i % 100000}".encode() for i in range(n)], dtype="S8")
    df_str = pd.DataFrame({"sym": pd.Series([f"S{i % 5000}" for i in range(n)], dtype="str")})
    df_f = pd.DataFrame({"x": floats})
    floats6 = rng.standard_normal(6 * n)  # the bytes of the <U12 array (48 MB)
    cases = [
        ("array", "float64", floats, [n, 0]),
        ("array", "float64 ×6 (48 MB)", floats6, [6 * n, 0]),
        ("array", "<U4", u4, [n, words(u4.view(np.uint8))]),
        ("array", "<U12", u12, [n, words(u12.view(np.uint8))]),
        ("array", "S8", s8, [n, words(s8.view(np.uint8))]),
        ("frame", "float64 column", df_f, [n, 0]),
        ("frame", "str column", df_str, [n, words(np.frombuffer("".join(df_str["sym"]).encode(), np.uint8))]),
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
        value = cases[i][2]
        nbytes = int(value.memory_usage(deep=False).sum()) if hasattr(value, "memory_usage") else value.nbytes
        if hasattr(value, "memory_usage") and value.dtypes.iloc[0].kind not in "fiu":
            import pyarrow as pa
            nbytes = pa.array(value.iloc[:, 0].array).nbytes
        ref.setdefault(kind + " bytes", nbytes)
        per_byte = (ms / nbytes) / (ref[kind] / ref[kind + " bytes"])
        rows.append({"kind": kind, "value": name, "elements": n, "bytes": nbytes, "p50_ms": round(ms, 2),
                     "ratio": round(ms / ref[kind], 2), "ratio_per_byte": round(per_byte, 2)})
        print(f"{kind:6s} {name:20s} {ms:8.2f} ms  {ms / ref[kind]:5.2f}× the float64 {kind}, {per_byte:5.2f}× per byte")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "placement": "client CPU 0, worker CPU 1",
                   "command": "python3 bench/strings.py", "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
