"""`make bench-redis` (and part of `make bench`): redis:// against the seed's Redis recipe and
raw Redis round trips, side by side in one run, with a real redis-server on loopback.

Placement: clients on CPU 0; redis-server, the nodes (`ferry serve --redis`) with their Python
workers, and the seed's redis-py worker on CPU 1. Every model reads every byte of its input
and answers [checksum, size] (bench/checksum_model.py); every reply is checked, and a row with a wrong reply is marked
failed. Scaling uses a model that also sleeps 5 ms per call, nodes with one worker each, and
a client keeping 12 calls in flight. Writes bench/results/redis.json; bench/render.py puts it
on docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, HERE)
import ferry  # noqa: E402
from checksum_model import checksum  # noqa: E402
from tcp import BUILD, CLIENT_CPU, FERRY, MODEL, SERVER_CPU, SMALL, c_client, free_port, log, payload, timed  # noqa: E402

SLOW_MODEL = os.path.join(HERE, "slow_model.py")
SEED_FLAG = "seed 000 recipe: image list + polled flag, C hiredis → redis-py worker"
SEED_POP = "seed recipe improved: SET + LPUSH + BRPOP (blocking pops), C hiredis → redis-py worker"


class RedisServer:
    def __init__(self, d):
        self.port = free_port()
        self.proc = subprocess.Popen(["taskset", "-c", str(SERVER_CPU), "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", d], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(self.port), "PING"], capture_output=True, text=True).stdout.strip() != "PONG":
            assert time.monotonic() < deadline and self.proc.poll() is None, "redis-server did not start"
            time.sleep(0.05)

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)


class Nodes:
    """`count` nodes of `model` on redis://…/NAME, one worker each, pinned to the server CPU."""

    def __init__(self, port, name, model=MODEL, count=1, extra=()):
        env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"), OPENBLAS_NUM_THREADS="1")
        self.url = f"redis://127.0.0.1:{port}/{name}"
        self.procs = [subprocess.Popen(["taskset", "-c", str(SERVER_CPU), FERRY, "serve", model, "--redis", self.url, "--workers", "1",
                                        "--slot-size", "1M", *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                      for _ in range(count)]
        deadline = time.monotonic() + 60
        while int(subprocess.run(["redis-cli", "-p", str(port), "ZCARD", f"ferry:{{{name}}}:nodes"], capture_output=True,
                                 text=True).stdout.strip() or 0) < count:
            assert time.monotonic() < deadline and all(p.poll() is None for p in self.procs), "nodes did not start"
            time.sleep(0.1)
        with ferry.Client(self.url) as c:  # the first call waits for the workers to import numpy
            c.call(np.zeros(1, np.uint8), timeout=60)

    def close(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(30)


def seed_worker(port, n):
    """The seed's recipe, worker side (redis-py): job ids on a list, payload under a key,
    the reply on a per-job list; it reads every byte and answers [checksum, size] (bench/checksum_model.py)."""
    import redis
    os.sched_setaffinity(0, {SERVER_CPU})
    r = redis.Redis(host="127.0.0.1", port=port)
    while True:
        _, job = r.brpop(["ferry:jobs"])
        b = np.frombuffer(r.getdel(b"ferry:payload:" + job), dtype=np.uint8)
        r.lpush(b"ferry:reply:" + job, np.array([checksum(b), b.size], dtype=np.uint64).tobytes())


def seed_recipe(port, count, warmup) -> dict:
    p = mp.get_context("spawn").Process(target=seed_worker, args=(port, int(np.prod(SMALL))), daemon=True)
    p.start()
    try:
        out = subprocess.run(["taskset", "-c", str(CLIENT_CPU), f"{BUILD}/redis_client", str(port), str(count), str(warmup),
                              str(int(np.prod(SMALL))), "check"], capture_output=True, text=True, check=True, timeout=1800)
        return json.loads(out.stdout)
    finally:
        p.terminate()
        p.join(5)


PY_RAW = "raw round trip from Python: redis-py RPUSH + BLPOP → redis-py worker (BLPOP, RPUSH)"


def py_raw_worker(port):
    """The plainest Redis RPC from Python (no ids, no cache, one client): BLPOP a request,
    read every byte, RPUSH [checksum, size] (bench/checksum_model.py) on the reply list."""
    import redis
    os.sched_setaffinity(0, {SERVER_CPU})
    r = redis.Redis(host="127.0.0.1", port=port)
    while True:
        _, req = r.blpop(["bench:req"])
        b = np.frombuffer(req, dtype=np.uint8)
        r.rpush("bench:rep", np.array([checksum(b), b.size], dtype=np.uint64).tobytes())


def py_raw(port, count, warmup) -> dict:
    """The Python client side of `py_raw_worker`: what Ferry's Python redis:// row is held to."""
    import redis
    p = mp.get_context("spawn").Process(target=py_raw_worker, args=(port,), daemon=True)
    p.start()
    try:
        r = redis.Redis(host="127.0.0.1", port=port)

        def rt(x):
            r.rpush("bench:req", x.tobytes())
            return np.frombuffer(r.blpop(["bench:rep"], timeout=10)[1], dtype=np.uint64)

        return timed(rt, payload(SMALL), count, warmup)
    finally:
        p.terminate()
        p.join(5)


def flag_worker(port):
    """Seed 000's worker side (redis-py): poll the flag; when set, read the image list, answer
    [checksum, size] (bench/checksum_model.py) under a key and flip the flag. Polls without sleeping (its best case)."""
    import redis
    os.sched_setaffinity(0, {SERVER_CPU})
    r = redis.Redis(host="127.0.0.1", port=port)
    while True:
        if r.get("FLAG") != b"1":
            continue
        b = np.frombuffer(b"".join(r.lrange("IMAGE_LIST", 0, -1)), dtype=np.uint8)
        r.set("RESULT", np.array([checksum(b), b.size], dtype=np.uint64).tobytes())
        r.set("FLAG", "2")


def seed_flag_recipe(port, count, warmup) -> dict:
    p = mp.get_context("spawn").Process(target=flag_worker, args=(port,), daemon=True)
    p.start()
    try:
        out = subprocess.run([f"{BUILD}/seed000_client", str(port), str(count), str(warmup), str(SMALL[0]), str(SMALL[1] * SMALL[2])],
                             capture_output=True, text=True, check=True, timeout=1800)
        return json.loads(out.stdout)
    finally:
        p.terminate()
        p.join(5)


def raw(port, mode, nbytes, count, warmup) -> dict:
    out = subprocess.run([f"{BUILD}/redis_raw", str(port), str(count), str(warmup), str(nbytes), mode],
                         capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(out.stdout)


def scaling(url, calls, inflight=12) -> dict:
    """Calls/s with `inflight` calls kept in flight from one Python client (every reply checked)."""
    x = payload(SMALL)
    b = x.view(np.uint8).reshape(-1)
    expect = (checksum(b), b.size)
    wrong = 0
    with ferry.Client(url + "?cache=0") as c:
        pending = [c.send(x, timeout=60) for _ in range(inflight)]
        done = 0
        start = time.perf_counter()
        while done < calls:
            r = pending.pop(0).result()
            wrong += (int(r[0]), int(r[1])) != expect
            done += 1
            if done + len(pending) < calls:
                pending.append(c.send(x, timeout=60))
        wall = time.perf_counter() - start
        for p in pending:
            p.result()
    return {"throughput_per_s": calls / wall, "wrong": wrong}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="divide counts by 5")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "redis.json"))
    args = ap.parse_args()
    div = 5 if args.quick else 1
    n = 5000 // div
    os.sched_setaffinity(0, {CLIENT_CPU})
    os.makedirs(BUILD, exist_ok=True)
    lib = os.path.join(ROOT, ".build", "release")
    subprocess.run(["gcc", "-O2", "-Wall", "-o", f"{BUILD}/redis_raw", f"{HERE}/redis_raw.c", "-lhiredis"], check=True)
    subprocess.run(["gcc", "-O2", "-Wall", "-o", f"{BUILD}/redis_client", f"{HERE}/redis_client.c", "-lhiredis"], check=True)
    subprocess.run(["gcc", "-O2", "-Wall", "-o", f"{BUILD}/seed000_client", f"{HERE}/seed000_client.c", "-lhiredis"], check=True)
    subprocess.run(["gcc", "-O2", "-Wall", f"-I{ROOT}/include", "-o", f"{BUILD}/c_client", f"{HERE}/c_client.c", f"-L{lib}", "-lferry",
                    f"-Wl,-rpath,{lib}"], check=True)
    res = {"placement": f"clients on CPU {CLIENT_CPU}; redis-server, nodes, workers and the seed's worker on CPU {SERVER_CPU}",
           "command": "make bench-redis" + (" BENCH_ARGS=--quick" if args.quick else ""),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "small": {}, "cache": {}, "scaling": {}}
    with tempfile.TemporaryDirectory() as d:
        server = RedisServer(d)
        try:
            nbytes = int(np.prod(SMALL))
            log("redis: raw round trips (C hiredis)")
            res["small"]["raw Redis round trip, C hiredis (SET of the 7 056-byte payload)"] = raw(server.port, "set", nbytes, n, n // 10)
            res["cache"]["raw Redis GET of a 16-byte value, C hiredis"] = raw(server.port, "get", 16, n, n // 10)
            log("redis: the seed's list-and-flag recipe (C hiredis client → redis-py worker, both polling)")
            res["small"][SEED_FLAG] = seed_flag_recipe(server.port, n, n // 10)
            log("redis: the seed's recipe with blocking pops (C hiredis client → redis-py worker)")
            res["small"][SEED_POP] = seed_recipe(server.port, n, n // 10)
            log("redis: raw round trip from Python (redis-py both sides)")
            res["small"][PY_RAW] = py_raw(server.port, n, n // 10)
            log("redis: Ferry redis://, one node")
            nodes = Nodes(server.port, "bench-small", extra=["--cache-ttl", "600"])
            try:
                res["small"]["Ferry redis://, C client → node → Python worker"] = c_client(nodes.url + "?cache=0", SMALL, n, n // 10)
                with ferry.Client(nodes.url + "?cache=0") as c:
                    res["small"]["Ferry redis://, Python client → node → Python worker"] = timed(c.call, payload(SMALL), n, n // 10)
                log("redis: cache hits")
                # The same request every call (the C client's stamp fixed at 0), as in the Python row:
                # all but the first are answered from the cache.
                res["cache"]["Ferry redis:// cache hit, C client (7 056-byte request hashed, 16-byte reply)"] = \
                    c_client(nodes.url, SMALL, n, n // 10, stamped=False)
                with ferry.Client(nodes.url) as c:
                    res["cache"]["Ferry redis:// cache hit, Python client"] = timed(c.call, payload(SMALL), n, n // 10)
            finally:
                nodes.close()
            for k in (1, 2, 3):
                log(f"redis: scaling, {k} node(s), 5 ms model")
                nodes = Nodes(server.port, f"bench-scale-{k}", model=SLOW_MODEL, count=k)
                try:
                    res["scaling"][f"{k} node{'s' if k > 1 else ''}"] = scaling(nodes.url, max(200, 1500 // div) * k)
                finally:
                    nodes.close()
        finally:
            server.close()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    log(f"wrote {args.out}")
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
