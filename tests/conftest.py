"""Shared fixtures: real worker processes (always stopped), unique channel names, and a
check that every test leaves no segment in /dev/shm."""
from __future__ import annotations

import glob
import itertools
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON_DIR = os.path.join(ROOT, "python")
FERRY = os.path.join(ROOT, "bin", "ferry")
MODELS = os.path.join(ROOT, "tests", "models")
if PYTHON_DIR not in sys.path:
    sys.path.insert(0, PYTHON_DIR)

import ferry  # noqa: E402

_names = itertools.count()


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = PYTHON_DIR + os.pathsep + e.get("PYTHONPATH", "")
    e["OPENBLAS_NUM_THREADS"] = "1"
    return e


def seg_path(name: str, shared: bool = False) -> str:
    """Where channel `name`'s segment lives (docs/protocol.md: per user unless shared)."""
    return f"/dev/shm/ferry.shared.{name}" if shared else f"/dev/shm/ferry.{os.geteuid()}.{name}"


def segments() -> set:
    return set(glob.glob("/dev/shm/ferry.*")) | set(glob.glob("/dev/shm/ferry-stream.*"))


# Under pytest-xdist (`make test` runs the suite on several processes) other tests run at the same
# time, so each test checks the segments of the channels it names (`name` is unique to this
# process: t<pid>-<n>); the whole run is checked for every segment when it ends
# (pytest_sessionfinish), so a leak under any other name still fails the run.
_XDIST = "PYTEST_XDIST_WORKER" in os.environ


def _own(paths: set) -> set:
    if not _XDIST:
        return paths
    mine = f".t{os.getpid()}-"
    return {p for p in paths if mine in p}


@pytest.fixture(autouse=True)
def no_leaked_segments():
    before = segments()
    yield
    # Give exiting processes a moment to unlink.
    deadline = time.monotonic() + 3
    while _own(segments() - before) and time.monotonic() < deadline:
        time.sleep(0.02)
    leaked = _own(segments() - before)
    for path in leaked:
        os.unlink(path)
    assert not leaked, f"test left segments behind: {leaked}"


_session_segments: set = set()

# The longest tests (and test_examples.py, one xdist group with its module fixtures) go
# first, so the xdist workers end together instead of one waiting out a long test at
# the end. Order only: every test still runs.
_LONG_FIRST = (
    "test_examples.py::",
    "test_races.py::test_deadlines_and_kills_at_every_step",
    "test_races.py::test_the_same_through_the_tcp_gateway",
    "test_redis.py::test_killed_node_holding_work",
    "test_redis.py::test_killing_one_of_two_nodes",
    "test_cli.py::test_demo_recognises_digits",
    "test_redis.py::test_nodes_killed_under_load",
    "test_tcp.py::test_a_half_sent_frame",
    "test_redis.py::test_nodes_of_another_model",
    "test_streams.py::test_stress_readers_killed",
    "test_exact.py::test_arrow_tables_cross_exactly",
    "test_interop.py::test_a_model_with_torch_tensors",
)


def pytest_collection_modifyitems(session, config, items):
    def rank(item):
        for i, prefix in enumerate(_LONG_FIRST):
            if item.nodeid.startswith(prefix):
                return i
        return len(_LONG_FIRST)
    items.sort(key=rank)  # stable: the rest keep their order


def pytest_sessionstart(session):
    if not _XDIST:
        _session_segments.update(segments())


def pytest_sessionfinish(session, exitstatus):
    if _XDIST:
        return  # the controller checks once every worker is gone
    deadline = time.monotonic() + 3
    while segments() - _session_segments and time.monotonic() < deadline:
        time.sleep(0.05)
    leaked = segments() - _session_segments
    if leaked:
        for path in leaked:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        print(f"\nthe test run left segments behind: {sorted(leaked)}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def name():
    return f"t{os.getpid()}-{next(_names)}"


class Procs:
    """Starts processes and guarantees they are gone at the end of the test."""

    def __init__(self):
        self.items: list[subprocess.Popen] = []

    def start(self, args, **kw) -> subprocess.Popen:
        kw.setdefault("env", env())
        p = subprocess.Popen(args, **kw)
        self.items.append(p)
        return p

    def worker(self, url: str, model: str = os.path.join(MODELS, "testmodel.py"), wait: bool = True, extra=(),
               timeout: float = 20.0, **kw) -> subprocess.Popen:
        p = self.start([sys.executable, "-m", "ferry.worker", model, "--url", url, *extra], **kw)
        if wait:
            wait_served(url, p, timeout=timeout)
        return p

    def stop_all(self):
        for p in self.items:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                p.terminate()
        for p in self.items:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def wait_served(url: str, proc: subprocess.Popen | None = None, timeout: float = 20.0) -> None:
    """Waits until a client can connect and get an answer from some worker."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode} before serving {url}")
        try:
            with ferry.Client(url) as c:
                try:
                    c.call({"ping": ferry_ping()}, timeout=2)
                except ferry.RemoteError:
                    pass  # the model rejected the ping: still, a worker answered
                return
        except (ferry.NoServer, ferry.ChannelClosed, ferry.Timeout) as e:
            last = e
            time.sleep(0.05)
    raise TimeoutError(f"{url} not served within {timeout}s: {last}")


def sigstop(pid: int, timeout: float = 5.0) -> None:
    """SIGSTOP `pid` and return once every thread of it is stopped: kill(2) returns before the
    stop takes effect, and a test that then expects no answer must not race a process that
    is still running (seen under load: a stopped gateway answered one more call)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            states = []
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
        except (FileNotFoundError, ProcessLookupError):
            return  # gone: nothing runs either
        if states and all(st in "Tt" for st in states):
            return
        time.sleep(0.002)
    raise AssertionError(f"process {pid} did not stop within {timeout} s")


def run_in_threads(fn, args_list, timeout: float = 120) -> list:
    """Runs fn(*args) on one thread per entry of `args_list`, all at once; returns the
    exceptions they raised (an empty list when every one finished cleanly)."""
    import threading

    errors = []

    def run(*args):
        try:
            fn(*args)
        except BaseException as e:  # noqa: BLE001 - returned to the test
            errors.append(e)

    threads = [threading.Thread(target=run, args=a) for a in args_list]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return errors


def call_in_thread(client, inputs, timeout):
    """Runs client.call in a thread; returns (thread, box) where box gets "value" or "error"
    and "seconds"."""
    import threading

    box = {}

    def run():
        t0 = time.monotonic()
        try:
            box["value"] = client.call(inputs, timeout=timeout)
        except Exception as e:  # noqa: BLE001 - the test inspects it
            box["error"] = e
        box["seconds"] = time.monotonic() - t0

    t = threading.Thread(target=run)
    t.start()
    return t, box


def ferry_ping():
    import numpy as np

    return np.zeros(1, dtype=np.uint8)


@pytest.fixture
def procs():
    ps = Procs()
    yield ps
    ps.stop_all()


@pytest.fixture(autouse=True)
def no_stray_children():
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        out = subprocess.run(["pgrep", "-P", str(os.getpid())], capture_output=True, text=True).stdout.split()
        live = [p for p in out if os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split()[2] != "Z"]
        if not live:
            return
        time.sleep(0.05)
    pytest.fail(f"test left child processes running: {live}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A real redis-server on a loopback port, for this test only (no persistence)."""

    def __init__(self, tmp_path, extra=(), port: int | None = None):
        self.port = port or free_port()
        self.extra, self.dir = list(extra), tmp_path
        self.proc = None
        self.start()

    def start(self):
        import shutil

        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed (scripts/setup.sh installs it)")
        self.log = open(self.dir / f"redis-{self.port}.log", "a")
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.dir), *self.extra],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited: " + open(self.log.name).read())
            if "Ready to accept connections" in open(self.log.name).read():
                return
            time.sleep(0.02)
        raise TimeoutError("redis-server did not start")

    def cli(self, *args, password: str | None = None, user: str | None = None) -> str:
        cmd = ["redis-cli", "-p", str(self.port), "--no-auth-warning"]
        if user:
            cmd += ["--user", user]
        if password:
            cmd += ["-a", password]
        return subprocess.run(cmd + [str(a) for a in args], capture_output=True, timeout=10).stdout.decode("utf-8", "replace").strip()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.log.close()


@pytest.fixture
def redis_server(tmp_path):
    r = RedisServer(tmp_path)
    yield r
    r.stop()


@pytest.fixture(scope="session")
def native(tmp_path_factory):
    """Small C programs built against the library in this tree: a client that calls until a
    call fails (tests/native/call_loop.c), the C echo worker, the C stream example, a client
    that prints a reply's outputs by index (tests/native/outputs.c)."""
    out = tmp_path_factory.mktemp("native")
    inc, lib = os.path.join(ROOT, "include"), os.path.join(ROOT, ".build", "release")
    built = {}
    for prog, src in (("call_loop", "tests/native/call_loop.c"), ("echo_worker", "tests/native/echo_worker.c"),
                      ("stream", "examples/stream/stream.c"), ("outputs", "tests/native/outputs.c")):
        exe = out / prog
        subprocess.run(["gcc", "-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{inc}", "-o", str(exe),
                        os.path.join(ROOT, src), f"-L{lib}", f"-Wl,-rpath,{lib}", "-lferry"], check=True)
        built[prog] = str(exe)
    # The C++ twin of outputs.c, through ferry.hpp.
    exe = out / "outputs_cpp"
    subprocess.run(["g++", "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{inc}", "-o", str(exe),
                    os.path.join(ROOT, "tests/native/outputs.cpp"), f"-L{lib}", f"-Wl,-rpath,{lib}", "-lferry"], check=True)
    built["outputs_cpp"] = str(exe)
    return built
