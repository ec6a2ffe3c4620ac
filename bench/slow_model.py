"""Benchmark model for scaling across nodes: takes ~5 ms per call (sleeping, as a model
waiting on a device would), then reads every byte and answers [checksum, size]
(bench/checksum_model.py)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checksum_model import answer  # noqa: E402


def predict(x):
    time.sleep(0.005)
    return answer(x)
