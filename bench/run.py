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
import resource
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
from checksum_model import Stamped, answer  # noqa: E402

FERRY = os.path.join(ROOT, "bin", "ferry")
CHECKSUM_MODEL = os.path.join(HERE, "checksum_model.py")
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


def proc_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) process `pid` has used so far (0 when it is gone)."""
    if pid is None:
        return 0.0
    try:
        text = open(f"/proc/{pid}/stat").read()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(fn, payload: np.ndarray, count: int, warmup: int, worker_pid: int | None) -> dict:
    """Times `fn(payload)` round trips in this (pinned) process. Every call is stamped with
    its number and every reply checked ([checksum, size], bench/checksum_model.py); CPU time
    per call counts this process and the worker over the measured calls."""
    st = Stamped(payload)
    wrong = 0
    for i in range(warmup):
        wrong += not st.check(i, fn(st.stamp(i)))
    lat = np.empty(count, dtype=np.int64)
    clock = time.perf_counter_ns
    cpu0, wcpu0 = time.process_time(), proc_cpu(worker_pid)
    start = clock()
    for i in range(warmup, warmup + count):
        x = st.stamp(i)
        t0 = clock()
        out = fn(x)
        lat[i - warmup] = clock() - t0
        wrong += not st.check(i, out)
    wall = (clock() - start) / 1e9
    cpu = time.process_time() - cpu0 + proc_cpu(worker_pid) - wcpu0
    r = stats(lat, wall, payload.nbytes)
    r.update(wrong=wrong, cpu_us_per_call=cpu / count * 1e6)
    return r


def run_native(cmd: list[str], nbytes: int, calls: int, worker_pid: int | None) -> dict:
    """A C client as a child process: its JSON, plus CPU per call (the child's and the
    worker's, over all `calls` including warm-up)."""
    c0, w0 = children_cpu(), proc_cpu(worker_pid)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800)
    r = json.loads(out.stdout)
    r["mb_per_s"] = r["throughput_per_s"] * nbytes / 1e6
    r["cpu_us_per_call"] = (children_cpu() - c0 + proc_cpu(worker_pid) - w0) / calls * 1e6
    return r


def cold_copy(payload: np.ndarray, count: int, read: bool = False) -> dict:
    """The limit: copying the payload in this process into destinations that are not in the
    cache (rotating over ≥ 256 MiB of buffers), timed by wall clock like every row. With
    `read`, the copy is then read once by the benchmark model (its checksum): the least work
    any transport plus this model must do in series, one request in flight."""
    k = int(min(64, max(2, (256 << 20) // max(payload.nbytes, 1))))
    dsts = [np.empty_like(payload) for _ in range(k)]
    for d in dsts:
        d.fill(1)  # fault the pages in: a transport's buffers are mapped once, too
    reps = max(count, 50)
    lat = np.empty(reps, dtype=np.int64)
    start = time.perf_counter_ns()
    for i in range(reps):
        t0 = time.perf_counter_ns()
        d = dsts[i % k]
        np.copyto(d, payload)
        if read:
            answer(d)
        lat[i] = time.perf_counter_ns() - t0
    wall = (time.perf_counter_ns() - start) / 1e9
    r = stats(lat, wall, payload.nbytes)
    r["buffers"] = k
    return r


def slot_size(nbytes: int) -> int:
    return ((nbytes + 2 * 4096 + 65536) // 4096 + 1) * 4096


def build_tools() -> None:
    os.makedirs(BUILD, exist_ok=True)
    lib = os.path.join(ROOT, ".build", "release")
    cc = ["gcc", "-O2", "-Wall", "-Wextra"]
    subprocess.run([*cc, "-o", os.path.join(BUILD, "pingpong"), os.path.join(HERE, "pingpong.c")], check=True)
    subprocess.run([*cc, f"-I{ROOT}/include", "-o", os.path.join(BUILD, "c_client"), os.path.join(HERE, "c_client.c"), f"-L{lib}",
                    "-lferry", f"-Wl,-rpath,{lib}"], check=True)
    subprocess.run([*cc, "-o", os.path.join(BUILD, "raw_client"), os.path.join(HERE, "raw_client.c")], check=True)


def build_optional(name: str, lib: str) -> bool:
    """C clients that need a -dev package (libhiredis-dev, libzmq3-dev); without it, their row says so."""
    r = subprocess.run(["gcc", "-O2", "-o", os.path.join(BUILD, name), os.path.join(HERE, name + ".c"), lib], capture_output=True, text=True)
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


def ferry_swift(shape, dtype, count, warmup, nbytes, wait="hybrid") -> dict:
    out = subprocess.run([FERRY, "bench", "--shape", "x".join(map(str, shape)), "--dtype", dtype, "--count", str(count),
                          "--warmup", str(warmup), "--client-cpu", str(CLIENT_CPU), "--worker-cpus", str(WORKER_CPU),
                          "--slot-size", str(slot_size(nbytes)), "--model", CHECKSUM_MODEL, "--check", "--wait", wait, "--json"],
                         capture_output=True, text=True, check=True, timeout=1800)
    r = json.loads(out.stdout)
    out = {k: r[k] for k in ("p50_us", "p99_us", "throughput_per_s", "mb_per_s", "wrong")}
    out["cpu_us_per_call"] = r["cpu_us_per_call"]  # client + worker, warm-up included
    return out


def start_python_worker(url: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"), OPENBLAS_NUM_THREADS="1")
    p = subprocess.Popen([sys.executable, "-m", "ferry.worker", CHECKSUM_MODEL, "--url", url, "--cpu", str(WORKER_CPU)], env=env)
    deadline = time.monotonic() + 30
    while True:
        try:
            with ferry.Client(url) as c:
                c.call(np.zeros(8, np.uint8), timeout=10)
            return p
        except ferry.NoServer:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


#: Every row: (key for --only, the row's name, which client, how the client waits).
FERRY_PY = "Ferry (hybrid: spins 100 µs, then sleeps)"
FERRY_PY_FUTEX, FERRY_PY_SPIN = "Ferry wait=futex", "Ferry wait=spin"
FERRY_C, FERRY_C_FUTEX, FERRY_SWIFT = "Ferry: C", "Ferry: C, wait=futex", "Ferry: Swift"
ZMQ_C, REDIS_C, RAW_C = "libzmq REQ (C) → pyzmq REP, ipc://", "Redis lists (C hiredis → redis-py worker, the seed's setup)", \
    "raw shared memory + futex by hand (C)"


def run_payload(name, shape, dtype, count, warmup, redis_port, only) -> dict:
    payload = np.random.default_rng(0).integers(0, 255, size=shape).astype(dtype)
    nbytes = payload.nbytes
    res = {}

    def want(key):
        return not only or key in only

    def row(label, client, waits, fn):
        try:
            r = fn()
        except Exception as e:  # a missing optional peer is reported, not fatal
            r = {"error": f"{type(e).__name__}: {e}"}
        r.update(client=client, waits=waits)
        assert label not in res, f"two rows named {label!r}"
        res[label] = r
        if r.get("wrong"):
            log(f"    {label}: {r['wrong']} wrong replies")

    # Ferry, Python and native clients, against a Python worker of the checksum model.
    labels = {"hybrid": FERRY_PY, "futex": FERRY_PY_FUTEX, "spin": FERRY_PY_SPIN}
    for wait in ("hybrid", "futex", "spin"):
        # A channel of its own per wait mode: nothing of one row's channel can leak into the next.
        url = f"shm://bench-py-{os.getpid()}-{wait}?slot_size={slot_size(nbytes)}&slots=4&wait={wait}"
        keys = [k for k in (f"ferry-python-{wait}", f"ferry-c-{wait}" if wait != "spin" else None) if k and want(k)]
        if keys:
            worker = start_python_worker(url)
            try:
                if f"ferry-python-{wait}" in keys:
                    log(f"  Ferry Python → Python, wait={wait}")
                    with ferry.Client(url) as c:
                        row(labels[wait], "Python", "sleeps" if wait == "futex" else "spins",
                            lambda: measure(lambda p: c.call(p), payload, count, warmup, worker.pid))
                if f"ferry-c-{wait}" in keys:  # no C row for wait=spin
                    log(f"  Ferry C → Python, wait={wait}")
                    code = ferry.message.dtype_code(payload.dtype)
                    row(FERRY_C if wait == "hybrid" else FERRY_C_FUTEX, "native", "spins" if wait == "hybrid" else "sleeps",
                        lambda: run_native([os.path.join(BUILD, "c_client"), url, str(count), str(warmup), str(code),
                                            str(payload.dtype.itemsize), *map(str, shape)], nbytes, count + warmup, worker.pid))
            finally:
                worker.terminate()
                worker.wait(10)
    if want("ferry-swift"):
        log("  Ferry Swift → Python")
        row(FERRY_SWIFT, "native", "spins", lambda: ferry_swift(shape, dtype, count, warmup, nbytes))

    # Python peers: what a Python user would pick instead.
    peer_list = [("pipe", peers.PipePeer, ()), ("shm-pipe", peers.SharedMemoryPeer, ()), ("zmq", peers.ZmqPeer, ()),
                 ("redis", peers.RedisPeer, (redis_port,)), ("iceoryx2", peers.IceoryxPeer, ()),
                 ("iceoryx2-events", peers.IceoryxEventsPeer, ())]
    for key, cls, extra in peer_list:
        if not want(key) or (key == "redis" and redis_port is None):
            continue
        log(f"  {cls.name}")
        n = count if key != "redis" else max(count // 4, 20)
        try:
            peer = cls(shape, dtype, WORKER_CPU, *extra)
        except Exception as e:  # noqa: BLE001
            res[cls.name] = {"error": f"{type(e).__name__}: {e}", "client": "Python", "waits": cls.waits}
            continue
        try:
            row(cls.name, "Python", cls.waits, lambda: measure(peer.roundtrip, payload, n, max(warmup // 4, 5), peer.proc.pid))
        finally:
            peer.close()

    # Native peers: the same Python workers, C clients.
    small = max(count // 4, 20)
    if want("zmq-c"):
        log(f"  {ZMQ_C}")
        if build_optional("zmq_client", "-lzmq"):
            peer = peers.ZmqPeer(shape, dtype, WORKER_CPU, client=False)
            try:
                time.sleep(0.3)
                row(ZMQ_C, "native", "sleeps", lambda: run_native([os.path.join(BUILD, "zmq_client"), peer.addr, str(count),
                                                                    str(warmup), str(nbytes)], nbytes, count + warmup, peer.proc.pid))
            finally:
                peer.close()
        else:
            res[ZMQ_C] = {"error": "libzmq3-dev missing (make bench-setup installs it)", "client": "native", "waits": "sleeps"}
    if want("redis-c") and redis_port is not None:
        log(f"  {REDIS_C}")
        if build_optional("redis_client", "-lhiredis"):
            peer = peers.RedisPeer(shape, dtype, WORKER_CPU, redis_port)
            try:
                row(REDIS_C, "native", "sleeps", lambda: run_native(["taskset", "-c", str(CLIENT_CPU), os.path.join(BUILD, "redis_client"),
                                                                      str(redis_port), str(small), str(max(warmup // 4, 5)), str(nbytes)],
                                                                     nbytes, small + max(warmup // 4, 5), peer.proc.pid))
            finally:
                peer.close()
    if want("raw-c"):
        log(f"  {RAW_C}")
        peer = peers.RawFutexPeer(shape, dtype, WORKER_CPU)
        try:
            time.sleep(0.5)
            row(RAW_C, "native", "sleeps", lambda: run_native([os.path.join(BUILD, "raw_client"), peer.path, str(count), str(warmup),
                                                               str(nbytes)], nbytes, count + warmup, peer.proc.pid))
        finally:
            peer.close()
    if want("memcpy"):
        res["limit: cold in-process copy"] = cold_copy(payload, count)
        res["limit: cold copy + the model's read"] = cold_copy(payload, count, read=True)
    return {"payload": name, "shape": list(shape), "dtype": dtype, "bytes": nbytes, "results": res}


def median_round(runs: list[dict]) -> dict:
    """One payload's rows from several rounds: each row's round with the median p50, with
    every round's p50 and wrong count kept (a wrong reply in any round marks the row)."""
    out = dict(runs[0], results={})
    for key in runs[0]["results"]:
        rows = [r["results"][key] for r in runs if key in r["results"]]
        good = sorted((x for x in rows if "p50_us" in x), key=lambda x: x["p50_us"])
        pick = dict(good[len(good) // 2]) if good else dict(rows[0])
        if len(rows) > 1:
            pick["rounds_p50_us"] = [x.get("p50_us") for x in rows]
            pick["wrong"] = sum(x.get("wrong", 0) for x in rows)
        out["results"][key] = pick
    return out


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

    def deb(n):
        return subprocess.run(["dpkg-query", "-W", "-f=${Version}", n], capture_output=True, text=True).stdout.strip() or "n/a"

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
        "libzmq (C)": deb("libzmq3-dev"), "libhiredis (C)": deb("libhiredis-dev"), "gcc": version(["gcc", "--version"]),
        "placement": f"client on CPU {CLIENT_CPU}, worker on CPU {WORKER_CPU} (taskset-style pinning by each process)",
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="divide counts by 5")
    ap.add_argument("--only", default="", help="comma-separated rows: ferry-python-hybrid, ferry-python-futex, ferry-python-spin, ferry-c-hybrid, "
                    "ferry-c-futex, ferry-swift, pipe, shm-pipe, zmq, redis, iceoryx2, iceoryx2-events, zmq-c, redis-c, raw-c, memcpy")
    ap.add_argument("--payloads", default="", help="comma-separated payload indexes (0: digits … 3: table); default all")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds for the digits payload (each row keeps its median)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "latest.json"))
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    div = 5 if args.quick else 1
    os.sched_setaffinity(0, {CLIENT_CPU})
    build_tools()
    iox_before = set(glob.glob("/dev/shm/iox2_*"))
    redis = RedisServer() if shutil.which("redis-server") else None
    results = {"machine": machine(), "command": "make bench" + (" BENCH_ARGS=--quick" if args.quick else ""), "payloads": []}
    try:
        picked = [int(i) for i in args.payloads.split(",") if i] or range(len(PAYLOADS))
        for i in picked:
            name, shape, dtype, count, warmup = PAYLOADS[i]
            # Small payloads run in several interleaved rounds (every row once per round) and each
            # row keeps its median round: kernel wake-ups on this VM are bimodal (the host's
            # adaptive halt-polling), and one round can catch a row in either mode.
            rounds = args.rounds if i == 0 else 1
            runs = []
            for r in range(rounds):
                log(f"{name}:" + (f" round {r + 1} of {rounds}" if rounds > 1 else ""))
                runs.append(run_payload(name, shape, dtype, max(count // div, 20), max(warmup // div, 5),
                                        redis.port if redis else None, only))
            results["payloads"].append(median_round(runs))
        log("limits: wake-up floor")
        results["floor"] = {}
        # Each kind back to back, then the same with 10 µs of client work between calls
        # ("socket+gap" …): sleeping rows are read against these (bench/notes.md).
        for gap in (0, 10):
            for mode in ("pipe", "socket", "socket2", "futex", "spin"):
                if gap and mode == "spin":
                    continue
                out = subprocess.run([os.path.join(BUILD, "pingpong"), mode, "20000", str(gap)], capture_output=True, text=True, check=True)
                results["floor"][mode + ("+gap" if gap else "")] = json.loads(out.stdout)
        os.sched_setaffinity(0, set(range(os.cpu_count())))
        if not only or "scaling" in only:
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
