"""redis:// across many machines: real redis-server processes on loopback ports started by
each test, and `ferry serve --redis` nodes as real processes with Python workers. The
conformance suite (test_conformance.py) runs over redis:// too; this file covers what only a
distributed channel has: several nodes, takeover of a dead node's work, exactly-once
replies, the dead-letter stream, the result cache, AUTH, and Redis going away."""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

import ferry
from conftest import FERRY, MODELS, RedisServer, env, free_port, sigstop, wait_served

MODEL = os.path.join(MODELS, "testmodel.py")


class Node:
    """One `ferry serve --redis` node (its own local shm channel and workers)."""

    def __init__(self, url: str, tmp_path, workers: int = 1, extra=(), model: str = MODEL, environ: dict | None = None):
        self.log = open(tmp_path / f"node-{time.monotonic_ns()}.log", "w+")
        self.proc = subprocess.Popen([FERRY, "serve", model, "--redis", url, "--workers", str(workers), "--slot-size", "1M",
                                      "--hang-timeout", "0", *extra], env=environ or env(), stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while "node joined" not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = self.output()
                self.stop()
                raise RuntimeError("node did not join: " + out)
            time.sleep(0.05)
        self.id = self.output().split("node=")[1].split()[0]

    def output(self) -> str:
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def workers(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def cluster(tmp_path, name):
    """A redis-server and a way to start nodes; everything stopped at the end."""

    class Cluster:
        def __init__(self):
            self.redis = RedisServer(tmp_path)
            self.url = f"redis://127.0.0.1:{self.redis.port}/{name}"
            self.name = name
            self.nodes: list[Node] = []

        def node(self, **kw) -> Node:
            n = Node(self.url, tmp_path, **kw)
            self.nodes.append(n)
            return n

        def close(self):
            for n in self.nodes:
                n.stop()
                # A node killed with SIGKILL cannot remove its local channel; the next node
                # started on this host would (see ferry serve --redis), none may come here.
                for path in glob.glob(f"/dev/shm/ferry.{os.geteuid()}.ferry-node-{n.proc.pid}-*"):
                    os.unlink(path)
            self.redis.stop()

    c = Cluster()
    try:
        yield c
    finally:
        c.close()


def calls_in_threads(url, requests, timeout=30):
    """Runs each request from its own thread and client; returns the results (or errors) in order."""
    out = [None] * len(requests)

    def run(i):
        try:
            with ferry.Client(url) as c:
                out[i] = c.call(requests[i], timeout=timeout)
        except Exception as e:  # noqa: BLE001 - the test inspects it
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 10)
    return out


def checked_load(url, seed, max_payload, max_sleep_us, timeout, tolerated=()):
    """Four client threads calling `url` until the returned event is set, each reply checked
    (its tag and its payload's byte sum). Returns (stop event, results, threads); results
    counts "ok" and "wrong" and lists the errors of the `tolerated` kinds (any other error
    is listed with its text, so a test that tolerates nothing sees it)."""
    stop = threading.Event()
    results = {"ok": 0, "wrong": 0, "errors": []}
    lock = threading.Lock()

    def client(k):
        rng = np.random.default_rng(seed + k)
        with ferry.Client(url + "?cache=0") as c:
            i = 0
            while not stop.is_set():
                payload = rng.integers(0, 255, size=int(rng.integers(1, max_payload)), dtype=np.uint8)
                tag = np.array([k * 1_000_000 + i])
                i += 1
                try:
                    out = c.call({"tag": tag, "payload": payload, "sleep_us": np.array(int(rng.integers(0, max_sleep_us)))}, timeout=timeout)
                    good = int(out["tag"][0]) == int(tag[0]) and int(out["sum"]) == int(payload.sum(dtype=np.uint64))
                    with lock:
                        results["ok" if good else "wrong"] += 1
                except ferry.FerryError as e:
                    with lock:
                        results["errors"].append(type(e).__name__ if isinstance(e, tolerated) else f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    return stop, results, threads


def test_several_nodes_share_the_load(cluster):
    nodes = [cluster.node() for _ in range(3)]
    wait_served(cluster.url)
    worker_pids = {p for n in nodes for p in n.workers()}
    out = calls_in_threads(cluster.url, [{"sleep": np.array(0.4), "id": np.array([i])} for i in range(6)])
    assert all(isinstance(o, dict) for o in out), out
    assert [int(o["id"][0]) for o in out] == list(range(6))
    pids = {int(o["pid"]) for o in out}
    # Each node takes only what its one worker can start: all three ran some of the six.
    assert pids <= worker_pids and len(pids) == 3, (pids, worker_pids)


def test_requests_queued_before_any_node_are_served(cluster):
    box = {}
    t = threading.Thread(target=lambda: box.update(out=calls_in_threads(cluster.url, [{"id": np.array([i]), "pad": np.zeros(1)} for i in range(4)])))
    t.start()
    time.sleep(0.5)
    cluster.node()
    t.join(40)
    assert [int(o["id"][0]) for o in box["out"]] == [0, 1, 2, 3], box


def test_killed_node_holding_work_every_request_answered_once(cluster, tmp_path):
    a = cluster.node(extra=["--claim-idle", "1"])
    wait_served(cluster.url)
    runs = tmp_path / "runs.log"
    # Each request runs 3 s: node A is still on its first when B has joined (a node joins once
    # its worker has loaded the model) and A is killed.
    requests = [{"sleep": np.array(3.0), "id": np.array([i]), "log": np.array(f"{runs}.{i}")} for i in range(4)]
    box = {}
    t = threading.Thread(target=lambda: box.update(out=calls_in_threads(cluster.url, requests, timeout=40)))
    t.start()
    time.sleep(0.5)  # node A took one (its only worker is busy); three wait in the stream
    b = cluster.node(extra=["--claim-idle", "1"])
    a.stop(signal.SIGKILL)
    t.join(60)
    out = box["out"]
    assert all(isinstance(o, dict) for o in out), out
    assert [int(o["id"][0]) for o in out] == [0, 1, 2, 3]
    assert {int(o["pid"]) for o in out} <= set(b.workers()), b.output()  # every answer came from the survivor
    assert "took over entry" in b.output()
    assert cluster.redis.cli("XLEN", f"ferry:{{{cluster.name}}}:requests") == "0"
    assert cluster.redis.cli("XPENDING", f"ferry:{{{cluster.name}}}:requests", cluster.name).startswith("0")


def test_a_request_run_twice_is_answered_once(cluster, tmp_path):
    a = cluster.node(extra=["--claim-idle", "0.5"])
    wait_served(cluster.url)
    log = tmp_path / "twice.log"
    with ferry.Client(cluster.url) as c:
        call = c.send({"sleep": np.array(1.5), "id": np.array([7]), "log": np.array(str(log))}, timeout=30)
        time.sleep(0.4)
        os.kill(a.proc.pid, signal.SIGSTOP)  # node A stalls holding the entry (its worker runs on)
        b = cluster.node(extra=["--claim-idle", "0.5"])
        out = call.result()  # answered by B after it took the entry over
        assert int(out["id"][0]) == 7
        os.kill(a.proc.pid, signal.SIGCONT)  # A wakes up and finishes its own run too
        deadline = time.monotonic() + 10
        while len(open(log).read().split()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(open(log).read().split()) == 2  # it really ran twice
        time.sleep(0.5)
        # A's late second answer is dropped by the client (request 7 is no longer pending):
        # the next calls each get their own answer, and nothing is left over.
        for i in range(5):
            assert int(c.call({"id": np.array([100 + i]), "pad": np.zeros(1)})["id"][0]) == 100 + i
        keys = cluster.redis.cli("--scan", "--pattern", f"ferry:{{{cluster.name}}}:reply:*").split()
        assert all(cluster.redis.cli("LLEN", k) == "0" for k in keys), keys
    assert b.proc.poll() is None


def test_malformed_entries_are_dead_lettered_and_the_node_lives_on(cluster):
    cluster.node()
    wait_served(cluster.url)
    stream = f"ferry:{{{cluster.name}}}:requests"
    reply = f"ferry:{{{cluster.name}}}:reply:abc123"
    cluster.redis.cli("XADD", stream, "*", "m", "not a ferry message", "r", reply, "i", "5", "t", "10000")
    cluster.redis.cli("XADD", stream, "*", "x", "y")
    cluster.redis.cli("XADD", stream, "*", "m", "x", "r", "some:other:key", "i", "1", "t", "1000")
    got = cluster.redis.cli("BLPOP", reply, "10")
    assert got.startswith(reply), got  # the client of the first one gets an error reply
    deadline = time.monotonic() + 10
    while cluster.redis.cli("XLEN", f"ferry:{{{cluster.name}}}:dead") != "3" and time.monotonic() < deadline:
        time.sleep(0.05)
    dead = cluster.redis.cli("XRANGE", f"ferry:{{{cluster.name}}}:dead", "-", "+")
    assert "invalid message" in dead and "malformed entry" in dead, dead
    assert cluster.redis.cli("EXISTS", "some:other:key") == "0"  # never written to a key an entry names
    with ferry.Client(cluster.url) as c:
        np.testing.assert_array_equal(c.call(np.arange(3)), np.arange(3))


def test_the_dead_letter_stream_is_capped(cluster):
    """--max-dead-letters bounds ferry:{NAME}:dead (MAXLEN ~: Redis trims whole nodes of at
    most 100 entries, so it may hold up to ~100 more than the cap): 400 garbage entries leave
    far fewer behind, and the node lives on."""
    cluster.node(extra=["--max-dead-letters", "20"])
    wait_served(cluster.url)
    stream = f"ferry:{{{cluster.name}}}:requests"
    commands = "".join(f"XADD {stream} * m garbage{i} r ferry:{{{cluster.name}}}:reply:x{i} i 1 t 1000\n" for i in range(400))
    subprocess.run(["redis-cli", "-p", str(cluster.redis.port)], input=commands, capture_output=True, text=True, timeout=60, check=True)
    dead = f"ferry:{{{cluster.name}}}:dead"
    deadline = time.monotonic() + 20
    while cluster.redis.cli("XLEN", stream) != "0" or cluster.redis.cli("XPENDING", stream, cluster.name).split()[0] != "0":
        assert time.monotonic() < deadline, cluster.redis.cli("XLEN", stream)
        time.sleep(0.1)
    assert int(cluster.redis.cli("XLEN", dead)) <= 20 + 100
    with ferry.Client(cluster.url) as c:
        np.testing.assert_array_equal(c.call(np.arange(3)), np.arange(3))


def test_too_many_deliveries_go_to_the_dead_letter_stream(cluster):
    a = cluster.node(extra=["--claim-idle", "0.5", "--max-deliveries", "1"])
    wait_served(cluster.url)
    with ferry.Client(cluster.url) as c:
        call = c.send({"sleep": np.array(30.0), "id": np.array([1])}, timeout=30)
        time.sleep(0.5)
        a.stop(signal.SIGKILL)
        cluster.node(extra=["--claim-idle", "0.5", "--max-deliveries", "1"])
        t0 = time.monotonic()
        with pytest.raises(ferry.WorkerDied) as e:
            call.result()
        assert time.monotonic() - t0 < 10
        assert "delivered 2 times" in str(e.value)
    dead = cluster.redis.cli("XRANGE", f"ferry:{{{cluster.name}}}:dead", "-", "+")
    assert "delivered 2 times" in dead


def test_result_cache_hits_skip_the_workers(cluster, tmp_path):
    cluster.node(extra=["--cache-ttl", "60"])
    wait_served(cluster.url)
    log = tmp_path / "cache.log"
    request = {"sleep": np.array(0.3), "id": np.array([3]), "log": np.array(str(log))}
    with ferry.Client(cluster.url) as c:
        first = c.call(request)
        for _ in range(5):
            again = c.call(request)
            assert int(again["id"][0]) == 3 and int(again["pid"]) == int(first["pid"])
        assert len(open(log).read().split()) == 1  # one run, five hits
        # The hits are counted where an operator looks (the clients answered them themselves).
        stats = json.loads(subprocess.run([FERRY, "stats", cluster.url, "--json", "--count", "1", "--interval", "0.2"], capture_output=True, text=True,
                                          timeout=30).stdout.splitlines()[-1])
        assert stats["cache_hits"] >= 5, stats
        other = c.call({**request, "id": np.array([4])})  # other bytes: another key
        assert int(other["id"][0]) == 4
        assert len(open(log).read().split()) == 2
        _, meta = c.call_message(request, metadata={"ferry.cache": "off"})  # off for this call
        assert len(open(log).read().split()) == 3
    with ferry.Client(cluster.url + "?cache=0") as c:  # off for this client
        c.call(request)
        assert len(open(log).read().split()) == 4


def test_cache_does_identical_concurrent_work_once(cluster, tmp_path):
    cluster.node(workers=2, extra=["--cache-ttl", "60"])
    cluster.node(workers=2, extra=["--cache-ttl", "60"])
    wait_served(cluster.url)
    log = tmp_path / "once.log"
    request = {"sleep": np.array(0.8), "id": np.array([9]), "log": np.array(str(log))}
    out = calls_in_threads(cluster.url, [request] * 6)
    assert all(isinstance(o, dict) and int(o["id"][0]) == 9 for o in out), out
    assert len(open(log).read().split()) == 1


def test_cache_is_bounded(cluster):
    cluster.node(extra=["--cache-ttl", "60", "--cache-max-entries", "5"])
    wait_served(cluster.url)
    with ferry.Client(cluster.url) as c:
        for i in range(20):  # 20 new replies into a cache of 5
            c.call({"id": np.array([i]), "pad": np.zeros(1)})
    keys = cluster.redis.cli("--scan", "--pattern", f"ferry:{{{cluster.name}}}:cache:*").split()
    assert len(keys) == 5, keys
    ttl = int(cluster.redis.cli("PTTL", keys[0]))
    assert 0 < ttl <= 60_000


def test_errors_are_not_cached(cluster):
    cluster.node(extra=["--cache-ttl", "60"])
    wait_served(cluster.url)
    pattern = f"ferry:{{{cluster.name}}}:cache:*"
    before = cluster.redis.cli("--scan", "--pattern", pattern)  # wait_served's ping is cached
    with ferry.Client(cluster.url) as c:
        for _ in range(2):
            with pytest.raises(ferry.RemoteError):
                c.call({"raise": np.array("boom"), "pad": np.zeros(1)})
    assert cluster.redis.cli("--scan", "--pattern", pattern) == before


def test_no_node_is_a_clear_error(cluster):
    with ferry.Client(cluster.url) as c:
        t0 = time.monotonic()
        with pytest.raises(ferry.NoServer) as e:
            c.call(np.arange(2), timeout=0.5)
        assert time.monotonic() - t0 < 3
        assert "no node serves" in str(e.value)


def test_redis_down_is_a_clear_error(tmp_path, name):
    t0 = time.monotonic()
    from conftest import free_port

    with pytest.raises(ferry.Disconnected) as e:
        ferry.Client(f"redis://127.0.0.1:{free_port()}/{name}")
    assert time.monotonic() - t0 < 5
    assert "Redis" in str(e.value)


def test_redis_restarted_mid_run(cluster):
    cluster.node()
    wait_served(cluster.url)
    with ferry.Client(cluster.url) as c:
        assert int(c.call({"id": np.array([1]), "pad": np.zeros(1)})["id"][0]) == 1
        box = {}
        t = threading.Thread(target=lambda: box.update(r=_catch(lambda: c.call({"sleep": np.array(2.0), "id": np.array([2])}, timeout=20))))
        t.start()
        time.sleep(0.5)
        cluster.redis.stop()  # the request in flight, and its reply list, are gone with it
        t.join(25)
        assert isinstance(box["r"], (ferry.Disconnected, ferry.Timeout)), box
        t0 = time.monotonic()
        with pytest.raises(ferry.Disconnected):
            c.call({"id": np.array([3]), "pad": np.zeros(1)}, timeout=5)
        assert time.monotonic() - t0 < 5  # an error, not a hang
        cluster.redis.start()  # same port, empty
        deadline = time.monotonic() + 20
        while True:
            try:
                assert int(c.call({"id": np.array([4]), "pad": np.zeros(1)}, timeout=2)["id"][0]) == 4
                break
            except (ferry.Disconnected, ferry.NoServer, ferry.Timeout):
                assert time.monotonic() < deadline, "the node did not come back"
                time.sleep(0.2)


def _catch(f):
    try:
        return f()
    except Exception as e:  # noqa: BLE001
        return e


def test_sigterm_drains_what_the_node_holds(cluster):
    n = cluster.node()
    wait_served(cluster.url)
    with ferry.Client(cluster.url) as c:
        call = c.send({"sleep": np.array(1.0), "id": np.array([5])}, timeout=20)
        time.sleep(0.4)
        n.proc.send_signal(signal.SIGTERM)
        assert int(call.result()["id"][0]) == 5
    assert n.proc.wait(20) == 0
    assert cluster.redis.cli("ZCARD", f"ferry:{{{cluster.name}}}:nodes") == "0"


def test_password_and_acl_user(tmp_path, name):
    r = RedisServer(tmp_path, extra=["--requirepass", "s3cret", "--user", "alice", "on", ">pw-a", "~*", "&*", "+@all"])
    nodes = []
    try:
        nodes.append(Node(f"redis://:s3cret@127.0.0.1:{r.port}/{name}", tmp_path))
        for url in (f"redis://:s3cret@127.0.0.1:{r.port}/{name}", f"redis://alice:pw-a@127.0.0.1:{r.port}/{name}"):
            wait_served(url)
            with ferry.Client(url) as c:
                np.testing.assert_array_equal(c.call(np.arange(4)), np.arange(4))
        for bad in (f"redis://127.0.0.1:{r.port}/{name}", f"redis://alice:wrong-pw@127.0.0.1:{r.port}/{name}"):
            with pytest.raises(ferry.PermissionDenied) as e:
                with ferry.Client(bad) as c:
                    c.call(np.arange(4), timeout=2)
            assert "wrong-pw" not in str(e.value)
    finally:
        for n in nodes:
            n.stop()
        r.stop()


def test_password_out_of_the_url_from_a_file_or_the_environment(tmp_path, name):
    """The Redis password need not be in the URL (visible in `ps`): `password_file=` (a file
    of mode 0600) for clients and nodes, or REDISCLI_AUTH in the environment as redis-cli
    takes it."""
    r = RedisServer(tmp_path, extra=["--requirepass", "s3cret-pw"])
    secret = tmp_path / "redis.pw"
    secret.write_text("s3cret-pw\n")
    secret.chmod(0o600)
    node = None
    try:
        e = env()
        e["REDISCLI_AUTH"] = "s3cret-pw"
        plain = f"redis://127.0.0.1:{r.port}/{name}"
        node = Node(plain, tmp_path, environ=e)
        assert "s3cret" not in open(f"/proc/{node.proc.pid}/cmdline").read()
        url = f"{plain}?password_file={secret}"
        wait_served(url)
        with ferry.Client(url) as c:
            np.testing.assert_array_equal(c.call(np.arange(4)), np.arange(4))
        secret.chmod(0o644)
        with pytest.raises(ferry.PermissionDenied, match="chmod 600"):
            ferry.Client(url)
        with pytest.raises(ferry.InvalidArgument, match="not both"):
            ferry.Client(f"redis://:x@127.0.0.1:{r.port}/{name}?password_file={secret}")
    finally:
        if node:
            node.stop()
        r.stop()


def test_tls_to_redis(tmp_path, name):
    """Redis with TLS only (no plain port): nodes and clients use rediss:// with the
    authority's certificate; a client that does not trust it, or speaks plain text, is refused."""
    from test_tcp import make_certificate

    cert, key = make_certificate(tmp_path)
    other, _ = make_certificate(tmp_path, cn="other", san="DNS:other")
    port = free_port()
    r = RedisServer(tmp_path, port=port, extra=["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
                                                "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"])
    nodes = []
    try:
        url = f"rediss://127.0.0.1:{port}/{name}?ca_file={cert}"
        nodes.append(Node(url, tmp_path))
        wait_served(url)
        with ferry.Client(url) as c:
            x = np.random.default_rng(5).integers(0, 255, size=(300, 400), dtype=np.uint8)  # 120 KB each way
            for _ in range(5):
                np.testing.assert_array_equal(c.call(x), x)
        with pytest.raises(ferry.PermissionDenied) as e:
            ferry.Client(f"rediss://127.0.0.1:{port}/{name}?ca_file={other}")
        assert "TLS certificate is not trusted" in str(e.value) and "Redis" in str(e.value)
        with pytest.raises((ferry.Disconnected, ferry.Timeout, ferry.ProtocolError)):
            with ferry.Client(f"redis://127.0.0.1:{port}/{name}?connect_timeout_ms=1000") as c:
                c.call(np.arange(3), timeout=2)
    finally:
        for n in nodes:
            n.stop()
        r.stop()


def test_bad_urls_are_refused(name):
    for url in (f"redis://127.0.0.1/{name}", "redis://127.0.0.1:6379", f"redis://127.0.0.1:6379/{name}?cache=maybe",
                f"redis://:@127.0.0.1:6379/{name}", f"redis://127.0.0.1:6379/{name}?slots=2"):
        with pytest.raises(ferry.InvalidArgument):
            ferry.Client(url)


def test_redis_memory_stays_bounded(cluster):
    n = cluster.node(extra=["--max-backlog", "50", "--cache-ttl", "60"])
    wait_served(cluster.url)
    with ferry.Client(cluster.url) as c:
        for i in range(30):
            c.call({"id": np.array([i % 10]), "pad": np.zeros(1)})
    # Every key but the channel's few fixed ones expires: replies, cache entries, locks.
    fixed = {f"ferry:{{{cluster.name}}}:{k}" for k in ("requests", "info", "nodes", "cache-index", "dead", "stats")}
    for key in cluster.redis.cli("--scan", "--pattern", f"ferry:{{{cluster.name}}}:*").split():
        assert key in fixed or int(cluster.redis.cli("PTTL", key)) > 0, key
    assert cluster.redis.cli("XLEN", f"ferry:{{{cluster.name}}}:requests") == "0"  # answered entries are deleted
    n.stop()
    # No node: requests pile up only to the announced backlog (MAXLEN ~ trims whole stream
    # nodes of 100 entries), and each caller gets a clear error at its deadline.
    with ferry.Client(cluster.url) as c:
        calls = [c.send({"id": np.array([1000 + i]), "pad": np.zeros(1)}, timeout=1) for i in range(400)]  # not cached
        for call in calls:
            with pytest.raises(ferry.NoServer):
                call.result()
    assert int(cluster.redis.cli("XLEN", f"ferry:{{{cluster.name}}}:requests")) < 200


def _free_cluster_port() -> int:
    """A port whose cluster bus port (port + 10000) is free too."""
    import socket
    from conftest import free_port

    for _ in range(50):
        p = free_port()
        if p + 10000 >= 65536:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 10000))
            except OSError:
                continue
        return p
    raise RuntimeError("no free port pair")


def test_redis_cluster_any_entry_node(tmp_path, name):
    """On a three-node Redis Cluster every key of the channel is in one hash slot ({NAME});
    clients and nodes pointed at any cluster node follow MOVED to its owner."""
    servers = []
    nodes = []
    try:
        for i in range(3):
            port = _free_cluster_port()
            d = tmp_path / f"c{i}"
            d.mkdir()
            servers.append(RedisServer(d, port=port, extra=["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]))
        out = subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{s.port}" for s in servers], "--cluster-replicas", "0",
                              "--cluster-yes"], capture_output=True, timeout=60)
        assert out.returncode == 0, out.stdout.decode(errors="replace") + out.stderr.decode(errors="replace")
        deadline = time.monotonic() + 30
        while not all("cluster_state:ok" in s.cli("CLUSTER", "INFO") for s in servers):
            assert time.monotonic() < deadline, "the cluster did not become ready"
            time.sleep(0.1)
        nodes.append(Node(f"redis://127.0.0.1:{servers[0].port}/{name}", tmp_path))
        for s in servers:
            url = f"redis://127.0.0.1:{s.port}/{name}"
            wait_served(url)
            with ferry.Client(url) as c:
                for i in range(5):
                    assert int(c.call({"id": np.array([i]), "pad": np.zeros(1)})["id"][0]) == i
    finally:
        for n in nodes:
            n.stop()
        for s in servers:
            s.stop()


def test_nodes_killed_under_load_never_a_wrong_answer(cluster):
    """Four clients call through nodes that are SIGKILLed and replaced under them: every
    reply that comes back is the right one for its request (checked byte sums), every call
    ends (a reply or a clear error), and most are answered."""
    live = [cluster.node(extra=["--claim-idle", "0.5"]) for _ in range(2)]
    wait_served(cluster.url)
    stop, results, threads = checked_load(cluster.url, seed=0, max_payload=20000, max_sleep_us=3000, timeout=15,
                                          tolerated=(ferry.WorkerDied, ferry.Timeout, ferry.NoServer))
    try:
        for _ in range(4):
            time.sleep(1.0)
            victim = live.pop(0)
            victim.stop(signal.SIGKILL)
            live.append(cluster.node(extra=["--claim-idle", "0.5"]))
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert results["wrong"] == 0, results
    assert all(":" not in e for e in results["errors"]), results  # only the tolerated kinds
    assert results["ok"] > 100 and len(results["errors"]) <= results["ok"] // 10, results


def test_stats_show_the_channel_and_its_nodes(cluster):
    import json

    a = cluster.node(extra=["--cache-ttl", "60"])
    cluster.node()
    wait_served(cluster.url)
    with ferry.Client(cluster.url) as c:
        for i in range(10):
            c.call({"id": np.array([i]), "pad": np.zeros(1)})
        c.call({"id": np.array([0]), "pad": np.zeros(1)})
    out = subprocess.run([FERRY, "stats", cluster.url, "--json", "--interval", "1.5"], capture_output=True, text=True, timeout=30, env=env())
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout.strip().splitlines()[-1])
    assert s["model"] == "testmodel" and s["backlog"] == 0 and s["in_flight"] == 0 and s["dead_letters"] == 0
    assert len(s["nodes"]) == 2 and a.id in {n["id"] for n in s["nodes"]}
    assert sum(n["served"] + n["cache_hits"] for n in s["nodes"]) >= 11
    assert all(n["last_seen_ms"] < 5000 for n in s["nodes"])
    table = subprocess.run([FERRY, "stats", cluster.url, "--interval", "0.2"], capture_output=True, text=True, timeout=30, env=env())
    assert "backlog 0" in table.stdout and a.id[:20] in table.stdout, table.stdout


# ---- failover in seconds (issue 27): a node whose heartbeat lapses for --node-timeout is
# declared dead by a live node, which takes its entries at once ----------------------------

NODE_TIMEOUT = 2.0
FAILOVER = ["--node-timeout", str(NODE_TIMEOUT), "--claim-idle", "60"]  # the idle rule alone would take a minute


def _holder(nodes, log, timeout=10.0):
    """The node whose worker is running the logged call (the model writes its pid)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = {int(p) for p in open(log).read().split()} if os.path.exists(log) else set()
        for n in nodes:
            if pids & set(n.workers()):
                return n
        time.sleep(0.02)
    raise AssertionError("no node took the call")


@pytest.mark.parametrize("fault", ["SIGKILL", "SIGSTOP"])
def test_a_dead_or_frozen_node_is_taken_over_within_the_node_timeout(cluster, tmp_path, fault):
    """The node running a call is killed (or frozen: what a stalled VM or a partition looks
    like): another node answers it within node timeout + 1 s (plus the model's own second
    run), long before the one-minute idle rule; a frozen node that wakes has lost the entry
    and its late answer is dropped, so the call is answered exactly once."""
    nodes = [cluster.node(extra=FAILOVER) for _ in range(2)]
    wait_served(cluster.url)
    log = tmp_path / "runs.log"
    model_seconds = 0.5
    with ferry.Client(cluster.url + "?cache=0") as c:
        call = c.send({"sleep": np.array(model_seconds), "id": np.array([42]), "log": np.array(str(log))}, timeout=30)
        victim = _holder(nodes, str(log))
        survivor = next(n for n in nodes if n is not victim)
        t0 = time.monotonic()
        os.kill(victim.proc.pid, getattr(signal, fault))
        out = call.result()
        took = time.monotonic() - t0
        print(f"{fault}: answered by the other node {took:.2f} s after the {fault} (node timeout {NODE_TIMEOUT} s, model {model_seconds} s)")
        assert int(out["id"][0]) == 42 and int(out["pid"]) in survivor.workers(), out
        assert took <= NODE_TIMEOUT + 1.0 + model_seconds + 0.5, f"answered {took:.2f}s after the {fault}"
        assert "declared dead" in survivor.output(), survivor.output()
        if fault == "SIGSTOP":
            os.kill(victim.proc.pid, signal.SIGCONT)  # it wakes and finishes its own run
            deadline = time.monotonic() + 10
            while "late answer was dropped" not in victim.output() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "late answer was dropped" in victim.output(), victim.output()
            assert len(open(log).read().split()) == 2  # it ran twice, and was answered once:
            keys = cluster.redis.cli("--scan", "--pattern", f"ferry:{{{cluster.name}}}:reply:*").split()
            assert all(cluster.redis.cli("LLEN", k) == "0" for k in keys), keys
            for i in range(3):  # and the woken node serves again
                assert int(c.call({"id": np.array([100 + i]), "pad": np.zeros(1)}, timeout=10)["id"][0]) == 100 + i
    assert cluster.redis.cli("XPENDING", f"ferry:{{{cluster.name}}}:requests", cluster.name).startswith("0")


FAILOVER_RUNS = int(os.environ.get("FERRY_FAILOVER_RUNS", "3"))  # `make soak` runs 50


def test_killing_one_of_two_nodes_under_load_fails_no_call(cluster):
    """Clients keep calls in flight (30 s deadlines) while one of two nodes is SIGKILLed and
    replaced, FAILOVER_RUNS times: every call is answered, and answered right."""
    live = [cluster.node(extra=FAILOVER) for _ in range(2)]
    wait_served(cluster.url)
    stop, results, threads = checked_load(cluster.url, seed=100, max_payload=5000, max_sleep_us=20000, timeout=30)
    try:
        for _ in range(FAILOVER_RUNS):
            time.sleep(0.5)
            victim = live.pop(0)
            victim.stop(signal.SIGKILL)
            live.append(cluster.node(extra=FAILOVER))
            time.sleep(NODE_TIMEOUT + 0.5)  # the dead node's calls move before the next kill
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert results["errors"] == [] and results["wrong"] == 0, results
    assert results["ok"] > 20 * FAILOVER_RUNS, results


def test_nodes_of_another_model_are_refused(cluster, tmp_path):
    """One model per channel over redis:// too: a node of another model (another file, or
    the same file edited: its hash is part of the version) is refused while the first serves;
    once no node of the first model is alive, the channel may change model."""
    a = cluster.node()
    wait_served(cluster.url)
    other = os.path.join(MODELS, "exact_echo.py")
    with pytest.raises(RuntimeError, match="one model per channel"):
        cluster.node(model=other)
    with ferry.Client(cluster.url) as c:
        assert int(c.call({"id": np.array([3]), "pad": np.zeros(1)}, timeout=10)["id"][0]) == 3
    a.stop(signal.SIGKILL)
    time.sleep(5.5)  # past the node timeout: nobody serves the first model any more
    cluster.node(model=other)


def test_calls_end_by_their_deadline_while_redis_is_stopped(cluster):
    """SIGSTOP is what a network partition looks like: Redis accepts connections and never
    answers. A call ends by its deadline (a few ms of slack), also a new client's first call."""
    cluster.node()
    wait_served(cluster.url)
    pid = cluster.redis.proc.pid
    with ferry.Client(cluster.url) as c:
        assert int(c.call({"id": np.array([1]), "pad": np.zeros(1)})["id"][0]) == 1
        sigstop(pid)
        try:
            for timeout in (0.2, 0.5, 0.2):
                t0 = time.monotonic()
                with pytest.raises((ferry.Timeout, ferry.Disconnected, ferry.NoServer)):
                    c.call({"id": np.array([2]), "pad": np.zeros(1)}, timeout=timeout)
                assert time.monotonic() - t0 < timeout + 0.08, (timeout, time.monotonic() - t0)
            t0 = time.monotonic()
            late = ferry.Client(cluster.url)  # made while Redis does not answer: no 3 s wait
            made = time.monotonic() - t0
            try:
                t1 = time.monotonic()
                with pytest.raises((ferry.Timeout, ferry.Disconnected, ferry.NoServer)):
                    late.call({"id": np.array([3]), "pad": np.zeros(1)}, timeout=0.3)
                assert time.monotonic() - t1 < 0.38, time.monotonic() - t1
            finally:
                late.close()
            assert made < 0.4, made
        finally:
            os.kill(pid, signal.SIGCONT)
        # Redis back: the same client serves again.
        deadline = time.monotonic() + 20
        while True:
            try:
                assert int(c.call({"id": np.array([4]), "pad": np.zeros(1)}, timeout=5)["id"][0]) == 4
                break
            except (ferry.Disconnected, ferry.Timeout):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
