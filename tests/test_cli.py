"""The `ferry` command: supervised serving, manual calls, the demo and the benchmark."""
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

import ferry
from conftest import seg_path, FERRY, MODELS, ROOT, wait_served


def worker_pids(supervisor_pid: int) -> set:
    out = subprocess.run(["pgrep", "-P", str(supervisor_pid)], capture_output=True, text=True).stdout
    pids = set()
    for pid in map(int, out.split()):
        # /usr/bin/env execs python in place, so the child pid is the worker.
        pids.add(pid)
    return pids


def wait_for(cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise TimeoutError("condition not met")


def test_serve_supervises_restarts_and_stops_workers(procs, name):
    sup = procs.start([FERRY, "serve", os.path.join(MODELS, "testmodel.py"), "--name", name, "--workers", "2"],
                      stderr=subprocess.PIPE, text=True)
    url = f"shm://{name}"
    wait_served(url, sup)
    first = wait_for(lambda: (lambda p: p if len(p) == 2 else None)(worker_pids(sup.pid)))
    with ferry.Client(url) as c:
        assert c.call(np.int32(3)) == 3
        victim = sorted(first)[0]
        os.kill(victim, signal.SIGKILL)
        # The supervisor notices and starts a replacement; the channel stays up meanwhile.
        after = wait_for(lambda: (lambda p: p if len(p) == 2 and victim not in p else None)(worker_pids(sup.pid)))
        assert len(after & first) == 1
        served = {int(c.call({"id": np.arange(2), "x": np.zeros(1)}, timeout=10)["pid"]) for _ in range(300)}
        assert served <= after
        # ferry stats counts the restart and the Python workers (two, once the replacement
        # has loaded its model and attached; the supervisor holding the channel is not one).
        def stats():
            out = subprocess.run([FERRY, "stats", name, "--json", "--interval", "0.1"], capture_output=True, text=True, timeout=30)
            row = json.loads(out.stdout)
            return row if row["workers"] == 2 else None
        row = wait_for(stats, timeout=20)
        assert row["restarts"] == 1 and row["answered"] >= 301, row
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=15) == 0
    for pid in after:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    assert not os.path.exists(seg_path(name))
    assert "restarting" in sup.stderr.read()


def test_call_sends_npy_files_and_saves_the_reply(procs, name, tmp_path):
    url = f"shm://{name}"
    procs.worker(url)
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "a.npy", a)
    out = subprocess.run([FERRY, "call", url, "--input", f"{tmp_path / 'a.npy'}", "--output", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "output: float32 [3, 4]" in out.stdout
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "output.npy"), a)


def test_call_without_server_fails_clearly(name, tmp_path):
    # A valid input, so the failure can only come from connecting.
    np.save(tmp_path / "x.npy", np.zeros(3, np.float32))
    out = subprocess.run([FERRY, "call", f"shm://{name}", "--input", str(tmp_path / "x.npy")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 69, (out.returncode, out.stderr)  # EX_UNAVAILABLE: documented in `ferry --help`
    assert "nothing serves it" in out.stderr, out.stderr


def test_exit_status_tells_usage_no_server_model_error_and_timeout_apart(procs, name, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros(3, np.float32))
    np.save(tmp_path / "boom.npy", np.array([7]))
    np.save(tmp_path / "slow.npy", np.array(2.0))
    assert "Exit status" in subprocess.run([FERRY, "--help"], capture_output=True, text=True, timeout=30).stdout
    usage = subprocess.run([FERRY, "call", f"shm://{name}", "--timeout", "soon"], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 64, usage.stderr
    url = f"shm://{name}"
    procs.worker(url)
    x = str(tmp_path / "x.npy")
    ok = subprocess.run([FERRY, "call", url, "--input", x], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    model_error = subprocess.run([FERRY, "call", url, "--input", f"raise={tmp_path / 'boom.npy'}", "--input", f"pad={x}"],
                                 capture_output=True, text=True, timeout=30)
    assert model_error.returncode == 70 and "7" in model_error.stderr, (model_error.returncode, model_error.stderr)
    late = subprocess.run([FERRY, "call", url, "--input", f"sleep={tmp_path / 'slow.npy'}", "--input", f"pad={x}", "--timeout", "200"],
                          capture_output=True, text=True, timeout=30)
    assert late.returncode == 75, (late.returncode, late.stderr)


def test_call_with_a_missing_input_file_names_it(name, tmp_path):
    out = subprocess.run([FERRY, "call", f"shm://{name}", "--input", str(tmp_path / "missing.npy")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "missing.npy" in out.stderr, out.stderr


def test_demo_recognises_digits_end_to_end(tmp_path):
    # --client-cpu -1 is the documented "no pinning" (a negative number, not an option).
    out = subprocess.run([FERRY, "demo", "--batches", "300", "--cache", str(tmp_path), "--client-cpu", "-1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if "accuracy" in l)
    accuracy = float(line.split()[1])
    assert accuracy > 90, out.stdout
    assert "p50" in out.stdout and "grids/s" in out.stdout


def test_bench_json_reports_latency_and_throughput():
    out = subprocess.run([FERRY, "bench", "--count", "500", "--warmup", "100", "--json", "--idle-seconds", "0.5", "--client-cpu", "-1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    for key in ("p50_us", "p99_us", "p999_us", "throughput_per_s", "mb_per_s", "settings", "idle_worker_cpu_percent"):
        assert key in r
    assert 0 < r["p50_us"] <= r["p99_us"] <= r["p999_us"]
    assert r["settings"]["payload_bytes"] == 9 * 28 * 28
    assert r["idle_worker_cpu_percent"] < 20


@pytest.mark.parametrize("model, wrong", [("bench/checksum_model.py", False), ("tests/models/stale_checksum.py", True)])
def test_bench_check_counts_every_wrong_reply(model, wrong):
    """Each call is stamped: a model answering right but stale is caught on every call."""
    out = subprocess.run([FERRY, "bench", "--count", "300", "--warmup", "50", "--json", "--check", "--model",
                          os.path.join(ROOT, model)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["checked"] is True
    # The stale answer is the unstamped probe's: it can match at most one stamped call.
    assert (r["wrong"] >= 349) if wrong else (r["wrong"] == 0), r


def test_stats_shows_what_a_channel_is_doing(procs, name):
    import json
    import threading
    url = f"shm://{name}"
    procs.worker(url)
    stop = threading.Event()

    def traffic():
        with ferry.Client(url) as c:
            while not stop.is_set():
                c.call(np.zeros(16, np.uint8))

    with ferry.Client(url) as c:
        with pytest.raises(ferry.RemoteError):
            c.call({"raise": np.array("boom"), "x": np.zeros(1)})
        with pytest.raises(ferry.Timeout):
            c.call({"sleep": np.float64(0.3), "x": np.zeros(1)}, timeout=0.05)
    t = threading.Thread(target=traffic)
    t.start()
    try:
        out = subprocess.run([FERRY, "stats", name, "--json", "--interval", "0.5", "--count", "2"],
                             capture_output=True, text=True, timeout=30)
    finally:
        stop.set()
        t.join()
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 2
    last = rows[-1]
    assert last["url"] == url and last["workers"] == 1 and last["slots"] == 8
    assert last["clients"] == 1  # the traffic thread's client; the stats command is not one
    assert last["requests_per_s"] > 100 and last["window_answered"] > 50
    assert last["failed"] >= 1 and last["timed_out"] >= 1
    assert 0 < last["p50_ns"] <= last["p99_ns"] < 50_000_000
    # The table form lists every channel of this user, this one included.
    table = subprocess.run([FERRY, "stats", "--interval", "0.2"], capture_output=True, text=True, timeout=30)
    assert table.returncode == 0 and name in table.stdout and "req/s" in table.stdout


def test_serve_exposes_prometheus_metrics_that_a_scrape_reads(procs, name):
    import socket
    import urllib.request
    with socket.socket() as s:  # a free loopback port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sup = procs.start([FERRY, "serve", os.path.join(MODELS, "testmodel.py"), "--name", name, "--metrics", f"127.0.0.1:{port}"],
                      stderr=subprocess.PIPE, text=True)
    url = f"shm://{name}"
    wait_served(url, sup)
    with ferry.Client(url) as c:
        for _ in range(50):
            c.call(np.zeros(4))
        with pytest.raises(ferry.RemoteError):
            c.call({"raise": np.array("boom"), "x": np.zeros(1)})
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    metrics = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            metrics[key] = float(value)
    label = f'{{channel="{name}"}}'
    assert metrics[f"ferry_requests_answered_total{label}"] >= 51  # the pings too
    assert metrics[f"ferry_requests_failed_total{label}"] == 1
    assert metrics[f"ferry_workers{label}"] == 1  # the Python worker (not the supervisor holding the channel)
    assert metrics[f"ferry_slots{label}"] == 8
    assert 0 < metrics[f"ferry_service_p50_seconds{label}"] < 1
    assert "# HELP ferry_requests_answered_total" in text and "# TYPE ferry_requests_answered_total counter" in text
    # Service time as a histogram: cumulative buckets that only go up, +Inf = count.
    assert "# TYPE ferry_service_seconds histogram" in text
    buckets = [(k, v) for k, v in metrics.items() if k.startswith("ferry_service_seconds_bucket")]
    counts = [v for _, v in buckets]
    assert len(buckets) == 18 and counts == sorted(counts), buckets
    assert metrics[f'ferry_service_seconds_bucket{{channel="{name}",le="+Inf"}}'] == metrics[f"ferry_service_seconds_count{label}"] >= 51
    assert 0 < metrics[f"ferry_service_seconds_sum{label}"] < 60
    # Anything but GET /metrics is a 404, and the server goes on.
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=10)
    again = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert f"ferry_requests_answered_total{label}" in again
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=15) == 0


def test_serve_refuses_a_bad_metrics_address(name):
    out = subprocess.run([FERRY, "serve", os.path.join(MODELS, "testmodel.py"), "--name", name, "--metrics", "nowhere"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "HOST:PORT" in out.stderr, out.stderr


LIFECYCLE = os.path.join(MODELS, "lifecycle.py")


@pytest.mark.parametrize("broken", ["raise", "syntax", "no-function"])
def test_a_model_that_fails_to_load_ends_serve_at_once_with_its_error(name, tmp_path, broken):
    model = tmp_path / "broken.py"
    model.write_text({"raise": "import numpy\nraise ValueError('cannot load weights.bin')\ndef predict(x):\n    return x\n",
                      "syntax": "def predict(x)\n    return x\n",
                      "no-function": "def other(x):\n    return x\n"}[broken])
    t0 = time.monotonic()
    out = subprocess.run([FERRY, "serve", str(model), "--name", name, "--workers", "2"], capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - t0
    assert out.returncode == 70, (out.returncode, out.stderr)
    assert elapsed < 10, elapsed
    want = {"raise": "ValueError: cannot load weights.bin", "syntax": "SyntaxError", "no-function": "AttributeError"}[broken]
    assert want in out.stderr and "failed to load" in out.stderr, out.stderr
    if broken == "raise":
        assert "Traceback (most recent call last)" in out.stderr and f"{model}\", line 2" in out.stderr
    assert not any(line.rstrip().endswith("] serving") for line in out.stderr.splitlines()), out.stderr
    assert not os.path.exists(seg_path(name))


def test_serve_says_serving_only_once_a_worker_is_ready(procs, name, tmp_path):
    model = tmp_path / "slow.py"
    model.write_text("import time\ntime.sleep(1.5)\ndef predict(x):\n    return x\n")
    sup = procs.start([FERRY, "serve", str(model), "--name", name], stderr=subprocess.PIPE, text=True)
    lines = []
    for line in sup.stderr:
        lines.append(line)
        if line.rstrip().endswith("] serving"):
            break
    # the moment it says so, a call is answered
    with ferry.Client(f"shm://{name}") as c:
        assert c.call(np.arange(3), timeout=1).tolist() == [0, 1, 2]
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=15) == 0


def test_crashing_workers_restart_with_backoff_clients_get_no_server_at_once_then_serve_gives_up(procs, name, tmp_path):
    import socket
    import urllib.error
    import urllib.request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mark = tmp_path / "mark"
    env = dict(os.environ, LIFECYCLE_MARK=str(mark))
    sup = procs.start([FERRY, "serve", LIFECYCLE, "--name", name, "--max-restarts", "2", "--restart-window", "60",
                       "--metrics", f"127.0.0.1:{port}"], stderr=subprocess.PIPE, text=True, env=env)
    url = f"shm://{name}"
    wait_served(url, sup)
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10).status == 200
    ready = urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10)
    assert ready.status == 200 and "1 worker" in ready.read().decode()
    with ferry.Client(url) as c:
        # The worker crashes; its replacement takes 3 s to load. Meanwhile a call is NoServer
        # at once (not a 10 s Timeout), naming why, and /readyz is 503 with the same reason.
        with pytest.raises(ferry.WorkerDied):
            c.call({"crash": np.float64(3), "x": np.zeros(1)})
        time.sleep(0.3)
        t0 = time.monotonic()
        with pytest.raises(ferry.NoServer) as e:
            c.call(np.zeros(1), timeout=10)
        assert time.monotonic() - t0 < 1.0
        assert "exited (status 3)" in str(e.value) and "about to crash" in str(e.value), str(e.value)
        with pytest.raises(urllib.error.HTTPError) as h:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert h.value.code == 503 and "exited (status 3)" in h.value.read().decode()
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10).status == 200
        wait_served(url, sup, timeout=20)  # the replacement loaded
        mark.unlink()
        # Two more crashes in the window: past --max-restarts 2, serve gives up.
        for _ in range(2):
            with pytest.raises((ferry.WorkerDied, ferry.NoServer)):
                c.call({"crash": np.float64(0), "x": np.zeros(1)})
            if sup.poll() is None:
                try:
                    wait_served(url, sup, timeout=10)
                except RuntimeError:
                    break
    assert sup.wait(timeout=30) == 70
    err = sup.stderr.read()
    assert "giving up" in err and "--max-restarts" in err, err


def test_logs_are_json_lines_with_the_workers_pid_and_model_errors_are_logged(procs, name):
    sup = procs.start([FERRY, "serve", LIFECYCLE, "--name", name, "--log-format", "json", "--threads", "3"],
                      stderr=subprocess.PIPE, text=True)
    url = f"shm://{name}"
    wait_served(url, sup)
    with ferry.Client(url) as c:
        with pytest.raises(ferry.RemoteError):
            c.call({"raise": np.array("boom"), "x": np.zeros(1)})
        env = c.call({"env": np.zeros(1), "x": np.zeros(1)})
    assert str(env["omp"]) == "3"  # --threads
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=15) == 0
    entries = [json.loads(line) for line in sup.stderr.read().splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "message"} <= set(e) for e in entries)
    started = [e for e in entries if e["message"] == "worker started"]
    errors = [e for e in entries if "ValueError: boom" in e["message"]]
    assert started and len(errors) == 1, entries
    assert errors[0]["level"] == "error" and errors[0]["pid"] == started[0]["pid"]
    assert "Traceback (most recent call last)" in errors[0]["traceback"] and "lifecycle.py" in errors[0]["traceback"]
    assert any(e["message"] == "serving" for e in entries)


def test_log_level_and_the_python_option(procs, name, tmp_path):
    import sys
    sup = procs.start([FERRY, "serve", LIFECYCLE, "--name", name, "--log-level", "warning", "--python", sys.executable],
                      stderr=subprocess.PIPE, text=True)
    url = f"shm://{name}"
    wait_served(url, sup)
    with ferry.Client(url) as c:
        env = c.call({"env": np.zeros(1), "x": np.zeros(1)})
    assert str(env["python"]) == sys.executable and str(env["omp"]) == "1"
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=15) == 0
    err = sup.stderr.read()
    assert "worker started" not in err and "serving" not in err  # info entries are below --log-level warning
    bad = subprocess.run([FERRY, "serve", LIFECYCLE, "--name", name, "--log-level", "loud"], capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "--log-level" in bad.stderr
