"""One model per channel: a channel records the identity of the model that serves it (the
model file's path and function, a hash of its bytes, an optional version; for a C or Swift
worker the `model=` name it gives), and a server of another model is refused with both named
— it never joins and answers some of the calls with its own results."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

import ferry
from conftest import FERRY, MODELS, env, wait_served

TESTMODEL = os.path.join(MODELS, "testmodel.py")
ECHO = os.path.join(MODELS, "exact_echo.py")


def exits(p: subprocess.Popen, timeout: float = 20.0) -> int:
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{p.args} was not refused within {timeout}s")


def test_a_worker_of_another_model_is_refused_and_never_answers(procs, name):
    url = f"shm://{name}"
    a = procs.worker(url, model=TESTMODEL)
    b = procs.worker(url, model=ECHO, wait=False, stderr=subprocess.PIPE, text=True)
    assert exits(b) != 0
    err = b.stderr.read()
    assert "one model per channel" in err, err
    assert ferry.model_identity(TESTMODEL) in err and ferry.model_identity(ECHO) in err, err
    with ferry.Client(url) as c:  # every answer from the first model's worker
        pids = {int(c.call({"id": np.array([i]), "pad": np.zeros(1)}, timeout=10)["pid"]) for i in range(200)}
    assert pids == {a.pid}


def test_more_workers_of_the_same_model_share_the_channel(procs, name):
    url = f"shm://{name}"
    workers = [procs.worker(url, model=TESTMODEL) for _ in range(2)]
    with ferry.Client(url) as c:
        box = [c.send({"sleep": np.array(0.3), "id": np.array([i])}, timeout=10) for i in range(4)]
        pids = {int(call.result()["pid"]) for call in box}
    assert pids == {w.pid for w in workers}


def test_an_edited_model_file_is_another_model(procs, name, tmp_path):
    model = tmp_path / "m.py"
    model.write_text("def predict(x):\n    return x\n")
    url = f"shm://{name}"
    procs.worker(url, model=str(model))
    before = ferry.model_identity(str(model))
    model.write_text("def predict(x):\n    return x * 2\n")
    assert ferry.model_identity(str(model)) != before
    b = procs.worker(url, model=str(model), wait=False, stderr=subprocess.PIPE, text=True)
    assert exits(b) != 0 and "one model per channel" in b.stderr.read()


def test_ferry_serve_of_another_model_fails_fast_and_stats_name_the_model(procs, name):
    first = procs.start([FERRY, "serve", TESTMODEL, "--name", name, "--workers", "1"], stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True)
    wait_served(f"shm://{name}", first)
    t0 = time.monotonic()
    second = subprocess.run([FERRY, "serve", ECHO, "--name", name, "--workers", "1"], env=env(), capture_output=True,
                            text=True, timeout=60)
    assert second.returncode != 0 and time.monotonic() - t0 < 20
    assert "one model per channel" in second.stderr + second.stdout, second.stderr
    stats = subprocess.run([FERRY, "stats", f"shm://{name}", "--json", "--interval", "0.2"], env=env(), capture_output=True, text=True, timeout=30)
    assert ferry.model_identity(TESTMODEL).replace("\\", "\\\\") in stats.stdout, stats.stdout + stats.stderr
    # The first server is untouched.
    with ferry.Client(f"shm://{name}") as c:
        assert int(c.call({"id": np.array([5]), "pad": np.zeros(1)}, timeout=10)["id"][0]) == 5


def test_c_workers_name_their_model(procs, native, name):
    """A C worker gives its identity in the URL (`model=`): another C worker of the same
    name joins; a Python model's worker, or a C worker of another name, is refused."""
    url = f"shm://{name}?model=echo-c"
    c1 = procs.start([native["echo_worker"], url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert c1.stdout.readline().strip() == "serving"
    c2 = procs.start([native["echo_worker"], url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert c2.stdout.readline().strip() == "serving"  # the same model: joins
    other = procs.start([native["echo_worker"], f"shm://{name}?model=other-c"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert exits(other) == 1
    err = other.stderr.read()
    assert "one model per channel" in err and '"echo-c"' in err and '"other-c"' in err, err
    py = procs.worker(f"shm://{name}", model=TESTMODEL, wait=False, stderr=subprocess.PIPE, text=True)
    assert exits(py) != 0 and '"echo-c"' in py.stderr.read()
    with ferry.Client(f"shm://{name}") as c:
        np.testing.assert_array_equal(c.call(np.arange(4, dtype=np.uint8)), np.arange(1, 5, dtype=np.uint8))
        # Stop both C workers cleanly (a request with metadata "stop"): the last removes the channel.
        c.call(np.zeros(1, np.uint8), stop="1")
        c.call(np.zeros(1, np.uint8), stop="1", timeout=10)
    assert exits(c1) == 0 and exits(c2) == 0


def test_clients_read_who_serves_and_each_reply_names_its_model(procs, name, native, tmp_path):
    """server_info() (Python) and ferry_client_server_info (C) name the channel's model; every
    reply carries it in metadata ferry.model — over shm://, tcp:// and redis:// alike (and
    over tcp:// with authentication, only after AUTH)."""
    from test_conformance import Served
    want = ferry.model_identity(TESTMODEL, version="7")
    url = f"shm://{name}"
    sup = procs.start([FERRY, "serve", TESTMODEL, "--name", name, "--model-version", "7"])
    wait_served(url, sup)
    with ferry.Client(url) as c:
        assert c.server_info() == {"model": want}
        for inputs in (np.arange(3), {"a": np.ones(2), "b": np.zeros(1)}, {"s": np.array(["x"]), "t": np.zeros(1)}):
            _, meta = c.call_message(inputs)  # one array, a plain dict, the general path
            assert meta["ferry.model"] == want, meta
    out = subprocess.run([native["outputs"], url, "info"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == f"model {want}", out.stdout + out.stderr
    for transport in ("tcp", "redis"):
        s = Served(transport, f"{name}-{transport}", tmp_path, workers=1, extra=["--model-version", "7"])
        try:
            with ferry.Client(s.url) as c:
                _, meta = c.call_message(np.arange(3))
                assert meta["ferry.model"] == want, meta
                if transport == "redis":
                    info = c.server_info()["model"]  # the model and version the nodes announce
                    assert info.startswith("testmodel") and "7" in info, info
                else:
                    assert c.server_info() == {"model": want}  # told by the gateway's handshake
        finally:
            s.stop()
