"""Python client: sends a stock table as columns, then as the seed's CSV, checks the summary."""
import struct
import sys

import numpy as np

import ferry

url = sys.argv[1] if len(sys.argv) > 1 else "shm://table"
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
i = np.arange(rows)
columns = {"date": 20260101 + i, "open": 100 + 0.25 * i, "close": 100 + 0.5 * i, "volume": 1000 + i}
csv = "date,open,close,volume\n" + "".join(f"{20260101 + k},{100 + 0.25 * k},{100 + 0.5 * k},{1000 + k}\n" for k in range(rows))
with ferry.Client(url) as client:
    for how, inputs in (("columns", columns), ("csv", {"csv": struct.pack("<I", len(csv)) + csv.encode()})):
        out = client.call(inputs, timeout=30)
        ok = out["rows"] == rows and abs(out["mean_close"] - (100 + 0.5 * (rows - 1) / 2)) < 1e-9 and \
            out["total_volume"] == 1000 * rows + rows * (rows - 1) // 2
        print(f"{how}: rows={int(out['rows'])} mean_close={float(out['mean_close']):.2f} total_volume={int(out['total_volume'])}")
        if not ok:
            sys.exit(f"wrong summary for {how}")
