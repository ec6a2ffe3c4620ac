"""Dynamic batching: requests from many clients merged into one model call, and every caller
gets exactly its own rows back."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import ferry
from conftest import FERRY, MODELS, wait_served

MODEL = os.path.join(MODELS, "batched.py")


def test_eight_clients_with_random_batch_sizes_each_get_their_own_rows(procs, name):
    # Through the command, as a user would run it.
    url = f"shm://{name}"
    server = procs.start([FERRY, "serve", MODEL, "--name", name, "--slots", "16", "--max-batch", "16", "--max-delay", "2000"])
    wait_served(url, server)
    wrong, merged, errors = [], [], []
    with ferry.Client(url) as c:
        def run(t):
            rng = np.random.default_rng(t)
            for i in range(150):
                rows = int(rng.integers(1, 6))
                x = (np.arange(rows * 3, dtype=np.float64).reshape(rows, 3) + 1000 * t + 100_000 * i)
                try:
                    out = c.call(x, timeout=10)
                except ferry.FerryError as e:
                    errors.append(e)
                    continue
                if out.shape != (rows, 4) or not np.array_equal(out[:, :3], x * 2):
                    wrong.append((t, i))
                merged.append(int(out[0, 3]) - rows)  # rows of other callers in the same batch

        threads = [threading.Thread(target=run, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    assert not wrong, wrong[:5]
    assert max(merged) > 0, "no request was ever batched with another"


def test_an_error_in_a_batch_fails_only_its_own_caller(procs, name):
    url = f"shm://{name}?slots=16"
    procs.worker(url, model=MODEL, extra=["--max-batch", "16", "--max-delay-us", "5000"])
    results: dict = {}
    with ferry.Client(url) as c:
        # Under these timings requests really are merged (else this test would prove nothing).
        batched = [c.send(np.ones((2, 3))) for _ in range(4)]
        assert max(int(p.result(timeout=10)[0, 3]) for p in batched) > 2

        def run(t):
            x = np.full((2, 3), t, np.float64)
            try:
                results[t] = c.call({"x": x, "fail": np.full((2,), int(t == 3), np.int64)}, timeout=10)
            except ferry.RemoteError as e:
                results[t] = e

        threads = [threading.Thread(target=run, args=(t,)) for t in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert isinstance(results[3], ferry.RemoteError) and "asked to fail" in str(results[3])
    for t in (0, 1, 2, 4, 5):
        assert not isinstance(results[t], Exception), results[t]
        assert np.array_equal(results[t][:, :3], np.full((2, 3), 2.0 * t))


def test_a_failing_row_in_a_one_array_batch_fails_only_its_own_caller(procs, name):
    """The fast path (one array per request, answered with one C call) re-runs a failed batch
    request by request, like the general path."""
    url = f"shm://{name}?slots=16"
    procs.worker(url, model=MODEL, extra=["--max-batch", "16", "--max-delay-us", "5000"])
    with ferry.Client(url) as c:
        for _ in range(5):
            pending = [c.send(np.full((2, 3), -1.0 if t == 2 else float(t))) for t in range(6)]
            results = []
            for p in pending:
                try:
                    results.append(p.result(timeout=10))
                except ferry.RemoteError as e:
                    results.append(e)
            assert isinstance(results[2], ferry.RemoteError) and "negative row" in str(results[2])
            for t in (0, 1, 3, 4, 5):
                assert np.array_equal(results[t][:, :3], np.full((2, 3), 2.0 * t)), results[t]


def test_requests_that_do_not_fit_the_batch_run_alone(procs, name):
    url = f"shm://{name}?slots=8"
    procs.worker(url, extra=["--max-batch", "8", "--max-delay-us", "2000"])
    with ferry.Client(url) as c:
        pending = [c.send(np.ones((2, 3), np.float32)), c.send(np.ones((2, 5), np.float32)),
                   c.send(np.float64(7)), c.send({"s": np.array(["a", "b"])})]
        out = [p.result(timeout=10) for p in pending]
    assert out[0].shape == (2, 3) and out[1].shape == (2, 5) and out[2] == 7
    assert list(out[3]) == ["a", "b"]


def test_a_batched_model_with_several_outputs_gives_each_caller_its_own_tuple(procs, name):
    url = f"shm://{name}?slots=16"
    procs.worker(url, model=MODEL, extra=["--max-batch", "16", "--max-delay-us", "5000"])
    with ferry.Client(url) as c:
        pending = [(t, c.send({"x": np.full((t + 1, 3), t, np.float64), "pair": np.zeros(t + 1)})) for t in range(6)]
        outs = [(t, p.result(timeout=10)) for t, p in pending]
    for t, out in outs:
        assert type(out) is tuple and len(out) == 2, out
        assert out[0].tolist() == np.full((t + 1, 3), 2.0 * t).tolist()
        assert out[1].shape == (t + 1,)
    assert any(int(out[1][0]) > t + 1 for t, out in outs), "no request was batched with another"


def test_batching_options_are_checked():
    with pytest.raises(ValueError, match="max_batch"):
        ferry.Worker.serve(None, lambda x: x, max_batch=0)


def test_a_serving_process_keeps_numpy_temporaries_off_mmap():
    """tune_malloc raises glibc's mmap threshold once per serving process (a model's 200 KiB
    temporaries otherwise page-fault in on every call), and leaves it when told to."""
    import subprocess
    import sys
    code = "import ferry.serving as s; print(s.tune_malloc(), s.tune_malloc())"
    from conftest import env
    e = env()
    out = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False"]
    e["FERRY_MALLOC"] = "default"
    out = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
