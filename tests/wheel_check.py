"""Run by `make test-wheel` with the interpreter of a fresh venv that has only the ferry-ipc
wheel installed (no PYTHONPATH, started outside the repository): the package, its library and
its compiled call come from the wheel, a worker started from it serves, and a digits-shaped
round trip (9 images of 28×28 uint8 → 9 labels) is answered exactly."""
import importlib.metadata
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import ferry
from ferry import _lib, message

here = os.path.realpath(os.path.dirname(ferry.__file__))
repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
assert sys.prefix != sys.base_prefix, "not in a venv"
assert here.startswith(os.path.realpath(sys.prefix)) and not here.startswith(os.path.join(repo, "python")), f"ferry imported from {here}, not from the wheel in {sys.prefix}"
lib_path = _lib._name  # ferry._lib is the loaded CDLL (ferry/__init__.py)
assert os.path.dirname(os.path.abspath(lib_path)) == here, f"libferry.so from {lib_path}, not the wheel"
assert message.fastcall is not None, "the wheel has no compiled _fastcall for this interpreter"
assert os.path.exists(os.path.join(here, "py.typed"))
assert ferry.__version__ == importlib.metadata.version("ferry-ipc"), (ferry.__version__, importlib.metadata.version("ferry-ipc"))

MODEL = '''
import numpy as np

def predict(digits):
    # A stand-in classifier that reads every pixel: the label is the rounded mean mod 10.
    return (digits.reshape(len(digits), -1).mean(axis=1).round().astype(np.int64)) % 10
'''
with tempfile.TemporaryDirectory() as tmp:
    model = os.path.join(tmp, "digits_model.py")
    with open(model, "w") as f:
        f.write(MODEL)
    url = f"shm://wheel-check-{os.getpid()}"
    worker = subprocess.Popen([sys.executable, "-m", "ferry.worker", model, "--url", url])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client = ferry.Client(url)
                break
            except ferry.NoServer:
                assert worker.poll() is None and time.monotonic() < deadline, "the worker did not start"
                time.sleep(0.05)
        with client:
            rng = np.random.default_rng(7)
            for _ in range(50):
                grid = rng.integers(0, 256, (9, 28, 28), dtype=np.uint8)
                labels = client.call(grid)
                expected = grid.reshape(9, -1).mean(axis=1).round().astype(np.int64) % 10
                assert labels.dtype == np.int64 and (labels == expected).all(), (labels, expected)
    finally:
        worker.terminate()
        worker.wait(timeout=10)
print(f"wheel: ferry {ferry.__version__} from {here} (library {os.path.getsize(lib_path) // 1024} KiB, compiled call), "
      f"worker and 50 digits round trips answered exactly")
