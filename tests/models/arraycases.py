"""Test model for one-array calls: the first element steers what comes back (echo by default)."""
import time

import numpy as np

kept = []  # inputs the model keeps (case -8): the worker must preserve them


def predict(x):
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
    return x
