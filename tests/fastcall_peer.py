"""Makes the same plain calls (one array, dicts of arrays) through whichever client path this
process has (the compiled one, or ctypes under FERRY_PURE_PYTHON=1) and prints one line per
call: what came back, or which error. tests/test_fastcall.py compares the two transcripts."""
import hashlib
import sys

import numpy as np

import ferry

url = sys.argv[1]


def show(r):
    if isinstance(r, np.ndarray):
        digest = hashlib.sha1(r.tobytes() if r.dtype.kind != "U" else "|".join(r.reshape(-1).tolist()).encode()).hexdigest()[:12]
        return f"ndarray {r.dtype.str} {r.shape} {digest} writeable={r.flags.writeable} owndata={r.base is None or r.flags.owndata}"
    if isinstance(r, dict):
        return "dict " + ", ".join(f"{k}: {show(v)}" for k, v in r.items())
    if isinstance(r, tuple):
        return "tuple " + ", ".join(show(v) for v in r)
    return f"{type(r).__name__} {r!r}"


def cases():
    rng = np.random.default_rng(1)
    for dt in ("bool", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"):
        for shape in ((), (0,), (1,), (7,), (3, 5), (2, 0, 4), (1, 2, 1, 2, 1, 2, 1, 2)):
            a = np.asarray(rng.integers(0, 100, shape)).astype(dt)
            yield f"{dt} {shape}", a, None
    ro = np.arange(10, dtype=np.float64)
    ro.flags.writeable = False
    yield "read-only", ro, None
    yield "not contiguous", np.arange(20, dtype=np.int32)[::2], None
    yield "fortran order", np.asfortranarray(np.arange(12, dtype=np.int64).reshape(3, 4)), None
    yield "big-endian", np.arange(5, dtype=">f8"), None
    yield "model error", np.array([-1, 0], np.float32), None
    yield "several wait steps", np.array([-2, 0.35], np.float64), None
    yield "deadline", np.array([-2, 1.0], np.float64), 0.2
    yield "after the deadline", np.arange(3, dtype=np.uint16), None
    yield "several tensors back", np.array([-4, 1], np.int64), None
    yield "strings back", np.array([-5], np.int8), None
    yield "empty back", np.array([-6], np.int32), None
    yield "9 dims", np.zeros((1,) * 9, np.uint8), None
    yield "the worker's view", np.array([[-7, 1, 2]], np.float32), None
    for i in range(3):
        yield f"kept {i}", np.array([-8, i], np.int64), None
    yield "strided reply", np.array([-9], np.int8), None
    yield "large", rng.integers(0, 255, (1080, 1920, 3), dtype=np.uint8), None
    for i in (10, 12, 13):
        yield f"view {i}", np.array([-i, 3, 4, 5], np.int64), None
    for i in range(3):
        yield f"kept view {i}", np.array([-11, i], np.int64), None
    # dicts: x steers the model (tests/models/arraycases.py), y is data
    y = np.arange(6, dtype=np.float32).reshape(2, 3)
    yield "dict echo", {"x": np.array([-20]), "y": y, "z": np.array(True)}, None
    yield "dict of 16", {"x": np.array([0]), **{f"t{i}": np.full(i + 1, i, dtype=DTS[i % len(DTS)]) for i in range(15)}}, None
    yield "dict of 17", {"x": np.array([0]), **{f"t{i}": np.full(i + 1, i, dtype=DTS[i % len(DTS)]) for i in range(16)}}, None
    yield "dict empty arrays", {"x": np.array([0]), "e": np.zeros((0, 3)), "s": np.float32(2)}, None
    yield "tuple back", {"x": np.array([-21]), "y": y}, None
    yield "list with strings back", {"x": np.array([-22]), "y": y}, None
    for i in range(4):
        yield f"dict kept {i}", {"x": np.array([-23, i]), "y": np.array([i, 7], np.int16)}, None
    yield "namedtuple back", {"x": np.array([-24]), "y": y}, None
    yield "list of numbers back", {"x": np.array([-25]), "y": y}, None
    yield "dict with a str back", {"x": np.array([-26]), "y": y}, None
    yield "empty tuple back", {"x": np.array([-27]), "y": y}, None
    yield "dict strided", {"x": np.array([0]), "y": np.arange(10)[::3]}, None
    yield "dict big-endian", {"x": np.array([0]), "y": np.arange(3, dtype=">i4")}, None
    yield "dict with strings", {"x": np.array([0]), "s": np.array(["a", "b"])}, None
    yield "dict with an int key", {"x": np.array([0]), 7: y}, None
    yield "dict name with NUL", {"x": np.array([0]), "a\x00b": y}, None
    yield "dict name not unicode", {"x": np.array([0]), "a\ud800": y}, None
    yield "dict 9 dims", {"x": np.array([0]), "y": np.zeros((1,) * 9)}, None
    yield "dict model error", {"x": np.array([-1.0]), "y": y}, None
    yield "empty dict", {}, None


DICT_ECHOED = ("dict echo", "dict of 16", "dict of 17", "dict empty arrays", "dict strided", "dict big-endian", "dict with an int key")
DTS = ("bool", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8")


NOT_ECHOED = ("empty back", "strings back", "the worker's view", "strided reply", "view", "kept view")

with ferry.Client(url) as c:
    for label, arr, timeout in cases():
        try:
            r = c.call(arr, timeout=timeout)
            if isinstance(arr, dict) and label in DICT_ECHOED:
                assert isinstance(r, dict) and list(r) == [str(k) for k in arr], (label, r)
                for k, v in arr.items():
                    want, got = np.asarray(v), r[str(k)]
                    want = want.astype(want.dtype.newbyteorder("<"), order="C")
                    assert got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes(), (label, k, got)
                    assert got.flags.writeable and got.base is None, (label, k)
            if isinstance(arr, np.ndarray) and isinstance(r, np.ndarray) and not label.startswith(NOT_ECHOED) and not label.startswith("kept"):
                want = arr.astype(arr.dtype.newbyteorder("<"), order="C")
                assert r.dtype == want.dtype and r.shape == want.shape and (r.tobytes() == want.tobytes()), (label, arr, r)
            print(label, "->", show(r), flush=True)
        except ferry.FerryError as e:
            print(label, "->", type(e).__name__, str(e).splitlines()[0][:80], getattr(e, "type", None), flush=True)
        except (ValueError, TypeError) as e:
            print(label, "->", type(e).__name__, str(e)[:80], flush=True)
print("fast" if ferry.client._fastcall is not None else "ctypes")
