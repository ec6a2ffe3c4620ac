"""Tables one way and back: 1M rows × (4 float64 + 1 int64 [+ 1 string]), Ferry (a DataFrame
to a Python worker that returns it) against pickle over multiprocessing.Pipe. Client on
CPU 0, worker on CPU 1; the worker's model returns the table it got; replies are checked.

    python3 bench/tables.py [--rows 1000000] [--repeat 5]
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

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def table(rows: int, strings: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    cols = {**{f"f{i}": rng.standard_normal(rows) for i in range(4)}, "id": np.arange(rows, dtype=np.int64)}
    if strings:
        cols["sym"] = np.array([f"S{i % 5000}" for i in range(rows)])
    return pd.DataFrame(cols)


def echo(df):
    return df


def ferry_worker(url: str):
    os.sched_setaffinity(0, {1})
    import ferry
    ferry.serve(url, echo)


def pipe_worker(conn):
    os.sched_setaffinity(0, {1})
    while True:
        df = conn.recv()
        if df is None:
            return
        conn.send(df)


def timed(fn, df, repeat):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(df)
        best = min(best, time.perf_counter() - t0)
        assert len(out) == len(df) and (out["id"].to_numpy() == df["id"].to_numpy()).all()
        assert "sym" not in df or (out["sym"] == df["sym"]).all()
    return best


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--no-strings", action="store_true", help="leave out the string column")
    args = p.parse_args()
    os.sched_setaffinity(0, {0})
    import ferry
    df = table(args.rows, strings=not args.no_strings)
    url = f"shm://bench-tables-{os.getpid()}?slot_size=512M&slots=1"
    ctx = mp.get_context("spawn")
    w = ctx.Process(target=ferry_worker, args=(url,), daemon=True)
    w.start()
    for _ in range(600):
        try:
            c = ferry.Client(url)
            break
        except ferry.NoServer:
            time.sleep(0.05)
    ferry_s = timed(lambda d: c.call(d, timeout=120), df, args.repeat)
    c.close()
    w.terminate()
    w.join()
    parent, child = ctx.Pipe()
    pw = ctx.Process(target=pipe_worker, args=(child,), daemon=True)
    pw.start()

    def via_pipe(d):
        parent.send(d)
        return parent.recv()

    pipe_s = timed(via_pipe, df, args.repeat)
    parent.send(None)
    pw.join()
    print(json.dumps({"rows": args.rows, "strings": not args.no_strings, "ferry_s": ferry_s, "pickle_pipe_s": pipe_s, "ratio": pipe_s / ferry_s}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
