"""`make bench-tcp` (and part of `make bench`): tcp:// against raw TCP, pyzmq and the seed-002
socket recipe, side by side in one run, over loopback.

Placement: clients on CPU 0; the gateway (`ferry serve --listen`) and its Python worker, the
raw TCP server and the pyzmq worker on CPU 1. Every model reads every byte of its input and
answers [checksum, size] (bench/checksum_model.py); every reply is checked, and a row with a wrong reply is marked
failed. Writes bench/results/tcp.json; bench/render.py puts it on docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

# Before numpy: no OpenBLAS threads in this process (they would share the CPUs it measures).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, HERE)
import ferry  # noqa: E402
from checksum_model import checksum  # noqa: E402

FERRY = os.path.join(ROOT, "bin", "ferry")
BUILD = os.path.join(HERE, ".build")
MODEL = os.path.join(HERE, "checksum_model.py")
CLIENT_CPU, SERVER_CPU = 0, 1
SMALL = (9, 28, 28)            # the digits payload, 7056 bytes
FRAME = (1080, 1920, 3)        # a 1080p frame, 6220800 bytes


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def payload(shape) -> np.ndarray:
    # The pattern c_client.c and tcp_pingpong.c send: byte i is (i * 31) mod 256.
    return (np.arange(int(np.prod(shape)), dtype=np.uint64) * 31 % 256).astype(np.uint8).reshape(shape)


def build() -> None:
    os.makedirs(BUILD, exist_ok=True)
    lib = os.path.join(ROOT, ".build", "release")
    cc = ["gcc", "-O2", "-Wall", "-Wextra"]
    subprocess.run([*cc, "-o", f"{BUILD}/tcp_pingpong", f"{HERE}/tcp_pingpong.c"], check=True)
    subprocess.run([*cc, "-o", f"{BUILD}/seed002_client", f"{HERE}/seed002_client.c"], check=True)
    subprocess.run([*cc, f"-I{ROOT}/include", "-o", f"{BUILD}/c_client", f"{HERE}/c_client.c", f"-L{lib}", "-lferry",
                    f"-Wl,-rpath,{lib}"], check=True)


class Gateway:
    """`ferry serve` of the checksum model with --listen, pinned to the server CPU."""

    def __init__(self, wait="hybrid", slot_size="16M", io="threads"):
        self.name = f"bench-tcp-{os.getpid()}-{wait}-{io}"
        port = free_port()
        env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"), OPENBLAS_NUM_THREADS="1")
        self.proc = subprocess.Popen(["taskset", "-c", str(SERVER_CPU), FERRY, "serve", MODEL, "--name", self.name,
                                      "--listen", f"tcp://127.0.0.1:{port}", "--slot-size", slot_size, "--wait", wait, "--io", io],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"tcp://127.0.0.1:{port}/{self.name}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with ferry.Client(self.url) as c:
                    c.call(np.zeros(1, np.uint8), timeout=10)
                return
            except (ferry.Disconnected, ferry.NoServer, ferry.Timeout):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.1)

    def close(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def c_client(url, shape, count, warmup, stamped=True) -> dict:
    """bench/c_client.c; `stamped=False` sends the same bytes every call (cache hits)."""
    env = dict(os.environ, BENCH_STAMP="1" if stamped else "0")
    out = subprocess.run([f"{BUILD}/c_client", url, str(count), str(warmup), "6", "1", *map(str, shape)],
                         capture_output=True, text=True, check=True, timeout=1800, env=env)
    r = json.loads(out.stdout)
    r["mb_per_s"] = r["throughput_per_s"] * int(np.prod(shape)) / 1e6
    return r


def checked(reply, x) -> bool:
    b = x.view(np.uint8).reshape(-1)
    return int(reply[0]) == checksum(b) and int(reply[1]) == b.size


def timed(fn, x, count, warmup) -> dict:
    wrong = 0
    for _ in range(warmup):
        wrong += not checked(fn(x), x)
    lat = np.empty(count, dtype=np.int64)
    start = time.perf_counter_ns()
    for i in range(count):
        t0 = time.perf_counter_ns()
        r = fn(x)
        lat[i] = time.perf_counter_ns() - t0
        wrong += not checked(r, x)
    wall = (time.perf_counter_ns() - start) / 1e9
    return {"p50_us": float(np.percentile(lat, 50) / 1e3), "p99_us": float(np.percentile(lat, 99) / 1e3),
            "throughput_per_s": count / wall, "mb_per_s": count / wall * x.nbytes / 1e6, "wrong": wrong}


def raw_tcp(shape, count, warmup) -> dict:
    n = int(np.prod(shape))
    out = subprocess.run([f"{BUILD}/tcp_pingpong", str(n), "16", str(count), str(warmup)], capture_output=True, text=True,
                         check=True, timeout=1800)
    return json.loads(out.stdout)


def zmq_worker(port: int) -> None:
    import zmq
    os.sched_setaffinity(0, {SERVER_CPU})
    sock = zmq.Context.instance().socket(zmq.REP)
    sock.bind(f"tcp://127.0.0.1:{port}")
    while True:
        msg = sock.recv(copy=False)
        b = np.frombuffer(msg.buffer, dtype=np.uint8)
        sock.send(np.array([checksum(b), b.size], dtype=np.uint64).tobytes())


def pyzmq(shape, count, warmup) -> dict:
    import multiprocessing as mp
    import zmq
    port = free_port()
    p = mp.get_context("spawn").Process(target=zmq_worker, args=(port,), daemon=True)
    p.start()
    try:
        sock = zmq.Context.instance().socket(zmq.REQ)
        sock.connect(f"tcp://127.0.0.1:{port}")

        def rt(x):
            sock.send(x, copy=x.nbytes < 65536)
            return np.frombuffer(sock.recv(), dtype=np.uint64)

        r = timed(rt, payload(shape), count, warmup)
        sock.close(0)
        return r
    finally:
        p.terminate()
        p.join(5)


SEED_SERVER = r'''
import io, os, socket, sys
import numpy as np
from PIL import Image
os.sched_setaffinity(0, {%d})
def recv_size(sock, count):
    buf = b''
    while count:
        newbuf = sock.recv(count)
        if not newbuf: return None
        buf += newbuf; count -= len(newbuf)
    return buf
def recv_all(sock, count):          # one byte per recv, as in the seed
    buf = b''
    while count:
        newbuf = sock.recv(1)
        if not newbuf: return None
        buf += newbuf; count -= len(newbuf)
    return buf
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1)
print("ready", flush=True)
conn, _ = s.accept()
while True:
    length = recv_size(conn, 16)
    if length is None: break
    data = recv_all(conn, int(length.decode()))
    img = np.asarray(Image.open(io.BytesIO(data)))   # cv2.imdecode in the seed
    conn.send('recieved messages!'.encode())
'''


def seed002(frames: int) -> dict:
    """The seed's recipe on a JPEG of the benchmark frame (quality 90, as cv2.imencode's default 95 gives a similar size)."""
    from PIL import Image
    with tempfile.TemporaryDirectory() as d:
        jpg = os.path.join(d, "frame.jpg")
        rng = np.random.default_rng(0)
        # A camera-like frame (smooth gradients and some noise): JPEG size like a real one.
        yy, xx = np.mgrid[0:FRAME[0], 0:FRAME[1]]
        img = np.stack([(xx / 8 + yy / 16) % 256, (yy / 4) % 256, (xx / 4 + 64) % 256], axis=-1)
        img = (img + rng.normal(0, 6, img.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(jpg, quality=90)
        port = free_port()
        srv = subprocess.Popen([sys.executable, "-c", SEED_SERVER % SERVER_CPU, str(port)], stdout=subprocess.PIPE, text=True)
        try:
            assert srv.stdout.readline().strip() == "ready"
            out = subprocess.run([f"{BUILD}/seed002_client", str(port), jpg, str(frames)], capture_output=True, text=True,
                                 check=True, timeout=1800)
            return json.loads(out.stdout)
        finally:
            srv.kill()
            srv.wait()


def ferry_python(url, shape, count, warmup) -> dict:
    with ferry.Client(url) as c:
        return timed(c.call, payload(shape), count, warmup)


def pipelined(url, count) -> dict:
    """Calls/s from one Swift client with 1 and with 16 calls in flight (ferry bench)."""
    out = {}
    for n in (1, 16):
        r = subprocess.run([FERRY, "bench", "--url", url, "--inflight", str(n), "--count", str(count), "--warmup",
                            str(count // 10), "--client-cpu", str(CLIENT_CPU), "--json"],
                           capture_output=True, text=True, check=True, timeout=1800)
        j = json.loads(r.stdout)
        out[f"{n} in flight"] = {"throughput_per_s": j["throughput_per_s"], "p50_us": j["p50_us"], "p99_us": j["p99_us"]}
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="divide counts by 5")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "tcp.json"))
    args = ap.parse_args()
    div = 5 if args.quick else 1
    small_n, frame_n = 20000 // div, 300 // div
    os.sched_setaffinity(0, {CLIENT_CPU})
    build()
    res = {"placement": f"clients on CPU {CLIENT_CPU}; gateway, workers and servers on CPU {SERVER_CPU}",
           "command": "make bench-tcp" + (" BENCH_ARGS=--quick" if args.quick else ""),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "small": {}, "frames": {}}
    log("tcp: raw TCP ping-pong (C)")
    res["small"]["raw TCP ping-pong, C (blocking, TCP_NODELAY)"] = raw_tcp(SMALL, small_n, small_n // 10)
    res["frames"]["raw TCP, C (same bytes, one at a time)"] = raw_tcp(FRAME, frame_n, 10)
    for wait in ("hybrid", "futex"):
        gw = Gateway(wait=wait)
        try:
            tag = "spin, then sleep" if wait == "hybrid" else "sleeping"
            log(f"tcp: Ferry, gateway wait={wait}")
            res["small"][f"Ferry tcp://, C client (gateway {tag})"] = c_client(gw.url, SMALL, small_n, small_n // 10)
            res["small"][f"Ferry tcp://, Python client (gateway {tag})"] = ferry_python(gw.url, SMALL, small_n, small_n // 10)
            res["frames"][f"Ferry tcp://, C client (gateway {tag})"] = c_client(gw.url, FRAME, frame_n, 10)
            res["frames"][f"Ferry tcp://, Python client (gateway {tag})"] = ferry_python(gw.url, FRAME, frame_n, 10)
            if wait == "hybrid":
                log("tcp: pipelining")
                res["pipelined"] = pipelined(gw.url, small_n)
        finally:
            gw.close()
    # The event-loop I/O model (--io event-loop; what TLS connections use), for comparison.
    gw = Gateway(io="event-loop")
    try:
        log("tcp: Ferry, gateway --io event-loop")
        res["small"]["Ferry tcp://, Python client (gateway spin, then sleep; --io event-loop)"] = ferry_python(gw.url, SMALL, small_n, small_n // 10)
        res["frames"]["Ferry tcp://, Python client (gateway spin, then sleep; --io event-loop)"] = ferry_python(gw.url, FRAME, frame_n, 10)
    finally:
        gw.close()
    log("tcp: pyzmq REQ/REP")
    try:
        res["small"]["pyzmq REQ/REP tcp://, Python client"] = pyzmq(SMALL, small_n, small_n // 10)
        res["frames"]["pyzmq REQ/REP tcp://, Python client"] = pyzmq(FRAME, frame_n, 10)
    except ImportError as e:
        res["small"]["pyzmq REQ/REP tcp://, Python client"] = {"error": str(e)}
    log("tcp: the seed-002 socket recipe")
    try:
        res["frames"]["seed-002 recipe (JPEG, one send() per byte)"] = seed002(max(2, 6 // div))
    except Exception as e:  # noqa: BLE001 - PIL missing or the recipe failed: reported
        res["frames"]["seed-002 recipe (JPEG, one send() per byte)"] = {"error": f"{type(e).__name__}: {e}"}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    log(f"wrote {args.out}")
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
