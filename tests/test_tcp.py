"""The tcp:// gateway over real loopback TCP: pipelining, hostile and broken peers, limits,
authentication, lost connections and shutdown. Every other client must carry on."""
from __future__ import annotations

import os
import signal
import socket
import struct
import threading
import time

import numpy as np
import pytest

import ferry
from conftest import run_in_threads, sigstop
from test_conformance import Served

MAGIC = 0x31595246
HELLO, WELCOME, AUTH, READY, REQUEST, REPLY, ERROR = 1, 2, 3, 4, 5, 6, 7


def header(kind, length, id_=0, arg=0) -> bytes:
    return struct.pack("<IBBHQQQ", MAGIC, kind, 0, 0, id_, length, arg)


def hello(name: str) -> bytes:
    n = name.encode()
    body = struct.pack("<H", len(n)) + n + os.urandom(32)
    return header(HELLO, len(body), arg=1) + body


def read_frame(sock) -> tuple[int, int, int, bytes]:
    """(kind, id, argument, body) of the next frame; b"" kind 0 at end of stream."""
    def exactly(n):
        out = b""
        while len(out) < n:
            chunk = sock.recv(n - len(out))
            if not chunk:
                return None
            out += chunk
        return out
    h = exactly(32)
    if h is None:
        return 0, 0, 0, b""
    magic, kind, _, _, id_, length, arg = struct.unpack("<IBBHQQQ", h)
    assert magic == MAGIC
    return kind, id_, arg, exactly(length) or b""


def raw(served) -> socket.socket:
    host, port = served.url[len("tcp://"):].split("/")[0].rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    return s


@pytest.fixture(autouse=True, params=["threads", "event-loop"])
def gateway_io(request, monkeypatch):
    """Every test here runs against both of the gateway's I/O models (`--io`): a thread per
    plain-TCP connection (the default) and the SwiftNIO event loop (what TLS uses)."""
    monkeypatch.setattr(Served, "gateway_io", request.param)
    return request.param


@pytest.fixture
def gw(name, tmp_path):
    s = Served("tcp", name, tmp_path, workers=2)
    yield s
    s.stop()


def assert_still_serves(url):
    with ferry.Client(url) as c:
        for i in range(5):
            np.testing.assert_array_equal(c.call(np.array([i, i])), np.array([i, i]))


def test_pipelined_requests_from_many_clients_are_matched(gw):
    errors = []

    def run(k):
        try:
            with ferry.Client(gw.url) as c:
                for rnd in range(5):
                    calls = [(i, c.send({"id": np.array([k * 10000 + rnd * 100 + i]), "pad": np.zeros(1)})) for i in range(16)]
                    for i, call in reversed(calls):  # collected out of order
                        assert int(call.result()["id"][0]) == k * 10000 + rnd * 100 + i
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors


def test_a_quick_call_is_not_held_behind_a_slow_one_on_the_same_connection(gw):
    """Two calls in flight on one connection, two workers: the quick one, sent second,
    is answered while the slow one still runs (the gateway keeps reading the connection
    while it waits for a reply), and both answers are right."""
    with ferry.Client(gw.url) as c:
        c.call({"ping": np.zeros(1)})  # connected, workers warm
        t0 = time.monotonic()
        slow = c.send({"sleep": np.array(1.5), "id": np.array([1])})
        time.sleep(0.05)  # the slow request is read and handed to a worker first
        quick = c.send({"id": np.array([2]), "pad": np.zeros(1)})
        assert int(quick.result(timeout=10)["id"][0]) == 2
        quick_at = time.monotonic() - t0
        assert int(slow.result(timeout=10)["id"][0]) == 1
        slow_at = time.monotonic() - t0
    assert quick_at < 1.0 < slow_at, (quick_at, slow_at)


def test_garbage_bytes_close_only_that_connection(gw):
    with ferry.Client(gw.url) as good:
        s = raw(gw)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\0" * 64)
        kind, _, code, body = read_frame(s)
        assert kind == ERROR and b"not a Ferry frame" in body
        assert code == 15  # FERRY_EPROTOCOL
        assert s.recv(1) == b""  # closed
        s.close()
        np.testing.assert_array_equal(good.call(np.arange(3)), np.arange(3))


def test_client_killed_mid_frame_disturbs_nobody(gw):
    with ferry.Client(gw.url) as good:
        s = raw(gw)
        s.sendall(hello(gw.name))
        assert read_frame(s)[0] == WELCOME
        s.sendall(header(REQUEST, 100_000, id_=1, arg=10**9) + b"\1" * 5000)  # half a request
        s.close()
        s = raw(gw)
        s.sendall(hello(gw.name)[:10])  # half a hello
        s.close()
        assert_still_serves(gw.url)
        np.testing.assert_array_equal(good.call(np.arange(3)), np.arange(3))


def test_oversize_frame_is_refused_from_its_header(gw):
    s = raw(gw)
    s.sendall(hello(gw.name))
    kind, _, _, body = read_frame(s)
    assert kind == WELCOME
    capacity = struct.unpack("<Q", body[:8])[0]
    assert 0 < capacity < 1 << 20  # 1 MiB slots, less a page
    s.sendall(header(REQUEST, 1 << 40, id_=7, arg=10**9))  # a 1 TiB request: refused at once
    kind, _, code, body = read_frame(s)
    assert kind == ERROR and code == 3 and b"exceeds" in body, body  # FERRY_ETOOBIG
    assert s.recv(1) == b""
    s.close()
    assert_still_serves(gw.url)


def test_malformed_message_in_a_good_frame_fails_that_request_only(gw):
    s = raw(gw)
    s.sendall(hello(gw.name))
    assert read_frame(s)[0] == WELCOME
    s.sendall(header(REQUEST, 100, id_=9, arg=10**9) + b"\x07" * 100)
    kind, id_, _, body = read_frame(s)
    assert kind == REPLY and id_ == 9
    assert struct.unpack_from("<I", body, 48)[0] == 2  # an error reply: FERRY_EMALFORMED
    _, meta = ferry.decode(body)
    assert "malformed" in meta["error"]
    # The connection is still good for a real request.
    good = ferry.encode({"x": np.arange(4)})
    s.sendall(header(REQUEST, len(good), id_=10, arg=10**9) + good)
    kind, id_, _, body = read_frame(s)
    assert kind == REPLY and id_ == 10
    np.testing.assert_array_equal(next(iter(ferry.decode(body)[0].values())), np.arange(4))
    s.close()


def test_wrong_channel_name_is_no_server(gw):
    host_port = gw.url[len("tcp://"):].split("/")[0]
    with pytest.raises(ferry.NoServer, match="serves channel"):
        ferry.Client(f"tcp://{host_port}/someone-else")


def test_nothing_listening_is_a_clear_error():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    t0 = time.monotonic()
    with pytest.raises(ferry.Disconnected, match="cannot connect"):
        ferry.Client(f"tcp://127.0.0.1:{port}/x")
    assert time.monotonic() - t0 < 2


def test_bad_tcp_urls_are_refused():
    for url in ["tcp://127.0.0.1/x", "tcp://127.0.0.1:0/x", "tcp://127.0.0.1:70000/x", "tcp://:80/x",
                "tcp://127.0.0.1:80", "tcp://127.0.0.1:80/x?slots=2", "tcp://127.0.0.1:80/bad/name", "tcp://[::1/x"]:
        with pytest.raises(ferry.InvalidArgument):
            ferry.Client(url)


def free_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_lost_connection_fails_calls_in_flight_and_next_call_reconnects(name, tmp_path):
    port = free_port()
    s = Served("tcp", name, tmp_path, port=port)
    s2 = None
    try:
        c = ferry.Client(s.url)
        np.testing.assert_array_equal(c.call(np.arange(2)), np.arange(2))
        box = {}

        def slow():
            try:
                c.call({"sleep": np.array(30.0), "pad": np.zeros(1)}, timeout=20)
            except Exception as e:  # noqa: BLE001
                box["error"] = e

        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.5)
        workers = s.worker_pids()
        s.stop(signal.SIGKILL)  # the gateway dies with a call in flight
        t.join(10)
        assert isinstance(box.get("error"), ferry.Disconnected), box
        assert "outcome is unknown" in str(box["error"])
        with pytest.raises(ferry.Disconnected):
            c.call(np.arange(2), timeout=2)  # nothing listens now: a clear error
        # Its workers finish their request and exit (parent-death signal); the sleeping one
        # would take 30 s, so it is killed too. Then a new gateway on the same port.
        for p in workers:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while any(os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split()[2] != "Z" for p in workers):
            assert time.monotonic() < deadline, "workers outlived their killed supervisor"
            time.sleep(0.05)
        s2 = Served("tcp", name, tmp_path, port=port)
        np.testing.assert_array_equal(c.call(np.arange(3)), np.arange(3))  # reconnected by itself
        c.close()
    finally:
        s.stop()
        if s2:
            s2.stop()


def admitted(url: str, timeout: float = 10.0) -> ferry.Client:
    """A client once the gateway admits it: a connection closed a moment ago still counts
    until the gateway has seen it close (on a loaded machine that takes its thread or its
    event loop a while to be scheduled)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return ferry.Client(url)
        except ferry.Busy as e:
            if "too many connections" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def test_connection_limit(name, tmp_path):
    s = Served("tcp", name, tmp_path, extra=["--max-connections", "2"])
    try:
        a = admitted(s.url)  # the start-up check's connection may still count
        b = admitted(s.url)
        with pytest.raises(ferry.Busy, match="too many connections"):
            ferry.Client(s.url)
        a.close()
        c = admitted(s.url)
        np.testing.assert_array_equal(c.call(np.arange(2)), np.arange(2))
        np.testing.assert_array_equal(b.call(np.arange(2)), np.arange(2))
        b.close()
        c.close()
    finally:
        s.stop()


def test_in_flight_limit_is_backpressure_not_an_error(name, tmp_path):
    s = Served("tcp", name, tmp_path, extra=["--max-inflight", "2"])
    try:
        with ferry.Client(s.url) as c:
            calls = [c.send({"id": np.array([i]), "pad": np.zeros(1)}) for i in range(40)]
            assert [int(call.result()["id"][0]) for call in calls] == list(range(40))
    finally:
        s.stop()


def test_authentication(name, tmp_path):
    token = tmp_path / "token"
    token.write_text("correct horse battery staple\n")
    token.chmod(0o600)
    wrong = tmp_path / "wrong"
    wrong.write_text("incorrect horse battery staple\n")
    wrong.chmod(0o600)
    s = Served("tcp", name, tmp_path, extra=["--auth-token-file", str(token)], query=f"token_file={token}")
    try:
        base = s.url
        with pytest.raises(ferry.PermissionDenied, match="requires authentication"):
            ferry.Client(base)
        with pytest.raises(ferry.PermissionDenied, match="authentication failed"):
            ferry.Client(f"{base}?token_file={wrong}")
        with ferry.Client(f"{base}?token_file={token}") as c:
            np.testing.assert_array_equal(c.call(np.arange(5)), np.arange(5))
            assert "testmodel.py:predict sha256=" in c.server_info()["model"]  # told in READY, after AUTH
        # Requests before authenticating close the connection.
        sk = raw(s)
        sk.sendall(hello(name))
        kind, _, _, body = read_frame(sk)
        assert kind == WELCOME and body[20] == 1  # auth required
        assert len(body) == 56 and b"testmodel" not in body  # the model is not told before AUTH
        sk.sendall(header(REQUEST, 8, id_=1) + b"\0" * 8)
        kind, _, code, body = read_frame(sk)
        assert kind == ERROR and code == 11 and b"requires authentication" in body
        sk.close()
        # A world-readable token file is refused on the client side too.
        loose = tmp_path / "loose"
        loose.write_text("correct horse battery staple\n")
        loose.chmod(0o644)
        with pytest.raises(ferry.PermissionDenied, match="chmod 600"):
            ferry.Client(f"{base}?token_file={loose}")
    finally:
        s.stop()


def test_secret_never_crosses_the_wire(name, tmp_path):
    """A proxy records every byte of a successful authenticated call: the secret is not in it."""
    secret = b"s3cr3t-s3cr3t-s3cr3t-0123456789"
    token = tmp_path / "token"
    token.write_bytes(secret)
    token.chmod(0o600)
    s = Served("tcp", name, tmp_path, extra=["--auth-token-file", str(token)], query=f"token_file={token}")
    proxy = CountingProxy(s)
    try:
        with ferry.Client(f"tcp://127.0.0.1:{proxy.port}/{name}?token_file={token}") as c:
            np.testing.assert_array_equal(c.call(np.arange(3)), np.arange(3))
        assert len(proxy.seen) > 100 and secret not in bytes(proxy.seen)
    finally:
        proxy.close()
        s.stop()


def test_sigterm_answers_what_is_in_flight_then_exits(name, tmp_path):
    s = Served("tcp", name, tmp_path)
    try:
        c = ferry.Client(s.url)
        call = c.send({"sleep": np.array(1.0), "pad": np.zeros(1)}, timeout=20)
        time.sleep(0.3)
        s.proc.send_signal(signal.SIGTERM)
        out = call.result()  # answered, not dropped
        np.testing.assert_array_equal(out["pad"], np.zeros(1))
        assert s.proc.wait(timeout=20) == 0
        with pytest.raises((ferry.Disconnected, ferry.ChannelClosed)):
            c.call(np.arange(2), timeout=2)
        c.close()
    finally:
        s.stop()


def make_certificate(tmp_path, cn="localhost", san="DNS:localhost,IP:127.0.0.1"):
    """A throwaway self-signed certificate (and key) for the test, by the openssl command."""
    import shutil
    import subprocess
    if not shutil.which("openssl"):
        pytest.skip("openssl command not installed")
    cert, key = tmp_path / f"{cn}.crt", tmp_path / f"{cn}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", f"/CN={cn}", "-addext", f"subjectAltName={san}"],
                   check=True, capture_output=True)
    return cert, key


def test_tls_round_trip_and_refusals(name, tmp_path):
    cert, key = make_certificate(tmp_path)
    other, _ = make_certificate(tmp_path, cn="other", san="DNS:other")
    s = Served("tcp", name, tmp_path, extra=["--tls-cert", str(cert), "--tls-key", str(key)], query=f"ca_file={cert}")
    try:
        with ferry.Client(f"{s.url}?ca_file={cert}") as c:
            x = np.random.default_rng(3).integers(0, 255, size=(300, 400), dtype=np.uint8)
            for _ in range(3):
                np.testing.assert_array_equal(c.call(x), x)
            calls = [c.send({"id": np.array([i]), "pad": np.zeros(1)}) for i in range(10)]
            assert [int(k.result()["id"][0]) for k in calls] == list(range(10))
        port = s.url.split(":")[2].split("/")[0]
        with ferry.Client(f"tcp://localhost:{port}/{name}?ca_file={cert}") as c:  # by name too
            np.testing.assert_array_equal(c.call(np.arange(3)), np.arange(3))
        # An untrusted certificate, and plain TCP to a TLS port, are clear errors.
        with pytest.raises(ferry.PermissionDenied, match="not trusted"):
            ferry.Client(f"{s.url}?ca_file={other}")
        # A plain client is told the gateway speaks TLS (not just "connection reset").
        with pytest.raises((ferry.ProtocolError, ferry.Disconnected), match="tls=1"):
            ferry.Client(f"{s.url}?connect_timeout_ms=1000")
        # On the wire: no plaintext of the request.
        sk = raw(s)
        sk.sendall(hello(name))
        sk.settimeout(5)
        first = sk.recv(64)
        assert not first.startswith(struct.pack("<I", MAGIC))  # a TLS alert, not a Ferry frame
        sk.close()
        assert_still_serves_tls = ferry.Client(f"{s.url}?ca_file={cert}")
        np.testing.assert_array_equal(assert_still_serves_tls.call(np.arange(2)), np.arange(2))
        assert_still_serves_tls.close()
    finally:
        s.stop()
    # A TLS client against a plain gateway is told it does not speak TLS (not "certificate
    # is not trusted").
    plain = Served("tcp", name + "-plain", tmp_path)
    try:
        with pytest.raises(ferry.ProtocolError, match="does not speak TLS"):
            ferry.Client(f"{plain.url}?tls=1&ca_file={cert}&connect_timeout_ms=2000")
    finally:
        plain.stop()


class CountingProxy:
    """A loopback TCP proxy in front of a gateway that records the bytes clients send."""

    def __init__(self, served):
        self.upstream_addr = served.url[len("tcp://"):].split("/")[0].rsplit(":", 1)
        self.seen = bytearray()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        try:
            while True:
                conn, _ = self.listener.accept()
                up = socket.create_connection((self.upstream_addr[0], int(self.upstream_addr[1])))
                self.socks += [conn, up]
                threading.Thread(target=self._pump, args=(conn, up, True), daemon=True).start()
                threading.Thread(target=self._pump, args=(up, conn, False), daemon=True).start()
        except OSError:
            pass

    def _pump(self, a, b, count):
        try:
            while True:
                d = a.recv(1 << 20)
                if not d:
                    break
                if count:
                    self.seen.extend(d)
                b.sendall(d)
        except OSError:
            pass
        finally:
            try:
                b.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self):
        self.listener.close()
        for s in self.socks:
            s.close()


def test_compression_zstd_is_exact_and_smaller_on_the_wire(gw):
    proxy = CountingProxy(gw)
    try:
        url = f"tcp://127.0.0.1:{proxy.port}/{gw.name}?compress=zstd"
        with ferry.Client(url) as c:
            x = np.zeros((200, 200), np.float32)        # 160 KB, very compressible...
            x[::7, ::3] = np.arange(200 // 7 + 1, dtype=np.float32)[:, None]
            y = np.arange(25_000, dtype=np.int64)         # ...and a less compressible one
            small = np.arange(10, dtype=np.uint8)          # under 4 KiB: sent plain
            before = len(proxy.seen)
            out = c.call({"x": x, "y": y, "small": small, "pad": np.zeros(1)})
            wire = len(proxy.seen) - before
            np.testing.assert_array_equal(out["x"], x)
            np.testing.assert_array_equal(out["y"], y)
            np.testing.assert_array_equal(out["small"], small)
            assert out["x"].dtype == np.float32 and out["y"].dtype == np.int64
            assert wire < (x.nbytes + y.nbytes) / 4, wire
            noise = np.random.default_rng(5).integers(0, 255, size=100_000, dtype=np.uint8)  # incompressible: plain
            np.testing.assert_array_equal(c.call(noise), noise)
    finally:
        proxy.close()


def test_compression_jpeg_for_images(gw):
    proxy = CountingProxy(gw)
    try:
        url = f"tcp://127.0.0.1:{proxy.port}/{gw.name}?compress=jpeg,zstd&jpeg_quality=92"
        yy, xx = np.mgrid[0:240, 0:320]
        img = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
        with ferry.Client(url) as c:
            before = len(proxy.seen)
            out = c.call(img)
            wire = len(proxy.seen) - before
        assert out.shape == img.shape and out.dtype == np.uint8  # the worker saw a plain array
        assert np.abs(out.astype(int) - img.astype(int)).mean() < 4  # lossy, but close
        assert wire < img.nbytes / 5, wire
    finally:
        proxy.close()


def test_bad_compressed_data_fails_only_that_request(gw):
    s = raw(gw)
    s.sendall(hello(gw.name))
    assert read_frame(s)[0] == WELCOME
    msg = bytearray(ferry.encode({"x": np.zeros(5000, np.uint8)}))
    table = struct.unpack_from("<Q", msg, 24)[0]
    struct.pack_into("<H", msg, table + 30, 1)  # claims zstd, holds zeros
    s.sendall(header(REQUEST, len(msg), id_=3, arg=10**9) + bytes(msg))
    kind, id_, _, body = read_frame(s)
    assert kind == REPLY and id_ == 3
    assert struct.unpack_from("<I", body, 48)[0] == 2 and b"zstd" in body  # FERRY_EMALFORMED
    good = ferry.encode({"x": np.arange(4)})
    s.sendall(header(REQUEST, len(good), id_=4, arg=10**9) + good)
    kind, id_, _, body = read_frame(s)
    assert kind == REPLY and id_ == 4
    s.close()


def test_encoded_tensors_never_reach_a_worker(served_shm_name=None):
    """A message claiming an encoding is malformed anywhere but on a tcp:// link."""
    msg = bytearray(ferry.encode({"x": np.zeros(5000, np.uint8)}))
    table = struct.unpack_from("<Q", msg, 24)[0]
    struct.pack_into("<H", msg, table + 30, 1)
    with pytest.raises(ferry.MalformedMessage, match="encoded data"):
        ferry.decode(bytes(msg))


def test_bad_compression_options_are_refused():
    for q in ["compress=lz4", "compress=", "jpeg_quality=90", "compress=jpeg&jpeg_quality=101", "compress=zstd&zstd_level=0"]:
        with pytest.raises(ferry.InvalidArgument):
            ferry.Client(f"tcp://127.0.0.1:1/x?{q}")


def test_calls_end_by_their_deadline_while_the_gateway_is_stopped(gw):
    """A stopped gateway (SIGSTOP: a partition) accepts TCP connections and answers nothing: a
    call ends by its deadline, and so does a new client's first call."""
    with ferry.Client(gw.url) as c:
        assert c.call(np.arange(3)).tolist() == [0, 1, 2]
        sigstop(gw.proc.pid)
        try:
            for timeout in (0.2, 0.5):
                t0 = time.monotonic()
                with pytest.raises((ferry.Timeout, ferry.Disconnected)):
                    c.call(np.arange(3), timeout=timeout)
                assert time.monotonic() - t0 < timeout + 0.08, (timeout, time.monotonic() - t0)
            t0 = time.monotonic()
            try:
                late = ferry.Client(gw.url)
            except (ferry.Timeout, ferry.Disconnected):
                late = None  # refused at once is fine too
            made = time.monotonic() - t0
            if late is not None:
                try:
                    t1 = time.monotonic()
                    with pytest.raises((ferry.Timeout, ferry.Disconnected)):
                        late.call(np.arange(3), timeout=0.3)
                    assert time.monotonic() - t1 < 0.38, time.monotonic() - t1
                finally:
                    late.close()
            assert made < 0.4, made
        finally:
            os.kill(gw.proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 20
        while True:
            try:
                assert c.call(np.arange(3), timeout=5).tolist() == [0, 1, 2]
                break
            except (ferry.Disconnected, ferry.Timeout):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def test_a_half_sent_frame_and_an_idle_connection_are_closed(name, tmp_path):
    """--frame-timeout: a peer that sends half a frame and stops loses its connection (it
    cannot hold a connection slot forever); --idle-timeout: a connection with nothing in
    flight that sends nothing is closed, one waiting for a slow reply is not."""
    s = Served("tcp", name, tmp_path, workers=1, extra=["--frame-timeout", "1", "--idle-timeout", "1.5"])
    try:
        stalled = raw(s)
        stalled.sendall(hello(name))
        assert read_frame(stalled)[0] == WELCOME
        stalled.sendall(header(REQUEST, 1000, id_=1, arg=5_000_000_000) + b"\x00" * 100)  # and no more
        t0 = time.monotonic()
        assert read_frame(stalled)[0] == 0  # closed by the gateway
        assert 0.8 < time.monotonic() - t0 < 3.0, time.monotonic() - t0
        stalled.close()
        # A client waiting 2.5 s for its reply (past the idle timeout) keeps its connection.
        with ferry.Client(s.url) as c:
            out = c.call({"sleep": np.float64(2.5), "x": np.ones(2)}, timeout=10)
            np.testing.assert_array_equal(out["x"], np.ones(2))
            idle = raw(s)
            idle.sendall(hello(name))
            assert read_frame(idle)[0] == WELCOME
            t0 = time.monotonic()
            assert read_frame(idle)[0] == 0  # nothing in flight: closed after ~1.5 s
            assert 1.2 < time.monotonic() - t0 < 4.0, time.monotonic() - t0
            idle.close()
            # The client's own connection was closed the same way: its next call may fail with
            # Disconnected (the close raced it), and the one after reconnects.
            time.sleep(2.0)
            try:
                np.testing.assert_array_equal(c.call(np.arange(3), timeout=10), np.arange(3))
            except ferry.Disconnected:
                np.testing.assert_array_equal(c.call(np.arange(3), timeout=10), np.arange(3))
    finally:
        s.stop()


def _large_mixed(rng, i):
    """Tensors above and below the sizes sent from the caller's memory (64 KiB) and received
    in parts (256 KiB), interleaved, with content that identifies the call."""
    return {"a": rng.integers(0, 255, size=300_000 + i, dtype=np.uint8),
            "small": np.arange(i, i + 5, dtype=np.int32),
            "b": rng.standard_normal(40_000 + i),                       # 320 KB float64
            "c": rng.integers(0, 1 << 30, size=20_000, dtype=np.int64),  # 160 KB: sent as it is, not streamed alone
            "tail": np.full(3, i, np.uint16)}


@pytest.fixture
def big_gw(name, tmp_path):
    """A gateway whose slots take a large request and its echo."""
    s = Served("tcp", name, tmp_path, workers=2, slot_size="4M")
    yield s
    s.stop()


def test_large_requests_go_from_the_callers_memory_into_the_slot_exactly(big_gw):
    """Large tensors are sent from the caller's arrays (scatter-gather) and the gateway copies
    each part into the slot as it arrives: every byte must land where it belongs, for one
    caller and for many at once (more than the channel's slots: some wait in a buffer)."""
    gw = big_gw
    rng = np.random.default_rng(11)
    with ferry.Client(gw.url) as c:
        for i in range(5):
            x = _large_mixed(rng, i)
            out = c.call(x, timeout=30)
            assert sorted(out) == sorted(x)
            for k in x:
                np.testing.assert_array_equal(out[k], x[k])
                assert out[k].dtype == x[k].dtype
            # A 1-D array alone, just over and just under the streaming size.
            for n in (256 << 10, (256 << 10) - 1, 900_000):
                y = rng.integers(0, 255, size=n, dtype=np.uint8)
                np.testing.assert_array_equal(c.call(y, timeout=30), y)
    def caller(seed):
        r = np.random.default_rng(seed)
        with ferry.Client(gw.url) as c:
            for i in range(6):
                x = _large_mixed(r, i)
                out = c.call(x, timeout=60)
                for k in x:
                    np.testing.assert_array_equal(out[k], x[k])

    errors = run_in_threads(caller, [(s,) for s in range(12)])
    assert not errors, errors[0]
    census = ferry.serving.census(f"shm://{gw.name}")
    assert census["free"] == sum(census.values()), census


def test_a_large_request_cut_off_or_stalled_gives_its_slot_back(name, tmp_path):
    """A large request takes a slot when its first part comes; a client that dies or stops
    halfway must not keep it (closed connection, or --frame-timeout)."""
    s = Served("tcp", name, tmp_path, workers=1, extra=["--frame-timeout", "1"], slot_size="4M")
    try:
        shm = f"shm://{name}"
        slots = sum(ferry.serving.census(shm).values())
        cut = []
        for i in range(slots + 2):  # more than the slots: each must come back
            k = raw(s)
            k.sendall(hello(name))
            assert read_frame(k)[0] == WELCOME
            k.sendall(header(REQUEST, 600_000, id_=1, arg=10**10) + b"\1" * 200_000)
            cut.append(k)
        time.sleep(0.3)
        for k in cut:
            k.close()  # killed mid-body
        stalled = raw(s)
        stalled.sendall(hello(name))
        assert read_frame(stalled)[0] == WELCOME
        stalled.sendall(header(REQUEST, 600_000, id_=2, arg=10**10) + b"\1" * 300_000)  # and no more
        t0 = time.monotonic()
        assert read_frame(stalled)[0] == 0  # closed by the gateway at --frame-timeout
        assert 0.8 < time.monotonic() - t0 < 3.0
        stalled.close()
        deadline = time.monotonic() + 5
        while ferry.serving.census(shm)["free"] < slots and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ferry.serving.census(shm)["free"] == slots
        big = np.random.default_rng(3).integers(0, 255, size=700_000, dtype=np.uint8)
        with ferry.Client(s.url) as c:
            np.testing.assert_array_equal(c.call(big, timeout=30), big)
    finally:
        s.stop()


def test_a_large_compressed_request_is_expanded_not_forwarded(big_gw):
    """A large request with compressed tensors is received whole (not into a slot: workers
    never see encoded tensors) and expanded, like a small one."""
    with ferry.Client(big_gw.url + "?compress=zstd") as c:
        noise = np.random.default_rng(8).integers(0, 255, size=400_000, dtype=np.uint8)  # incompressible: plain
        x = np.zeros((200, 200), np.float64)                                            # compressible
        x[::5] = 1.5
        out = c.call({"noise": noise, "x": x}, timeout=30)
        np.testing.assert_array_equal(out["noise"], noise)
        np.testing.assert_array_equal(out["x"], x)
