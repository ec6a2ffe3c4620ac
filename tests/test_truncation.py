"""A segment's size, like its bytes, comes from another process and must not crash this one.

Another process of the same user truncates a live channel or stream segment (a bug, a
cleanup script): every role — client, worker, publisher, subscriber, in Python and in C —
gets an error naming the broken channel instead of dying of SIGBUS, at rest and in the middle
of a call. (The library maps private zero pages over what was lost and marks the segment
broken: CFerryLinux's SIGBUS guard, docs/reliability.md.)"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import ferry
from conftest import seg_path

SIGBUS_EXIT = -signal.SIGBUS


def truncate(path: str) -> None:
    with open(path, "r+b") as f:
        f.truncate(0)


def wait_exit(p: subprocess.Popen, timeout: float = 15.0) -> int:
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{p.args} did not stop within {timeout}s after its segment was truncated")


def python_client(url: str, sleep: float = 0.0) -> str:
    """A client process that calls until a call fails, printing 'ok' after its first answer
    and then the error's class and text."""
    return (
        "import sys, numpy as np, ferry\n"
        f"c = ferry.Client({url!r})\n"
        "i = 0\n"
        "while True:\n"
        "    try:\n"
        f"        x = {{'x': np.arange(16, dtype=np.uint8)}} if {sleep!r} == 0 else {{'x': np.arange(16, dtype=np.uint8), 'sleep': np.array({sleep!r})}}\n"
        "        out = c.call(x, timeout=10)\n"
        "    except ferry.FerryError as e:\n"
        "        print('error', type(e).__name__, e, flush=True)\n"
        "        sys.exit(1)\n"
        "    if i == 0:\n"
        "        print('ok', flush=True)\n"
        "    i += 1\n"
    )


@pytest.mark.parametrize("when", ["at rest", "mid-call"])
def test_python_client_and_worker_get_errors_not_sigbus(procs, name, when):
    url = f"shm://{name}"
    worker = procs.worker(url, stderr=subprocess.PIPE, text=True)
    sleep = 1.0 if when == "mid-call" else 0.0
    client = procs.start([sys.executable, "-c", python_client(url, sleep)], stdout=subprocess.PIPE, text=True)
    assert client.stdout.readline().strip() == "ok"
    time.sleep(0.3)  # at rest: between calls; mid-call: inside the 1 s model
    truncate(seg_path(name))
    rc = wait_exit(client)
    line = client.stdout.readline()
    assert rc == 1, f"client exited with {rc} (SIGBUS is {SIGBUS_EXIT}): {line}"
    assert line.startswith("error ChannelClosed") and "broken" in line, line
    # The worker sees it too (at its next look at the channel, or when it replies) and stops
    # with the reason, not a signal.
    rc = wait_exit(worker)
    err = worker.stderr.read()
    assert rc != SIGBUS_EXIT and rc > 0, (rc, err)
    assert "broken" in err, err


def test_a_new_server_makes_the_channel_anew(procs, name):
    """After the broken worker stops, the channel can be served again (the truncated file is
    replaced) and a new client works."""
    url = f"shm://{name}"
    worker = procs.worker(url, stderr=subprocess.PIPE, text=True)
    with ferry.Client(url) as c:
        c.call(np.zeros(4))
        truncate(seg_path(name))
        # Broken, or already gone: the worker may notice first, stop and remove it.
        with pytest.raises((ferry.ChannelClosed, ferry.NoServer)):
            c.call(np.zeros(4), timeout=5)
        assert wait_exit(worker) == 1
        procs.worker(url)
        np.testing.assert_array_equal(c.call(np.arange(3), timeout=10), np.arange(3))


@pytest.mark.parametrize("when", ["at rest", "mid-call"])
def test_c_client_and_c_worker_get_errors_not_sigbus(procs, native, name, when):
    url = f"shm://{name}"
    if when == "at rest":
        worker = procs.start([native["echo_worker"], url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert worker.stdout.readline().strip() == "serving"
        client = procs.start([native["call_loop"], url], stdout=subprocess.PIPE, text=True)
    else:  # the Python test model sleeps inside the call
        worker = procs.worker(url, stderr=subprocess.PIPE, text=True)
        client = procs.start([native["call_loop"], url, "1.0"], stdout=subprocess.PIPE, text=True)
    assert client.stdout.readline().strip() == "ok"
    time.sleep(0.3)
    truncate(seg_path(name))
    rc = wait_exit(client)
    line = client.stdout.readline()
    assert rc == 1, f"C client exited with {rc} (SIGBUS is {SIGBUS_EXIT}): {line}"
    assert line.startswith(f"error {ferry.ChannelClosed.code} ") and "broken" in line, line
    rc = wait_exit(worker)
    err = worker.stderr.read()
    assert rc != SIGBUS_EXIT and rc >= 0, (rc, err)
    assert "broken" in err, err


PUBLISHER = """
import sys, time, numpy as np, ferry
pub = ferry.Publisher({stream!r})
print("publishing", flush=True)
i = 0
try:
    while True:
        pub.publish({{"frame": np.full((64, 64), i % 251, np.uint8)}})
        i += 1
        time.sleep(0.002)
except ferry.FerryError as e:
    print("error", type(e).__name__, e, flush=True)
    sys.exit(1)
"""

SUBSCRIBER = """
import sys, numpy as np, ferry
sub = ferry.Subscriber({stream!r})
got = 0
try:
    while True:
        f = sub.recv(timeout=10)
        got += 1
        if got == 1:
            print("receiving", flush=True)
except ferry.FerryError as e:
    print("error", type(e).__name__, e, flush=True)
    sys.exit(1)
"""


def test_publisher_and_subscriber_get_errors_not_sigbus(procs, name):
    pub = procs.start([sys.executable, "-c", PUBLISHER.format(stream=name)], stdout=subprocess.PIPE, text=True)
    assert pub.stdout.readline().strip() == "publishing"
    sub = procs.start([sys.executable, "-c", SUBSCRIBER.format(stream=name)], stdout=subprocess.PIPE, text=True)
    assert sub.stdout.readline().strip() == "receiving"
    truncate(f"/dev/shm/ferry-stream.{os.geteuid()}.{name}")
    for role, p in (("subscriber", sub), ("publisher", pub)):
        rc = wait_exit(p)
        line = p.stdout.readline()
        assert rc == 1, f"{role} exited with {rc} (SIGBUS is {SIGBUS_EXIT}): {line}"
        assert "broken" in line, (role, line)


def test_c_publisher_and_subscriber_get_errors_not_sigbus(procs, native, name):
    """The C stream example (examples/stream/stream.c), both roles, with its segment
    truncated mid-stream: each stops with the library's reason and exit status 1."""
    pub = procs.start([native["stream"], "publish", name, "100000", "64", "48"], stderr=subprocess.PIPE, text=True)
    path = f"/dev/shm/ferry-stream.{os.geteuid()}.{name}"
    deadline = time.monotonic() + 20
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    sub = procs.start([native["stream"], "subscribe", name, "100000", "every"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # frames flowing
    truncate(path)
    for role, p in (("subscriber", sub), ("publisher", pub)):
        rc = wait_exit(p)
        err = p.stderr.read()
        assert rc == 1, f"C {role} exited with {rc} (SIGBUS is {SIGBUS_EXIT}): {err}"
        assert "broken" in err, (role, err)
