"""A stream peer for tests, run as its own process.

  publish NAME FRAMES INTERVAL_MS SIDE [every]  frames of SIDE×SIDE uint8, frame n all (n % 251),
                                               with metadata n; waits for a subscriber first
                                               when `every`; closes the stream at the end
  publish-forever NAME INTERVAL_MS SIDE         the same until killed (prints each 100th seq)
  check NAME SECONDS [every]                    takes frames for SECONDS, checks every byte,
                                               prints "ok RECEIVED DROPPED" or "torn SEQ"
  hold NAME                                     takes one frame (every mode), keeps it, prints
                                               "holding", sleeps until killed
"""
import os
import signal
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

import ferry  # noqa: E402


def publish(name, frames, interval_ms, side, every=False, forever=False):
    with ferry.Publisher(name, slots=8, slot_size=side * side + (1 << 14)) as pub:
        print("ready", flush=True)
        if every:
            end = time.monotonic() + 10
            while pub.subscribers == 0 and time.monotonic() < end:
                time.sleep(0.002)
        image = np.empty((side, side), np.uint8)
        n = 0
        while forever or n < frames:
            image.fill(n % 251)
            pub.publish(image, metadata={"n": str(n)}, timeout=10)
            n += 1
            if forever and n % 100 == 0:
                print(n, flush=True)
            if interval_ms:
                time.sleep(interval_ms / 1000)


def check(name, seconds, every=False):
    sub = ferry.Subscriber(name, every=every)
    print("joined", flush=True)
    end = time.monotonic() + seconds
    last = -1
    while time.monotonic() < end:
        try:
            f = sub.recv(timeout=5)
        except ferry.ChannelClosed:
            break
        n = int(f.meta["n"])
        a = f.array
        if not (a == n % 251).all() or f.seq != n + 1 or f.seq <= last:
            print("torn", f.seq, n, flush=True)
            sys.exit(1)
        last = f.seq
        f.release()
    print("ok", sub.received, sub.dropped, flush=True)


def hold(name):
    sub = ferry.Subscriber(name, every=True)
    f = sub.recv(timeout=10)
    print("holding", f.seq, flush=True)
    time.sleep(3600)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # close the stream on the way out
    role, name, *rest = sys.argv[1:]
    if role == "publish":
        publish(name, int(rest[0]), float(rest[1]), int(rest[2]), every=len(rest) > 3 and rest[3] == "every")
    elif role == "publish-forever":
        publish(name, 0, float(rest[0]), int(rest[1]), forever=True)
    elif role == "check":
        check(name, float(rest[0]), every=len(rest) > 1 and rest[1] == "every")
    elif role == "hold":
        hold(name)
