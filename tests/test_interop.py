"""The Python side as ML code uses it: DLPack objects in (numpy's own, a minimal object that has
only `__dlpack__`/`__dlpack_device__`, a tensor on a GPU refused by device name), torch tensors
for a model (when torch is installed), bfloat16 (ml_dtypes) and float16 on the wire, `None`
refused, and every exception class exported from `ferry` under `ferry.FerryError`."""
from __future__ import annotations

import importlib.util
import inspect
import os
import subprocess

import numpy as np
import pytest

import ferry
import ferry.errors
from conftest import native  # noqa: F401  (the fixture)


class OnlyDLPack:
    """What a torch/JAX/CuPy-on-host tensor looks like to Ferry: no __array__, no buffer."""

    def __init__(self, arr, device=(1, 0)):
        self._arr, self._device = arr, device

    def __dlpack__(self, stream=None, **kw):
        return self._arr.__dlpack__(**kw) if kw else self._arr.__dlpack__()

    def __dlpack_device__(self):
        return self._device


def test_objects_with_dlpack_cross_like_arrays(procs, name):
    url = f"shm://{name}"
    procs.worker(url)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    with ferry.Client(url) as c:
        out = c.call(OnlyDLPack(x))
        assert out.dtype == x.dtype and out.shape == x.shape and np.array_equal(out, x)
        out = c.call({"a": OnlyDLPack(x[1]), "b": np.ones(2)})
        assert np.array_equal(out["a"], x[1]) and np.array_equal(out["b"], np.ones(2))
        # numpy's own DLPack: what np.from_dlpack makes of it goes and comes back the same
        y = np.from_dlpack(OnlyDLPack(np.arange(5, dtype=np.int16)))
        assert np.array_equal(c.call(y), np.arange(5, dtype=np.int16))


def test_a_tensor_on_a_gpu_is_refused_naming_the_device(procs, name):
    url = f"shm://{name}"
    procs.worker(url)
    with ferry.Client(url) as c:
        with pytest.raises(ferry.InvalidArgument, match=r"'input' is on device cuda:1.*CPU"):
            c.call(OnlyDLPack(np.ones(3), device=(2, 1)))
        with pytest.raises(ferry.InvalidArgument, match=r"'g' is on device rocm:0"):
            c.call({"g": OnlyDLPack(np.ones(3), device=(10, 0))})
        assert np.array_equal(c.call(np.ones(2)), np.ones(2))  # nothing was sent; the client goes on


def test_call_none_is_a_type_error_and_nothing_is_sent(procs, name):
    url = f"shm://{name}"
    procs.worker(url)
    with ferry.Client(url) as c:
        for send in (c.call, c.send, c.call_message):
            with pytest.raises(TypeError, match="None"):
                send(None)
        assert np.array_equal(c.call(np.ones(2)), np.ones(2))


def test_every_exception_class_is_exported_under_ferry_error():
    classes = {cls for _, cls in inspect.getmembers(ferry.errors, inspect.isclass) if issubclass(cls, Exception)}
    for cls in classes:
        assert issubclass(cls, ferry.FerryError), cls
        assert getattr(ferry, cls.__name__) is cls, f"ferry.{cls.__name__} missing"
        assert cls.__name__ in ferry.__all__
    assert ferry.SystemCallError is ferry.SystemError_ and issubclass(ferry.SystemError_, OSError)
    # every status code of ferry.h has its class
    codes = {cls.code for cls in classes if cls is not ferry.FerryError}
    assert codes == set(range(1, 16)), codes


@pytest.mark.skipif(importlib.util.find_spec("ml_dtypes") is None, reason="ml_dtypes not installed (python/requirements.txt)")
def test_bfloat16_and_float16_round_trip_exactly(procs, name):
    import ml_dtypes

    url = f"shm://{name}"
    procs.worker(url)
    bits = np.array([0x0000, 0x8000, 0x3F80, 0xBF80, 0x7F80, 0xFF80, 0x7FC1, 0x0001, 0x4049], np.uint16)
    b = bits.view(ml_dtypes.bfloat16)
    h = np.array([0.0, -0.0, 1.5, 65504, np.inf, -np.inf, 6e-8], np.float16)
    with ferry.Client(url) as c:
        out = c.call(b)
        assert out.dtype == np.dtype(ml_dtypes.bfloat16) and out.view(np.uint16).tolist() == bits.tolist()
        out = c.call({"b": b.reshape(3, 3), "h": h})
        assert out["b"].dtype == b.dtype and out["b"].view(np.uint16).tolist() == bits.reshape(3, 3).tolist()
        assert out["h"].dtype == np.float16 and out["h"].view(np.uint16).tolist() == h.view(np.uint16).tolist()
        tensors, _ = c.call_message({"b": b})
        assert tensors["output"].dtype.name == "bfloat16"


BF16_MODEL = """
import ml_dtypes

def predict(x):
    return x.astype(ml_dtypes.bfloat16)
"""


@pytest.mark.skipif(importlib.util.find_spec("ml_dtypes") is None, reason="ml_dtypes not installed (python/requirements.txt)")
def test_bfloat16_reaches_c_as_raw_two_byte_values(procs, name, tmp_path, native):  # noqa: F811
    model = tmp_path / "bf16.py"
    model.write_text(BF16_MODEL)
    url = f"shm://{name}"
    procs.worker(url, str(model))
    r = subprocess.run([native["outputs"], url], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == ["outputs -", "0 output dtype=17 shape=6 raw1=0x3f80"]


TORCH_MODEL = """
import torch
TENSORS = "torch"

def predict(x):
    assert isinstance(x, torch.Tensor), type(x)
    return x * 2, torch.ones(2, requires_grad=True) * x.sum()
"""


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed (optional: a large download)")
def test_a_model_with_torch_tensors(procs, name, tmp_path):
    import torch

    model = tmp_path / "tmodel.py"
    model.write_text(TORCH_MODEL)
    url = f"shm://{name}"
    procs.worker(url, str(model))
    with ferry.Client(url) as c:
        a, b = c.call(torch.arange(4, dtype=torch.float32))
        assert a.tolist() == [0, 2, 4, 6] and b.tolist() == [6, 6]


def test_the_torch_option_is_checked():
    with pytest.raises(ValueError, match="tensors="):
        ferry.serving.with_tensors(lambda x: x, "jax")
    if importlib.util.find_spec("torch") is None:
        with pytest.raises(ImportError, match="PyTorch"):
            ferry.serving.with_tensors(lambda x: x, "torch")
