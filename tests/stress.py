"""Race stress across real processes: deadlines landing at every step of the slot protocol,
workers and clients SIGKILLed at random moments, every reply checked against its own request.

Clients loop: a call with a random deadline (0, 1, 2, 5 ms or none) on a model that takes a
random 0–3 ms, and after every timeout a normal call whose reply must still be its own (the
recipe that used to return other requests' replies). Each reply carries the request's tag
and the sum of its payload, both compared. A wrong reply is printed at once (`WRONG …`), so
it counts even if that client is killed a moment later.

    python3 tests/stress.py --seconds 10            # what make test runs (via test_races.py)
    python3 tests/stress.py --seconds 300           # make soak
    python3 tests/stress.py --transport tcp         # the same through `ferry serve --listen`

Over tcp:// the clients call through the gateway (a thread per connection): clients killed
mid-call leave calls the gateway must give up, workers killed fail the calls they held, and
every reply must still be its own.
"""
from __future__ import annotations

import argparse
import json
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

MODEL = os.path.join(HERE, "models", "testmodel.py")
FERRY = os.path.join(ROOT, "bin", "ferry")
DEADLINES = (0.0, 0.001, 0.002, 0.005, None)


def client(url: str, seconds: float, seed: int) -> int:
    rng = np.random.default_rng(seed)
    counts = {"ok": 0, "timeouts": 0, "worker_died": 0, "no_server": 0, "busy": 0, "wrong": 0, "other": 0}
    end = time.monotonic() + seconds
    c = None
    tag = seed << 32

    def one(timeout, read_after=0.0):
        nonlocal tag
        tag += 1
        payload = rng.integers(0, 255, int(rng.integers(1, 4096)), dtype=np.uint8)
        req = {"tag": np.int64(tag), "payload": payload}
        if rng.random() < 0.7:
            req["sleep_us"] = np.int64(rng.integers(0, 2000))
        if read_after:
            pending = c.send(req, timeout=timeout)
            time.sleep(read_after)  # the reply sits in the slot while late writers may strike
            out = pending.result()
        else:
            out = c.call(req, timeout=timeout)
        if int(out["tag"]) != tag or int(out["sum"]) != int(payload.sum(dtype=np.uint64)):
            counts["wrong"] += 1
            print(f"WRONG sent tag {tag} sum {int(payload.sum(dtype=np.uint64))}, got tag {int(out['tag'])} sum {int(out['sum'])}", flush=True)
        else:
            counts["ok"] += 1

    while time.monotonic() < end:
        try:
            if c is None:
                c = ferry.Client(url)
            # Half the time the recipe that used to return other requests' replies: a call
            # whose deadline expires at once (racing the worker's take), then a call whose
            # reply is read a little later; else a deadline that lands anywhere.
            timeout = 0.0 if rng.random() < 0.5 else DEADLINES[int(rng.integers(0, len(DEADLINES)))]
            try:
                one(timeout)
            except ferry.Timeout:
                counts["timeouts"] += 1
                one(None, read_after=float(rng.uniform(0.0005, 0.002)))  # the next reply must be its own
        except ferry.Timeout:
            counts["timeouts"] += 1
        except ferry.WorkerDied:
            counts["worker_died"] += 1
        except ferry.NoServer:
            counts["no_server"] += 1
            time.sleep(0.01)
        except ferry.Busy:
            counts["busy"] += 1
        except (ferry.ChannelClosed, ferry.Disconnected):
            c = None
            time.sleep(0.01)
    print(json.dumps(counts), flush=True)
    return 0


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(seconds: float, clients: int = 3, workers: int = 2, slots: int = 2, kill_every: float = 0.7,
        name: str | None = None, seed: int = 1, transport: str = "shm", io: str = "threads") -> dict:
    """Runs the stress and returns totals; raises AssertionError on any wrong reply or leak."""
    rnd = random.Random(seed)
    name = name or f"stress{os.getpid()}"
    local = f"shm://{name}?slots={slots}&wait=spin"
    listen = []
    url = local
    if transport == "tcp":
        port = free_port()
        listen = ["--listen", f"tcp://127.0.0.1:{port}", "--io", io]
        url = f"tcp://127.0.0.1:{port}/{name}"
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"), OPENBLAS_NUM_THREADS="1")
    procs: list[subprocess.Popen] = []
    totals = {"ok": 0, "timeouts": 0, "worker_died": 0, "no_server": 0, "busy": 0, "wrong": 0, "other": 0,
              "workers_killed": 0, "clients_killed": 0}
    wrong_lines: list[str] = []
    server = subprocess.Popen([FERRY, "serve", MODEL, "--name", name, "--workers", str(workers), "--slots", str(slots),
                               "--hang-timeout", "0", "--max-restarts", "100000", "--max-backoff", "0.1", *listen], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with ferry.Client(url) as c:
                    c.call({"ping": np.zeros(1)}, timeout=2)
                break
            except (ferry.NoServer, ferry.Timeout, ferry.ChannelClosed, ferry.Disconnected):
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("stress: the server did not start")
                time.sleep(0.05)

        def start_client(i: int) -> subprocess.Popen:
            return subprocess.Popen([sys.executable, __file__, "client", "--url", url, "--seconds", str(seconds),
                                     "--seed", str(seed * 1000 + i)], env=env, stdout=subprocess.PIPE, text=True)

        live = [start_client(i) for i in range(clients)]
        procs.extend(live)
        started = time.monotonic()
        next_id = clients
        while time.monotonic() - started < seconds:
            time.sleep(kill_every * (0.5 + rnd.random()))
            children = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True).stdout.split()
            if children and rnd.random() < 0.8:
                os.kill(int(rnd.choice(children)), signal.SIGKILL)
                totals["workers_killed"] += 1
            elif time.monotonic() - started < seconds - 1:
                victim = rnd.choice(live)
                victim.kill()
                totals["clients_killed"] += 1
                live.remove(victim)
                fresh = start_client(next_id)
                next_id += 1
                live.append(fresh)
                procs.append(fresh)
        for p in procs:
            out, _ = p.communicate(timeout=seconds + 60)
            for line in out.splitlines():
                if line.startswith("WRONG"):
                    wrong_lines.append(line)
                elif line.startswith("{"):
                    for k, v in json.loads(line).items():
                        totals[k] += v
        # Every slot comes back: what killed processes held is recovered, nothing else is held.
        if transport == "tcp":
            # The gateway gives up what killed clients left in flight as it sees them go.
            time.sleep(0.5)
        census = ferry.census(local, recover=True)
        totals["census"] = census
        assert census["free"] == slots, f"slots not free after the run: {census}"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    totals["wrong"] += len(wrong_lines) - totals["wrong"] if len(wrong_lines) > totals["wrong"] else 0
    assert not wrong_lines, f"{len(wrong_lines)} wrong replies: {wrong_lines[:5]}"
    return totals


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", nargs="?", default="run", choices=["run", "client"])
    p.add_argument("--url")
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--clients", type=int, default=3)
    p.add_argument("--transport", choices=["shm", "tcp"], default="shm")
    p.add_argument("--io", choices=["threads", "event-loop"], default="threads", help="the gateway's I/O model (tcp)")
    args = p.parse_args()
    if args.mode == "client":
        return client(args.url, args.seconds, args.seed)
    totals = run(args.seconds, clients=args.clients, seed=args.seed, transport=args.transport, io=args.io)
    print(json.dumps(totals))
    return 0


if __name__ == "__main__":
    sys.exit(main())
