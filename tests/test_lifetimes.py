"""Liveness without pids, fork on both sides, one client shared by threads, and a dead
server reported as such within the check interval (docs/reliability.md)."""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

import numpy as np
import pytest

import ferry
from ferry._lib import lib
from conftest import MODELS, call_in_thread


def tagged(c, ident, **kw) -> int:
    """A call whose reply must carry `ident` back (the test model's tag echo)."""
    return int(c.call({"tag": np.int64(ident), "payload": np.arange(8, dtype=np.uint8)}, **kw)["tag"])


def test_client_used_in_a_forked_child_that_is_killed_does_not_leak_slots(procs, name):
    url = f"shm://{name}?slots=4"
    procs.worker(url)
    with ferry.Client(url) as c:
        assert tagged(c, 1) == 1
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child uses the parent's client, then holds every slot and dies
            try:
                os.close(r)
                ok = tagged(c, 2) == 2
                calls = []
                for _ in range(4):
                    call = ctypes.c_void_p()
                    if lib.ferry_call_begin(c._handle(), 1000, ctypes.byref(call)) == 0:
                        calls.append(call)
                os.write(w, b"%d %d" % (ok, len(calls)))
                time.sleep(60)
            finally:
                os._exit(0)
        os.close(w)
        ok, held = map(int, os.read(r, 64).split())
        os.close(r)
        assert ok == 1, "the forked child's call through the inherited client failed"
        assert held == 4, "the child could not claim every slot"
        assert ferry.census(url)["claimed"] == 4
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        # The parent is alive and attached, yet the dead child's slots come back at once.
        t0 = time.monotonic()
        for i in range(8):
            assert tagged(c, 10 + i, timeout=2) == 10 + i
        assert time.monotonic() - t0 < 2
        assert ferry.census(url, recover=True)["free"] == 4


def test_a_model_that_forks_does_not_keep_a_dead_worker_alive(procs, name, tmp_path):
    url = f"shm://{name}"
    pid_file = tmp_path / "child.pid"
    from conftest import env as base_env
    e = base_env()
    e["FORK_PID_FILE"] = str(pid_file)
    worker = procs.worker(url, model=os.path.join(MODELS, "forking.py"), env=e)
    child = None
    try:
        with ferry.Client(url) as c:
            c.call(np.zeros(3))  # the model forks a long-lived child
            child = int(pid_file.read_text())
            t, box = call_in_thread(c, {"sleep": np.float64(3), "x": np.zeros(1)}, timeout=8)
            time.sleep(0.3)
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
            t.join()
            # The worker's liveness died with it, although its forked child lives on.
            assert isinstance(box.get("error"), ferry.WorkerDied), box
            assert box["seconds"] < 1.5, box
            t0 = time.monotonic()
            with pytest.raises(ferry.NoServer):
                c.call(np.zeros(1), timeout=8)
            assert time.monotonic() - t0 < 1.0
    finally:
        if child:
            os.kill(child, signal.SIGKILL)
    ferry.reclaim(url)


def test_dead_server_is_reported_as_no_server_within_the_check_interval(procs, name):
    url = f"shm://{name}?wait=futex"
    worker = procs.worker(url)
    results: dict = {}

    def call(key, payload):
        t0 = time.monotonic()
        try:
            with ferry.Client(url) as c:
                c.call(payload, timeout=5)
            results[key] = ("reply", time.monotonic() - t0)
        except ferry.FerryError as e:
            results[key] = (type(e).__name__, time.monotonic() - t0)

    busy = threading.Thread(target=call, args=("busy", {"sleep": np.float64(3), "x": np.zeros(1)}))
    busy.start()
    time.sleep(0.2)  # the only worker is busy: the next request waits READY
    queued = threading.Thread(target=call, args=("queued", np.zeros(1)))
    queued.start()
    time.sleep(0.3)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    busy.join()
    queued.join()
    assert results["busy"][0] == "WorkerDied", results
    assert results["queued"][0] == "NoServer", results
    assert results["busy"][1] < 1.5 and results["queued"][1] < 1.5, results
    ferry.reclaim(url)


def test_one_client_shared_by_threads_gets_every_reply_right(procs, name):
    url = f"shm://{name}?slots=4"
    procs.worker(url)
    procs.worker(url)
    wrong, errors = [], []
    with ferry.Client(url) as c:
        def run(t):
            rng = np.random.default_rng(t)
            for i in range(400):
                ident = t * 100_000 + i
                x = rng.integers(0, 255, int(rng.integers(1, 3000)), dtype=np.uint8)
                try:
                    out = c.call({"tag": np.int64(ident), "payload": x})
                except ferry.FerryError as e:
                    errors.append(e)
                    continue
                if int(out["tag"]) != ident or int(out["sum"]) != int(x.sum(dtype=np.uint64)):
                    wrong.append((ident, int(out["tag"])))

        threads = [threading.Thread(target=run, args=(t,)) for t in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not wrong, wrong[:5]
    assert not errors, errors[:5]


def test_closing_a_client_while_other_threads_call_it_is_safe(procs, name):
    url = f"shm://{name}?slots=2"
    procs.worker(url)
    c = ferry.Client(url)
    outcomes = []

    def run():
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                c.call(np.zeros(16))
                outcomes.append("ok")
            except ValueError:  # "Client is closed"
                outcomes.append("closed")
                return

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    c.close()
    for t in threads:
        t.join()
    assert outcomes.count("closed") == 4 and "ok" in outcomes


def test_a_model_that_keeps_its_input_never_sees_it_rewritten(procs, name):
    url = f"shm://{name}?slots=2"
    procs.worker(url, model=os.path.join(MODELS, "keeper.py"))
    rng = np.random.default_rng(7)
    with ferry.Client(url) as c:
        for i in range(60):
            x = rng.integers(0, 255, int(rng.integers(10, 20_000)), dtype=np.uint8)
            if i % 3 == 0:
                out = c.call({"a": x, "b": np.zeros(2)})
            else:
                out = c.call(x)
            assert int(out) == int(x.astype(np.int64).sum())
        # Every slot was reused many times since; every kept input still has its own bytes.
        report = c.call({"check": np.zeros(1), "x": np.zeros(1)})
    assert int(report["kept"]) >= 60  # and the readiness ping
    assert int(report["bad"]) == 0


KEEP_AFTER_CLOSE = r"""
import sys, threading, numpy as np, ferry
url = sys.argv[1]
kept = []
w = ferry.Worker(url)
def model(x):
    kept.append(x)
    return np.int64(x.sum())
t = threading.Thread(target=w.serve, args=(model,), kwargs={"max_requests": 20})
t.start()
with ferry.Client(url) as c:
    for i in range(20):
        assert int(c.call(np.full(1000, i, np.uint8))) == 1000 * i
t.join()
w.close()
import gc; gc.collect()
# The worker is closed and its segment unmapped: the kept views still read their own bytes.
print(all(int(k[0]) == i and int(k.sum()) == 1000 * i for i, k in enumerate(kept)), w.preserved)
kept.clear(); gc.collect()  # the kept pages go back
"""


def test_views_a_model_kept_stay_valid_after_the_worker_closes(name):
    import subprocess
    from conftest import env
    r = subprocess.run([sys.executable, "-c", KEEP_AFTER_CLOSE, f"shm://{name}?slots=2"], env=env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    ok, preserved = r.stdout.split()
    assert ok == "True"
    assert int(preserved) == 20


def test_a_model_that_does_not_keep_its_input_gets_zero_copy_views_and_no_preservation(name):
    import subprocess
    from conftest import env
    script = r"""
import sys, threading, numpy as np, ferry
url = sys.argv[1]
w = ferry.Worker(url)
seen = []
def model(x):
    seen.append(x.flags.owndata or x.base is None)   # a private copy would own its data
    return x * 2                                     # a fresh result, the input is dropped
t = threading.Thread(target=w.serve, args=(model,), kwargs={"max_requests": 50})
t.start()
with ferry.Client(url) as c:
    for i in range(50):
        assert (c.call(np.full(64, i, np.uint8)) == 2 * i).all()
t.join()
print(any(seen), w.preserved)
w.close()
"""
    r = subprocess.run([sys.executable, "-c", script, f"shm://{name}"], env=env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "0"]


def test_a_worker_in_another_pid_namespace_is_judged_by_its_token_not_its_pid(procs, name):
    """Two containers sharing /dev/shm see different pids for the same process: liveness
    must not depend on them. The worker runs in a pid namespace of its own (pid 1 there)."""
    import shutil
    import subprocess
    from conftest import env
    if not shutil.which("unshare") or subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True).returncode:
        pytest.skip("unshare --pid is not permitted here")
    url = f"shm://{name}"
    w = procs.start(["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-m", "ferry.worker",
                     os.path.join(MODELS, "testmodel.py"), "--url", url], env=env())
    from conftest import wait_served
    wait_served(url, w)
    with ferry.Client(url) as c:
        # A live worker with a foreign pid is alive: a 1.5 s request completes.
        assert int(c.call({"sleep": np.float64(1.5), "x": np.zeros(1)}, timeout=10)["x"][0]) == 0
        t, box = call_in_thread(c, {"sleep": np.float64(5), "x": np.zeros(1)}, timeout=20)
        time.sleep(0.5)
        w.kill()  # unshare --kill-child: the namespace's processes die with it
        w.wait()
        t.join()
        assert isinstance(box.get("error"), ferry.WorkerDied), box
        assert box["seconds"] < 2, box
    ferry.reclaim(url)
