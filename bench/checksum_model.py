"""Benchmark model that reads every byte of its input: replies [byte sum, element count] as
two uint64 (16 bytes), which the clients compare with what they sent."""
import numpy as np


def predict(x):
    b = np.ascontiguousarray(x).view(np.uint8).reshape(-1)
    return np.array([int(b.sum(dtype=np.uint64)), b.size], dtype=np.uint64)
