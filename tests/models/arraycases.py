"""Test model for one-array calls: the first element steers what comes back (echo by default)."""
import time

import numpy as np


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
    return x
