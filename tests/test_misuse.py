"""Every misuse gets a clear error naming the value — never a crash, never a silent surprise
(docs/reliability.md, "Misuse")."""
from __future__ import annotations

import ctypes
import os
import urllib.parse
import subprocess
import sys
from ctypes import byref, c_char_p, c_int64, c_size_t, c_void_p

import numpy as np
import pytest

import ferry
from ferry._lib import lib
from conftest import MODELS, env


@pytest.mark.parametrize("url, match", [
    ("shm://x?timeout_ms=18446744073709551615", "timeout_ms=18446744073709551615"),
    ("shm://x?timeout_ms=99999999999999", "timeout_ms=99999999999999"),
    ("shm://x?spin_us=18446744073709551615", "spin_us=18446744073709551615"),
    ("shm://x?wait=hybrid&spin_us=99999999999", "spin_us=99999999999"),
    ("shm://x?slots=4&slots=8", "given twice"),
    ("shm://x?timeout_ms=5&timeout_ms=5", "given twice"),
    ("shm://x?slot_size=99999999999G", "99999999999G"),
])
def test_url_values_that_used_to_kill_the_process_are_clear_errors(url, match):
    with pytest.raises(ferry.InvalidArgument, match=match):
        ferry.Client(url)
    with pytest.raises(ferry.InvalidArgument, match=match):
        ferry.Worker(url)


@pytest.mark.parametrize("timeout", [1e18, float("inf"), float("nan"), -1.0, 10**30])
def test_per_call_timeouts_out_of_range_are_clear_errors(procs, name, timeout):
    url = f"shm://{name}"
    procs.worker(url)
    with ferry.Client(url) as c:
        with pytest.raises(ferry.InvalidArgument, match="timeout"):
            c.call(np.zeros(1), timeout=timeout)
        assert c.call(np.ones(1))[0] == 1  # and the client is fine


@pytest.fixture
def c_client(procs, name):
    """A C client handle of a served channel: (handle, url)."""
    url = f"shm://{name}"
    procs.worker(url)
    client = c_void_p()
    assert lib.ferry_client_new(url.encode(), None, byref(client)) == 0
    yield client, url
    lib.ferry_client_free(client)


def test_c_timeouts_out_of_range_are_einval(c_client):
    client, _ = c_client
    call = c_void_p()
    rc = lib.ferry_call_begin(client, c_int64(2**62), byref(call))
    assert rc == 1 and b"2" in lib.ferry_last_error()  # FERRY_EINVAL, naming the value


@pytest.fixture
def writer():
    """A C writer over a 64 KiB encoder."""
    enc = c_void_p()
    assert lib.ferry_encoder_new(1 << 16, byref(enc)) == 0
    yield lib.ferry_encoder_writer(enc)
    lib.ferry_encoder_free(enc)


def test_huge_shapes_to_the_writer_are_errors_not_crashes(writer):
    w = writer
    shape = (c_int64 * 8)(2**62, 2**62)
    strings = (c_char_p * 1)(b"x")
    lens = (c_size_t * 1)(1)
    assert lib.ferry_writer_put_strings(w, b"s", 2, shape, strings, lens, 1) == 1
    assert b"strings for shape" in lib.ferry_last_error()
    shape1 = (c_int64 * 8)(2**40)
    assert lib.ferry_writer_put_strings(w, b"s", 1, shape1, strings, lens, 2**40) in (1, 3)
    lens_bad = (c_size_t * 1)(2**63 + 5)
    shape2 = (c_int64 * 8)(1)
    assert lib.ferry_writer_put_strings(w, b"s", 1, shape2, strings, lens_bad, 1) == 3
    data, nbytes = c_void_p(), c_size_t()
    big = (c_int64 * 8)(2**40, 2**40)
    assert lib.ferry_writer_add_tensor(w, b"t", 6, 2, big, byref(data), byref(nbytes)) in (1, 3)


def test_invalid_utf8_in_names_and_metadata_is_an_error(writer):
    shape = (c_int64 * 8)(1)
    data = (ctypes.c_uint8 * 1)(7)
    assert lib.ferry_writer_put_tensor(writer, b"bad\xff", 6, 1, shape, data, 1) == 1
    assert b"UTF-8" in lib.ferry_last_error()
    assert lib.ferry_writer_set_meta(writer, b"k", b"\xc3\x28") == 1
    assert lib.ferry_writer_set_meta(writer, b"\xed\xa0\x80", b"v") == 1  # an encoded surrogate


def test_a_second_worker_asking_for_another_geometry_is_refused_naming_both(procs, name):
    procs.worker(f"shm://{name}?slots=4&slot_size=64K")
    # The same model (one model per channel), asking for other slots.
    same = "model=" + urllib.parse.quote(ferry.model_identity(os.path.join(MODELS, "testmodel.py")), safe="")
    with pytest.raises(ferry.InvalidArgument, match=r"slots=4 slot_size=65536.*asked for slots=8 slot_size=65536"):
        ferry.Worker(f"shm://{name}?slots=8&slot_size=64K&{same}")
    with pytest.raises(ferry.InvalidArgument, match=r"slot_size=65536.*slot_size=1048576"):
        ferry.Worker(f"shm://{name}?slot_size=1M&{same}")
    # Without explicit values a worker joins as the channel is; clients ignore geometry.
    with ferry.Worker(f"shm://{name}?{same}"):
        pass
    with ferry.Client(f"shm://{name}?slots=99") as c:
        assert c.call(np.ones(2)).sum() == 2


@pytest.mark.parametrize("kind, match", [
    ("none", "returned None"),
    ("nested", "nested dict"),
    ("objects", "object array holding int"),
    ("mixed", "mixes strings and numbers"),
    ("object", "cannot send faithfully"),
])
def test_a_model_returning_what_cannot_be_sent_gives_a_clear_remote_error(procs, name, kind, match):
    url = f"shm://{name}"
    procs.worker(url)
    with ferry.Client(url) as c:
        with pytest.raises(ferry.RemoteError, match=match):
            c.call({"return": np.array(kind), "x": np.zeros(1)})
        assert c.call(np.ones(3)).sum() == 3  # the worker goes on


@pytest.mark.parametrize("value, match", [
    ({"a": {"b": np.zeros(1)}}, "nested dict"),
    ({"a": [1, "x"]}, "mixes strings and numbers"),
    ({"a": np.array([1, None], dtype=object)}, "object array holding int"),
    ({"a": object()}, "cannot send faithfully"),
    ({"a": None}, "is None"),
    ({"a": "\ud800"}, "not valid Unicode"),
])
def test_a_client_sending_what_cannot_be_sent_faithfully_gets_an_error(procs, name, value, match):
    url = f"shm://{name}"
    procs.worker(url)
    with ferry.Client(url) as c:
        with pytest.raises((TypeError, ValueError), match=match):
            c.call(value)
        assert c.call(np.ones(3)).sum() == 3


def test_a_model_error_arrives_with_its_type_and_traceback(procs, name):
    url = f"shm://{name}"
    procs.worker(url)
    with ferry.Client(url) as c:
        with pytest.raises(ferry.RemoteError) as info:
            c.call({"raise": np.array("boom"), "x": np.zeros(1)})
        e = info.value
        assert "ValueError: boom" in str(e)
        assert e.type == "ValueError"
        assert "testmodel.py" in e.traceback and 'raise ValueError' in e.traceback, e.traceback
        # A huge message stays bounded, and the worker goes on.
        with pytest.raises(ferry.RemoteError) as info:
            c.call({"raise": np.array("x" * 100_000), "x": np.zeros(1)})
        assert len(str(info.value)) <= 4100 and len(info.value.traceback.encode()) <= 16_384
        assert c.call(np.ones(2)).sum() == 2


CTRL_C = r"""
import os, signal, sys, threading, time, numpy as np, ferry
url, kind = sys.argv[1], sys.argv[2]
c = ferry.Client(url)
threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
t0 = time.monotonic()
try:
    c.call({"sleep": np.float64(3), "x": np.zeros(1)}, timeout=20)
    print("no-interrupt")
except KeyboardInterrupt:
    print(f"interrupted {time.monotonic() - t0:.3f}")
time.sleep(3.2)  # the worker finishes the abandoned request and frees its slot
print("free", ferry.census(url, recover=True)["free"])
c.close()
"""


def test_ctrl_c_interrupts_a_waiting_python_client_promptly_and_frees_the_slot(procs, name):
    url = f"shm://{name}?slots=2&wait=futex"
    procs.worker(url)
    r = subprocess.run([sys.executable, "-c", CTRL_C, url, "busy"], env=env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[0].startswith("interrupted"), r.stdout
    assert float(lines[0].split()[1]) < 0.5 + 0.2, r.stdout  # within ~100 ms of the signal
    assert lines[1] == "free 2", r.stdout


def test_c_calls_in_the_wrong_order_are_errors(c_client):
    client, url = c_client
    call = c_void_p()
    assert lib.ferry_call_begin(client, -1, byref(call)) == 0
    w = lib.ferry_call_writer(call)
    shape = (c_int64 * 8)(3)
    data = (ctypes.c_uint8 * 3)(1, 2, 3)
    assert lib.ferry_writer_put_tensor(w, b"x", 6, 1, shape, data, 3) == 0
    assert lib.ferry_call_send(call) == 0
    # Writing after sending would race the worker reading the request.
    assert lib.ferry_writer_put_tensor(w, b"y", 6, 1, shape, data, 3) == 1
    assert b"already sent" in lib.ferry_last_error()
    assert lib.ferry_call_send(call) == 1  # twice
    msg = c_void_p()
    assert lib.ferry_call_wait(call, -1, byref(msg)) == 0
    assert lib.ferry_message_tensor_count(msg) == 1
    lib.ferry_call_free(call)
    # The reply belonged to the call: using it now is an error, not a use after free.
    from ferry._lib import FerryTensor
    t = FerryTensor()
    assert lib.ferry_message_tensor(msg, 0, byref(t)) == 1
    assert b"no longer valid" in lib.ferry_last_error()
    # Per-handle errors, cleared on success.
    text = c_char_p()
    bad = c_void_p()
    assert lib.ferry_call_begin(client, 2**62, byref(bad)) == 1
    assert lib.ferry_client_error(client, byref(text)) == 1 and b"timeout_ms" in text.value
    ok = c_void_p()
    assert lib.ferry_call_begin(client, -1, byref(ok)) == 0
    assert lib.ferry_client_error(client, byref(text)) == 0 and text.value == b""
    lib.ferry_call_free(ok)  # never sent: its slot goes back
    assert ferry.census(url)["free"] == 8


def test_status_codes_agree_across_languages():
    """One table (scripts/gen_tables.py) generates them for C, C++, Swift and Python."""
    import ferry.errors as errors
    classes = {cls.code: cls for cls in errors.FerryError.__subclasses__()}
    for code in range(1, 14):
        c_name = lib.ferry_status_name(code).decode()
        assert c_name.startswith("FERRY_E"), (code, c_name)
        assert code in classes, c_name
    assert lib.ferry_status_name(0) == b"FERRY_OK"
    r = subprocess.run([sys.executable, os.path.join(os.path.dirname(MODELS), "..", "scripts", "gen_tables.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_pandas_objects_that_cannot_cross_exactly_are_refused_clearly(procs, name):
    pd = pytest.importorskip("pandas")
    url = f"shm://{name}"
    procs.worker(url)
    df = pd.DataFrame({"id": np.array([2**53 + 1, 2], np.int64), "price": [1.5, 2.5]})
    with ferry.Client(url) as c:
        with pytest.raises(TypeError, match="pandas Series"):
            c.call({"s": df["id"]})
        with pytest.raises(TypeError, match="DataFrame inside a message"):
            c.call({"t": df})
        with pytest.raises(TypeError, match="categorical"):
            c.call(pd.DataFrame({"c": pd.Categorical(["a", "b"])}))
        with pytest.raises(TypeError, match="reset_index"):
            c.call(df.set_index("id"))
        with pytest.raises(TypeError, match="object column holding int"):
            c.call(pd.DataFrame({"o": pd.Series(["a", 1], dtype=object)}))
        assert c.call(np.ones(2)).sum() == 2