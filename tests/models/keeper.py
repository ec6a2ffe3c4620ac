"""A model that keeps its inputs (a cache, a batch it builds up, a view it stores), and on
request checks that every kept input still holds the bytes it had when it arrived."""
import numpy as np

KEPT = []  # (array or view kept, checksum at arrival)


def predict(x):
    if isinstance(x, dict) and "check" in x:
        bad = [i for i, (a, s) in enumerate(KEPT) if int(a.astype(np.int64).sum()) != s]
        return {"kept": np.int64(len(KEPT)), "bad": np.int64(len(bad))}
    if isinstance(x, dict):  # keep the whole dict, or a view of one of its arrays
        a = x["a"]
        if int(a[0]) % 2:
            KEPT.append((a[1:], int(a[1:].astype(np.int64).sum())))
        else:
            d = x
            KEPT.append((d["a"], int(d["a"].astype(np.int64).sum())))
        return np.int64(a.astype(np.int64).sum())
    KEPT.append((x, int(x.astype(np.int64).sum())))
    return np.int64(x.astype(np.int64).sum())
