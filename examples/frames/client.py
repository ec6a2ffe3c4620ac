"""Python client: streams synthetic 1080p BGR frames, checks each result, prints fps."""
import sys
import time

import numpy as np

import ferry

url = sys.argv[1] if len(sys.argv) > 1 else "shm://frames"
count = int(sys.argv[2]) if len(sys.argv) > 2 else 200
W, H, CV_8UC3 = 1920, 1080, 16
frame = np.empty((H, W, 3), np.uint8)
with ferry.Client(url) as client:
    start = time.perf_counter()
    for i in range(count):
        frame[...] = (i * 7) % 256  # "decode" the frame
        means = client.call({"header": np.array([W, H, CV_8UC3], np.int32), "frame": frame}, timeout=30)
        if not np.allclose(means, (i * 7) % 256):
            sys.exit(f"frame {i}: wrong result {means}")
    fps = count / (time.perf_counter() - start)
print(f"{count} frames {W}x{H}, fps: {fps:.1f}")
