"""The shared-memory channel across real processes: Python clients and Python workers."""
import os
import subprocess
import sys

import numpy as np
import pytest

import ferry
from conftest import seg_path, env
from test_message import DTYPES, SHAPES, sample


def test_every_dtype_and_shape_crosses_processes(procs, name):
    url = f"shm://{name}"
    procs.worker(url)
    with ferry.Client(url) as c:
        for dtype in DTYPES:
            for shape in SHAPES:
                a = sample(dtype, shape)
                out = c.call(a)
                assert out.dtype == a.dtype and out.shape == a.shape, (dtype, shape)
                np.testing.assert_array_equal(out, a)
        out = c.call({"s": np.array(["α", "β"]), "b": b"\x00raw", "x": np.float32(2.5)})
        np.testing.assert_array_equal(out["s"], ["α", "β"])
        assert out["b"] == b"\x00raw" and out["x"] == np.float32(2.5)


def test_worker_sees_read_only_views_of_shared_memory(procs, name):
    url = f"shm://{name}"
    procs.worker(url)
    with ferry.Client(url) as c:
        out = c.call({"check_view": np.zeros((480, 640, 3), np.uint8), "other": np.int8(1)})
    # The model's array is the request itself, in the channel's shared segment, read-only.
    assert str(out["mapping"]).endswith(seg_path(name)), out["mapping"]
    assert not out["writeable"]


def test_model_error_reaches_the_client_and_the_worker_goes_on(procs, name):
    url = f"shm://{name}"
    procs.worker(url)
    with ferry.Client(url) as c:
        with pytest.raises(ferry.RemoteError, match="ValueError: bad digit"):
            c.call({"raise": np.array("bad digit"), "x": np.zeros(1)})
        np.testing.assert_array_equal(c.call(np.arange(4)), np.arange(4))


def test_oversize_payload_names_the_setting_and_the_channel_stays_usable(procs, name):
    url = f"shm://{name}?slot_size=64K"
    procs.worker(url)
    with ferry.Client(url) as c:
        with pytest.raises(ferry.PayloadTooLarge, match="slot_size"):
            c.call(np.zeros(100_000, np.uint8))
        with pytest.raises(ferry.PayloadTooLarge, match="reply does not fit.*slot_size"):
            c.call(np.zeros(40_000, np.uint8))  # fits as a request; the echo reply does not
        with pytest.raises(ferry.PayloadTooLarge, match="reply does not fit.*slot_size"):
            c.call({"a": np.zeros(40_000, np.uint8), "b": np.zeros(1)})  # same through the general path
        assert c.call(np.ones(10, np.uint8)).sum() == 10


def test_no_server_is_an_immediate_clear_error(name):
    with pytest.raises(ferry.NoServer, match="nothing serves it"):
        ferry.Client(f"shm://{name}")


@pytest.mark.parametrize("bad", ["shm://a/b", "shm://", "shm://.hidden", "shm://" + "x" * 201, "tcp://nope:1", "nope"])
def test_bad_urls_are_rejected(bad):
    with pytest.raises(ferry.InvalidArgument):
        ferry.Client(bad)


CLIENT = r"""
import sys, numpy as np, ferry
url, cid, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pids = set()
with ferry.Client(url) as c:
    for i in range(n):
        ident = np.array([cid, i], dtype=np.int64)
        out = c.call({"id": ident, "pad": np.full(100 + i % 50, cid, np.uint8)})
        assert out["id"].tolist() == [cid, i], (out["id"], cid, i)
        pids.add(int(out["pid"]))
print(" ".join(map(str, sorted(pids))))
"""


def test_many_clients_and_workers_every_reply_matches_its_request(procs, name):
    url = f"shm://{name}?slots=4"
    w1 = procs.worker(url)
    w2 = procs.worker(url)
    clients = [procs.start([sys.executable, "-c", CLIENT, url, str(i), "300"], stdout=subprocess.PIPE, text=True)
               for i in range(4)]
    seen = set()
    for p in clients:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        seen |= set(map(int, out.split()))
    assert seen == {w1.pid, w2.pid}, "both workers must share the load"


def test_several_calls_in_flight_from_one_client(procs, name):
    # The C ABI lets one client hold several calls; exercise it through ctypes directly.
    from ctypes import byref, c_void_p
    from ferry._lib import lib
    from ferry.message import MessageReader, write_message

    url = f"shm://{name}"
    procs.worker(url)
    with ferry.Client(url) as c:
        calls = []
        for i in range(5):
            call = c_void_p()
            assert lib.ferry_call_begin(c._handle(), 5000, byref(call)) == 0
            write_message(lib.ferry_call_writer(call), np.full(3, i, np.int32), "input")
            assert lib.ferry_call_send(call) == 0
            calls.append(call)
        for i, call in reversed(list(enumerate(calls))):
            reply = c_void_p()
            assert lib.ferry_call_wait(call, 5000, byref(reply)) == 0
            np.testing.assert_array_equal(MessageReader().read(reply.value)["output"], np.full(3, i, np.int32))
            lib.ferry_call_free(call)


def test_many_tensors_in_one_message(procs, name):
    # More tensors than the binding's descriptor array holds at first (16): it grows.
    url = f"shm://{name}"
    procs.worker(url)
    inputs = {f"t{i}": np.full((i % 5, 2), i, np.int16) for i in range(40)}
    with ferry.Client(url) as c:
        out = c.call(inputs)
    assert list(out) == list(inputs)
    for k, v in inputs.items():
        np.testing.assert_array_equal(out[k], v)
