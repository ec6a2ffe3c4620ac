"""Python client: sends a stock table as a DataFrame (a per-symbol summary table comes back),
then as the seed's length-prefixed CSV and as bare columns (a summary comes back); checks all."""
import struct
import sys

import numpy as np
import pandas as pd

import ferry

url = sys.argv[1] if len(sys.argv) > 1 else "shm://table"
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
i = np.arange(rows)
columns = {"date": 20260101 + i, "open": 100 + 0.25 * i, "close": 100 + 0.5 * i, "volume": 1000 + i}
syms = np.array(["AAA", "BBB", "CCC"])[i % 3]
csv = "date,open,close,volume\n" + "".join(f"{20260101 + k},{100 + 0.25 * k},{100 + 0.5 * k},{1000 + k}\n" for k in range(rows))
with ferry.Client(url) as client:
    df = pd.DataFrame({**columns, "sym": pd.Series(syms, dtype="string")})
    out = client.call(df, timeout=30)
    expected = df.groupby("sym").agg(rows=("close", "size"), mean_close=("close", "mean"), total_volume=("volume", "sum"))
    if list(out["sym"]) != list(expected.index) or list(out["rows"]) != list(expected["rows"]) or \
            not np.allclose(out["mean_close"], expected["mean_close"]) or list(out["total_volume"]) != list(expected["total_volume"]):
        sys.exit(f"wrong per-symbol summary:\n{out}")
    print("table: " + " ".join(f"{s}={n}" for s, n in zip(out["sym"], out["rows"])))
    for how, inputs in (("columns", columns), ("csv", {"csv": struct.pack("<I", len(csv)) + csv.encode()})):
        out = client.call(inputs, timeout=30)
        ok = out["rows"] == rows and abs(out["mean_close"] - (100 + 0.5 * (rows - 1) / 2)) < 1e-9 and \
            out["total_volume"] == 1000 * rows + rows * (rows - 1) // 2
        print(f"{how}: rows={int(out['rows'])} mean_close={float(out['mean_close']):.2f} total_volume={int(out['total_volume'])}")
        if not ok:
            sys.exit(f"wrong summary for {how}")
