"""Test model for a server's life: crashes on request ("crash": the worker exits; with
$LIFECYCLE_MARK set, the next worker then takes that many seconds to load), reports its
environment ("env"), raises ("raise"); echoes otherwise."""
import os
import sys
import time

import numpy as np

MARK = os.environ.get("LIFECYCLE_MARK")


def setup():
    if MARK and os.path.exists(MARK):
        time.sleep(float(open(MARK).read() or 0))  # a slow reload after a crash
    return predict


def predict(x):
    if isinstance(x, dict):
        if "crash" in x:
            if MARK:
                with open(MARK, "w") as f:
                    f.write(str(float(x["crash"])))
            sys.stderr.write("about to crash\n")
            sys.stderr.flush()
            os._exit(3)
        if "env" in x:
            return {"omp": np.array(os.environ.get("OMP_NUM_THREADS", "")), "python": np.array(sys.executable)}
        if "raise" in x:
            raise ValueError(str(x["raise"]))
    return x
