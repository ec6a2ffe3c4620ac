"""Stream example (seed 002: camera frames to several readers): one publisher, any number of
subscribers, in any language.

  python3 stream.py publish NAME [FRAMES] [WIDTH] [HEIGHT] [FPS]   # a synthetic camera
  python3 stream.py subscribe NAME [FRAMES] [every|latest]          # a reader

Frame n is a [HEIGHT, WIDTH, 3] uint8 image whose row r holds (n + r) % 256 in every byte,
with metadata n=<n>. The subscriber checks every byte of every frame it gets, and prints
what it received, dropped, its fps and the frames' end-to-end age."""
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

import ferry  # noqa: E402


def publish(name, frames=300, width=1920, height=1080, fps=30.0):
    rows = (np.arange(height, dtype=np.int64)[:, None, None])
    with ferry.Publisher(name, slots=8, slot_size=width * height * 3 + (1 << 16)) as pub:
        # Wait (at most 10 s) for a reader, so it sees the stream from its first frame.
        end = time.monotonic() + 10
        while pub.subscribers == 0 and time.monotonic() < end:
            time.sleep(0.005)
        image = np.empty((height, width, 3), np.uint8)
        period = 1.0 / fps if fps > 0 else 0.0
        next_at = time.monotonic()
        for n in range(frames):
            image[...] = (n + rows) % 256  # "capture"
            # CLOCK_MONOTONIC ns: the clock subscribers measure age on (time.time_ns() would not be).
            pub.publish(image, timestamp_ns=time.monotonic_ns(), metadata={"n": str(n)})
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))
        # Closing ends the stream; readers still take the frames left in the ring.
    print(f"published {frames} frames of {width}x{height}")


def subscribe(name, frames=300, mode="every"):
    ages, got, bad = [], 0, 0
    with ferry.Subscriber(name, every=(mode == "every")) as sub:
        for frame in sub:
            n = int(frame.meta["n"])
            image = frame.array
            expected = ((n + np.arange(image.shape[0])) % 256).astype(np.uint8)[:, None, None]
            if not np.array_equal(image, np.broadcast_to(expected, image.shape)):
                bad += 1
            ages.append(frame.age)
            got += 1
            if n == frames - 1:
                break
        dropped, fps = sub.dropped, sub.fps
    ages.sort()
    p50 = ages[len(ages) // 2] * 1e3 if ages else 0.0
    print(f"received {got} frames, dropped {dropped}, {fps:.0f} fps, age p50 {p50:.2f} ms, {bad} wrong")
    if bad:
        sys.exit(1)


if __name__ == "__main__":
    role, name, *rest = sys.argv[1:] or ["publish", "camera"]
    if role == "publish":
        publish(name, *(int(rest[i]) if i < 3 else float(rest[i]) for i in range(len(rest))))
    else:
        subscribe(name, int(rest[0]) if rest else 300, rest[1] if len(rest) > 1 else "every")
