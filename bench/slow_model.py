"""Benchmark model for scaling across nodes: takes ~5 ms per call (sleeping, as a model
waiting on a device would), then reads every byte and answers [byte sum, size]."""
import time

import numpy as np


def predict(x):
    time.sleep(0.005)
    b = np.ascontiguousarray(x).view(np.uint8).reshape(-1)
    return np.array([int(b.sum(dtype=np.uint64)), b.size], dtype=np.uint64)
