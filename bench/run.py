"""`make bench`: Ferry against the tools users would pick instead, in one run, side by side.

Runs every system on the same payloads with the client on CPU 0 and the worker on CPU 1,
writes bench/results/latest.json, then renders docs/benchmarks.md and its plots
(bench/render.py). `--quick` divides the counts by 5 for a smoke run.
"""
from __future__ import annotations

import argparse
import ctypes
import glob
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, HERE)

import ferry  # noqa: E402
import peers  # noqa: E402

FERRY = os.path.join(ROOT, "bin", "ferry")
BUILD = os.path.join(HERE, ".build")
CLIENT_CPU, WORKER_CPU = 0, 1

PAYLOADS = [
    # name, shape, dtype, measured calls, warm-up calls
    ("digits 9×28×28 u8", (9, 28, 28), "uint8", 20000, 2000),
    ("model input 224×224×3 u8", (224, 224, 3), "uint8", 5000, 500),
    ("video frame 1080×1920×3 u8", (1080, 1920, 3), "uint8", 1000, 100),
    ("table 1M×4 f64", (1_000_000, 4), "float64", 100, 10),
]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def stats(lat_ns: np.ndarray, wall_s: float, nbytes: int) -> dict:
    n = len(lat_ns)
    return {
        "p50_us": float(np.percentile(lat_ns, 50) / 1000),
        "p99_us": float(np.percentile(lat_ns, 99) / 1000),
        "throughput_per_s": n / wall_s,
        "mb_per_s": n / wall_s * nbytes / 1e6,
    }


def measure(fn, payload, count: int, warmup: int) -> dict:
    """Times `fn(payload)` round trips in this (pinned) process."""
    for _ in range(warmup):
        fn(payload)
    lat = np.empty(count, dtype=np.int64)
    clock = time.perf_counter_ns
    start = clock()
    for i in range(count):
        t0 = clock()
        out = fn(payload)
        lat[i] = clock() - t0
    wall = (clock() - start) / 1e9
    assert len(out) == 16, f"reply of {len(out)} bytes"
    return stats(lat, wall, payload.nbytes)


def slot_size(nbytes: int) -> int:
    return ((nbytes + 2 * 4096 + 65536) // 4096 + 1) * 4096


def build_tools() -> None:
    os.makedirs(BUILD, exist_ok=True)
    lib = os.path.join(ROOT, ".build", "release")
    subprocess.run(["gcc", "-O2", "-o", os.path.join(BUILD, "pingpong"), os.path.join(HERE, "pingpong.c")], check=True)
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", f"-I{ROOT}/include", "-o", os.path.join(BUILD, "c_client"),
                    os.path.join(HERE, "c_client.c"), f"-L{lib}", "-lferry", f"-Wl,-rpath,{lib}"], check=True)


def build_redis_client() -> bool:
    """The hiredis client needs libhiredis-dev; without it that row is skipped."""
    r = subprocess.run(["gcc", "-O2", "-o", os.path.join(BUILD, "redis_client"), os.path.join(HERE, "redis_client.c"), "-lhiredis"],
                       capture_output=True, text=True)
    return r.returncode == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--protected-mode", "yes"], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)


def ferry_swift(shape, dtype, count, warmup, nbytes) -> dict:
    out = subprocess.run([FERRY, "bench", "--shape", "x".join(map(str, shape)), "--dtype", dtype, "--count", str(count),
                          "--warmup", str(warmup), "--client-cpu", str(CLIENT_CPU), "--worker-cpus", str(WORKER_CPU),
                          "--slot-size", str(slot_size(nbytes)), "--json"],
                         capture_output=True, text=True, check=True, timeout=1800)
    r = json.loads(out.stdout)
    return {k: r[k] for k in ("p50_us", "p99_us", "throughput_per_s", "mb_per_s")}


def start_python_worker(url: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"), FERRY_BENCH_REPLY="16", OPENBLAS_NUM_THREADS="1")
    p = subprocess.Popen([sys.executable, "-m", "ferry.worker", "ferry.models.bench", "--url", url, "--cpu", str(WORKER_CPU)], env=env)
    deadline = time.monotonic() + 30
    while True:
        try:
            with ferry.Client(url) as c:
                c.call(np.zeros(1, np.uint8), timeout=10)
            return p
        except ferry.NoServer:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def run_payload(name, shape, dtype, count, warmup, redis_port, only) -> dict:
    payload = np.random.default_rng(0).integers(0, 255, size=shape).astype(dtype)
    nbytes = payload.nbytes
    res = {}

    def want(key):
        return not only or key in only

    if want("ferry-swift"):
        log(f"  Ferry Swift → Python")
        res["Ferry: Swift → Python"] = ferry_swift(shape, dtype, count, warmup, nbytes)
    url = f"shm://bench-py-{os.getpid()}?slot_size={slot_size(nbytes)}&slots=4"
    if want("ferry-python") or want("ferry-c"):
        worker = start_python_worker(url)
        try:
            if want("ferry-python"):
                log(f"  Ferry Python → Python")
                with ferry.Client(url) as c:
                    res["Ferry: Python → Python"] = measure(lambda p: c.call(p), payload, count, warmup)
            if want("ferry-c"):
                log(f"  Ferry C → Python")
                code = ferry.message.dtype_code(payload.dtype)
                out = subprocess.run([os.path.join(BUILD, "c_client"), url.split("?")[0], str(count), str(warmup),
                                      str(code), str(payload.dtype.itemsize), *map(str, shape)], capture_output=True, text=True, check=True, timeout=1800)
                r = json.loads(out.stdout)
                r["mb_per_s"] = r["throughput_per_s"] * nbytes / 1e6
                res["Ferry: C → Python"] = r
        finally:
            worker.terminate()
            worker.wait(10)
    peer_list = [("pipe", peers.PipePeer, ()), ("shm-pipe", peers.SharedMemoryPeer, ()), ("zmq", peers.ZmqPeer, ()),
                 ("redis", peers.RedisPeer, (redis_port,)), ("iceoryx2", peers.IceoryxPeer, ())]
    for key, cls, extra in peer_list:
        if not want(key) or (key == "redis" and redis_port is None):
            continue
        log(f"  {cls.name}")
        try:
            peer = cls(shape, dtype, WORKER_CPU, *extra)
        except Exception as e:  # a missing optional peer is reported, not fatal
            res[cls.name] = {"error": f"{type(e).__name__}: {e}"}
            continue
        try:
            n = count if key not in ("redis",) else max(count // 4, 20)
            res[cls.name] = measure(peer.roundtrip, payload, n, max(warmup // 4, 5))
        except Exception as e:
            res[cls.name] = {"error": f"{type(e).__name__}: {e}"}
        finally:
            peer.close()
    if want("redis-c") and redis_port is not None and os.path.exists(os.path.join(BUILD, "redis_client")):
        log("  Redis lists, C hiredis client")
        peer = peers.RedisPeer(shape, dtype, WORKER_CPU, redis_port)
        try:
            n = max(count // 4, 20)
            out = subprocess.run(["taskset", "-c", str(CLIENT_CPU), os.path.join(BUILD, "redis_client"), str(redis_port), str(n),
                                  str(max(warmup // 4, 5)), str(nbytes)], capture_output=True, text=True, check=True, timeout=1800)
            r = json.loads(out.stdout)
            r["mb_per_s"] = r["throughput_per_s"] * nbytes / 1e6
            res["Redis lists (C hiredis → redis-py worker, the seed's setup)"] = r
        except Exception as e:  # noqa: BLE001
            res["Redis lists (C hiredis → redis-py worker, the seed's setup)"] = {"error": f"{type(e).__name__}: {e}"}
        finally:
            peer.close()
    if want("memcpy"):
        dst = np.empty_like(payload)
        reps = max(count, 50)
        lat = np.empty(reps, dtype=np.int64)
        for i in range(reps):
            t0 = time.perf_counter_ns()
            np.copyto(dst, payload)
            lat[i] = time.perf_counter_ns() - t0
        res["limit: in-process memcpy"] = stats(lat, lat.sum() / 1e9, nbytes)
    return {"payload": name, "shape": list(shape), "dtype": dtype, "bytes": nbytes, "results": res}


def scaling(count: int) -> dict:
    out = {"clients_workers": [], "wait": []}
    for workers in (1, 2):
        for clients in (1, 2, 4):
            log(f"  scaling: {clients} client(s) × {workers} worker(s)")
            r = subprocess.run([FERRY, "bench", "--clients", str(clients), "--workers", str(workers), "--count", str(count),
                                "--warmup", str(count // 10), "--client-cpu=-1", "--worker-cpus=none", "--json"],
                               capture_output=True, text=True, check=True, timeout=1800)
            j = json.loads(r.stdout)
            out["clients_workers"].append({"clients": clients, "workers": workers, "throughput_per_s": j["throughput_per_s"],
                                           "p50_us": j["p50_us"], "p99_us": j["p99_us"]})
    for wait in ("spin", "hybrid", "futex"):
        log(f"  wait strategy: {wait}")
        r = subprocess.run([FERRY, "bench", "--wait", wait, "--count", str(count), "--warmup", str(count // 10),
                            "--idle-seconds", "2", "--json"], capture_output=True, text=True, check=True, timeout=1800)
        j = json.loads(r.stdout)
        out["wait"].append({"wait": wait, "p50_us": j["p50_us"], "p99_us": j["p99_us"], "cpu_us_per_call": j["cpu_us_per_call"],
                            "idle_worker_cpu_percent": j.get("idle_worker_cpu_percent")})
    return out


def machine() -> dict:
    def version(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]
        except Exception:
            return "n/a"

    import importlib.metadata as md

    def pkg(n):
        try:
            return md.version(n)
        except md.PackageNotFoundError:
            return "n/a"

    cpu = "?"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except Exception:
        pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu, "cores": os.cpu_count(),
        "kernel": platform.release(), "python": platform.python_version(), "numpy": np.__version__,
        "swift": version(["swift", "--version"]), "ferry": ferry.__version__, "pyzmq": pkg("pyzmq"), "redis-py": pkg("redis"),
        "hiredis": pkg("hiredis"), "iceoryx2": pkg("iceoryx2"), "redis-server": version(["redis-server", "--version"]),
        "placement": f"client on CPU {CLIENT_CPU}, worker on CPU {WORKER_CPU} (taskset-style pinning by each process)",
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="divide counts by 5")
    ap.add_argument("--only", default="", help="comma-separated systems (ferry-swift,ferry-python,ferry-c,pipe,shm-pipe,zmq,redis,iceoryx2,memcpy)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "latest.json"))
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    div = 5 if args.quick else 1
    os.sched_setaffinity(0, {CLIENT_CPU})
    build_tools()
    build_redis_client()
    iox_before = set(glob.glob("/dev/shm/iox2_*"))
    redis = RedisServer() if shutil.which("redis-server") else None
    results = {"machine": machine(), "command": "make bench" + (" BENCH_ARGS=--quick" if args.quick else ""), "payloads": []}
    try:
        for name, shape, dtype, count, warmup in PAYLOADS:
            log(f"{name}:")
            results["payloads"].append(run_payload(name, shape, dtype, max(count // div, 20), max(warmup // div, 5),
                                                   redis.port if redis else None, only))
        log("limits: wake-up floor")
        results["floor"] = {}
        for mode in ("pipe", "futex", "spin"):
            out = subprocess.run([os.path.join(BUILD, "pingpong"), mode, "20000"], capture_output=True, text=True, check=True)
            results["floor"][mode] = json.loads(out.stdout)
        os.sched_setaffinity(0, set(range(os.cpu_count())))
        results["scaling"] = scaling(20000 // div)
    finally:
        if redis:
            redis.close()
        # iceoryx2 leaves a management file per machine; remove the ones this run created.
        for path in set(glob.glob("/dev/shm/iox2_*")) - iox_before:
            try:
                os.unlink(path)
            except OSError:
                pass
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
