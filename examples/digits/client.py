"""Python client: sends nine digit images, prints the labels."""
import sys

import numpy as np

import ferry

url = sys.argv[1] if len(sys.argv) > 1 else "shm://digits"
images = np.fromfile(sys.argv[2], dtype=np.uint8).reshape(9, 28, 28) if len(sys.argv) > 2 else np.zeros((9, 28, 28), np.uint8)
with ferry.Client(url) as client:
    labels = client.call({"digits": images}, timeout=30)
print("labels:", " ".join(str(int(v)) for v in labels))
