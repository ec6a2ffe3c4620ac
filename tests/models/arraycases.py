"""Test model for plain calls: the first element (of `x`, or of the dict's `x`) steers what
comes back (echo by default)."""
import collections
import time

import numpy as np

Pair = collections.namedtuple("Pair", "boxes scores")

kept = []  # inputs the model keeps (case -8): the worker must preserve them
kept_views, kept_dict = [], []  # the same for views of inputs (-11) and a dict's inputs (-23)


def several(d):
    """A dict request: d["x"][0] steers, d["y"] is the data."""
    first, y = int(d["x"][0]), d.get("y")
    if first == -1:
        raise ValueError("negative input")
    if first == -20:
        return d  # the request itself: views of the slot, copied into the reply
    if first == -21:
        return (y * 2, y[:1])  # a tuple: the second a view of the input
    if first == -22:
        return [y, np.array(["a", "bé"])]  # a list with strings: the general path
    if first == -23:  # keeps one input past the call, then checks every kept one is intact
        kept_dict.append((y if int(d["x"][1]) % 2 else y[:1], int(d["x"][1])))  # the array, or a view of it
        if not all(int(k.reshape(-1)[0]) == v for k, v in kept_dict):
            raise AssertionError("a kept input changed")
        return {"n": np.array([int(d["x"][1])], np.int64)}
    if first == -24:
        return Pair(y[::-1].copy(), np.ones(2, np.float32))  # a namedtuple: named outputs
    if first == -25:
        return [np.float64(1.5), 2, 3]  # a list of numbers: one array
    if first == -26:
        return {"a": y, "b": "text"}  # a dict with a str: the general path
    if first == -27:
        return ()  # nothing: an empty array (numpy's view of an empty tuple)
    return {k: v for k, v in d.items()}


def predict(x):
    if isinstance(x, dict):
        return several(x)
    first = float(x.reshape(-1)[0]) if isinstance(x, np.ndarray) and x.size and x.dtype.kind in "biuf" else 0.0
    if first == -1:
        raise ValueError("negative input")
    if first == -2:
        time.sleep(float(x.reshape(-1)[1]))  # longer than one 100 ms wait step
        return x
    if first == -4:
        return {"a": x, "b": np.array(["s", "tü"])}
    if first == -5:
        return np.array(["hello", "wörld"])
    if first == -6:
        return np.zeros((2, 0, 3), np.float32)
    if first == -7:  # what the model was given: the worker's two paths must give the same view
        return np.array([f"{type(x).__name__} {x.dtype.str} {x.shape} writeable={x.flags.writeable} "
                         f"contiguous={x.flags.c_contiguous} aligned={x.flags.aligned} owndata={x.flags.owndata}"])
    if first == -8:  # keeps its input past the call, then checks every kept one is intact
        kept.append((x, int(x.reshape(-1)[1])))
        if not all(int(k.reshape(-1)[1]) == v for k, v in kept):
            raise AssertionError("a kept input changed")
        return np.array([int(x.reshape(-1)[1])], np.int64)
    if first == -9:  # a reply of a view (not the input, not its own data): the general path
        return np.arange(10, dtype=np.int16)[::2]
    if first == -10:  # a view of the input
        return x[1:]
    if first == -11:  # a view of the input, kept by the model: preserved, then checked intact
        view = x[1:]
        kept_views.append((view, int(x.reshape(-1)[1]) + 1000))
        if not all(int(k.reshape(-1)[0]) + 1000 == v for k, v in kept_views):
            raise AssertionError("a kept view changed")
        return view
    if first == -12:  # a view of the model's own array
        return np.arange(12, dtype=np.int32).reshape(3, 4)[1]
    if first == -13:  # a byte view of the input
        return x.view(np.uint8)
    return x
