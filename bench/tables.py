"""Tables one way and back: 1M rows × (4 float64 + 1 int64 + 1 string) sent to a Python worker
whose model returns the DataFrame it got, four ways side by side in one run:

* Ferry: `client.call(df)` (columns in the slot, a DataFrame on the other side);
* pickle over `multiprocessing.Pipe`;
* Arrow IPC over a pipe (the stream format, read back into pandas on each side);
* the seed-004 recipe: a 4-byte length + CSV text in a shared-memory block, a pipe to signal.

Then the string-column target: Ferry with one string column against one float64 column of
the same rows. Client on CPU 0, worker on CPU 1; best of --repeat; every reply is compared
with what was sent (ids, floats and strings), a wrong one fails the run.

    python3 bench/tables.py [--rows 1000000] [--repeat 3] [--out bench/results/tables.json]
"""
from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import struct
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def table(rows: int, floats: int = 4, ints: bool = True, strings: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    cols = {f"f{i}": rng.standard_normal(rows) for i in range(floats)}
    if ints:
        cols["id"] = np.arange(rows, dtype=np.int64) + (1 << 53)  # not representable as float64
    if strings:
        cols["sym"] = pd.Series([f"S{i % 5000}" for i in range(rows)], dtype="str")
    return pd.DataFrame(cols)


def same(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return False
    for c in a.columns:
        x, y = a[c], b[c]
        if x.dtype.kind == "f":
            if not np.array_equal(x.to_numpy(), y.to_numpy()):
                return False
        elif not x.equals(y) and not (x.astype(str) == y.astype(str)).all():
            return False
    return True


def echo(df):
    return df


def ferry_worker(url: str):
    os.sched_setaffinity(0, {1})
    import ferry
    ferry.serve(url, echo)


def pickle_worker(conn):
    os.sched_setaffinity(0, {1})
    while (df := conn.recv()) is not None:
        conn.send(df)


def arrow_worker(conn):
    import pyarrow as pa
    os.sched_setaffinity(0, {1})
    while (data := conn.recv_bytes()) != b"":
        df = pa.ipc.open_stream(data).read_all().to_pandas()
        t = pa.Table.from_pandas(echo(df), preserve_index=False)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, t.schema) as w:
            w.write_table(t)
        conn.send_bytes(sink.getvalue())


def csv_worker(conn, shm_name: str):
    """Seed 004: length-prefixed CSV in shared memory, read with pandas, written back the same way."""
    from multiprocessing import shared_memory
    os.sched_setaffinity(0, {1})
    shm = shared_memory.SharedMemory(name=shm_name)
    try:
        while conn.recv() is not None:
            (n,) = struct.unpack_from("<I", shm.buf, 0)
            df = pd.read_csv(io.BytesIO(bytes(shm.buf[4:4 + n])))
            out = echo(df).to_csv(index=False).encode()
            struct.pack_into("<I", shm.buf, 0, len(out))
            shm.buf[4:4 + len(out)] = out
            conn.send(True)
    finally:
        shm.close()


def best_of(fn, df, repeat: int) -> tuple[float, bool]:
    best, ok = float("inf"), True
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(df)
        best = min(best, time.perf_counter() - t0)
        ok = ok and same(df, out)
    return best, ok


def via_ferry(ctx, tables: list[pd.DataFrame], repeat: int) -> list[tuple[float, bool]]:
    import ferry
    url = f"shm://bench-tables-{os.getpid()}?slot_size=512M&slots=1"
    w = ctx.Process(target=ferry_worker, args=(url,), daemon=True)
    w.start()
    try:
        for _ in range(600):
            try:
                c = ferry.Client(url)
                break
            except ferry.NoServer:
                time.sleep(0.05)
        results = [best_of(lambda d: c.call(d, timeout=300), t, repeat) for t in tables]
        c.close()
        return results
    finally:
        w.terminate()
        w.join()


def via_pickle(ctx, df, repeat):
    parent, child = ctx.Pipe()
    w = ctx.Process(target=pickle_worker, args=(child,), daemon=True)
    w.start()
    try:
        return best_of(lambda d: (parent.send(d), parent.recv())[1], df, repeat)
    finally:
        parent.send(None)
        w.join()


def via_arrow(ctx, df, repeat):
    import pyarrow as pa
    parent, child = ctx.Pipe()
    w = ctx.Process(target=arrow_worker, args=(child,), daemon=True)
    w.start()

    def call(d):
        t = pa.Table.from_pandas(d, preserve_index=False)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, t.schema) as wr:
            wr.write_table(t)
        parent.send_bytes(sink.getvalue())
        return pa.ipc.open_stream(parent.recv_bytes()).read_all().to_pandas()

    try:
        return best_of(call, df, repeat)
    finally:
        parent.send_bytes(b"")
        w.join()


def via_csv(ctx, df, repeat):
    from multiprocessing import shared_memory
    shm = shared_memory.SharedMemory(create=True, size=512 << 20)
    parent, child = ctx.Pipe()
    w = ctx.Process(target=csv_worker, args=(child, shm.name), daemon=True)
    w.start()

    def call(d):
        data = d.to_csv(index=False).encode()
        struct.pack_into("<I", shm.buf, 0, len(data))
        shm.buf[4:4 + len(data)] = data
        parent.send(True)
        parent.recv()
        (n,) = struct.unpack_from("<I", shm.buf, 0)
        return pd.read_csv(io.BytesIO(bytes(shm.buf[4:4 + n])), dtype={"sym": "str"})

    try:
        return best_of(call, df, repeat)
    finally:
        parent.send(None)
        w.join()
        shm.close()
        shm.unlink()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="100k rows")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "tables.json"))
    args, _ = p.parse_known_args()
    rows = 100_000 if args.quick else args.rows
    os.sched_setaffinity(0, {0})
    ctx = mp.get_context("spawn")
    df = table(rows)
    one_float = table(rows, floats=1, ints=False, strings=False)
    one_string = table(rows, floats=0, ints=False, strings=True)
    (f_all, ok_all), (f_float, ok_f), (f_str, ok_s) = via_ferry(ctx, [df, one_float, one_string], args.repeat)
    rows_out = {
        "ferry": {"s": f_all, "ok": ok_all},
        "pickle_pipe": dict(zip(("s", "ok"), via_pickle(ctx, df, args.repeat))),
        "arrow_ipc_pipe": dict(zip(("s", "ok"), via_arrow(ctx, df, args.repeat))),
        "seed_csv_shm": dict(zip(("s", "ok"), via_csv(ctx, df, args.repeat))),
    }
    import pyarrow
    doc = {"when": time.strftime("%Y-%m-%d"), "rows": rows, "command": "python3 bench/tables.py",
           "placement": "client CPU 0, worker CPU 1", "pandas": pd.__version__, "pyarrow": pyarrow.__version__,
           "table": "4 float64 + 1 int64 + 1 string (str dtype)", "methods": rows_out,
           "one_column": {"float64_s": f_float, "string_s": f_str, "ok": ok_f and ok_s, "ratio": f_str / f_float}}
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    print(json.dumps(doc))
    bad = [k for k, v in rows_out.items() if not v["ok"]] + ([] if doc["one_column"]["ok"] else ["one column"])
    if bad:
        print(f"wrong replies from: {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
