"""A model that answers the benchmark's [checksum, size] but of the first request it saw,
over and over: right once, then stale — what `ferry bench --check` must catch."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
from checksum_model import answer  # noqa: E402

_first = None


def predict(x):
    global _first
    if _first is None:
        _first = answer(x)
    return _first
