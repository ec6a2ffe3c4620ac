"""The Python client's one-array call: compiled (_fastcall.c) and ctypes paths agree on
every reply and every error, and a long call stays interruptible."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import ferry

from conftest import MODELS, PYTHON_DIR, env

HERE = os.path.dirname(os.path.abspath(__file__))


def worker_env(pure):
    e = env()
    e.pop("FERRY_PURE_PYTHON", None)
    if pure:
        e["FERRY_PURE_PYTHON"] = "1"
    return e


def run_peer(url, pure):
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR)
    env.pop("FERRY_PURE_PYTHON", None)
    if pure:
        env["FERRY_PURE_PYTHON"] = "1"
    r = subprocess.run([sys.executable, os.path.join(HERE, "fastcall_peer.py"), url], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_make_builds_the_compiled_call_and_the_client_uses_it():
    import sysconfig

    if os.environ.get("FERRY_PURE_PYTHON"):
        assert ferry.client._fastcall is None
    elif not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")):
        pytest.skip("no Python.h for this interpreter: `make build` cannot compile _fastcall.c")
    else:
        assert ferry.client._fastcall is not None, "python/ferry/_fastcall*.so missing: run `make build`"
        assert ferry.serving._fastcall is not None


def test_compiled_and_ctypes_paths_answer_every_case_alike(procs, name):
    url = f"shm://{name}?slot_size=16M&slots=2"
    procs.worker(url, os.path.join(MODELS, "arraycases.py"))
    fast, pure = run_peer(url, False), run_peer(url, True)
    assert fast[-1] == "fast" and pure[-1] == "ctypes"
    assert fast[:-1] == pure[:-1]
    lines = dict(line.split(" -> ", 1) for line in fast[:-1])
    assert lines["model error"].startswith("RemoteError ValueError: negative input"), lines["model error"]
    assert lines["deadline"].startswith("Timeout"), lines["deadline"]
    assert lines["several wait steps"].startswith("ndarray <f8 (2,)"), lines["several wait steps"]
    assert lines["after the deadline"].startswith("ndarray <u2 (3,)"), lines["after the deadline"]
    assert lines["several tensors back"].startswith("dict a: ndarray <i8 (2,)"), lines["several tensors back"]
    assert lines["strings back"].startswith("ndarray <U5 (2,)"), lines["strings back"]
    assert lines["empty back"].startswith("ndarray <f4 (2, 0, 3)"), lines["empty back"]
    assert lines["9 dims"].startswith("InvalidArgument") or lines["9 dims"].startswith("ValueError"), lines["9 dims"]
    assert "writeable=True owndata=True" in lines["u1 (3, 5)"], lines["u1 (3, 5)"]


def test_the_workers_compiled_and_ctypes_paths_answer_every_case_alike(procs, name):
    """The worker takes a one-array request and replies with one array in C (_fastcall.next,
    .reply) or through ctypes: the model sees the same view and the client the same replies,
    errors, kept inputs (preserved) and general-path replies."""
    transcripts = []
    for pure in (False, True):
        url = f"shm://{name}-{int(pure)}?slot_size=16M&slots=2"
        procs.worker(url, os.path.join(MODELS, "arraycases.py"), env=worker_env(pure))
        transcripts.append(run_peer(url, False))
    fast, pure = ([line.replace(f"{name}-{k}", name) for line in t] for k, t in enumerate(transcripts))
    assert fast == pure
    lines = dict(line.split(" -> ", 1) for line in fast[:-1])
    view = lines["the worker's view"]
    assert view.startswith("ndarray <U"), view
    assert [lines[f"kept {i}"].split()[:3] for i in range(3)] == [["ndarray", "<i8", "(1,)"]] * 3
    assert lines["strided reply"].startswith("ndarray <i2 (5,)"), lines["strided reply"]


def test_the_workers_view_is_read_only_zero_copy_and_as_described(procs, name):
    url = f"shm://{name}?slots=2"
    procs.worker(url, os.path.join(MODELS, "arraycases.py"))
    with ferry.Client(url) as c:
        r = c.call(np.array([[-7, 1, 2]], np.float32))
    assert r.tolist() == ["ndarray <f4 (1, 3) writeable=False contiguous=True aligned=True owndata=False"]


def test_ctrl_c_interrupts_a_long_one_array_call_and_the_client_goes_on(procs, name):
    url = f"shm://{name}?slots=1"
    procs.worker(url, os.path.join(MODELS, "arraycases.py"))
    script = (
        "import time, numpy as np, ferry\n"
        f"c = ferry.Client({url!r})\n"
        "print('calling', flush=True)\n"
        "t0 = time.monotonic()\n"
        "try:\n"
        "    c.call(np.array([-2, 1.5]))\n"
        "    print('no interrupt')\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted after %.2f s' % (time.monotonic() - t0), flush=True)\n"
        "print(c.call(np.arange(4.0), timeout=5).tolist(), flush=True)\n"
    )
    p = procs.start([sys.executable, "-c", script], env=dict(os.environ, PYTHONPATH=PYTHON_DIR), stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "calling"
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=30)
    lines = out.splitlines()
    assert lines[0].startswith("interrupted after"), out
    assert float(lines[0].split()[2]) < 0.8, out
    # the single slot was given up: the next call is answered once the worker is done
    assert lines[1] == "[0.0, 1.0, 2.0, 3.0]", out


TUPLE_MODEL = """
import collections
import numpy as np

Pair = collections.namedtuple("Pair", "boxes scores")


def predict(x):
    if float(x[0]) == 1:
        return Pair(x[1:3], x[:1] * 10)
    return (x * 2, x[:2])
"""


@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "ctypes"])
def test_c_and_cpp_clients_read_several_outputs_by_index(procs, name, tmp_path, native, pure):
    """A Python model's tuple reaches C and C++ clients as tensors in order, with ferry.outputs=tuple;
    a namedtuple's outputs carry its field names. Both worker paths."""
    model = tmp_path / "tuples.py"
    model.write_text(TUPLE_MODEL)
    url = f"shm://{name}"
    procs.worker(url, str(model), env=worker_env(pure))
    for client in (native["outputs"], native["outputs_cpp"]):  # C, and C++ through ferry.hpp
        r = subprocess.run([client, url], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.splitlines() == ["outputs tuple", "0 output_0 dtype=11 shape=6 first=0", "1 output_1 dtype=11 shape=2 first=0"]
    with ferry.Client(url) as c:
        boxes, scores = c.call(np.array([1, 2, 3], np.float32))
        assert boxes.tolist() == [2, 3] and scores.tolist() == [10]
        tensors, meta = c.call_message(np.array([1, 2, 3], np.float32))
        assert list(tensors) == ["boxes", "scores"] and meta["ferry.outputs"] == "tuple"
