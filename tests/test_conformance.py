"""One conformance suite, run unchanged against every transport (docs/architecture.md,
"Transports"): shm:// straight to the workers, tcp:// through a `ferry serve --listen`
gateway on 127.0.0.1, and redis:// through a real redis-server on a loopback port and a
`ferry serve --redis` node. Real processes only: `ferry serve` with supervised Python workers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import ferry
from conftest import FERRY, MODELS, RedisServer, env, wait_served

TRANSPORTS = ["shm", "tcp", "redis"]


class Served:
    """`ferry serve` of the test model, reachable at `url` over one transport."""

    #: The gateway's `--io` for tcp:// (None: its default); test_tcp.py runs every test with each.
    gateway_io: str | None = None

    def __init__(self, transport: str, name: str, tmp_path, extra=(), workers: int = 2, model: str | None = None,
                 port: int = 0, query: str = "", slot_size: str = "1M"):
        self.transport, self.name = transport, name
        self.log = open(tmp_path / f"serve-{name}.log", "w+")
        self.redis = RedisServer(tmp_path) if transport == "redis" else None
        args = [FERRY, "serve", model or os.path.join(MODELS, "testmodel.py"),
                "--workers", str(workers), "--slot-size", slot_size, "--hang-timeout", "0", *extra]
        if transport == "tcp":
            args += ["--listen", f"tcp://127.0.0.1:{port}"]
            if self.gateway_io:
                args += ["--io", self.gateway_io]
        if transport == "redis":
            args += ["--redis", f"redis://127.0.0.1:{self.redis.port}/{name}"]  # the local channel gets a unique name
        else:
            args += ["--name", name]
        self.proc = subprocess.Popen(args, env=env(), stdout=self.log, stderr=subprocess.STDOUT)
        try:
            self.url = self._wait_url()
            wait_served(self.url + (f"?{query}" if query else ""), self.proc)
        except BaseException:
            self.stop()
            raise

    def _wait_url(self) -> str:
        if self.transport == "shm":
            return f"shm://{self.name}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("ferry serve exited: " + self.output())
            for line in self.output().splitlines():
                if "listening" in line and "url=tcp://" in line:
                    return line.split("url=")[1].split()[0]
                if "node joined" in line and "url=redis://" in line:
                    return line.split("url=")[1].split()[0]
            time.sleep(0.05)
        raise TimeoutError("gateway did not listen: " + self.output())

    def output(self) -> str:
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if self.redis is not None:
            self.redis.stop()
        return self.proc.returncode


@pytest.fixture(params=TRANSPORTS)
def served(request, name, tmp_path):
    s = Served(request.param, name, tmp_path)
    yield s
    s.stop()


DTYPES = [np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
          np.float16, np.float32, np.float64]
SHAPES = [(), (0,), (1,), (7,), (3, 5), (2, 0, 4), (2, 3, 4, 5), (1, 1, 1, 1, 1, 1, 1, 1)]


def test_every_dtype_and_shape_round_trips(served):
    rng = np.random.default_rng(1)
    with ferry.Client(served.url) as c:
        for dt in DTYPES:
            for shape in SHAPES:
                x = (rng.integers(0, 2, size=shape) if dt is np.bool_ else rng.integers(0, 100, size=shape)).astype(dt)
                y = c.call(x)
                assert y.dtype == x.dtype and y.shape == x.shape, (dt, shape)
                np.testing.assert_array_equal(y, x)


def test_named_tensors_strings_and_metadata(served):
    with ferry.Client(served.url) as c:
        inputs = {"a": np.arange(10, dtype=np.float32), "b": np.array(["héllo", "", "wörld"]),
                  "c": np.frombuffer(b"\x00\x01\xff", dtype=np.uint8)}
        out = c.call(inputs)
        assert list(out) == ["a", "b", "c"]
        np.testing.assert_array_equal(out["a"], inputs["a"])
        assert list(out["b"]) == ["héllo", "", "wörld"]
        np.testing.assert_array_equal(out["c"], inputs["c"])
        tensors, meta = c.call_message({"x": np.ones(2), "y": np.zeros(1)}, metadata={"k": "v", "ünï": "cödé"})
        assert sorted(tensors) == ["x", "y"]
        np.testing.assert_array_equal(tensors["x"], np.ones(2))


def test_several_outputs_come_back_as_a_tuple_in_order(served):
    """A model returning a tuple (one output a view of its input) or a list holding arrays
    replies with several tensors; the client gets a tuple, also from send()."""
    a = np.arange(5, dtype=np.float32)
    with ferry.Client(served.url) as c:
        for out in (c.call({"outputs": a, "x": a}), c.send({"outputs": a, "x": a}).result()):
            assert type(out) is tuple and len(out) == 3, out
            for got, want in zip(out, (a, a[:1] * 2, a[1:])):
                assert got.dtype == want.dtype and got.tolist() == want.tolist() and got.flags.writeable
        out = c.call({"outputs": a, "strings": np.zeros(1)})  # two tensors: the model gets a dict
        assert type(out) is tuple and out[0].tolist() == a.tolist() and out[1].tolist() == ["é", "x"]
        tensors, meta = c.call_message({"outputs": a, "x": a})
        assert list(tensors) == ["output_0", "output_1", "output_2"] and meta["ferry.outputs"] == "tuple"


def test_large_message_round_trips(served):
    x = np.random.default_rng(2).integers(0, 255, size=(400, 600), dtype=np.uint8)  # 240 KB each way
    with ferry.Client(served.url) as c:
        for _ in range(5):
            np.testing.assert_array_equal(c.call(x), x)


def test_model_error_comes_back_with_type_and_traceback(served):
    with ferry.Client(served.url) as c:
        with pytest.raises(ferry.RemoteError) as e:
            c.call({"raise": np.array("boom"), "pad": np.zeros(1)})
        assert "boom" in str(e.value)
        assert e.value.type == "ValueError"
        assert "predict" in (e.value.traceback or "")
        np.testing.assert_array_equal(c.call(np.arange(3)), np.arange(3))  # still usable


def test_deadline_is_kept_and_client_stays_usable(served):
    with ferry.Client(served.url) as c:
        t0 = time.monotonic()
        with pytest.raises(ferry.Timeout):
            # (A 1 s model: long past the deadline; the worker finishes it before it stops.)
            c.call({"sleep": np.array(1.0), "pad": np.zeros(1)}, timeout=0.3)
        took = time.monotonic() - t0
        assert 0.25 < took < 1.5, took
        np.testing.assert_array_equal(c.call(np.arange(4)), np.arange(4))


def test_oversize_request_is_refused_and_client_stays_usable(served):
    with ferry.Client(served.url) as c:
        with pytest.raises(ferry.PayloadTooLarge) as e:
            c.call(np.zeros(2 << 20, dtype=np.uint8))  # 2 MiB into 1 MiB slots
        assert "slot" in str(e.value)
        np.testing.assert_array_equal(c.call(np.arange(5)), np.arange(5))


def test_killed_worker_fails_its_call_and_the_next_call_works(served):
    with ferry.Client(served.url) as c:
        result = {}

        def slow():
            try:
                result["value"] = c.call({"sleep": np.array(30.0), "pad": np.zeros(1)}, timeout=20)
            except Exception as e:  # noqa: BLE001
                result["error"] = e

        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.5)
        for pid in served.worker_pids():  # one of them holds the sleeping request
            os.kill(pid, signal.SIGKILL)
        t.join(10)
        assert not t.is_alive()
        assert isinstance(result.get("error"), ferry.WorkerDied), result
        wait_served(served.url, timeout=30)  # the supervisor restarts the workers
        np.testing.assert_array_equal(c.call(np.arange(6)), np.arange(6))


def test_killed_client_disturbs_nobody(served, procs):
    code = ("import ferry, numpy as np, sys\n"
            f"c = ferry.Client({served.url!r})\n"
            "print('ready', flush=True)\n"
            "c.call({'sleep': np.array(1.0), 'pad': np.zeros(1)}, timeout=30)\n")
    p = procs.start([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    p.kill()
    p.wait()
    with ferry.Client(served.url) as c:
        for i in range(20):
            np.testing.assert_array_equal(c.call(np.array([i])), np.array([i]))


def test_many_clients_each_get_their_own_replies(served):
    with ferry.Client(served.url) as shared:
        errors = []

        def run(k):
            try:
                own = ferry.Client(served.url) if k % 2 else shared  # own and shared clients
                for i in range(60):
                    out = own.call({"id": np.array([k * 1000 + i]), "pad": np.zeros(1)})
                    assert int(out["id"][0]) == k * 1000 + i
                if own is not shared:
                    own.close()
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors


def test_several_calls_in_flight_from_one_thread(served):
    with ferry.Client(served.url) as c:
        calls = [c.send({"id": np.array([i]), "pad": np.zeros(1)}) for i in range(6)]
        for i, call in reversed(list(enumerate(calls))):
            assert int(call.result()["id"][0]) == i


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_server_gone_is_an_error_not_a_hang(transport, name, tmp_path):
    s = Served(transport, name, tmp_path)
    try:
        c = ferry.Client(s.url)
        np.testing.assert_array_equal(c.call(np.arange(2)), np.arange(2))
    finally:
        s.stop()
    t0 = time.monotonic()
    with pytest.raises((ferry.NoServer, ferry.ChannelClosed, ferry.Disconnected, ferry.WorkerDied)):
        c.call(np.arange(2), timeout=5)
    assert time.monotonic() - t0 < 3
    c.close()
